//! delete and deletecollection: preconditions, finalizers (the object stays,
//! marked with deletionTimestamp, until its finalizers are gone), graceful
//! deletion of pods that run on a node, and propagation policies.

use super::objects::now_rfc3339;
use super::read::list_options;
use super::{Call, respond};
use crate::server::catalog::ResourceInfo;
use crate::server::error::ApiError;
use crate::server::registry::{Registry, resource_version_of};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

/// What a DeleteOptions body (or the query) asks for.
#[derive(Clone, Debug, Default)]
struct DeleteOptions {
    grace_period: Option<i64>,
    propagation: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
}

fn delete_options(call: &Call, body: &Bytes) -> Result<DeleteOptions, ApiError> {
    let body: Value = if body.is_empty() { json!({}) } else { super::decode_body(&call.headers, body)? };
    options_from(call, &body)
}

/// Deletes the addressed object with a DeleteOptions object (eviction's).
pub async fn delete_with_options(call: &Call, options: &Value) -> Result<(Value, bool), ApiError> {
    let opts = options_from(call, options)?;
    delete_one(&call.state.registry, &call.resource, call.namespace(), call.name(), &opts, call.dry_run()?).await
}

fn options_from(call: &Call, body: &Value) -> Result<DeleteOptions, ApiError> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let mut opts = DeleteOptions {
        grace_period: body.get("gracePeriodSeconds").and_then(Value::as_i64),
        propagation: text(body.get("propagationPolicy")),
        uid: text(body.pointer("/preconditions/uid")),
        resource_version: text(body.pointer("/preconditions/resourceVersion")),
    };
    if let Some(grace) = call.param("gracePeriodSeconds") {
        opts.grace_period =
            Some(grace.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {grace:?}")))?);
    }
    if let Some(policy) = call.param("propagationPolicy") {
        opts.propagation = Some(policy.to_string());
    }
    if body.get("orphanDependents").and_then(Value::as_bool) == Some(true) && opts.propagation.is_none() {
        opts.propagation = Some("Orphan".into());
    }
    match opts.propagation.as_deref() {
        None | Some("Background" | "Foreground" | "Orphan") => Ok(opts),
        Some(other) => Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: {other:?}: supported values: \"Background\", \"Foreground\", \"Orphan\""
        ))),
    }
}

/// The Status a delete answers with for kinds that do not return the object.
fn success_status(res: &ResourceInfo, obj: &Value) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {
            "name": obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
            "group": res.group, "kind": res.plural,
            "uid": obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
        }
    })
}

/// Deletes one object; returns it (finalizing or gone) for the response.
async fn delete_one(
    registry: &Registry,
    res: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
    dry_run: bool,
) -> Result<(Value, bool), ApiError> {
    for _ in 0..16 {
        let current = registry.get(res, ns, name).await?;
        let revision = resource_version_of(&current)?.unwrap_or(0);
        if let Some(uid) = &opts.uid
            && current.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str())
        {
            let actual = current.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
            return Err(ApiError::conflict(
                &res.group,
                &res.plural,
                name,
                &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && rv != &revision.to_string()
        {
            return Err(ApiError::conflict(
                &res.group,
                &res.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {revision}"
                ),
            ));
        }
        let mut marked = current.clone();
        let mut finalizers: Vec<Value> =
            current.pointer("/metadata/finalizers").and_then(Value::as_array).cloned().unwrap_or_default();
        let policy_finalizer = match opts.propagation.as_deref() {
            Some("Foreground") => Some("foregroundDeletion"),
            Some("Orphan") => Some("orphan"),
            _ => None,
        };
        if let Some(f) = policy_finalizer
            && !finalizers.iter().any(|x| x == f)
        {
            finalizers.push(json!(f));
        }
        let graceful = graceful_seconds(res, &current, opts);
        if res.kind == "Namespace" {
            finalizers
                .extend(current.pointer("/spec/finalizers").and_then(Value::as_array).cloned().unwrap_or_default());
        }
        if finalizers.is_empty() && graceful.is_none() {
            if dry_run {
                return Ok((current, true));
            }
            match registry.remove(res, ns, name, revision).await {
                Err(err) if err.code == 409 => continue,
                Err(err) => return Err(err),
                Ok(obj) => {
                    if res.group.is_empty() && res.kind == "Service" {
                        super::services::release(registry, &obj).await?;
                    }
                    return Ok((obj, true));
                }
            }
        }
        if current.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok((current, false));
        }
        let meta = &mut marked["metadata"];
        meta["deletionTimestamp"] = json!(now_rfc3339());
        meta["deletionGracePeriodSeconds"] = json!(graceful.unwrap_or(0));
        let finalizers_changed = current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.len() != finalizers.len());
        if finalizers_changed && res.kind != "Namespace" {
            meta["finalizers"] = Value::Array(finalizers);
        }
        if res.kind == "Namespace" {
            marked["status"]["phase"] = json!("Terminating");
        }
        if dry_run {
            return Ok((marked, false));
        }
        match registry.replace(res, marked, revision).await {
            Err(err) if err.code == 409 => continue,
            other => return other.map(|obj| (obj, false)),
        }
    }
    Err(ApiError::conflict(&res.group, &res.plural, name, "too many concurrent updates; try again"))
}

/// Pods on a node are deleted gracefully: the agent stops them, then removes the object.
fn graceful_seconds(res: &ResourceInfo, obj: &Value, opts: &DeleteOptions) -> Option<i64> {
    if res.kind != "Pod" || obj.pointer("/spec/nodeName").and_then(Value::as_str).is_none_or(str::is_empty) {
        return None;
    }
    let phase = obj.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return None;
    }
    let grace = opts
        .grace_period
        .or_else(|| obj.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
        .unwrap_or(30);
    (grace > 0).then_some(grace)
}

pub async fn delete(call: Call, body: Bytes) -> Result<Response, ApiError> {
    let opts = delete_options(&call, &body)?;
    let (obj, gone) =
        delete_one(&call.state.registry, &call.resource, call.namespace(), call.name(), &opts, call.dry_run()?).await?;
    // A pending deletion answers 202 with the marked object; a finished one 200
    // with the object (pods, namespaces) or a success Status (everything else).
    if !gone {
        return Ok(respond(StatusCode::ACCEPTED, &obj, call.negotiated));
    }
    let returns_object = matches!(call.resource.kind.as_str(), "Pod" | "Namespace");
    let body = if returns_object { obj } else { success_status(&call.resource, &obj) };
    Ok(respond(StatusCode::OK, &body, call.negotiated))
}

pub async fn delete_collection(call: Call) -> Result<Response, ApiError> {
    let opts = delete_options(&call, &Bytes::new())?;
    let list = call.state.registry.list(&call.resource, call.namespace(), &list_options(&call)?).await?;
    let dry_run = call.dry_run()?;
    let mut deleted = Vec::new();
    for item in list.items {
        let name = item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let ns = item.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_string);
        match delete_one(&call.state.registry, &call.resource, ns.as_deref(), &name, &opts, dry_run).await {
            Ok((obj, _)) => deleted.push(obj),
            Err(err) if err.code == 404 => {}
            Err(err) => return Err(err),
        }
    }
    let body = json!({
        "kind": format!("{}List", call.resource.kind), "apiVersion": call.resource.api_version(),
        "metadata": {"resourceVersion": list.revision.to_string()}, "items": deleted,
    });
    Ok(respond(StatusCode::OK, &body, call.negotiated))
}
