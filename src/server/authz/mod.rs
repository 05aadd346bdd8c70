//! Authorization: whether a user may do a verb on a resource or a
//! non-resource path. Members of `system:masters` may do everything (as
//! upstream, without consulting RBAC); everyone else is decided by RBAC over
//! the stored roles and bindings, and node identities also by [`node::restrict`].

pub mod bootstrap_roles;
pub mod node;
pub mod rbac;

use super::authn::UserInfo;
use super::catalog::ResourceInfo;
use super::error::ApiError;
use super::registry::ListOptions;
use super::request_info::RequestInfo;
use super::state::ApiState;
use rbac::Attributes;
use serde_json::Value;

fn is_master(user: &UserInfo) -> bool {
    user.groups.iter().any(|g| g == "system:masters")
}

/// Lists a resource from this member's state (no read-index round trip:
/// authorization tolerates the same staleness as upstream's informer caches).
async fn stale_list(state: &ApiState, plural: &str, namespace: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let Some(res) = state.catalog.lookup("rbac.authorization.k8s.io", "v1", plural) else { return Ok(Vec::new()) };
    let opts = ListOptions { resource_version: Some(0), ..Default::default() };
    Ok(state.registry.list(&res, namespace, &opts).await?.items)
}

async fn role(state: &ApiState, kind: &str, name: &str, namespace: Option<&str>) -> Result<Option<Value>, ApiError> {
    let (plural, ns) = match kind {
        "ClusterRole" => ("clusterroles", None),
        "Role" => ("roles", namespace),
        _ => return Ok(None),
    };
    let Some(res) = state.catalog.lookup("rbac.authorization.k8s.io", "v1", plural) else { return Ok(None) };
    state.registry.try_get(&res, ns, name).await
}

/// Whether RBAC allows the request.
pub async fn allowed(state: &ApiState, user: &UserInfo, attrs: &Attributes<'_>) -> Result<bool, ApiError> {
    if is_master(user) {
        return Ok(true);
    }
    for binding in stale_list(state, "clusterrolebindings", None).await? {
        if rbac::binding_matches(&binding, user)
            && let Some(("ClusterRole", name)) = rbac::role_ref(&binding)
            && let Some(role) = role(state, "ClusterRole", name, None).await?
            && rbac::role_allows(&role, attrs)
        {
            return Ok(true);
        }
    }
    if let Some(ns) = attrs.namespace() {
        for binding in stale_list(state, "rolebindings", Some(ns)).await? {
            if rbac::binding_matches(&binding, user)
                && let Some((kind, name)) = rbac::role_ref(&binding)
                && let Some(role) = role(state, kind, name, Some(ns)).await?
                && rbac::role_allows(&role, attrs)
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Every rule RBAC grants the user in `namespace` (cluster-wide rules
/// included), for SelfSubjectRulesReview: ClusterRoleBindings' roles first,
/// then the namespace's RoleBindings' roles.
pub async fn rules(state: &ApiState, user: &UserInfo, namespace: &str) -> Result<Vec<Value>, ApiError> {
    let mut rules = Vec::new();
    let mut add = |role: Option<Value>| {
        if let Some(list) = role.as_ref().and_then(|r| r.get("rules")).and_then(Value::as_array) {
            rules.extend(list.iter().cloned());
        }
    };
    for binding in stale_list(state, "clusterrolebindings", None).await? {
        if rbac::binding_matches(&binding, user)
            && let Some(("ClusterRole", name)) = rbac::role_ref(&binding)
        {
            add(role(state, "ClusterRole", name, None).await?);
        }
    }
    if !namespace.is_empty() {
        for binding in stale_list(state, "rolebindings", Some(namespace)).await? {
            if rbac::binding_matches(&binding, user)
                && let Some((kind, name)) = rbac::role_ref(&binding)
            {
                add(role(state, kind, name, Some(namespace)).await?);
            }
        }
    }
    Ok(rules)
}

/// Allows a resource request or answers 403 naming the user, verb and resource.
pub async fn authorize(
    state: &ApiState,
    user: &UserInfo,
    info: &RequestInfo,
    res: &ResourceInfo,
) -> Result<(), ApiError> {
    let resource = match &info.subresource {
        Some(sub) => format!("{}/{sub}", res.plural),
        None => res.plural.clone(),
    };
    let namespace = if res.namespaced { info.namespace.as_deref() } else { None };
    let attrs = Attributes::Resource {
        verb: info.verb,
        group: &res.group,
        resource: &resource,
        namespace,
        name: info.name.as_deref(),
    };
    if allowed(state, user, &attrs).await? {
        return node::restrict(state, user, &attrs).await;
    }
    let scope = match namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    let group = format!("\"{}\"", res.group);
    Err(ApiError::forbidden(
        &res.group,
        &res.plural,
        info.name.as_deref().unwrap_or_default(),
        &format!("User \"{}\" cannot {} resource \"{resource}\" in API group {group}{scope}", user.name, info.verb),
    ))
}

/// Allows a non-resource request (`/healthz`, `/version`, discovery, OpenAPI) or answers 403.
pub async fn authorize_path(
    state: &ApiState,
    user: &UserInfo,
    method: &http::Method,
    path: &str,
) -> Result<(), ApiError> {
    let verb = match *method {
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::POST => "post",
        http::Method::PUT => "put",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "*",
    };
    if allowed(state, user, &Attributes::NonResource { verb, path }).await? {
        return Ok(());
    }
    Err(ApiError::new(
        403,
        super::error::Reason::Forbidden,
        format!("forbidden: User \"{}\" cannot {verb} path \"{path}\"", user.name),
    ))
}
