//! The API server's one error type. Every failure a client sees is rendered as
//! a Kubernetes `Status` object with upstream's code, reason and message shape.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, Status, StatusCause, StatusDetails};

/// Upstream's `metav1.StatusReason` values that this server produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    AlreadyExists,
    Conflict,
    Gone,
    Expired,
    Invalid,
    MethodNotAllowed,
    NotAcceptable,
    UnsupportedMediaType,
    RequestEntityTooLarge,
    TooManyRequests,
    InternalError,
    ServiceUnavailable,
    Timeout,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "BadRequest",
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::NotFound => "NotFound",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Gone => "Gone",
            Reason::Expired => "Expired",
            Reason::Invalid => "Invalid",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::NotAcceptable => "NotAcceptable",
            Reason::UnsupportedMediaType => "UnsupportedMediaType",
            Reason::RequestEntityTooLarge => "RequestEntityTooLarge",
            Reason::TooManyRequests => "TooManyRequests",
            Reason::InternalError => "InternalError",
            Reason::ServiceUnavailable => "ServiceUnavailable",
            Reason::Timeout => "Timeout",
        }
    }
}

/// One field error of an `Invalid` response (upstream `field.Error`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, …
    pub reason: String,
    /// The field path, e.g. `spec.containers[0].name`.
    pub field: String,
    /// The human text after the field path, e.g. `Required value`.
    pub message: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: &str) -> FieldError {
        let message =
            if detail.is_empty() { "Required value".to_string() } else { format!("Required value: {detail}") };
        FieldError { reason: "FieldValueRequired".into(), field: field.into(), message }
    }

    /// `Invalid value: "value": detail`, as upstream's `field.Invalid`.
    pub fn invalid(field: impl Into<String>, value: &serde_json::Value, detail: &str) -> FieldError {
        FieldError {
            reason: "FieldValueInvalid".into(),
            field: field.into(),
            message: format!("Invalid value: {}: {detail}", value),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: &str) -> FieldError {
        FieldError {
            reason: "FieldValueForbidden".into(),
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }

    pub fn not_supported(field: impl Into<String>, value: &serde_json::Value, supported: &[&str]) -> FieldError {
        let quoted: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        FieldError {
            reason: "FieldValueNotSupported".into(),
            field: field.into(),
            message: format!("Unsupported value: {}: supported values: {}", value, quoted.join(", ")),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: &serde_json::Value) -> FieldError {
        FieldError {
            reason: "FieldValueDuplicate".into(),
            field: field.into(),
            message: format!("Duplicate value: {value}"),
        }
    }

    /// `field: message`, the way upstream prints it inside an Invalid message.
    pub fn to_text(&self) -> String {
        if self.field.is_empty() { self.message.clone() } else { format!("{}: {}", self.field, self.message) }
    }
}

/// What the request was about, for the `details` of a Status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// API group ("" for the core group).
    pub group: String,
    /// Resource plural (`pods`) for most reasons; the Kind (`Pod`) for Invalid.
    pub kind: String,
    pub name: String,
}

/// A failed API request, rendered as a `Status` object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: Reason,
    pub message: String,
    pub subject: Option<Box<Subject>>,
    pub causes: Vec<FieldError>,
    pub retry_after_seconds: Option<i32>,
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") }
}

