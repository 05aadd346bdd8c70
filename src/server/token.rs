//! Join tokens in the k3s format `K10<sha256 hex of the CA PEM>::<user>:<secret>`:
//! the server writes its own to `<data-dir>/server/token` on first start
//! (reused on restart; `--token` sets the secret), and joining agents parse
//! one to pin the server's CA before they send any credential.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// The sha256 (lowercase hex) of a CA bundle exactly as `/cacerts` serves it.
pub fn ca_hash(ca_pem: &str) -> String {
    hex(&Sha256::digest(ca_pem.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random secret of 32 lowercase hex characters.
pub fn random_secret() -> String {
    hex(&rand::random::<[u8; 16]>())
}

/// A token as a user passes it: the full `K10…::user:secret` form, or just a
/// secret (no CA pin).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    /// The CA hash the server must match; `None` for a short token.
    pub ca_hash: Option<String>,
    pub user: String,
    pub secret: String,
}

impl JoinToken {
    pub fn parse(text: &str) -> Result<JoinToken, TokenError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TokenError::Invalid("the token is empty".into()));
        }
        let Some(rest) = text.strip_prefix("K10") else {
            return Ok(JoinToken { ca_hash: None, user: "server".into(), secret: text.to_string() });
        };
        let (hash, credentials) = rest
            .split_once("::")
            .ok_or_else(|| TokenError::Invalid("expected K10<CA hash>::<user>:<secret>".into()))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Invalid(format!("the CA hash {hash:?} is not 64 hex characters")));
        }
        let (user, secret) = credentials.split_once(':').unwrap_or(("server", credentials));
        if secret.is_empty() {
            return Err(TokenError::Invalid("the secret after the CA hash is empty".into()));
        }
        Ok(JoinToken { ca_hash: Some(hash.to_lowercase()), user: user.to_string(), secret: secret.to_string() })
    }
}

/// The server's own token.
#[derive(Clone, Debug)]
pub struct ServerToken {
    pub ca_hash: String,
    pub secret: String,
}

impl std::fmt::Display for ServerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "K10{}::server:{}", self.ca_hash, self.secret)
    }
}

/// Where the server's token lives.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("server").join("token")
}

impl ServerToken {
    /// The token of this server: the secret from `--token` (a bare secret or a
    /// full token), else the one written on an earlier start, else a new random
    /// one; (re)written to `<data-dir>/server/token` with mode 0600.
    pub fn load_or_create(data_dir: &Path, ca_pem: &str, flag: Option<&str>) -> Result<ServerToken, TokenError> {
        let path = token_path(data_dir);
        let ca_hash = ca_hash(ca_pem);
        let secret = match flag {
            Some(flag) => {
                let given = JoinToken::parse(flag)?;
                if let Some(hash) = given.ca_hash.filter(|h| *h != ca_hash) {
                    return Err(TokenError::Invalid(format!(
                        "--token pins CA {hash}, but this server's CA is {ca_hash}"
                    )));
                }
                given.secret
            }
            None => match std::fs::read_to_string(&path) {
                Ok(text) => JoinToken::parse(&text)?.secret,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => random_secret(),
                Err(source) => return Err(TokenError::Io { action: "read", path, source }),
            },
        };
        let token = ServerToken { ca_hash, secret };
        crate::server::pki::write(&path, &format!("{token}\n"), 0o600).map_err(|err| match err {
            crate::server::pki::PkiError::Io { action, path, source } => TokenError::Io { action, path, source },
            other => TokenError::Invalid(other.to_string()),
        })?;
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parses_full_and_short_tokens() {
        let hash = "ab".repeat(32);
        let full = JoinToken::parse(&format!("K10{hash}::server:s3cret\n")).unwrap();
        assert_eq!(full, JoinToken { ca_hash: Some(hash.clone()), user: "server".into(), secret: "s3cret".into() });
        let short = JoinToken::parse("s3cret").unwrap();
        assert_eq!(short.ca_hash, None);
        assert_eq!(short.secret, "s3cret");
        assert!(JoinToken::parse("K10abc::server:x").unwrap_err().to_string().contains("64 hex"));
        assert!(JoinToken::parse(&format!("K10{hash}::server:")).is_err());
        assert!(JoinToken::parse("  ").is_err());
    }

    #[test]
    fn server_token_is_written_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = ServerToken::load_or_create(dir.path(), "CA", None).unwrap();
        assert_eq!(first.ca_hash, ca_hash("CA"));
        assert_eq!(first.secret.len(), 32);
        let written = std::fs::read_to_string(token_path(dir.path())).unwrap();
        assert_eq!(written.trim(), first.to_string());
        assert!(written.starts_with("K10") && written.contains("::server:"));
        let mode = std::fs::metadata(token_path(dir.path())).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = ServerToken::load_or_create(dir.path(), "CA", None).unwrap();
        assert_eq!(again.secret, first.secret);
        let chosen = ServerToken::load_or_create(dir.path(), "CA", Some("mine")).unwrap();
        assert_eq!(chosen.secret, "mine");
        let pinned_elsewhere = format!("K10{}::server:mine", "00".repeat(32));
        assert!(ServerToken::load_or_create(dir.path(), "CA", Some(&pinned_elsewhere)).is_err());
    }
}
