//! Service-account tokens: ES256 JWTs with upstream's claims, signed by a
//! P-256 key kept in `<data-dir>/tls/service-account.key`, issued for
//! TokenRequests and verified into the service account's [`UserInfo`].

use super::UserInfo;
use crate::server::pki::{self, PkiError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The issuer of every token, as upstream's default `--service-account-issuer`.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The audience the API server accepts (upstream's `--api-audiences` defaults to the issuer).
pub const API_AUDIENCE: &str = ISSUER;
/// How far clocks may disagree, as upstream's validator allows.
const LEEWAY_SECONDS: i64 = 60;
/// The DER prefix of a P-256 SubjectPublicKeyInfo; the uncompressed point follows.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot keep the service-account key")]
    Store(#[from] PkiError),
    #[error("cannot create the service-account key: {0}")]
    Generate(rcgen::Error),
    #[error("the service-account key {path} is not a P-256 PKCS#8 key")]
    BadKey { path: String },
    #[error("cannot sign a token")]
    Sign,
    #[error("cannot encode the token claims")]
    Encode(#[source] serde_json::Error),
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by {0:?}, not by this cluster")]
    Issuer(String),
    #[error("the token is not meant for this audience")]
    Audience,
}

/// A reference to the service account or pod a token is bound to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` claim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaim {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
}

/// The claims of a service-account token, named as upstream names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaim,
}

/// What a token is requested for (a TokenRequest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub namespace: String,
    pub service_account: ObjectRef,
    pub pod: Option<ObjectRef>,
    /// Empty means the API server's own audience.
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

/// Signs and verifies service-account tokens with the cluster's key.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    key_id: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl TokenSigner {
    /// Loads `dir/service-account.key`, creating it (mode 0600) on first start.
    pub fn load_or_create(dir: &Path) -> Result<TokenSigner, TokenError> {
        let path = dir.join("service-account.key");
        let pem = if path.exists() {
            pki::read(&path)?
        } else {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(TokenError::Generate)?;
            let pem = key.serialize_pem();
            pki::write(&path, &pem, 0o600)?;
            pem
        };
        let bad = || TokenError::BadKey { path: path.display().to_string() };
        let der = rcgen::KeyPair::from_pem(&pem).map_err(|_| bad())?.serialize_der();
        TokenSigner::from_pkcs8(&der).map_err(|_| bad())
    }

    /// A signer from a PKCS#8 DER P-256 key.
    pub fn from_pkcs8(der: &[u8]) -> Result<TokenSigner, TokenError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|_| TokenError::BadKey { path: String::from("(in memory)") })?;
        let spki = [P256_SPKI_PREFIX, key.public_key().as_ref()].concat();
        let key_id = URL_SAFE_NO_PAD.encode(Sha256::digest(&spki));
        Ok(TokenSigner { key, key_id, rng })
    }

    /// A signer with a fresh key that is kept nowhere (tests, in-process clusters).
    pub fn ephemeral() -> Result<TokenSigner, TokenError> {
        let rng = SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(|_| TokenError::Sign)?;
        TokenSigner::from_pkcs8(der.as_ref())
    }

    /// The key id in every token's header: base64url SHA-256 of the public key's DER, as upstream.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The claims of a token for `request`, issued at `now` (Unix seconds).
    pub fn claims(request: &TokenRequest, now: i64) -> Claims {
        let audiences =
            if request.audiences.is_empty() { vec![API_AUDIENCE.to_string()] } else { request.audiences.clone() };
        Claims {
            iss: ISSUER.to_string(),
            sub: format!("system:serviceaccount:{}:{}", request.namespace, request.service_account.name),
            aud: audiences,
            exp: now + request.expiration_seconds,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: KubernetesClaim {
                namespace: request.namespace.clone(),
                serviceaccount: request.service_account.clone(),
                pod: request.pod.clone(),
            },
        }
    }

    /// Signs `claims` into a compact JWT.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let header = Header { alg: "ES256".into(), kid: Some(self.key_id.clone()) };
        let header = serde_json::to_vec(&header).map_err(TokenError::Encode)?;
        let payload = serde_json::to_vec(claims).map_err(TokenError::Encode)?;
        let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let signature = self.key.sign(&self.rng, signing_input.as_bytes()).map_err(|_| TokenError::Sign)?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())))
    }

    /// Issues a token for `request`, valid from now.
    pub fn issue(&self, request: &TokenRequest) -> Result<(String, Claims), TokenError> {
        let claims = TokenSigner::claims(request, now());
        Ok((self.sign(&claims)?, claims))
    }

    /// The claims of a valid token for one of `audiences`, checked at `now`.
    pub fn verify_at(&self, token: &str, audiences: &[&str], now: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not three dot-separated parts"));
        };
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed("not base64url"));
        let header: Header =
            serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed("bad header"))?;
        if header.alg != "ES256" {
            return Err(TokenError::Malformed("not ES256"));
        }
        let signing_input = &token[..token.len() - signature.len() - 1];
        ring::signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(signing_input.as_bytes(), &decode(signature)?)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims =
            serde_json::from_slice(&decode(payload)?).map_err(|_| TokenError::Malformed("bad claims"))?;
        if claims.iss != ISSUER {
            return Err(TokenError::Issuer(claims.iss));
        }
        if now > claims.exp + LEEWAY_SECONDS {
            return Err(TokenError::Expired);
        }
        if now + LEEWAY_SECONDS < claims.nbf {
            return Err(TokenError::NotYetValid);
        }
        if !claims.aud.iter().any(|a| audiences.contains(&a.as_str())) {
            return Err(TokenError::Audience);
        }
        let expected_sub =
            format!("system:serviceaccount:{}:{}", claims.kubernetes.namespace, claims.kubernetes.serviceaccount.name);
        if claims.sub != expected_sub {
            return Err(TokenError::Malformed("subject does not match the kubernetes.io claim"));
        }
        Ok(claims)
    }

    /// The service account a token for the API server names.
    pub fn authenticate(&self, token: &str) -> Result<UserInfo, TokenError> {
        self.verify_at(token, &[API_AUDIENCE], now()).map(|claims| user_of(&claims))
    }
}

