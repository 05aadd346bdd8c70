//! The join endpoints agents bootstrap with, outside the API's authentication
//! (as k3s's): `GET /cacerts` returns the CA bundle to anyone (the joining
//! side checks its hash against the token), and `POST
//! /v1-kube/client-kubelet.crt`, authenticated by the join token's secret
//! or a bootstrap token (HTTP Basic, compared in constant time), signs the agent's CSR as
//! `CN=system:node:<name>, O=system:nodes` for a year. A node password
//! (hashed into the Secret `kube-system/<node>.node-password.kube`) keeps a
//! second machine from taking over a node name.

use super::client::Client;
use super::error::{ApiError, Reason};
use super::token::{ServerToken, hex, random_secret};
use axum::Router;
use axum::body::Bytes;
use axum::extract::Extension;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Where agents send their CSR.
pub const CLIENT_CERT_PATH: &str = "/v1-kube/client-kubelet.crt";
/// The user of node client certificates is `system:node:<name>` in this group.
pub const NODES_GROUP: &str = "system:nodes";

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cannot read the CA key")]
    Pki(#[from] super::pki::PkiError),
    #[error("cannot {what}")]
    Certificate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
}

/// What an agent sends to get its node certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub node_name: String,
    pub node_password: String,
    /// A PEM certificate signing request for the agent's own key; its subject is ignored.
    pub csr: String,
}

/// The answer: the node's client certificate and the CA bundle (PEM).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinResponse {
    pub certificate: String,
    pub ca: String,
}

/// The CA, the token and an API client that records node passwords.
pub struct JoinService {
    ca_pem: String,
    ca_key: KeyPair,
    token: ServerToken,
    client: Client,
}

impl JoinService {
    /// `tls_dir` holds `ca.crt`/`ca.key`; `client` must be allowed to read and
    /// create Secrets in kube-system.
    pub fn new(tls_dir: &Path, token: ServerToken, client: Client) -> Result<JoinService, JoinError> {
        let ca_pem = super::pki::read(&tls_dir.join("ca.crt"))?;
        let ca_key = KeyPair::from_pem(&super::pki::read(&tls_dir.join("ca.key"))?)
            .map_err(|source| JoinError::Certificate { what: "parse the CA key", source })?;
        Ok(JoinService { ca_pem, ca_key, token, client })
    }

    /// Signs a CSR as the client certificate of `node`.
    pub fn sign_node_csr(&self, csr_pem: &str, node: &str) -> Result<String, ApiError> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|err| ApiError::bad_request(format!("invalid certificate signing request: {err}")))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, NODES_GROUP);
        dn.push(DnType::CommonName, format!("system:node:{node}"));
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let today = jiff::Zoned::now().date();
        let start = today.yesterday().unwrap_or(today);
        let end = start.checked_add(jiff::Span::new().years(1)).unwrap_or(start);
        // Months and days are in 1..=12 and 1..=31, so the casts are exact.
        params.not_before = rcgen::date_time_ymd(i32::from(start.year()), start.month() as u8, start.day() as u8);
        params.not_after = rcgen::date_time_ymd(i32::from(end.year()), end.month() as u8, end.day() as u8);
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem, &self.ca_key)
            .map_err(|err| ApiError::internal("read the CA certificate", &err))?;
        let cert = params
            .signed_by(&csr.public_key, &issuer)
            .map_err(|err| ApiError::internal("sign a node certificate", &err))?;
        Ok(cert.pem())
    }
}

/// The join routes; they need `Extension(Arc<JoinService>)` and must sit
/// outside the API's authentication layer.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/cacerts", get(cacerts)).route(CLIENT_CERT_PATH, post(client_certificate))
}

fn not_serving() -> ApiError {
    ApiError::new(503, Reason::ServiceUnavailable, "this server does not accept joining nodes")
}

async fn cacerts(service: Option<Extension<Arc<JoinService>>>) -> Response {
    match service {
        Some(Extension(service)) => ([(header::CONTENT_TYPE, "text/plain")], service.ca_pem.clone()).into_response(),
        None => not_serving().into_response(),
    }
}

/// The secret of an `Authorization: Basic <user:secret>` header.
pub(crate) fn basic_secret(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':')?.1.to_string())
}

pub(crate) fn same_secret(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// A DNS-1123 subdomain, as Node names must be.
fn valid_node_name(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| alnum(b) || b == b'-' || b == b'.')
        && name.bytes().next().is_some_and(alnum)
        && name.bytes().last().is_some_and(alnum)
}

/// The name of the Secret holding a node's password hash.
pub fn password_secret_name(node: &str) -> String {
    format!("{node}.node-password.kube")
}

/// `sha256:<salt>:<hex digest of salt + password>`.
fn hash_password(salt: &str, password: &str) -> String {
    let digest = Sha256::digest(format!("{salt}{password}").as_bytes());
    format!("sha256:{salt}:{}", hex(&digest))
}

fn password_matches(stored: &str, password: &str) -> bool {
    let mut parts = stored.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("sha256"), Some(salt), Some(_)) => same_secret(&hash_password(salt, password), stored),
        _ => false,
    }
}

