//! k3s's `registries.yaml` as a typed model: per registry the mirror
//! endpoints to try (then the registry itself), repository rewrites for the
//! mirrors, and per host the credentials and TLS settings; `"*"` is the
//! default entry for registries (or hosts) without one of their own.

use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a registries file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistriesError {
    #[error("{}: cannot read it: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// The whole file.
#[derive(Clone, Debug, Default)]
pub struct Registries {
    pub mirrors: BTreeMap<String, Mirror>,
    /// Keyed by a registry or endpoint host (`host[:port]`), or `"*"`.
    pub configs: BTreeMap<String, HostConfig>,
}

/// `mirrors.<registry>`.
#[derive(Clone, Debug, Default)]
pub struct Mirror {
    pub endpoints: Vec<Endpoint>,
    /// Regex on the repository → replacement (`$1` …), first match wins, in file order.
    pub rewrites: Vec<(Regex, String)>,
}

/// One endpoint URL: plain HTTP or HTTPS to `host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub plain_http: bool,
    pub host: String,
}

/// `configs.<host>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub auth: Option<Auth>,
    pub tls: Tls,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// base64 of `username:password`.
    #[serde(default)]
    pub auth: String,
    #[serde(default)]
    pub identitytoken: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Credentials resolved from an [`Auth`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    Basic { username: String, password: String },
    IdentityToken(String),
}

impl Auth {
    /// The credentials this entry gives, if any (`auth` decoded when set).
    pub fn credentials(&self) -> Result<Option<Credentials>, String> {
        if !self.identitytoken.is_empty() {
            return Ok(Some(Credentials::IdentityToken(self.identitytoken.clone())));
        }
        if !self.auth.is_empty() {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .map_err(|err| format!("auth is not base64: {err}"))?;
            let text = String::from_utf8(bytes).map_err(|_| "auth is not UTF-8".to_string())?;
            let (username, password) =
                text.split_once(':').ok_or_else(|| "auth must encode username:password".to_string())?;
            return Ok(Some(Credentials::Basic { username: username.into(), password: password.into() }));
        }
        if self.username.is_empty() && self.password.is_empty() {
            return Ok(None);
        }
        Ok(Some(Credentials::Basic { username: self.username.clone(), password: self.password.clone() }))
    }
}

/// Where one pull attempt goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `host[:port]` to connect to.
    pub host: String,
    pub plain_http: bool,
    /// The repository at that host (rewritten for mirrors).
    pub repository: String,
    /// The registry's own endpoint (where pull secrets apply), not a mirror.
    pub default: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    mirrors: BTreeMap<String, Option<RawMirror>>,
    #[serde(default)]
    configs: BTreeMap<String, Option<RawConfig>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirror {
    #[serde(default)]
    endpoint: Vec<String>,
    #[serde(default, deserialize_with = "ordered_pairs")]
    rewrite: Vec<(String, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    auth: Option<Auth>,
    #[serde(default)]
    tls: Option<Tls>,
}

/// A string map kept in file order.
fn ordered_pairs<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<(String, String)>, D::Error> {
    struct Pairs;
    impl<'de> serde::de::Visitor<'de> for Pairs {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of regular expression to replacement")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::new();
            while let Some(pair) = map.next_entry::<String, String>()? {
                pairs.push(pair);
            }
            Ok(pairs)
        }
    }
    de.deserialize_map(Pairs)
}

