//! create and update (PUT), plus `pods/binding`: decode, prepare, admit,
//! validate, then one store transaction with optimistic concurrency.

use super::objects::{admit_namespace, prepare_create, prepare_update};
use super::{Call, decode_body, field_validation, respond, services};
use crate::server::error::ApiError;
use crate::server::registry::{resource_version_of, set_resource_version};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// Events expire after an hour, as upstream's `--event-ttl` default.
const EVENT_TTL: Duration = Duration::from_secs(3600);

pub async fn create(call: Call, body: Bytes) -> Result<Response, ApiError> {
    let obj = decode_body(&call.headers, &body)?;
    let warnings = field_validation::check(&call, &obj)?;
    let mut obj = prepare_create(&call, obj)?;
    admit_namespace(&call).await?;
    if call.resource.group.is_empty() && call.resource.plural == "pods" {
        crate::server::authz::node::admit_pod_create(&call.user, &obj)?;
    }
    super::service_account_admission::admit(&call, &mut obj).await?;
    let _admitted = crate::server::quota::admit_create(&call, &obj).await?;
    if call.dry_run()? {
        return Ok(respond(StatusCode::CREATED, &obj, call.negotiated));
    }
    let ttl = (call.resource.kind == "Event").then_some(EVENT_TTL);
    let created = create_allocating(&call, obj, ttl).await?;
    Ok(field_validation::with_warnings(respond(StatusCode::CREATED, &created, call.negotiated), &warnings))
}

fn is_service(call: &Call) -> bool {
    call.resource.group.is_empty() && call.resource.kind == "Service"
}

/// Stores a new object; a Service gets its cluster IP and node ports first
/// (released again if the create fails).
pub async fn create_allocating(call: &Call, mut obj: Value, ttl: Option<Duration>) -> Result<Value, ApiError> {
    let registry = &call.state.registry;
    if is_service(call) {
        services::allocate(registry, &call.state.config, &mut obj).await?;
    }
    match registry.create(&call.resource, obj.clone(), ttl).await {
        Err(err) => {
            if is_service(call) {
                services::release(registry, &obj).await?;
            }
            Err(err)
        }
        ok => ok,
    }
}

/// Adjusts a Service's node ports to an update before it is stored.
pub async fn reallocate(call: &Call, new: &mut Value, old: &Value) -> Result<(), ApiError> {
    if is_service(call) && call.info.subresource.is_none() {
        services::reallocate(&call.state.registry, &call.state.config, new, old).await?;
    }
    Ok(())
}

pub async fn update(call: Call, body: Bytes) -> Result<Response, ApiError> {
    let mut new = decode_body(&call.headers, &body)?;
    let warnings = field_validation::check(&call, &new)?;
    let old = call.state.registry.get(&call.resource, call.namespace(), call.name()).await?;
    let current = resource_version_of(&old)?.unwrap_or(0);
    let res = &call.resource;
    match resource_version_of(&new)? {
        Some(sent) if sent != current => return Err(ApiError::stale_update(&res.group, &res.plural, call.name())),
        _ => {}
    }
    if call.info.subresource.as_deref() == Some("finalize") {
        // Only spec.finalizers of a namespace change through /finalize.
        let finalizers = new.pointer("/spec/finalizers").cloned().unwrap_or(json!([]));
        new = old.clone();
        new["spec"]["finalizers"] = finalizers;
    }
    let mut prepared = prepare_update(&call, new, &old)?;
    if !call.dry_run()? {
        reallocate(&call, &mut prepared, &old).await?;
    }
    if call.dry_run()? || prepared == old {
        let mut unchanged = prepared;
        set_resource_version(&mut unchanged, current);
        return Ok(respond(StatusCode::OK, &unchanged, call.negotiated));
    }
    let stored = call.state.registry.replace_or_finalize(&call.resource, prepared, current).await?;
    Ok(field_validation::with_warnings(respond(StatusCode::OK, &stored, call.negotiated), &warnings))
}

/// `POST pods/<name>/binding`: the scheduler assigns a pod to a node.
pub async fn bind(call: Call, body: Bytes) -> Result<Response, ApiError> {
    let binding = decode_body(&call.headers, &body)?;
    let node = binding.pointer("/target/name").and_then(Value::as_str).unwrap_or_default().to_string();
    if node.is_empty() {
        return Err(ApiError::bad_request("binding target name is required"));
    }
    let res = call.resource.clone();
    let pod_name = call.name().to_string();
    call.state
        .registry
        .update_with(&res, call.namespace(), &pod_name, |pod| {
            if pod.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::conflict(
                    &res.group,
                    &res.plural,
                    &pod_name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            match pod.pointer("/spec/nodeName").and_then(Value::as_str) {
                Some(current) if !current.is_empty() => Err(ApiError::conflict(
                    &res.group,
                    &res.plural,
                    &pod_name,
                    &format!("pod {pod_name} is already assigned to node \"{current}\""),
                )),
                _ => {
                    let mut bound = pod.clone();
                    bound["spec"]["nodeName"] = json!(node);
                    mark_scheduled(&mut bound);
                    Ok(Some(bound))
                }
            }
        })
        .await?;
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(respond(StatusCode::CREATED, &status, call.negotiated))
}

/// Sets the pod's `PodScheduled` condition to True, as upstream's binding does.
fn mark_scheduled(pod: &mut Value) {
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    if !pod["status"].get("conditions").is_some_and(Value::is_array) {
        pod["status"]["conditions"] = json!([]);
    }
    let Some(conditions) = pod["status"]["conditions"].as_array_mut() else { return };
    let scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
        "lastTransitionTime": super::objects::now_rfc3339()});
    match conditions.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled")) {
        Some(existing) if existing.get("status").and_then(Value::as_str) == Some("True") => {}
        Some(existing) => *existing = scheduled,
        None => conditions.push(scheduled),
    }
}
