//! The in-process API client of controllers, the scheduler and the local
//! agent: requests go through the same router as HTTPS clients (authn,
//! RBAC, admission, validation) without a socket or TLS hop.

use super::authn::UserInfo;
use super::catalog::ResourceInfo;
use super::error::{ApiError, Reason};
use axum::Router;
use axum::body::Body;
use futures::StreamExt;
use http::{Method, Request, header};
use serde_json::Value;
use tower::ServiceExt;

#[derive(Clone)]
pub struct Client {
    router: Router,
    user: UserInfo,
}

/// The REST path of a resource collection or object.
pub fn path(res: &ResourceInfo, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>) -> String {
    let mut path = if res.group.is_empty() {
        format!("/api/{}", res.version)
    } else {
        format!("/apis/{}/{}", res.group, res.version)
    };
    if let Some(ns) = namespace.filter(|_| res.namespaced) {
        path.push_str(&format!("/namespaces/{ns}"));
    }
    path.push('/');
    path.push_str(&res.plural);
    if let Some(name) = name {
        path.push('/');
        path.push_str(name);
    }
    if let Some(sub) = sub {
        path.push('/');
        path.push_str(sub);
    }
    path
}

/// The error a Status response body describes.
fn status_error(code: u16, body: &Value) -> ApiError {
    let message = body.get("message").and_then(Value::as_str).unwrap_or("request failed").to_string();
    let reason = match code {
        404 => Reason::NotFound,
        409 if body.get("reason").and_then(Value::as_str) == Some("AlreadyExists") => Reason::AlreadyExists,
        409 => Reason::Conflict,
        403 => Reason::Forbidden,
        422 => Reason::Invalid,
        400 => Reason::BadRequest,
        _ => Reason::InternalError,
    };
    ApiError::new(code, reason, message)
}

impl Client {
    pub fn new(router: Router, user: UserInfo) -> Client {
        Client { router, user }
    }

    /// One request; a non-2xx answer becomes the `ApiError` its Status describes.
    pub async fn request(&self, method: Method, uri: &str, body: Option<(&str, Value)>) -> Result<Value, ApiError> {
        let response = self.send(method, uri, body).await?;
        let code = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map_err(|err| ApiError::internal("read an in-process response", &err))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if (200..300).contains(&code) { Ok(value) } else { Err(status_error(code, &value)) }
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<(&str, Value)>,
    ) -> Result<http::Response<Body>, ApiError> {
        let mut builder = Request::builder().method(method).uri(uri).header(header::ACCEPT, "application/json");
        let body = match body {
            Some((content_type, value)) => {
                builder = builder.header(header::CONTENT_TYPE, content_type);
                Body::from(serde_json::to_vec(&value).map_err(|err| ApiError::internal("encode a request", &err))?)
            }
            None => Body::empty(),
        };
        let mut request = builder.body(body).map_err(|err| ApiError::internal("build a request", &err))?;
        request.extensions_mut().insert(self.user.clone());
        self.router.clone().oneshot(request).await.map_err(|err| ApiError::internal("route a request", &err))
    }

    pub async fn get(&self, uri: &str) -> Result<Value, ApiError> {
        self.request(Method::GET, uri, None).await
    }

    pub async fn create(&self, uri: &str, obj: Value) -> Result<Value, ApiError> {
        self.request(Method::POST, uri, Some(("application/json", obj))).await
    }

    pub async fn update(&self, uri: &str, obj: Value) -> Result<Value, ApiError> {
        self.request(Method::PUT, uri, Some(("application/json", obj))).await
    }

    pub async fn merge_patch(&self, uri: &str, patch: Value) -> Result<Value, ApiError> {
        self.request(Method::PATCH, uri, Some(("application/merge-patch+json", patch))).await
    }

    pub async fn delete(&self, uri: &str, options: Option<Value>) -> Result<Value, ApiError> {
        self.request(Method::DELETE, uri, options.map(|o| ("application/json", o))).await
    }

    /// The items of a list (all pages).
    pub async fn list(&self, uri: &str) -> Result<Vec<Value>, ApiError> {
        let list = self.get(uri).await?;
        Ok(list.get("items").and_then(Value::as_array).cloned().unwrap_or_default())
    }

    /// A watch stream: (event type, object) pairs until the server ends it.
    pub async fn watch(&self, uri: &str) -> Result<impl futures::Stream<Item = (String, Value)> + use<>, ApiError> {
        let response = self.send(Method::GET, uri, None).await?;
        if !response.status().is_success() {
            let code = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
            return Err(status_error(code, &serde_json::from_slice(&bytes).unwrap_or(Value::Null)));
        }
        let body = response.into_body().into_data_stream();
        let lines = futures::stream::unfold((body, Vec::<u8>::new()), |(mut body, mut buffer)| async move {
            loop {
                if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    return Some((line, (body, buffer)));
                }
                let chunk = body.next().await?.ok()?;
                buffer.extend_from_slice(&chunk);
            }
        });
        Ok(lines.filter_map(|line| async move {
            let event: Value = serde_json::from_slice(&line).ok()?;
            Some((event.get("type")?.as_str()?.to_string(), event.get("object")?.clone()))
        }))
    }
}
