//! OpenAPI documents built from the catalog: `/openapi/v3` (the index),
//! `/openapi/v3/<api path>` (one OpenAPI 3.0 document per group-version, what
//! kubectl reads for `fieldValidation` support, apply patches and `explain`)
//! and `/openapi/v2` (Swagger 2.0). Documents are built on first use and
//! cached until the catalog changes.

pub mod document;
pub mod kinds;
pub mod paths;
pub mod proto_v2;
pub mod schemas;

use super::catalog::Catalog;
use super::error::ApiError;
use super::state::ApiState;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use document::GroupVersionDoc;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    #[error("cannot serialize the OpenAPI document {document}")]
    Serialize {
        document: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the OpenAPI documents could not be built: {0}")]
    Build(String),
}

impl OpenApiError {
    fn into_api_error(self) -> ApiError {
        ApiError::internal("building the OpenAPI documents", &self)
    }
}

/// The documents of one catalog state.
struct Documents {
    /// What the documents were built from; a different catalog rebuilds them.
    fingerprint: String,
    resources: Vec<Arc<super::catalog::ResourceInfo>>,
    root: Bytes,
    v3: Vec<GroupVersionDoc>,
    /// Built on first request: (body, hash).
    v2: OnceLock<(Bytes, String)>,
    /// The v2 document as gnostic protobuf, built on first request.
    v2_proto: OnceLock<Bytes>,
}

static CACHE: Mutex<Option<Arc<Documents>>> = Mutex::new(None);

/// Every served resource's identity and shape, in serving order.
fn fingerprint(resources: &[Arc<super::catalog::ResourceInfo>]) -> String {
    let mut out = String::new();
    for r in resources {
        out.push_str(&format!(
            "{}/{}/{}/{}/{}/{}/{};",
            r.group,
            r.version,
            r.kind,
            r.plural,
            r.namespaced,
            r.stored,
            r.subresources.join(",")
        ));
    }
    out
}

/// The documents of the catalog as it is now, built if it changed.
fn documents(catalog: &Catalog) -> Result<Arc<Documents>, OpenApiError> {
    let resources = catalog.all();
    let fingerprint = fingerprint(&resources);
    let mut cache = CACHE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(docs) = cache.as_ref().filter(|d| d.fingerprint == fingerprint) {
        return Ok(docs.clone());
    }
    let started = Instant::now();
    let v3 = document::group_version_docs(&resources)?;
    let root = document::root(&v3)?;
    let bytes: usize = v3.iter().map(|d| d.body.len()).sum();
    tracing::info!(
        group_versions = v3.len(),
        bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "built the OpenAPI v3 documents"
    );
    let docs = Arc::new(Documents { fingerprint, resources, root, v3, v2: OnceLock::new(), v2_proto: OnceLock::new() });
    *cache = Some(docs.clone());
    Ok(docs)
}

fn v2_of(docs: &Documents) -> Result<(Bytes, String), OpenApiError> {
    if let Some(v2) = docs.v2.get() {
        return Ok(v2.clone());
    }
    let started = Instant::now();
    let body = document::v2(&docs.resources)?;
    tracing::info!(
        bytes = body.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "built the OpenAPI v2 document"
    );
    let hash = document::hash(&body);
    Ok(docs.v2.get_or_init(|| (body, hash)).clone())
}

/// Whether the client takes JSON; protobuf-only clients get 406.
fn accepts_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else { return true };
    accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or("").trim();
        matches!(media, "" | "*/*" | "application/*" | "application/json")
    })
}

fn not_acceptable() -> ApiError {
    ApiError::not_acceptable("only the following media types are accepted: application/json")
}

