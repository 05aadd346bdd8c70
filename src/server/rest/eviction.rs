//! `pods/<name>/eviction`: a delete that PodDisruptionBudgets may refuse
//! (429 TooManyRequests), as `kubectl drain` uses it.

use super::{Call, decode_body, respond};
use crate::server::error::{ApiError, Reason};
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
    let terminal = phase == "Succeeded" || phase == "Failed";
    // A terminal pod or one already being deleted disrupts nothing.
    if let Some(budgets) = call.state.catalog.lookup("policy", "v1", "poddisruptionbudgets")
        && !terminal
        && pod.pointer("/metadata/deletionTimestamp").is_none()
    {
        let list = call.state.registry.list(&budgets, Some(&ns), &ListOptions::default()).await?;
        let matching: Vec<&Value> = list
            .items
            .iter()
            .filter(|pdb| {
                pdb.pointer("/spec/selector")
                    .and_then(|s| LabelSelector::from_label_selector_json(s).ok())
                    .is_some_and(|selector| selector.matches(&pod))
            })
            .collect();
        if matching.len() > 1 {
            return Err(ApiError::new(
                500,
                Reason::InternalError,
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        if let Some(pdb) = matching.first() {
            let name = pdb.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            let pod_name = call.name().to_string();
            call.state
                .registry
                .update_with(&budgets, Some(&ns), &name, |current| take_disruption(current, &pod_name))
                .await?;
        }
    }
    let options = eviction.get("deleteOptions").cloned().unwrap_or(json!({}));
    super::delete::delete_with_options(&call, &options).await?;
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(respond(StatusCode::CREATED, &status, call.negotiated))
}

/// Spends one of the budget's allowed disruptions on `pod` (recorded in
/// `status.disruptedPods` until the disruption controller sees it gone), or
/// refuses with 429 as upstream does.
fn take_disruption(pdb: &Value, pod: &str) -> Result<Option<Value>, ApiError> {
    let generation = pdb.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
    let observed = pdb.pointer("/status/observedGeneration").and_then(Value::as_i64).unwrap_or(0);
    if observed < generation {
        return Err(ApiError::too_many_requests(10)
            .with_message("Cannot evict pod as it would violate the pod's disruption budget.".to_string())
            .with_cause("DisruptionBudget", "The disruption budget's status is not up to date yet".to_string()));
    }
    let allowed = pdb.pointer("/status/disruptionsAllowed").and_then(Value::as_i64).unwrap_or(0);
    if allowed <= 0 {
        let name = pdb.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        return Err(ApiError::too_many_requests(10)
            .with_message("Cannot evict pod as it would violate the pod's disruption budget.".to_string())
            .with_cause(
                "DisruptionBudget",
                format!(
                    "The disruption budget {name} needs {} healthy pods and has {} currently",
                    pdb.pointer("/status/desiredHealthy").and_then(Value::as_i64).unwrap_or(0),
                    pdb.pointer("/status/currentHealthy").and_then(Value::as_i64).unwrap_or(0)
                ),
            ));
    }
    let mut updated = pdb.clone();
    updated["status"]["disruptionsAllowed"] = json!(allowed - 1);
    if !updated["status"].get("disruptedPods").is_some_and(Value::is_object) {
        updated["status"]["disruptedPods"] = json!({});
    }
    updated["status"]["disruptedPods"][pod] = json!(super::objects::now_rfc3339());
    Ok(Some(updated))
}
