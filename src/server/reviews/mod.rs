//! Resources computed per request and never stored: SelfSubjectReview
//! (`kubectl auth whoami`), the access reviews (`kubectl auth can-i`,
//! delegated authorization) and SelfSubjectRulesReview (`kubectl auth can-i
//! --list`).

mod access;
mod rules;

use super::error::ApiError;
use super::rest::{Call, decode_body, respond};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

pub async fn handle(call: Call, body: Bytes) -> Result<Response, ApiError> {
    if call.info.verb != "create" {
        return Err(ApiError::method_not_allowed(format!("{} only supports create", call.resource.qualified_plural())));
    }
    let review = decode_body(&call.headers, &body)?;
    let user = &call.user;
    let answer = match call.resource.kind.as_str() {
        "SelfSubjectReview" => json!({
            "kind": "SelfSubjectReview", "apiVersion": call.resource.api_version(),
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": {"username": user.name, "uid": user.uid, "groups": user.groups, "extra": user.extra}},
        }),
        "SelfSubjectAccessReview" => access::review(&call.state, user, review, None).await?,
        "SubjectAccessReview" => {
            let subject = access::subject(&review);
            access::review(&call.state, &subject, review, None).await?
        }
        "LocalSubjectAccessReview" => {
            let subject = access::subject(&review);
            access::review(&call.state, &subject, review, Some(call.namespace().unwrap_or_default())).await?
        }
        "SelfSubjectRulesReview" => rules::review(&call.state, user, review).await?,
        other => {
            return Err(ApiError::method_not_allowed(format!("{other} is not served by this server yet")));
        }
    };
    Ok(respond(StatusCode::CREATED, &answer, call.negotiated))
}
