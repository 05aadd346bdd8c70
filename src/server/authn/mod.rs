//! Authentication: who is making a request. Client certificates (x509) and
//! service-account tokens each turn a request into a [`UserInfo`].

pub mod bound_objects;
pub mod serviceaccount;
pub mod x509;

use std::collections::BTreeMap;

/// The authenticated identity of a request, as upstream's `user.Info`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// `admin`, `system:serviceaccount:default:builder`, `system:node:nas`, …
    pub name: String,
    pub uid: String,
    /// Includes `system:authenticated` for every authenticated user.
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// An authenticated user with the given groups (plus `system:authenticated`).
    pub fn new(name: impl Into<String>, groups: impl IntoIterator<Item = String>) -> UserInfo {
        let mut groups: Vec<String> = groups.into_iter().collect();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".to_string());
        }
        UserInfo { name: name.into(), uid: String::new(), groups, extra: BTreeMap::new() }
    }

    /// The identity in-process components use: the cluster's own superuser
    /// (member of `system:masters`), for controllers started by the server.
    pub fn system_masters(name: &str) -> UserInfo {
        UserInfo::new(name, ["system:masters".to_string()])
    }
}

/// The authenticated user of a request, or 401 for anonymous requests.
pub fn authenticate(parts: &http::request::Parts) -> Result<UserInfo, crate::server::error::ApiError> {
    if let Some(Authenticated(user)) = parts.extensions.get() {
        return Ok(user.clone());
    }
    if let Some(crate::server::listener::PeerIdentity(Some(user))) = parts.extensions.get() {
        return Ok(user.clone());
    }
    if let Some(user) = parts.extensions.get::<UserInfo>() {
        return Ok(user.clone());
    }
    if let Some(token) = bearer_token(parts) {
        // The router's `Extension(Arc<TokenSigner>)`; without it no token is accepted.
        let signer = parts.extensions.get::<std::sync::Arc<serviceaccount::TokenSigner>>();
        if let Some(signer) = signer {
            match signer.authenticate(token) {
                Ok(user) => return Ok(user),
                Err(err) => tracing::debug!(error = %err, "bearer token rejected"),
            }
        }
    }
    Err(crate::server::error::ApiError::unauthorized())
}

/// The user the router's authentication step settled on (after
/// impersonation); later steps of the same request read it from here.
#[derive(Clone, Debug)]
pub struct Authenticated(pub UserInfo);

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(parts: &http::request::Parts) -> Option<&str> {
    let value = parts.headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
