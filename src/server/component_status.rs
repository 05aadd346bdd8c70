//! `v1 componentstatuses` (`kubectl get cs`, deprecated upstream but still
//! served): the health of the control plane's parts, computed per request.
//! The scheduler and the controller manager run inside this process, so they
//! answer whenever the server does; `etcd-0` is the store, healthy when a
//! linearizable read of its revision succeeds.

use super::error::ApiError;
use super::rest::{Call, respond};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

const WARNING: &str = "299 - \"v1 ComponentStatus is deprecated in v1.19+\"";

fn status(name: &str, health: Result<&str, String>) -> Value {
    let condition = match health {
        Ok(message) => json!({"type": "Healthy", "status": "True", "message": message}),
        Err(error) => json!({"type": "Healthy", "status": "False", "error": error}),
    };
    json!({"kind": "ComponentStatus", "apiVersion": "v1", "metadata": {"name": name, "creationTimestamp": null},
           "conditions": [condition]})
}

async fn statuses(call: &Call) -> Vec<Value> {
    let store = call.state.registry.store().current_revision().await.map_err(|err| err.to_string());
    vec![
        status("scheduler", Ok("ok")),
        status("controller-manager", Ok("ok")),
        status("etcd-0", store.map(|_| "{\"health\":\"true\",\"reason\":\"\"}")),
    ]
}

pub async fn handle(call: Call) -> Result<Response, ApiError> {
    let all = statuses(&call).await;
    let body = match (call.info.verb, call.info.name.as_deref()) {
        ("get", Some(name)) => {
            let found = all.into_iter().find(|s| s["metadata"]["name"] == name);
            let item = found.ok_or_else(|| ApiError::not_found("", "componentstatuses", name))?;
            if call.negotiated.table {
                super::table::render(&call.resource, std::slice::from_ref(&item), json!({}))
            } else {
                item
            }
        }
        ("list", _) if call.negotiated.table => super::table::render(&call.resource, &all, json!({})),
        ("list", _) => json!({"kind": "ComponentStatusList", "apiVersion": "v1", "metadata": {}, "items": all}),
        (verb, _) => {
            return Err(ApiError::method_not_allowed(format!("componentstatuses do not support {verb}")));
        }
    };
    let mut response = respond(StatusCode::OK, &body, call.negotiated).into_response();
    response.headers_mut().insert("warning", http::HeaderValue::from_static(WARNING));
    Ok(response)
}
