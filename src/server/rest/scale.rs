//! The `scale` subresource of deployments, replicasets, statefulsets and
//! replicationcontrollers: an `autoscaling/v1` Scale view of
//! `spec.replicas`, read with GET and changed with PUT or PATCH.

use super::{Call, decode_body, respond};
use crate::server::error::ApiError;
use crate::server::patch::{self, PatchKind};
use crate::server::registry::resource_version_of;
use axum::response::Response;
use bytes::Bytes;
use http::{Method, StatusCode, header};
use serde_json::{Value, json};

/// The label selector of a workload as a string (`app=web,tier in (a)`).
fn selector_text(obj: &Value) -> String {
    let selector = obj.pointer("/spec/selector");
    let Some(selector) = selector else { return String::new() };
    // ReplicationControllers have a plain map selector.
    let labels =
        selector.get("matchLabels").or(if selector.get("matchExpressions").is_none() { Some(selector) } else { None });
    let mut parts: Vec<String> = labels
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
        .unwrap_or_default();
    for expr in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = expr
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(match expr.get("operator").and_then(Value::as_str) {
            Some("In") => format!("{key} in ({})", values.join(",")),
            Some("NotIn") => format!("{key} notin ({})", values.join(",")),
            Some("DoesNotExist") => format!("!{key}"),
            _ => key.to_string(),
        });
    }
    parts.join(",")
}

fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector_text(obj),
        },
    })
}

/// GET, PUT and PATCH of `<workload>/scale`.
pub async fn scale(call: Call, body: Bytes, method: &Method) -> Result<Response, ApiError> {
    let registry = call.state.registry.clone();
    let res = call.resource.clone();
    if *method == Method::GET {
        let obj = registry.get(&res, call.namespace(), call.name()).await?;
        return Ok(respond(StatusCode::OK, &scale_of(&obj), call.negotiated));
    }
    let content_type = call.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let input = decode_body(&call.headers, &body)?;
    let name = call.name().to_string();
    let updated = registry
        .update_with(&res, call.namespace(), &name, |current| {
            let scale = scale_of(current);
            let wanted = if *method == Method::PATCH {
                let kind = PatchKind::from_content_type(&content_type)
                    .ok_or_else(|| ApiError::unsupported_media_type(&content_type))?;
                patch::apply(kind, &scale, &input).map_err(|err| ApiError::bad_request(err.to_string()))?
            } else {
                if let Some(sent) = resource_version_of(&input)?
                    && Some(sent) != resource_version_of(current)?
                {
                    return Err(ApiError::stale_update(&res.group, &res.plural, &name));
                }
                input.clone()
            };
            let replicas = wanted.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
            if replicas < 0 {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    &name,
                    vec![crate::server::error::FieldError::invalid(
                        "spec.replicas",
                        &json!(replicas),
                        "must be greater than or equal to 0",
                    )],
                ));
            }
            if current.pointer("/spec/replicas").and_then(Value::as_i64) == Some(replicas) {
                return Ok(None);
            }
            let mut next = current.clone();
            next["spec"]["replicas"] = json!(replicas);
            let generation = current.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
            next["metadata"]["generation"] = json!(generation + 1);
            Ok(Some(next))
        })
        .await?;
    Ok(respond(StatusCode::OK, &scale_of(&updated), call.negotiated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_shows_replicas_and_selector() {
        let deploy = json!({"metadata": {"name": "web", "namespace": "x"}, "spec": {"replicas": 3,
            "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}},
            "status": {"replicas": 2}});
        let scale = scale_of(&deploy);
        assert_eq!(scale["spec"]["replicas"], 3);
        assert_eq!(scale["status"]["replicas"], 2);
        assert_eq!(scale["status"]["selector"], "app=web,tier in (a,b)");
    }
}
