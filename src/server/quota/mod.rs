//! ResourceQuota admission: a create that would push a namespace's usage
//! past a quota's `spec.hard` is refused with 403, in upstream's words.
//! Usage is counted from the stored objects at admission time (upstream
//! reads the controller's `status.used` instead), and creates charged to a
//! quota are serialised on this server until stored, so two racing creates
//! cannot both take the last unit; the controller in
//! `controllers::resourcequota` keeps `status` current for clients.

pub mod scope;
pub mod usage;

use super::catalog::{Catalog, ResourceInfo};
use super::error::ApiError;
use super::registry::{ListOptions, Registry};
use super::rest::Call;
use serde_json::Value;
use std::sync::{Arc, LazyLock};
use tokio::sync::{Mutex, OwnedMutexGuard};
use usage::Usage;

/// Held from the quota check of a create until the object is stored.
static CHARGING: LazyLock<Arc<Mutex<()>>> = LazyLock::new(|| Arc::new(Mutex::new(())));

/// An admitted create; keep it until the object is stored (it holds the
/// charging lock when a quota was charged).
#[must_use = "hold the admission until the object is stored"]
pub struct Admitted {
    _charging: Option<OwnedMutexGuard<()>>,
}

/// The stored resource of `group`/`plural`, whichever version serves it.
pub fn stored(catalog: &Catalog, group: &str, plural: &str) -> Option<std::sync::Arc<ResourceInfo>> {
    catalog.all().into_iter().find(|r| r.group == group && r.plural == plural && r.holds_objects())
}

/// The ResourceQuotas of a namespace.
pub async fn quotas(registry: &Registry, catalog: &Catalog, ns: &str) -> Result<Vec<Value>, ApiError> {
    let Some(res) = catalog.lookup("", "v1", "resourcequotas") else { return Ok(Vec::new()) };
    Ok(registry.list(&res, Some(ns), &ListOptions::default()).await?.items)
}

/// What `objects` of `group`/`plural` charge against `quota` (whose parsed
/// `spec.hard` is `hard`): only the objects in its scopes, only the limited resources.
pub fn charged<'a>(
    quota: &Value,
    hard: &Usage,
    group: &str,
    plural: &str,
    objects: impl IntoIterator<Item = &'a Value>,
) -> Usage {
    let mut used = Usage::new();
    for obj in objects.into_iter().filter(|obj| scope::tracks(quota, group, plural, obj)) {
        usage::add_masked(&mut used, &usage::object_usage(group, plural, obj), hard);
    }
    used
}

/// Admits the create of `obj` against every quota of its namespace.
pub async fn admit_create(call: &Call, obj: &Value) -> Result<Admitted, ApiError> {
    let res = &call.resource;
    let Some(ns) = call.namespace().filter(|_| res.namespaced) else { return Ok(Admitted { _charging: None }) };
    let requested = usage::object_usage(&res.group, &res.plural, obj);
    if requested.is_empty() {
        return Ok(Admitted { _charging: None });
    }
    let (registry, catalog) = (&call.state.registry, &call.state.catalog);
    let quotas = quotas(registry, catalog, ns).await?;
    if quotas.is_empty() {
        return Ok(Admitted { _charging: None });
    }
    let guard = CHARGING.clone().lock_owned().await;
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let forbidden = |message: String| ApiError::forbidden(&res.group, &res.plural, name, &message);
    let is_pod = res.group.is_empty() && res.plural == "pods";
    for quota in quotas {
        let quota_name = quota.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let hard = usage::parse_hard(quota.pointer("/spec/hard"));
        if !scope::tracks(&quota, &res.group, &res.plural, obj) {
            continue;
        }
        if is_pod && let Some(missing) = usage::missing_compute(&hard, obj) {
            return Err(forbidden(format!("failed quota: {quota_name}: {missing}")));
        }
        let mut requested_here = Usage::new();
        usage::add_masked(&mut requested_here, &requested, &hard);
        if requested_here.is_empty() {
            continue;
        }
        let existing = registry.list(res, Some(ns), &ListOptions::default()).await?.items;
        let used = charged(&quota, &hard, &res.group, &res.plural, &existing);
        usage::check(quota_name, &hard, &used, &requested_here).map_err(forbidden)?;
    }
    Ok(Admitted { _charging: Some(guard) })
}