/// The identity of a service account, with upstream's groups and extras.
pub fn user_of(claims: &Claims) -> UserInfo {
    let ns = &claims.kubernetes.namespace;
    let mut user = UserInfo::new(
        format!("system:serviceaccount:{ns}:{}", claims.kubernetes.serviceaccount.name),
        ["system:serviceaccounts".to_string(), format!("system:serviceaccounts:{ns}")],
    );
    user.uid = claims.kubernetes.serviceaccount.uid.clone();
    if let Some(pod) = &claims.kubernetes.pod {
        user.extra.insert("authentication.kubernetes.io/pod-name".into(), vec![pod.name.clone()]);
        user.extra.insert("authentication.kubernetes.io/pod-uid".into(), vec![pod.uid.clone()]);
    }
    if !claims.jti.is_empty() {
        user.extra.insert("authentication.kubernetes.io/credential-id".into(), vec![format!("JTI={}", claims.jti)]);
    }
    user
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> TokenRequest {
        TokenRequest {
            namespace: "default".into(),
            service_account: ObjectRef { name: "builder".into(), uid: "sa-uid".into() },
            pod: Some(ObjectRef { name: "web-1".into(), uid: "pod-uid".into() }),
            audiences: Vec::new(),
            expiration_seconds: 3600,
        }
    }

    #[test]
    fn issued_tokens_verify_to_the_service_account() {
        let signer = TokenSigner::ephemeral().unwrap();
        let (token, claims) = signer.issue(&request()).unwrap();
        assert_eq!(claims.aud, vec![API_AUDIENCE.to_string()]);
        let user = signer.authenticate(&token).unwrap();
        assert_eq!(user.name, "system:serviceaccount:default:builder");
        assert_eq!(user.uid, "sa-uid");
        assert_eq!(
            user.groups,
            ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"].map(String::from)
        );
        assert_eq!(user.extra["authentication.kubernetes.io/pod-name"], vec!["web-1".to_string()]);
    }

    #[test]
    fn claims_are_named_as_upstream() {
        let claims = TokenSigner::claims(&request(), 1000);
        let value = serde_json::to_value(&claims).unwrap();
        assert_eq!(value["iss"], ISSUER);
        assert_eq!(value["sub"], "system:serviceaccount:default:builder");
        assert_eq!(value["exp"], 4600);
        assert_eq!(value["kubernetes.io"]["serviceaccount"]["uid"], "sa-uid");
        assert_eq!(value["kubernetes.io"]["pod"]["name"], "web-1");
    }

    #[test]
    fn expired_tokens_are_rejected() {
        let signer = TokenSigner::ephemeral().unwrap();
        let token = signer.sign(&TokenSigner::claims(&request(), 1000)).unwrap();
        assert!(signer.verify_at(&token, &[API_AUDIENCE], 4600).is_ok());
        assert!(matches!(
            signer.verify_at(&token, &[API_AUDIENCE], 4600 + LEEWAY_SECONDS + 1),
            Err(TokenError::Expired)
        ));
        assert!(matches!(
            signer.verify_at(&token, &[API_AUDIENCE], 900 - LEEWAY_SECONDS),
            Err(TokenError::NotYetValid)
        ));
    }

    #[test]
    fn other_audiences_are_rejected() {
        let signer = TokenSigner::ephemeral().unwrap();
        let mut req = request();
        req.audiences = vec!["vault".into()];
        let (token, _) = signer.issue(&req).unwrap();
        assert!(matches!(signer.authenticate(&token), Err(TokenError::Audience)));
        assert!(signer.verify_at(&token, &["vault"], now()).is_ok());
    }

    #[test]
    fn tampered_or_foreign_tokens_are_rejected() {
        let signer = TokenSigner::ephemeral().unwrap();
        let (token, mut claims) = signer.issue(&request()).unwrap();
        claims.kubernetes.serviceaccount.name = "admin".into();
        claims.sub = "system:serviceaccount:default:admin".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert!(matches!(signer.authenticate(&forged), Err(TokenError::Signature)));
        let other = TokenSigner::ephemeral().unwrap();
        assert!(matches!(other.authenticate(&token), Err(TokenError::Signature)));
        assert!(matches!(signer.authenticate("not-a-jwt"), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn the_key_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = TokenSigner::load_or_create(dir.path()).unwrap();
        let (token, _) = first.issue(&request()).unwrap();
        let second = TokenSigner::load_or_create(dir.path()).unwrap();
        assert_eq!(first.key_id(), second.key_id());
        assert!(second.authenticate(&token).is_ok());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("service-account.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    fn parts(authorization: Option<&str>, signer: Option<std::sync::Arc<TokenSigner>>) -> http::request::Parts {
        let mut builder = http::Request::builder().uri("/api/v1/pods");
        if let Some(value) = authorization {
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        let (mut parts, ()) = builder.body(()).unwrap().into_parts();
        if let Some(signer) = signer {
            parts.extensions.insert(signer);
        }
        parts
    }

    #[test]
    fn requests_authenticate_with_a_bearer_token() {
        let signer = std::sync::Arc::new(TokenSigner::ephemeral().unwrap());
        let (token, _) = signer.issue(&request()).unwrap();
        let user = super::super::authenticate(&parts(Some(&format!("Bearer {token}")), Some(signer.clone()))).unwrap();
        assert_eq!(user.name, "system:serviceaccount:default:builder");
        let rejected = super::super::authenticate(&parts(Some("Bearer nope"), Some(signer.clone())));
        assert_eq!(rejected.err().map(|e| e.code), Some(401));
        let no_signer = super::super::authenticate(&parts(Some(&format!("Bearer {token}")), None));
        assert_eq!(no_signer.err().map(|e| e.code), Some(401));
        assert_eq!(super::super::authenticate(&parts(None, Some(signer))).err().map(|e| e.code), Some(401));
    }
}
