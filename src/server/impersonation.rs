//! Impersonation (`kubectl --as=… --as-group=…`): the `Impersonate-User`,
//! `Impersonate-Group` and `Impersonate-Uid` headers replace the request's
//! user when RBAC grants the caller the `impersonate` verb on them.

use super::authn::UserInfo;
use super::authz::{self, rbac::Attributes};
use super::error::ApiError;
use super::state::ApiState;
use http::HeaderMap;

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect()
}

async fn require(
    state: &ApiState,
    user: &UserInfo,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<(), ApiError> {
    let attrs = Attributes::Resource { verb: "impersonate", group: "", resource, namespace, name: Some(name) };
    if authz::allowed(state, user, &attrs).await? {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "",
        resource,
        name,
        &format!(
            "User \"{}\" cannot impersonate resource \"{resource}\" in API group \"\"{}",
            user.name,
            namespace.map(|ns| format!(" in the namespace \"{ns}\"")).unwrap_or_else(|| " at the cluster scope".into())
        ),
    ))
}

/// The user the request acts as: `user` itself, or the one it impersonates.
pub async fn effective_user(state: &ApiState, user: UserInfo, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let Some(target) = header_values(headers, "impersonate-user").first().map(|s| s.to_string()) else {
        if !header_values(headers, "impersonate-group").is_empty() {
            return Err(ApiError::bad_request("requested impersonation of groups without impersonating a user"));
        }
        return Ok(user);
    };
    match target.strip_prefix("system:serviceaccount:").and_then(|rest| rest.split_once(':')) {
        Some((ns, name)) => require(state, &user, "serviceaccounts", Some(ns), name).await?,
        None => require(state, &user, "users", None, &target).await?,
    }
    let mut groups = Vec::new();
    for group in header_values(headers, "impersonate-group") {
        require(state, &user, "groups", None, group).await?;
        groups.push(group.to_string());
    }
    if let Some((ns, _)) = target.strip_prefix("system:serviceaccount:").and_then(|rest| rest.split_once(':')) {
        groups.push("system:serviceaccounts".to_string());
        groups.push(format!("system:serviceaccounts:{ns}"));
    }
    let mut impersonated = UserInfo::new(target, groups);
    if let Some(uid) = header_values(headers, "impersonate-uid").first() {
        impersonated.uid = uid.to_string();
    }
    Ok(impersonated)
}
