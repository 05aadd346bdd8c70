//! Small helpers every workload controller shares: REST paths by resource,
//! owner references, label selectors and the pod states upstream's
//! controllers count (active, ready, available).

use super::Context;
use crate::server::client;
use crate::server::error::ApiError;
use crate::server::selectors::LabelSelector;
use serde_json::{Value, json};

pub const PODS: (&str, &str, &str) = ("", "v1", "pods");

/// The REST path of a resource collection, object or subresource.
pub fn path(
    ctx: &Context,
    gvr: (&str, &str, &str),
    namespace: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
) -> Result<String, ApiError> {
    let res = ctx.catalog.lookup(gvr.0, gvr.1, gvr.2).ok_or_else(ApiError::not_found_path)?;
    Ok(client::path(&res, namespace, name, sub))
}

/// Gets one object, `None` when it does not exist.
pub async fn get(ctx: &Context, gvr: (&str, &str, &str), ns: &str, name: &str) -> Result<Option<Value>, ApiError> {
    match ctx.client.get(&path(ctx, gvr, Some(ns), Some(name), None)?).await {
        Ok(obj) => Ok(Some(obj)),
        Err(err) if err.code == 404 => Ok(None),
        Err(err) => Err(err),
    }
}

/// Every object of a resource in a namespace.
pub async fn list(ctx: &Context, gvr: (&str, &str, &str), ns: Option<&str>) -> Result<Vec<Value>, ApiError> {
    ctx.client.list(&path(ctx, gvr, ns, None, None)?).await
}

/// Treats 404 (already gone) as done.
pub fn ignore_gone(result: Result<Value, ApiError>) -> Result<(), ApiError> {
    match result {
        Ok(_) => Ok(()),
        Err(err) if err.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}

pub fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

pub fn int_at(obj: &Value, pointer: &str) -> Option<i64> {
    obj.pointer(pointer).and_then(Value::as_i64)
}

pub fn name(obj: &Value) -> &str {
    str_at(obj, "/metadata/name")
}

pub fn uid(obj: &Value) -> &str {
    str_at(obj, "/metadata/uid")
}

pub fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// The ownerReference of a controller to put on its dependents.
pub fn controller_ref(owner: &Value, api_version: &str, kind: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name(owner), "uid": uid(owner),
        "controller": true, "blockOwnerDeletion": true})
}

/// The uid of the object's controller owner, if it has one.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))?
        .get("uid")?
        .as_str()
}

/// The workload's `spec.selector` parsed; an unparsable one selects nothing.
pub fn selector(obj: &Value) -> Option<LabelSelector> {
    let selector = obj.pointer("/spec/selector")?;
    let parsed = LabelSelector::from_label_selector_json(selector).ok()?;
    // An empty selector selects nothing for controllers, as upstream.
    if parsed.is_empty() { None } else { Some(parsed) }
}

/// The objects `owner` controls, adopting orphans that match its selector
/// (as upstream's ControllerRefManager) and releasing owned ones that no
/// longer match. Returns the controlled ones.
pub async fn claim(
    ctx: &Context,
    gvr: (&str, &str, &str),
    owner: &Value,
    owner_ref: &Value,
    candidates: Vec<Value>,
) -> Result<Vec<Value>, ApiError> {
    claim_with(ctx, gvr, owner, owner_ref, selector(owner), candidates).await
}

/// [`claim`] with the owner's selector given (ReplicationControllers have their own kind).
pub async fn claim_with(
    ctx: &Context,
    gvr: (&str, &str, &str),
    owner: &Value,
    owner_ref: &Value,
    selector: Option<LabelSelector>,
    candidates: Vec<Value>,
) -> Result<Vec<Value>, ApiError> {
    let Some(selector) = selector else { return Ok(Vec::new()) };
    let ns = str_at(owner, "/metadata/namespace");
    let mut owned = Vec::new();
    for obj in candidates {
        let matches = selector.matches(&obj);
        match controller_uid(&obj) {
            Some(owner_uid) if owner_uid == uid(owner) => {
                if matches {
                    owned.push(obj);
                } else if !deleting(&obj) {
                    let refs: Vec<Value> = obj
                        .pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .map(|r| r.iter().filter(|o| o.get("uid") != owner_ref.get("uid")).cloned().collect())
                        .unwrap_or_default();
                    let patch = json!({"metadata": {"ownerReferences": refs,
                        "resourceVersion": str_at(&obj, "/metadata/resourceVersion")}});
                    ignore_gone(
                        ctx.client.merge_patch(&path(ctx, gvr, Some(ns), Some(name(&obj)), None)?, patch).await,
                    )?;
                }
            }
            Some(_) => {}
            None if matches && !deleting(&obj) && !deleting(owner) => {
                let mut refs: Vec<Value> =
                    obj.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
                refs.push(owner_ref.clone());
                let patch = json!({"metadata": {"ownerReferences": refs,
                    "resourceVersion": str_at(&obj, "/metadata/resourceVersion")}});
                match ctx.client.merge_patch(&path(ctx, gvr, Some(ns), Some(name(&obj)), None)?, patch).await {
                    Ok(adopted) => {
                        tracing::info!(owner = %name(owner), object = %name(&adopted), "adopted an orphan");
                        owned.push(adopted);
                    }
                    Err(err) if err.code == 404 || err.code == 409 => {}
                    Err(err) => return Err(err),
                }
            }
            None => {}
        }
    }
    Ok(owned)
}

/// A pod's phase.
pub fn phase(pod: &Value) -> &str {
    str_at(pod, "/status/phase")
}

/// Running or pending and not being deleted: what upstream counts as active.
pub fn pod_active(pod: &Value) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && !deleting(pod)
}

/// The pod's condition of `kind`, if reported.
pub fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?.as_array()?.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

pub fn pod_ready(pod: &Value) -> bool {
    condition(pod, "Ready").and_then(|c| c.get("status")).and_then(Value::as_str) == Some("True")
}

/// Ready for at least `min_ready_seconds` (by the Ready condition's transition time).
pub fn pod_available(pod: &Value, min_ready_seconds: i64, now: jiff::Timestamp) -> bool {
    if !pod_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = condition(pod, "Ready")
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    since.is_some_and(|t| now.as_second() - t.as_second() >= min_ready_seconds)
}

/// Now as Kubernetes writes timestamps.
pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Sets (or replaces) a condition in `conditions`, keeping the transition
/// time when the status did not change.
pub fn set_condition(conditions: &mut Vec<Value>, kind: &str, status: &str, reason: &str, message: &str) {
    let now = now();
    if let Some(existing) = conditions.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some(kind)) {
        let transition = if existing.get("status").and_then(Value::as_str) == Some(status) {
            existing.get("lastTransitionTime").cloned().unwrap_or(json!(now))
        } else {
            json!(now)
        };
        let changed = existing.get("reason").and_then(Value::as_str) != Some(reason)
            || existing.get("status").and_then(Value::as_str) != Some(status);
        let update = if changed { json!(now) } else { existing.get("lastUpdateTime").cloned().unwrap_or(json!(now)) };
        *existing = json!({"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": transition, "lastUpdateTime": update});
    } else {
        conditions.push(json!({"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": now, "lastUpdateTime": now}));
    }
}