/// A JSON document with its ETag, or 304 when the client already has it.
fn json_document(body: Bytes, hash: Option<&str>, immutable: bool, headers: &HeaderMap) -> Response {
    let etag = hash.map(|h| format!("\"{h}\""));
    if let Some(etag) = &etag
        && headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mut response = (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    let cache = if immutable { "public, immutable" } else { "no-cache, private" };
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Some(value) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// `GET /openapi/v3`, for a catalog.
pub fn v3_root_response(catalog: &Catalog, headers: &HeaderMap) -> Result<Response, ApiError> {
    if !accepts_json(headers) {
        return Err(not_acceptable());
    }
    let docs = documents(catalog).map_err(OpenApiError::into_api_error)?;
    Ok(json_document(docs.root.clone(), None, false, headers))
}

/// `GET /openapi/v3/<path>` (`api/v1`, `apis/apps/v1`), for a catalog.
pub fn v3_group_version_response(
    catalog: &Catalog,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let docs = documents(catalog).map_err(OpenApiError::into_api_error)?;
    let path = path.trim_matches('/');
    let Some(doc) = docs.v3.iter().find(|d| d.key == path) else {
        return Err(ApiError::not_found_path());
    };
    if !accepts_json(headers) {
        return Err(not_acceptable());
    }
    let asked = query.unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("hash="));
    let immutable = asked.is_some_and(|h| h.eq_ignore_ascii_case(&doc.hash));
    Ok(json_document(doc.body.clone(), Some(&doc.hash), immutable, headers))
}

/// The gnostic protobuf media type the client asks for, if any.
fn asked_v2_protobuf(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())?;
    accept.split(',').find_map(|part| {
        let media = part.split(';').next().unwrap_or("").trim();
        proto_v2::MEDIA_TYPES.into_iter().find(|known| *known == media)
    })
}

/// `GET /openapi/v2`, for a catalog: JSON, or protobuf for clients that ask
/// for it (kubectl validating a `kind: List`).
pub fn v2_response(catalog: &Catalog, headers: &HeaderMap) -> Result<Response, ApiError> {
    let json = accepts_json(headers);
    let protobuf = asked_v2_protobuf(headers);
    if !json && protobuf.is_none() {
        return Err(ApiError::not_acceptable(format!(
            "only the following media types are accepted: application/json, {}",
            proto_v2::MEDIA_TYPES.join(", ")
        )));
    }
    let docs = documents(catalog).map_err(OpenApiError::into_api_error)?;
    let (body, hash) = v2_of(&docs).map_err(OpenApiError::into_api_error)?;
    // Whichever form was asked, the answer names the one Go's mime parser reads.
    let Some(_) = protobuf else {
        return Ok(json_document(body, Some(&hash), false, headers));
    };
    let encoded = match docs.v2_proto.get() {
        Some(encoded) => encoded.clone(),
        None => {
            let document: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|err| ApiError::internal("read back the OpenAPI v2 document", &err))?;
            docs.v2_proto.get_or_init(|| Bytes::from(proto_v2::encode(&document))).clone()
        }
    };
    let mut response = json_document(encoded, Some(&format!("{hash}-protobuf")), false, headers);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(proto_v2::MEDIA_TYPES[0]));
    Ok(response)
}

/// Runs a document builder off the async workers: the first build takes a while.
async fn blocking(work: impl FnOnce() -> Result<Response, ApiError> + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => err.into_response(),
        Err(join) => OpenApiError::Build(join.to_string()).into_api_error().into_response(),
    }
}

/// `GET /openapi/v3`
pub async fn v3_root(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let catalog = state.catalog.clone();
    blocking(move || v3_root_response(&catalog, &headers)).await
}

/// `GET /openapi/v3/{*path}`
pub async fn v3_group_version(
    State(state): State<ApiState>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let catalog = state.catalog.clone();
    blocking(move || v3_group_version_response(&catalog, &path, query.as_deref(), &headers)).await
}

/// `GET /openapi/v2`
pub async fn v2(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let catalog = state.catalog.clone();
    blocking(move || v2_response(&catalog, &headers)).await
}

#[cfg(test)]
mod tests;
