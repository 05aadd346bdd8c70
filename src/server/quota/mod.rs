//! ResourceQuota admission: a create that would push a namespace's usage
//! past a quota's `spec.hard` is refused with 403, in upstream's words.
//! Usage is counted from the stored objects at admission time (upstream
//! reads the controller's `status.used` instead); the controller in
//! `controllers::resourcequota` keeps `status` current for clients.

pub mod usage;

use super::catalog::{Catalog, ResourceInfo};
use super::error::ApiError;
use super::registry::{ListOptions, Registry};
use super::rest::Call;
use serde_json::Value;
use usage::Usage;

/// The stored resource of `group`/`plural`, whichever version serves it.
pub fn stored(catalog: &Catalog, group: &str, plural: &str) -> Option<std::sync::Arc<ResourceInfo>> {
    catalog.all().into_iter().find(|r| r.group == group && r.plural == plural && r.holds_objects())
}

/// The ResourceQuotas of a namespace that apply to every object (scoped
/// quotas are not enforced yet).
pub async fn quotas(registry: &Registry, catalog: &Catalog, ns: &str) -> Result<Vec<Value>, ApiError> {
    let Some(res) = catalog.lookup("", "v1", "resourcequotas") else { return Ok(Vec::new()) };
    let items = registry.list(&res, Some(ns), &ListOptions::default()).await?.items;
    Ok(items
        .into_iter()
        .filter(|q| q.pointer("/spec/scopes").is_none() && q.pointer("/spec/scopeSelector").is_none())
        .collect())
}

/// The usage of every object of `res` in `ns`, for the resources `hard` limits.
pub async fn namespace_usage(
    registry: &Registry,
    res: &ResourceInfo,
    ns: &str,
    hard: &Usage,
) -> Result<Usage, ApiError> {
    let mut used = Usage::new();
    for obj in registry.list(res, Some(ns), &ListOptions::default()).await?.items {
        usage::add_masked(&mut used, &usage::object_usage(&res.group, &res.plural, &obj), hard);
    }
    Ok(used)
}

/// Admits the create of `obj` against every quota of its namespace.
pub async fn admit_create(call: &Call, obj: &Value) -> Result<(), ApiError> {
    let res = &call.resource;
    let Some(ns) = call.namespace().filter(|_| res.namespaced) else { return Ok(()) };
    let requested = usage::object_usage(&res.group, &res.plural, obj);
    if requested.is_empty() {
        return Ok(());
    }
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let forbidden = |message: String| ApiError::forbidden(&res.group, &res.plural, name, &message);
    let is_pod = res.group.is_empty() && res.plural == "pods";
    let (registry, catalog) = (&call.state.registry, &call.state.catalog);
    for quota in quotas(registry, catalog, ns).await? {
        let quota_name = quota.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let hard = usage::parse_hard(quota.pointer("/spec/hard"));
        if is_pod && let Some(missing) = usage::missing_compute(&hard, obj) {
            return Err(forbidden(format!("failed quota: {quota_name}: {missing}")));
        }
        let mut charged = Usage::new();
        usage::add_masked(&mut charged, &requested, &hard);
        if charged.is_empty() {
            continue;
        }
        let used = namespace_usage(registry, res, ns, &hard).await?;
        usage::check(quota_name, &hard, &used, &charged).map_err(forbidden)?;
    }
    Ok(())
}
