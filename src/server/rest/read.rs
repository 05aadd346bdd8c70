//! get and list: one object, or a page of objects with resource-version
//! semantics and selectors, as JSON, YAML or a Table.

use super::{Call, respond};
use crate::server::error::ApiError;
use crate::server::registry::{ListOptions, parse_resource_version};
use crate::server::selectors::{FieldSelector, LabelSelector};
use crate::server::table;
use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

pub async fn get(call: Call) -> Result<Response, ApiError> {
    let obj = call.state.registry.get(&call.resource, call.namespace(), call.name()).await?;
    if call.negotiated.table {
        let rv = obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
        let table = table::render(&call.resource, std::slice::from_ref(&obj), json!({"resourceVersion": rv}));
        return Ok(respond(StatusCode::OK, &table, call.negotiated));
    }
    Ok(respond(StatusCode::OK, &obj, call.negotiated))
}

/// The list options of a list or watch request.
pub fn list_options(call: &Call) -> Result<ListOptions, ApiError> {
    let labels = LabelSelector::parse(call.param("labelSelector").unwrap_or_default())
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    let fields = FieldSelector::parse(call.param("fieldSelector").unwrap_or_default())
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    let limit = match call.param("limit") {
        Some(text) => {
            Some(text.parse::<usize>().map_err(|_| ApiError::bad_request(format!("invalid limit {text:?}")))?)
        }
        None => None,
    };
    let resource_version = parse_resource_version(call.param("resourceVersion").unwrap_or_default())?;
    let exact = match call.param("resourceVersionMatch") {
        None => false,
        Some("Exact") => true,
        Some("NotOlderThan") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
            )));
        }
    };
    if call.params.contains_key("resourceVersionMatch")
        && resource_version.is_none()
        && call.param("sendInitialEvents") != Some("true")
    {
        return Err(ApiError::bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided"));
    }
    let continue_token = call.param("continue").map(str::to_string);
    if continue_token.is_some() && resource_version.is_some_and(|rv| rv != 0) {
        return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
    }
    Ok(ListOptions { labels, fields, limit, continue_token, resource_version, exact })
}

pub async fn list(call: Call) -> Result<Response, ApiError> {
    let opts = list_options(&call)?;
    let result = call.state.registry.list(&call.resource, call.namespace(), &opts).await?;
    let mut metadata = json!({"resourceVersion": result.revision.to_string()});
    if let Some(token) = &result.continue_token {
        metadata["continue"] = json!(token);
    }
    if let Some(remaining) = result.remaining.filter(|r| *r > 0) {
        metadata["remainingItemCount"] = json!(remaining);
    }
    if call.negotiated.table {
        let table = table::render(&call.resource, &result.items, metadata);
        return Ok(respond(StatusCode::OK, &table, call.negotiated));
    }
    let list = json!({
        "kind": format!("{}List", call.resource.kind),
        "apiVersion": call.resource.api_version(),
        "metadata": metadata,
        "items": result.items,
    });
    Ok(respond(StatusCode::OK, &list, call.negotiated))
}