fn stored_hash(secret: &Value) -> Option<String> {
    let encoded = secret.pointer("/data/hash")?.as_str()?;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).ok()?).ok()
}

fn password_refused(node: &str) -> ApiError {
    ApiError::new(
        403,
        Reason::Forbidden,
        format!(
            "node {node:?} is already registered with a different node password: another machine uses this \
             name (choose another --node-name, or delete the Secret kube-system/{} to let this machine take it over)",
            password_secret_name(node)
        ),
    )
}

/// Records the node password on first join; later joins must present the same one.
async fn check_node_password(client: &Client, node: &str, password: &str) -> Result<(), ApiError> {
    let path = format!("/api/v1/namespaces/kube-system/secrets/{}", password_secret_name(node));
    for _ in 0..2 {
        match client.get(&path).await {
            Ok(secret) => {
                return match stored_hash(&secret) {
                    Some(hash) if password_matches(&hash, password) => Ok(()),
                    _ => Err(password_refused(node)),
                };
            }
            Err(err) if err.code == 404 => {}
            Err(err) => return Err(err),
        }
        let hash = hash_password(&random_secret(), password);
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": password_secret_name(node), "namespace": "kube-system",
                         "labels": {"kube.io/node-password": node}},
            "immutable": true,
            "data": {"hash": base64::engine::general_purpose::STANDARD.encode(hash)},
        });
        match client.create("/api/v1/namespaces/kube-system/secrets", secret).await {
            Ok(_) => return Ok(()),
            // Another join of the same name won the race: compare with its password.
            Err(err) if err.code == 409 => continue,
            Err(err) => return Err(err),
        }
    }
    Err(password_refused(node))
}

async fn client_certificate(
    service: Option<Extension<Arc<JoinService>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<JoinResponse>, ApiError> {
    let Some(Extension(service)) = service else { return Err(not_serving()) };
    let secret = basic_secret(&headers).unwrap_or_default();
    let authorized = !secret.is_empty()
        && (same_secret(&secret, &service.token.secret)
            || super::token_bootstrap::verify(&service.client, &secret).await?);
    if !authorized {
        tracing::warn!("join request refused: wrong or missing token");
        return Err(ApiError::new(401, Reason::Unauthorized, "the join token is not valid for this server"));
    }
    let request: JoinRequest =
        serde_json::from_slice(&body).map_err(|err| ApiError::bad_request(format!("invalid join request: {err}")))?;
    let node = request.node_name.as_str();
    tracing::info!(node, "join request");
    if !valid_node_name(node) {
        return Err(ApiError::bad_request(format!(
            "invalid node name {node:?}: must be lowercase letters, digits, '-' and '.', starting and ending \
             with a letter or digit"
        )));
    }
    if request.node_password.len() < 16 {
        return Err(ApiError::bad_request("the node password must be at least 16 characters"));
    }
    if let Err(err) = check_node_password(&service.client, node, &request.node_password).await {
        tracing::warn!(node, error = %err.message, "join request refused");
        return Err(err);
    }
    let certificate = service.sign_node_csr(&request.csr, node)?;
    tracing::info!(node, "issued a node client certificate");
    Ok(axum::Json(JoinResponse { certificate, ca: service.ca_pem.clone() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_salt_and_compare() {
        let stored = hash_password("salt", "p4ssword-long-enough");
        assert!(stored.starts_with("sha256:salt:"));
        assert!(password_matches(&stored, "p4ssword-long-enough"));
        assert!(!password_matches(&stored, "another-password-x"));
        assert!(!password_matches("garbage", "p4ssword-long-enough"));
    }

    #[test]
    fn basic_auth_secret_and_node_names() {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode("node:s3cret");
        headers.insert(header::AUTHORIZATION, format!("Basic {encoded}").parse().unwrap());
        assert_eq!(basic_secret(&headers).as_deref(), Some("s3cret"));
        headers.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert_eq!(basic_secret(&headers), None);
        assert!(valid_node_name("n2") && valid_node_name("nas.home"));
        assert!(!valid_node_name("N2") && !valid_node_name("-a") && !valid_node_name(""));
    }

    #[test]
    fn signs_a_csr_as_the_node_whatever_its_subject() {
        let dir = tempfile::tempdir().unwrap();
        crate::server::pki::Authority::load_or_create(dir.path()).unwrap();
        let token = ServerToken { ca_hash: String::new(), secret: "s".into() };
        let client = Client::new(Router::new(), crate::server::authn::UserInfo::default());
        let service = JoinService::new(dir.path(), token, client).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "system:admin");
        params.distinguished_name.push(DnType::OrganizationName, "system:masters");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let pem = service.sign_node_csr(&csr, "n2").unwrap();
        let der =
            <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::from_pem_slice(pem.as_bytes())
                .unwrap();
        let user = crate::server::authn::x509::user_of(&der).unwrap();
        assert_eq!(user.name, "system:node:n2");
        assert_eq!(user.groups, vec![NODES_GROUP.to_string(), "system:authenticated".to_string()]);
        assert!(service.sign_node_csr("not a csr", "n2").unwrap_err().code == 400);
    }
}
