//! Bootstrap tokens as upstream stores them: `<id>.<secret>`
//! (`[a-z0-9]{6}.[a-z0-9]{16}`) in the Secret `kube-system/bootstrap-token-<id>`
//! of type `bootstrap.kubernetes.io/token`, with an optional expiration. The
//! join endpoint accepts one in place of the server's own secret.

use super::client::Client;
use super::error::ApiError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A bootstrap token `<id>.<secret>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
}

fn is_token_part(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn random_part(len: usize) -> String {
    (0..len).map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())])).collect()
}

impl BootstrapToken {
    pub fn generate() -> BootstrapToken {
        BootstrapToken { id: random_part(6), secret: random_part(16) }
    }

    /// `<id>.<secret>`, or `None` if the text is not shaped like one.
    pub fn parse(text: &str) -> Option<BootstrapToken> {
        let (id, secret) = text.trim().split_once('.')?;
        (is_token_part(id, 6) && is_token_part(secret, 16))
            .then(|| BootstrapToken { id: id.to_string(), secret: secret.to_string() })
    }

    pub fn secret_name(id: &str) -> String {
        format!("bootstrap-token-{id}")
    }

    /// The Secret storing this token; `expiration` is RFC 3339.
    pub fn secret_object(&self, expiration: Option<&str>, description: &str) -> Value {
        let mut data = serde_json::Map::new();
        let mut put = |key: &str, value: &str| {
            data.insert(key.to_string(), json!(STANDARD.encode(value)));
        };
        put("token-id", &self.id);
        put("token-secret", &self.secret);
        put("usage-bootstrap-authentication", "true");
        put("usage-bootstrap-signing", "true");
        put("auth-extra-groups", "system:bootstrappers:kube:default-node-token");
        if !description.is_empty() {
            put("description", description);
        }
        if let Some(expiration) = expiration {
            put("expiration", expiration);
        }
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
            "metadata": {"name": BootstrapToken::secret_name(&self.id), "namespace": "kube-system"},
            "data": data,
        })
    }
}

/// A decoded field of a bootstrap-token Secret.
pub fn field(secret: &Value, key: &str) -> Option<String> {
    let encoded = secret.get("data")?.get(key)?.as_str()?;
    String::from_utf8(STANDARD.decode(encoded).ok()?).ok()
}

/// Whether the Secret holds `token`, is meant for authentication and has not expired.
pub fn secret_accepts(secret: &Value, token: &BootstrapToken, now: jiff::Timestamp) -> bool {
    let stored = field(secret, "token-secret").unwrap_or_default();
    let matches: bool = stored.as_bytes().ct_eq(token.secret.as_bytes()).into();
    let typed = secret.get("type").and_then(Value::as_str) == Some(SECRET_TYPE);
    let usable = field(secret, "usage-bootstrap-authentication").as_deref() == Some("true");
    let fresh = match field(secret, "expiration") {
        Some(text) => text.parse::<jiff::Timestamp>().is_ok_and(|expires| expires > now),
        None => true,
    };
    matches && typed && usable && fresh && field(secret, "token-id").as_deref() == Some(token.id.as_str())
}

/// Whether `text` is a valid bootstrap token stored in the cluster.
pub async fn verify(client: &Client, text: &str) -> Result<bool, ApiError> {
    let Some(token) = BootstrapToken::parse(text) else { return Ok(false) };
    let path = format!("/api/v1/namespaces/kube-system/secrets/{}", BootstrapToken::secret_name(&token.id));
    match client.get(&path).await {
        Ok(secret) => Ok(secret_accepts(&secret, &token, jiff::Timestamp::now())),
        Err(err) if err.code == 404 => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_upstream_shape() {
        let token = BootstrapToken::generate();
        assert_eq!(BootstrapToken::parse(&format!("{}.{}", token.id, token.secret)), Some(token));
        assert_eq!(BootstrapToken::parse("abcdef.0123456789abcdef").map(|t| t.id), Some("abcdef".into()));
        assert_eq!(BootstrapToken::parse("ABCDEF.0123456789abcdef"), None);
        assert_eq!(BootstrapToken::parse("abcdef.short"), None);
        assert_eq!(BootstrapToken::parse("server-secret"), None);
    }

    #[test]
    fn secrets_accept_their_token_until_it_expires() {
        let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let secret = token.secret_object(Some("2026-01-02T00:00:00Z"), "test");
        assert_eq!(secret["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(field(&secret, "description").as_deref(), Some("test"));
        assert!(secret_accepts(&secret, &token, now));
        assert!(!secret_accepts(&secret, &token, "2026-01-03T00:00:00Z".parse().unwrap()));
        let wrong = BootstrapToken { secret: "0123456789abcdeX".into(), ..token.clone() };
        assert!(!secret_accepts(&secret, &wrong, now));
        assert!(secret_accepts(&token.secret_object(None, ""), &token, now));
    }
}
