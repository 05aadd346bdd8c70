//! Resources computed per request and never stored: SelfSubjectReview
//! (`kubectl auth whoami`) and SelfSubjectAccessReview (`kubectl auth can-i`).

use super::error::ApiError;
use super::request_info::RequestInfo;
use super::rest::{Call, decode_body, respond};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

pub async fn handle(call: Call, body: Bytes) -> Result<Response, ApiError> {
    if call.info.verb != "create" {
        return Err(ApiError::method_not_allowed(format!("{} only supports create", call.resource.qualified_plural())));
    }
    let review = decode_body(&call.headers, &body)?;
    let user = &call.user;
    let user_info = json!({"username": user.name, "uid": user.uid, "groups": user.groups, "extra": user.extra});
    let answer = match call.resource.kind.as_str() {
        "SelfSubjectReview" => json!({
            "kind": "SelfSubjectReview", "apiVersion": call.resource.api_version(),
            "metadata": {"creationTimestamp": null}, "status": {"userInfo": user_info},
        }),
        "SelfSubjectAccessReview" => {
            let attrs = review.pointer("/spec/resourceAttributes").cloned().unwrap_or(json!({}));
            let text = |k: &str| attrs.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let group = text("group");
            let allowed =
                match call.state.catalog.all().into_iter().find(|r| r.group == group && r.plural == text("resource")) {
                    Some(res) => {
                        let info = RequestInfo {
                            group: group.clone(),
                            version: res.version.clone(),
                            namespace: Some(text("namespace")).filter(|n| !n.is_empty()),
                            resource: res.plural.clone(),
                            name: Some(text("name")).filter(|n| !n.is_empty()),
                            subresource: Some(text("subresource")).filter(|n| !n.is_empty()),
                            verb: verb_name(&text("verb")),
                        };
                        super::authz::authorize(&call.state, user, &info, &res).await.is_ok()
                    }
                    None => user.groups.iter().any(|g| g == "system:masters"),
                };
            let mut answer = review.clone();
            answer["status"] = json!({"allowed": allowed});
            answer
        }
        other => {
            return Err(ApiError::method_not_allowed(format!("{other} is not served by this server yet")));
        }
    };
    Ok(respond(StatusCode::CREATED, &answer, call.negotiated))
}

fn verb_name(verb: &str) -> &'static str {
    match verb {
        "get" => "get",
        "list" => "list",
        "watch" => "watch",
        "create" => "create",
        "update" => "update",
        "patch" => "patch",
        "delete" => "delete",
        "deletecollection" => "deletecollection",
        _ => "*",
    }
}
