//! Credentials from a pod's imagePullSecrets (`kubernetes.io/dockerconfigjson`
//! and the legacy `kubernetes.io/dockercfg`), matched to an image the way
//! the kubelet's keyring does: host (with `*` globs per DNS label) and port,
//! then path prefix, most specific key first; Docker Hub keys also match
//! images without a registry.

use super::registries::Credentials;
use base64::Engine;
use serde_json::Value;

/// One secret's entries: keys like `registry.example.com:5000/team`.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    /// Reverse-sorted keys (more specific paths first) with their credentials.
    entries: Vec<(String, Credentials)>,
}

const DOCKER_HUB_KEY: &str = "index.docker.io";

/// `https://host/v1/path` → `host/path` (scheme and a `/v1/`/`/v2/` prefix dropped).
fn normalise_key(location: &str) -> String {
    let rest = location.split_once("://").map_or(location, |(_, rest)| rest);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = if path.starts_with("/v1/") || path.starts_with("/v2/") { &path[3..] } else { path };
    if path.is_empty() || path == "/" { host.to_string() } else { format!("{host}{path}") }
}

/// A dockercfg-style entry's credentials (`auth` wins over username/password).
fn entry_credentials(entry: &Value) -> Option<Credentials> {
    let text = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    if let Some(auth) = entry.get("auth").and_then(Value::as_str).filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD.decode(auth.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (username, password) = decoded.split_once(':')?;
        return Some(Credentials::Basic { username: username.into(), password: password.into() });
    }
    let token = text("identitytoken");
    if !token.is_empty() {
        return Some(Credentials::IdentityToken(token));
    }
    let (username, password) = (text("username"), text("password"));
    (!username.is_empty() || !password.is_empty()).then_some(Credentials::Basic { username, password })
}

/// `*.example.com` against `a.example.com`, one label at a time.
fn glob_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((before, after)) => {
            text.len() >= before.len() + after.len()
                && text.starts_with(before)
                && text[before.len()..].ends_with(after)
                && !text[before.len()..text.len() - after.len()].contains('.')
        }
    }
}

/// Whether the key `glob` covers `image` (both `host[:port][/path]`).
fn key_matches(glob: &str, image: &str) -> bool {
    let split = |s: &str| -> (String, String, String) {
        let (hostport, path) = match s.find('/') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        };
        let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, ""));
        (host.to_string(), port.to_string(), path.to_string())
    };
    let (ghost, gport, gpath) = split(glob);
    let (ihost, iport, ipath) = split(image);
    let (glabels, ilabels): (Vec<&str>, Vec<&str>) = (ghost.split('.').collect(), ihost.split('.').collect());
    gport == iport
        && glabels.len() == ilabels.len()
        && glabels.iter().zip(&ilabels).all(|(g, i)| glob_match(g, i))
        && ipath.starts_with(&gpath)
}

/// Whether an image (`registry/repository`) is a Docker Hub one.
fn is_docker_hub(image: &str) -> bool {
    match image.split_once('/') {
        None => true,
        Some((first, _)) => {
            first == "docker.io" || first == DOCKER_HUB_KEY || !first.contains(['.', ':']) && first != "localhost"
        }
    }
}

impl Keyring {
    /// Adds the entries of a Secret object; other secret types are ignored.
    /// Returns whether the secret was a usable pull secret.
    pub fn add_secret(&mut self, secret: &Value) -> bool {
        let kind = secret.get("type").and_then(Value::as_str).unwrap_or_default();
        let field = match kind {
            "kubernetes.io/dockerconfigjson" => ".dockerconfigjson",
            "kubernetes.io/dockercfg" => ".dockercfg",
            _ => return false,
        };
        let Some(data) = secret.get("data").and_then(|d| d.get(field)).and_then(Value::as_str) else {
            return false;
        };
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else { return false };
        let Ok(doc) = serde_json::from_slice::<Value>(&bytes) else { return false };
        let auths = if kind == "kubernetes.io/dockerconfigjson" { doc.get("auths").cloned() } else { Some(doc) };
        let Some(Value::Object(auths)) = auths else { return false };
        for (location, entry) in &auths {
            if let Some(creds) = entry_credentials(entry) {
                self.entries.push((normalise_key(location), creds));
            }
        }
        self.entries.sort_by(|a, b| b.0.cmp(&a.0));
        true
    }

    /// The credentials for `image` (`registry/repository`, no tag), most specific first.
    pub fn lookup(&self, image: &str) -> Vec<Credentials> {
        let found: Vec<Credentials> =
            self.entries.iter().filter(|(key, _)| key_matches(key, image)).map(|(_, c)| c.clone()).collect();
        if !found.is_empty() || !is_docker_hub(image) {
            return found;
        }
        self.entries.iter().filter(|(key, _)| key == DOCKER_HUB_KEY).map(|(_, c)| c.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn basic(u: &str) -> Credentials {
        Credentials::Basic { username: u.into(), password: "pw".into() }
    }

    fn secret(kind: &str, field: &str, doc: Value) -> Value {
        json!({"type": kind, "data": {field: b64(&doc.to_string())}})
    }

    #[test]
    fn dockerconfigjson_matches_host_then_path_prefix() {
        let mut keyring = Keyring::default();
        let doc = json!({"auths": {
            "registry.example.com:5000": {"auth": b64("host:pw")},
            "https://registry.example.com:5000/team/": {"username": "team", "password": "pw"},
            "*.corp.example": {"auth": b64("glob:pw")},
            "https://index.docker.io/v1/": {"auth": b64("hub:pw")},
        }});
        assert!(keyring.add_secret(&secret("kubernetes.io/dockerconfigjson", ".dockerconfigjson", doc)));
        assert_eq!(keyring.lookup("registry.example.com:5000/team/app"), vec![basic("team"), basic("host")]);
        assert_eq!(keyring.lookup("registry.example.com:5000/other"), vec![basic("host")]);
        assert!(keyring.lookup("registry.example.com/other").is_empty(), "the port must match");
        assert_eq!(keyring.lookup("eu.corp.example/x"), vec![basic("glob")]);
        assert!(keyring.lookup("a.eu.corp.example/x").is_empty(), "a glob spans one label");
        assert_eq!(keyring.lookup("docker.io/library/busybox"), vec![basic("hub")]);
        assert!(keyring.lookup("quay.io/x/y").is_empty());
    }

    #[test]
    fn legacy_dockercfg_and_other_types() {
        let mut keyring = Keyring::default();
        let doc = json!({"127.0.0.1:5000": {"username": "u", "password": "pw", "email": "e@x"}});
        assert!(keyring.add_secret(&secret("kubernetes.io/dockercfg", ".dockercfg", doc)));
        assert_eq!(keyring.lookup("127.0.0.1:5000/busybox"), vec![basic("u")]);
        assert!(!keyring.add_secret(&json!({"type": "Opaque", "data": {}})));
        assert!(!keyring.add_secret(&json!({"type": "kubernetes.io/dockerconfigjson", "data": {}})));
    }

    #[test]
    fn keys_are_normalised() {
        assert_eq!(normalise_key("https://index.docker.io/v1/"), "index.docker.io");
        assert_eq!(normalise_key("http://r.example:5000/v2/team"), "r.example:5000/team");
        assert_eq!(normalise_key("r.example"), "r.example");
        assert!(is_docker_hub("library/busybox") && is_docker_hub("docker.io/x/y") && !is_docker_hub("r.io/x"));
    }
}
