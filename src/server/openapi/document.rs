//! The documents themselves: one OpenAPI 3.0 document per group-version, the
//! `/openapi/v3` index of them with content hashes, and the Swagger 2.0
//! document of everything.

use super::OpenApiError;
use super::paths::{self, PathItem};
use super::schemas::{Flavor, SchemaSet};
use crate::server::catalog::ResourceInfo;
use crate::server::health::KUBERNETES_VERSION;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// One serialized group-version document.
#[derive(Clone, Debug)]
pub struct GroupVersionDoc {
    /// `api/v1`, `apis/apps/v1`: the key in the `/openapi/v3` index.
    pub key: String,
    /// Upper-case hex SHA-256 of `body`, used as `?hash=` and ETag.
    pub hash: String,
    pub body: Bytes,
}

/// `api/v1` or `apis/<group>/<version>`.
pub fn key(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

pub fn hash(body: &[u8]) -> String {
    Sha256::digest(body).iter().map(|b| format!("{b:02X}")).collect()
}

fn security_schemes() -> Value {
    json!({"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header", "description": "Bearer Token authentication"}})
}

/// The OpenAPI 3.0 document of one group-version's resources.
pub fn group_version_value(group: &str, version: &str, resources: &[Arc<ResourceInfo>]) -> Value {
    let mut schemas = SchemaSet::new(Flavor::V3);
    let items: Vec<PathItem> = resources.iter().flat_map(|r| paths::resource_paths(r, &mut schemas)).collect();
    let paths = paths::render(&items, &schemas, Flavor::V3);
    let title = format!("Kubernetes {}", key(group, version));
    json!({
        "openapi": "3.0.0",
        "info": {"title": title, "version": "unversioned"},
        "paths": paths,
        "components": {"schemas": schemas.finish(), "securitySchemes": security_schemes()},
    })
}

/// The group-versions of the catalog, in serving order, with their resources
/// (not the computed resource metrics, which have no schema of their own here).
pub fn group_versions(resources: &[Arc<ResourceInfo>]) -> Vec<(String, String, Vec<Arc<ResourceInfo>>)> {
    let mut out: Vec<(String, String, Vec<Arc<ResourceInfo>>)> = Vec::new();
    for res in resources.iter().filter(|r| r.group != crate::server::resource_metrics::GROUP) {
        match out.iter_mut().find(|(g, v, _)| *g == res.group && *v == res.version) {
            Some((_, _, list)) => list.push(res.clone()),
            None => out.push((res.group.clone(), res.version.clone(), vec![res.clone()])),
        }
    }
    out
}

/// Every group-version document, serialized.
pub fn group_version_docs(resources: &[Arc<ResourceInfo>]) -> Result<Vec<GroupVersionDoc>, OpenApiError> {
    group_versions(resources)
        .into_iter()
        .map(|(group, version, list)| {
            let body = serde_json::to_vec(&group_version_value(&group, &version, &list))
                .map_err(|source| OpenApiError::Serialize { document: key(&group, &version), source })?;
            Ok(GroupVersionDoc { key: key(&group, &version), hash: hash(&body), body: Bytes::from(body) })
        })
        .collect()
}

/// The `/openapi/v3` index: where each group-version document is, with its hash.
pub fn root(docs: &[GroupVersionDoc]) -> Result<Bytes, OpenApiError> {
    let paths: Map<String, Value> = docs
        .iter()
        .map(|d| (d.key.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{}?hash={}", d.key, d.hash)})))
        .collect();
    serde_json::to_vec(&json!({"paths": paths}))
        .map(Bytes::from)
        .map_err(|source| OpenApiError::Serialize { document: "openapi/v3".into(), source })
}

/// The Swagger 2.0 document of every resource.
pub fn v2_value(resources: &[Arc<ResourceInfo>]) -> Value {
    let mut schemas = SchemaSet::new(Flavor::V2);
    let items: Vec<PathItem> = resources.iter().flat_map(|r| paths::resource_paths(r, &mut schemas)).collect();
    let paths = paths::render(&items, &schemas, Flavor::V2);
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "definitions": schemas.finish(),
        "securityDefinitions": security_schemes(),
        "security": [{"BearerToken": []}],
    })
}

/// The Swagger 2.0 document, serialized.
pub fn v2(resources: &[Arc<ResourceInfo>]) -> Result<Bytes, OpenApiError> {
    serde_json::to_vec(&v2_value(resources))
        .map(Bytes::from)
        .map_err(|source| OpenApiError::Serialize { document: "openapi/v2".into(), source })
}
