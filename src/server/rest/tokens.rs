//! The TokenRequest API (`serviceaccounts/<name>/token`, what `kubectl
//! create token` calls) and TokenReview (`tokenreviews`): service-account
//! tokens issued and checked by the server's signer.

use super::{Call, decode_body, respond};
use crate::server::authn::serviceaccount::{ObjectRef, TokenRequest, TokenSigner};
use crate::server::error::ApiError;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;

fn signer(call: &Call) -> Result<Arc<TokenSigner>, ApiError> {
    call.signer.clone().ok_or_else(|| ApiError::service_unavailable("service-account tokens are not configured"))
}

/// `POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token`
pub async fn request(call: Call, body: Bytes) -> Result<Response, ApiError> {
    let signer = signer(&call)?;
    let review = if body.is_empty() { json!({}) } else { decode_body(&call.headers, &body)? };
    let ns = call.namespace().unwrap_or("default").to_string();
    let account = call.state.registry.get(&call.resource, Some(&ns), call.name()).await?;
    let uid = account.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
    let expiration = review.pointer("/spec/expirationSeconds").and_then(Value::as_i64).unwrap_or(3600);
    if expiration < 600 {
        return Err(ApiError::bad_request(
            "spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes",
        ));
    }
    let audiences: Vec<String> = review
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let node = crate::server::authz::node::node_of(&call.user).map(str::to_string);
    let pod = match review.pointer("/spec/boundObjectRef") {
        Some(bound) if bound.get("kind").and_then(Value::as_str) == Some("Pod") => {
            Some(bound_pod(&call, &ns, bound, node.as_deref()).await?)
        }
        // NodeRestriction: a node may only ask for tokens bound to its pods.
        _ if node.is_some() => {
            return Err(ApiError::forbidden(
                "",
                "serviceaccounts",
                call.name(),
                "node requested token not bound to a pod",
            ));
        }
        _ => None,
    };
    let request = TokenRequest {
        namespace: ns.clone(),
        service_account: ObjectRef { name: call.name().to_string(), uid },
        pod,
        audiences: audiences.clone(),
        expiration_seconds: expiration,
    };
    let (token, claims) = signer.issue(&request).map_err(|err| ApiError::internal("sign a token", &err))?;
    let expires = jiff::Timestamp::from_second(claims.exp)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let answer = json!({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": call.name(), "namespace": ns, "creationTimestamp": null},
        "spec": {"audiences": claims.aud, "expirationSeconds": expiration,
                 "boundObjectRef": review.pointer("/spec/boundObjectRef").cloned().unwrap_or(Value::Null)},
        "status": {"token": token, "expirationTimestamp": expires},
    });
    Ok(respond(StatusCode::CREATED, &answer, call.negotiated))
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`
pub async fn review(call: Call, body: Bytes) -> Result<Response, ApiError> {
    let signer = signer(&call)?;
    let review = decode_body(&call.headers, &body)?;
    let token = review.pointer("/spec/token").and_then(Value::as_str).unwrap_or_default();
    let wanted: Vec<&str> = review
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let audiences: Vec<&str> =
        if wanted.is_empty() { vec![crate::server::authn::serviceaccount::API_AUDIENCE] } else { wanted };
    let now = jiff::Timestamp::now().as_second();
    let status = match signer.verify_at(token, &audiences, now) {
        Ok(claims) => {
            let user = crate::server::authn::serviceaccount::user_of(&claims);
            json!({"authenticated": true, "audiences": audiences,
                   "user": {"username": user.name, "uid": user.uid, "groups": user.groups, "extra": user.extra}})
        }
        Err(err) => json!({"authenticated": false, "error": err.to_string(), "user": {}}),
    };
    let mut answer = review.clone();
    answer["status"] = status;
    Ok(respond(StatusCode::CREATED, &answer, call.negotiated))
}

/// The pod a token is bound to, as it is now: it must exist, match the given
/// UID (if any) and run as the token's service account, as upstream requires.
async fn bound_pod(call: &Call, ns: &str, bound: &Value, node: Option<&str>) -> Result<ObjectRef, ApiError> {
    let name = bound.get("name").and_then(Value::as_str).unwrap_or_default();
    let pods = call.state.catalog.lookup("", "v1", "pods").ok_or_else(ApiError::not_found_path)?;
    let pod = call.state.registry.get(&pods, Some(ns), name).await?;
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
    if let Some(asked) = bound.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty())
        && asked != uid
    {
        return Err(ApiError::conflict(
            "",
            "pods",
            name,
            &format!(
                "the UID in the bound object reference ({asked}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
            ),
        ));
    }
    if let Some(node) = node
        && pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node)
    {
        return Err(ApiError::forbidden(
            "",
            "serviceaccounts",
            call.name(),
            "node requested token bound to a pod scheduled on a different node",
        ));
    }
    let runs_as = pod.pointer("/spec/serviceAccountName").and_then(Value::as_str).unwrap_or("default");
    if runs_as != call.name() {
        return Err(ApiError::bad_request(format!(
            "cannot bind token for serviceaccount \"{}\" to pod running with different serviceaccount name.",
            call.name()
        )));
    }
    Ok(ObjectRef { name: name.to_string(), uid })
}
