//! Requests on a resource served in one version and stored in another
//! (`server::conversion`): the body comes in converted to the stored form,
//! the verb runs on the stored resource, and what comes out — an object, a
//! list, each watch event — is converted back for the client.

use super::codec::{Negotiated, decode_body, respond};
use crate::server::conversion::Conversion;
use crate::server::error::ApiError;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, header};
use serde_json::Value;

/// The request body in the stored form, as JSON, with headers that say so.
/// Patch bodies are left alone: patches apply to the served form (see `patch`).
pub fn request_body(conversion: &Conversion, headers: &mut HeaderMap, body: Bytes) -> Result<Bytes, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if body.is_empty() || content_type.contains("patch") {
        return Ok(body);
    }
    let served = decode_body(headers, &body)?;
    let stored = (conversion.to_stored)(&served);
    let bytes = serde_json::to_vec(&stored).map_err(|err| ApiError::internal("encode a converted body", &err))?;
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(Bytes::from(bytes))
}

/// One watch stream chunk (newline-separated events) converted.
fn watch_chunk(conversion: &Conversion, chunk: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(chunk.len());
    for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Value>(line) {
            Ok(mut event) => {
                if let Some(object) = event.get_mut("object") {
                    *object = conversion.response(object.take());
                }
                out.extend(serde_json::to_vec(&event).unwrap_or_else(|_| line.to_vec()));
            }
            Err(_) => out.extend_from_slice(line),
        }
        out.push(b'\n');
    }
    Bytes::from(out)
}

/// The response converted for the client (`negotiated` is what the client
/// asked for; the verb answered in JSON).
pub async fn response(
    conversion: &'static Conversion,
    response: Response,
    watch: bool,
    negotiated: Negotiated,
) -> Response {
    let (parts, body) = response.into_parts();
    if watch && parts.status.is_success() {
        let stream = body.into_data_stream().map(move |chunk| chunk.map(|bytes| watch_chunk(conversion, &bytes)));
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(err) => return axum::response::IntoResponse::into_response(ApiError::internal("read a response", &err)),
    };
    let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let mut converted = respond(parts.status, &conversion.response(value), negotiated);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            converted.headers_mut().insert(name.clone(), value.clone());
        }
    }
    converted
}