fn parse_endpoint(url: &str) -> Result<Endpoint, String> {
    let (plain_http, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (false, rest)
    } else if !url.contains("://") {
        (false, url)
    } else {
        return Err(format!("{url:?}: only http:// and https:// endpoints are supported"));
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() || host.contains(['@', '?', '#', ' ']) {
        return Err(format!("{url:?}: not a host[:port]"));
    }
    let path = path.trim_end_matches('/');
    if !path.is_empty() && path != "v2" {
        return Err(format!("{url:?}: endpoint paths other than /v2 are not supported"));
    }
    Ok(Endpoint { plain_http, host: host.to_string() })
}

impl Registries {
    /// Parses the text of a registries file.
    pub fn parse(text: &str) -> Result<Registries, String> {
        if text.trim().is_empty() {
            return Ok(Registries::default());
        }
        let raw: RawFile = serde_norway::from_str(text).map_err(|err| err.to_string())?;
        let mut registries = Registries::default();
        for (name, mirror) in raw.mirrors {
            let mirror = mirror.unwrap_or(RawMirror { endpoint: Vec::new(), rewrite: Vec::new() });
            let endpoints = mirror
                .endpoint
                .iter()
                .enumerate()
                .map(|(i, url)| parse_endpoint(url).map_err(|e| format!("mirrors.{name}.endpoint[{i}]: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            let rewrites = mirror
                .rewrite
                .into_iter()
                .map(|(pattern, to)| match Regex::new(&pattern) {
                    Ok(regex) => Ok((regex, to)),
                    Err(err) => Err(format!("mirrors.{name}.rewrite {pattern:?}: {err}")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            registries.mirrors.insert(name, Mirror { endpoints, rewrites });
        }
        for (host, config) in raw.configs {
            let config = config.unwrap_or(RawConfig { auth: None, tls: None });
            let auth = config.auth;
            if let Some(auth) = &auth {
                auth.credentials().map_err(|e| format!("configs.{host}.auth: {e}"))?;
            }
            let tls = config.tls.unwrap_or_default();
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(format!("configs.{host}.tls: cert_file and key_file go together"));
            }
            registries.configs.insert(host, HostConfig { auth, tls });
        }
        Ok(registries)
    }

    /// Reads `path`; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<Registries, RegistriesError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                Registries::parse(&text).map_err(|message| RegistriesError::Invalid { path: path.into(), message })
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Registries::default()),
            Err(source) => Err(RegistriesError::Read { path: path.into(), source }),
        }
    }

    /// The mirror entry of `registry`, else the `"*"` one.
    pub fn mirror(&self, registry: &str) -> Option<&Mirror> {
        self.mirrors.get(registry).or_else(|| self.mirrors.get("*"))
    }

    /// The config of `host`, else the `"*"` one.
    pub fn config(&self, host: &str) -> Option<&HostConfig> {
        self.configs.get(host).or_else(|| self.configs.get("*"))
    }

    /// Where to pull `repository` of `registry` from, in order: the mirror
    /// endpoints (rewrites applied), then the registry itself, unless it is
    /// listed among them already. `plain_http` are the hosts that speak HTTP.
    pub fn targets(&self, registry: &str, repository: &str, plain_http: &[String]) -> Vec<Target> {
        let mut targets: Vec<Target> = Vec::new();
        if let Some(mirror) = self.mirror(registry) {
            let rewritten = mirror
                .rewrites
                .iter()
                .find(|(regex, _)| regex.is_match(repository))
                .map(|(regex, to)| regex.replace(repository, to.as_str()).into_owned())
                .unwrap_or_else(|| repository.to_string());
            for endpoint in &mirror.endpoints {
                let default = endpoint.host == registry;
                targets.push(Target {
                    host: endpoint.host.clone(),
                    plain_http: endpoint.plain_http,
                    repository: if default { repository.to_string() } else { rewritten.clone() },
                    default,
                });
            }
        }
        if !targets.iter().any(|t| t.default) {
            targets.push(Target {
                host: registry.to_string(),
                plain_http: plain_http.iter().any(|h| h == registry),
                repository: repository.to_string(),
                default: true,
            });
        }
        targets
    }

    /// The `host:port` of every plain-HTTP mirror endpoint.
    pub fn plain_http_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = Vec::new();
        for endpoint in self.mirrors.values().flat_map(|m| &m.endpoints) {
            if endpoint.plain_http && !hosts.contains(&endpoint.host) {
                hosts.push(endpoint.host.clone());
            }
        }
        hosts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of k3s's private registry documentation.
    const K3S_TLS: &str = r#"
mirrors:
  docker.io:
    endpoint:
      - "https://registry.example.com:5000"
configs:
  "registry.example.com:5000":
    auth:
      username: xxxxxx # this is the registry username
      password: xxxxxx # this is the registry password
    tls:
      cert_file: /path/to/cert_file # path to the cert file used in the registry
      key_file: /path/to/key_file # path to the key file used in the registry
      ca_file: /path/to/ca_file # path to the ca file used in the registry
"#;

    const K3S_REWRITE: &str = r#"
mirrors:
  docker.io:
    endpoint:
      - "https://registry.example.com:5000"
    rewrite:
      "^rancher/(.*)": "mirrorproject/rancher-images/$1"
"#;

    const K3S_WILDCARD: &str = r#"
mirrors:
  "*":
    endpoint:
      - "https://registry.example.com"
  registry.example.com:
configs:
  "*":
    tls:
      insecure_skip_verify: true
"#;

    #[test]
    fn k3s_tls_and_auth_example() {
        let r = Registries::parse(K3S_TLS).expect("parse");
        let config = r.config("registry.example.com:5000").expect("config");
        let auth = config.auth.as_ref().expect("auth");
        assert_eq!(
            auth.credentials().expect("creds"),
            Some(Credentials::Basic { username: "xxxxxx".into(), password: "xxxxxx".into() })
        );
        assert_eq!(config.tls.ca_file.as_deref(), Some(Path::new("/path/to/ca_file")));
        assert_eq!(config.tls.cert_file.as_deref(), Some(Path::new("/path/to/cert_file")));
        assert!(!config.tls.insecure_skip_verify);
        let targets = r.targets("docker.io", "library/busybox", &[]);
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].host, "registry.example.com:5000");
        assert!(!targets[0].plain_http && !targets[0].default);
        assert_eq!((targets[1].host.as_str(), targets[1].default), ("docker.io", true));
        assert!(r.targets("quay.io", "a/b", &[]).iter().all(|t| t.host == "quay.io"));
    }

    #[test]
    fn rewrites_apply_to_mirrors_not_the_default_endpoint() {
        let r = Registries::parse(K3S_REWRITE).expect("parse");
        let targets = r.targets("docker.io", "rancher/coredns-coredns", &[]);
        assert_eq!(targets[0].repository, "mirrorproject/rancher-images/coredns-coredns");
        assert_eq!(targets[1].repository, "rancher/coredns-coredns");
        assert_eq!(r.targets("docker.io", "library/busybox", &[])[0].repository, "library/busybox");
    }

    #[test]
    fn wildcard_mirror_is_the_default_entry() {
        let r = Registries::parse(K3S_WILDCARD).expect("parse");
        let quay = r.targets("quay.io", "x/y", &[]);
        assert_eq!(quay.iter().map(|t| t.host.as_str()).collect::<Vec<_>>(), ["registry.example.com", "quay.io"]);
        // An entry of its own (even empty) overrides "*": only the registry itself.
        let own = r.targets("registry.example.com", "x/y", &[]);
        assert_eq!(own.iter().map(|t| t.host.as_str()).collect::<Vec<_>>(), ["registry.example.com"]);
        assert!(r.config("anything").expect("wildcard config").tls.insecure_skip_verify);
    }

    #[test]
    fn plain_http_endpoints_and_auth_forms() {
        let r = Registries::parse(
            "mirrors:\n  docker.io:\n    endpoint: [\"http://127.0.0.1:5000\", \"https://r.example/v2\"]\n\
             configs:\n  a: {auth: {auth: dXNlcjpwYXNz}}\n  b: {auth: {identitytoken: tok}}\n",
        )
        .expect("parse");
        assert_eq!(r.plain_http_hosts(), ["127.0.0.1:5000"]);
        let targets = r.targets("docker.io", "library/busybox", &[]);
        assert!(targets[0].plain_http && targets[0].host == "127.0.0.1:5000");
        assert_eq!(targets[1].host, "r.example");
        let creds = |h: &str| r.config(h).and_then(|c| c.auth.as_ref()).and_then(|a| a.credentials().ok()).flatten();
        assert_eq!(creds("a"), Some(Credentials::Basic { username: "user".into(), password: "pass".into() }));
        assert_eq!(creds("b"), Some(Credentials::IdentityToken("tok".into())));
        // The local registry is plain HTTP when the caller says so.
        assert!(Registries::default().targets("127.0.0.1:5000", "busybox", &["127.0.0.1:5000".into()])[0].plain_http);
    }

    #[test]
    fn malformed_files_name_the_field() {
        let err = |text: &str| Registries::parse(text).unwrap_err();
        assert!(err("mirrors:\n  docker.io:\n    endpoint: \"http://x\"\n").contains("mirrors"), "endpoint not a list");
        assert!(err("mirrors:\n  docker.io:\n    endpoints: [\"http://x\"]\n").contains("endpoints"));
        assert!(err("mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n").contains("mirrors.docker.io.endpoint[0]"));
        assert!(err("mirrors:\n  docker.io:\n    rewrite: {\"(\": \"x\"}\n").contains("mirrors.docker.io.rewrite"));
        assert!(err("configs:\n  r:\n    auth: {auth: \"!!\"}\n").contains("configs.r.auth"));
        assert!(err("configs:\n  r:\n    tls: {cert_file: /c}\n").contains("configs.r.tls"));
        assert!(err("configs:\n  r:\n    tls: {insecure_skip_verify: maybe}\n").contains("insecure_skip_verify"));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registries.yaml");
        std::fs::write(&path, "mirrors: [1]\n").expect("write");
        let message = Registries::load(&path).unwrap_err().to_string();
        assert!(message.starts_with(&path.display().to_string()), "{message}");
        assert!(Registries::load(&dir.path().join("missing.yaml")).expect("missing").mirrors.is_empty());
    }
}