impl ApiError {
    pub fn new(code: u16, reason: Reason, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), subject: None, causes: Vec::new(), retry_after_seconds: None }
    }

    fn with_subject(mut self, group: &str, kind: &str, name: &str) -> ApiError {
        self.subject = Some(Box::new(Subject { group: group.into(), kind: kind.into(), name: name.into() }));
        self
    }

    /// `pods "x" not found`
    pub fn not_found(group: &str, resource: &str, name: &str) -> ApiError {
        ApiError::new(404, Reason::NotFound, format!("{} \"{name}\" not found", qualified(group, resource)))
            .with_subject(group, resource, name)
    }

    /// The same error with another message.
    pub fn with_message(mut self, message: impl Into<String>) -> ApiError {
        self.message = message.into();
        self
    }

    /// Adds a `details.causes` entry that names no field.
    pub fn with_cause(mut self, reason: &str, message: String) -> ApiError {
        self.causes.push(FieldError { reason: reason.into(), field: String::new(), message });
        self
    }

    /// A path the server does not serve.
    pub fn not_found_path() -> ApiError {
        ApiError::new(404, Reason::NotFound, "the server could not find the requested resource")
    }

    /// `pods "x" already exists`
    pub fn already_exists(group: &str, resource: &str, name: &str) -> ApiError {
        ApiError::new(409, Reason::AlreadyExists, format!("{} \"{name}\" already exists", qualified(group, resource)))
            .with_subject(group, resource, name)
    }

    /// `Operation cannot be fulfilled on pods "x": <detail>`
    pub fn conflict(group: &str, resource: &str, name: &str, detail: &str) -> ApiError {
        ApiError::new(
            409,
            Reason::Conflict,
            format!("Operation cannot be fulfilled on {} \"{name}\": {detail}", qualified(group, resource)),
        )
        .with_subject(group, resource, name)
    }

    /// The optimistic-concurrency conflict of an update with a stale resourceVersion.
    pub fn stale_update(group: &str, resource: &str, name: &str) -> ApiError {
        ApiError::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `Pod "x" is invalid: [a: Required value, b: Invalid value: …]`
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<FieldError>) -> ApiError {
        let texts: Vec<String> = causes.iter().map(FieldError::to_text).collect();
        let summary = match texts.len() {
            0 => "<nil>".to_string(),
            1 => texts[0].clone(),
            _ => format!("[{}]", texts.join(", ")),
        };
        let qualified_kind = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let mut err = ApiError::new(422, Reason::Invalid, format!("{qualified_kind} \"{name}\" is invalid: {summary}"))
            .with_subject(group, kind, name);
        err.causes = causes;
        err
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, Reason::BadRequest, message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, Reason::Unauthorized, "Unauthorized")
    }

    /// `pods "x" is forbidden: User "bob" cannot get resource "pods" …`
    pub fn forbidden(group: &str, resource: &str, name: &str, reason: &str) -> ApiError {
        let target = if name.is_empty() {
            qualified(group, resource)
        } else {
            format!("{} \"{name}\"", qualified(group, resource))
        };
        ApiError::new(403, Reason::Forbidden, format!("{target} is forbidden: {reason}"))
            .with_subject(group, resource, name)
    }

    /// A watch or list from a compacted resourceVersion:
    /// `too old resource version: 5 (20)`.
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, Reason::Expired, message)
    }

    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, Reason::Gone, message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(405, Reason::MethodNotAllowed, message)
    }

    pub fn not_acceptable(message: impl Into<String>) -> ApiError {
        ApiError::new(406, Reason::NotAcceptable, message)
    }

    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            Reason::UnsupportedMediaType,
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/apply-patch+yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json; got {content_type:?}"
            ),
        )
    }

    pub fn too_large() -> ApiError {
        ApiError::new(413, Reason::RequestEntityTooLarge, "Request entity too large: limit is 3145728")
    }

    pub fn too_many_requests(retry_after_seconds: i32) -> ApiError {
        let mut err = ApiError::new(429, Reason::TooManyRequests, "Too many requests, please try again later.");
        err.retry_after_seconds = Some(retry_after_seconds);
        err
    }

    pub fn service_unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, Reason::ServiceUnavailable, message)
    }

    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(504, Reason::Timeout, message)
    }

    /// A server-side failure: the cause is logged here, the client sees only
    /// that an internal error occurred and what was being done.
    pub fn internal(what: &str, cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error while {what}");
        ApiError::new(500, Reason::InternalError, format!("Internal error occurred: {what}"))
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Status {
        let details = if self.subject.is_some() || !self.causes.is_empty() || self.retry_after_seconds.is_some() {
            let subject = self.subject.as_deref().cloned().unwrap_or_default();
            Some(StatusDetails {
                name: Some(subject.name).filter(|s| !s.is_empty()),
                group: Some(subject.group).filter(|s| !s.is_empty()),
                kind: Some(subject.kind).filter(|s| !s.is_empty()),
                causes: if self.causes.is_empty() {
                    None
                } else {
                    Some(
                        self.causes
                            .iter()
                            .map(|c| StatusCause {
                                reason: Some(c.reason.clone()),
                                message: Some(c.message.clone()),
                                field: Some(c.field.clone()),
                            })
                            .collect(),
                    )
                },
                retry_after_seconds: self.retry_after_seconds,
                uid: None,
            })
        } else {
            None
        };
        Status {
            code: Some(i32::from(self.code)),
            details,
            message: Some(self.message.clone()),
            metadata: ListMeta::default(),
            reason: Some(self.reason.as_str().to_string()),
            status: Some("Failure".to_string()),
        }
    }

    /// The Status as JSON, with `kind` and `apiVersion` set.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self.to_status()).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("kind".into(), "Status".into());
            map.insert("apiVersion".into(), "v1".into());
        }
        value
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.to_json().to_string();
        let mut response = (code, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(value) = self.retry_after_seconds.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_renders_like_upstream() {
        let status = ApiError::not_found("", "pods", "web").to_json();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["apiVersion"], "v1");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["message"], "pods \"web\" not found");
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["code"], 404);
        assert_eq!(status["details"]["name"], "web");
        assert_eq!(status["details"]["kind"], "pods");
        assert!(status["details"].get("group").is_none());
    }

    #[test]
    fn invalid_lists_every_cause() {
        let err = ApiError::invalid(
            "apps",
            "Deployment",
            "web",
            vec![
                FieldError::required("spec.selector", ""),
                FieldError::invalid("metadata.name", &serde_json::json!("Web"), "must be lowercase"),
            ],
        );
        assert_eq!(err.code, 422);
        assert_eq!(
            err.message,
            "Deployment.apps \"web\" is invalid: [spec.selector: Required value, metadata.name: Invalid value: \"Web\": must be lowercase]"
        );
        let status = err.to_json();
        assert_eq!(status["details"]["causes"][0]["field"], "spec.selector");
        assert_eq!(status["details"]["causes"][0]["reason"], "FieldValueRequired");
    }

    #[test]
    fn grouped_resources_are_qualified() {
        let err = ApiError::already_exists("apps", "deployments", "web");
        assert_eq!(err.message, "deployments.apps \"web\" already exists");
    }
}
