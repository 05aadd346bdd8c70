//! `pods/<name>/eviction`: a delete that PodDisruptionBudgets may refuse
//! (429 TooManyRequests), as `kubectl drain` uses it.

use super::{Call, decode_body, respond};
use crate::server::error::ApiError;
use crate::server::registry::ListOptions;
use crate::server::selectors::LabelSelector;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

pub async fn evict(call: Call, body: Bytes) -> Result<Response, ApiError> {
    let eviction = if body.is_empty() { json!({}) } else { decode_body(&call.headers, &body)? };
    let ns = call.namespace().unwrap_or("default").to_string();
    let pod = call.state.registry.get(&call.resource, Some(&ns), call.name()).await?;
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    if let Some(budgets) = call.state.catalog.lookup("policy", "v1", "poddisruptionbudgets")
        && phase != "Succeeded"
        && phase != "Failed"
    {
        let list = call.state.registry.list(&budgets, Some(&ns), &ListOptions::default()).await?;
        for pdb in list.items {
            let Some(selector) = pdb.pointer("/spec/selector") else { continue };
            let Ok(selector) = LabelSelector::from_label_selector_json(selector) else { continue };
            if selector.matches(&pod)
                && pdb.pointer("/status/disruptionsAllowed").and_then(Value::as_i64).unwrap_or(0) <= 0
            {
                let name = pdb.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                let mut err = ApiError::too_many_requests(10)
                    .with_message("Cannot evict pod as it would violate the pod's disruption budget.".to_string());
                err.causes.push(crate::server::error::FieldError {
                    reason: "DisruptionBudget".into(),
                    field: String::new(),
                    message: format!(
                        "The disruption budget {name} needs {} healthy pods and has {} currently",
                        pdb.pointer("/status/desiredHealthy").and_then(Value::as_i64).unwrap_or(0),
                        pdb.pointer("/status/currentHealthy").and_then(Value::as_i64).unwrap_or(0)
                    ),
                });
                return Err(err);
            }
        }
    }
    let options = eviction.get("deleteOptions").cloned().unwrap_or(json!({}));
    super::delete::delete_with_options(&call, &options).await?;
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(respond(StatusCode::CREATED, &status, call.negotiated))
}
