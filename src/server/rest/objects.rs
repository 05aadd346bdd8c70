//! Preparing objects for the store, shared by create, update and patch:
//! type and namespace checks, system metadata (uid, creationTimestamp,
//! generation, generateName), status/spec separation, defaulting and
//! validation through the kind's strategy, and namespace lifecycle admission.

use super::Call;
use crate::server::catalog::ResourceInfo;
use crate::server::error::ApiError;
use crate::server::kinds::{self, NameRule, Subresource, meta};
use rand::Rng;
use serde_json::{Map, Value, json};

/// Now, as Kubernetes writes timestamps (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn name_rule(res: &ResourceInfo) -> NameRule {
    match kinds::strategy(&res.group, &res.kind) {
        Some(strategy) => strategy.name_rule(),
        None if res.group == "rbac.authorization.k8s.io" => NameRule::PathSegment,
        None => NameRule::Dns1123Subdomain,
    }
}

fn metadata_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    };
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    meta.as_object_mut().ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

/// Checks `apiVersion`/`kind` of a body against the resource, filling them in when absent.
pub fn check_type(res: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    let expected_version = res.api_version();
    let map = obj.as_object_mut().ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), Value::String(expected_version));
        }
        Some(version) if version == expected_version => {}
        Some(version) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({version}) does not match the expected API version ({expected_version})"
            )));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), Value::String(res.kind.clone()));
        }
        Some(kind) if kind == res.kind => {}
        Some(kind) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                res.kind
            )));
        }
    }
    Ok(())
}

/// Reconciles `metadata.namespace` with the request path's namespace.
fn check_namespace(call: &Call, meta: &mut Map<String, Value>) -> Result<(), ApiError> {
    if !call.resource.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let path_ns = call.namespace().unwrap_or_default().to_string();
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != path_ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta.insert("namespace".into(), Value::String(path_ns));
            Ok(())
        }
    }
}

pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Prepares a new object: system metadata, defaults, validation.
pub fn prepare_create(call: &Call, mut obj: Value) -> Result<Value, ApiError> {
    let res = &call.resource;
    check_type(res, &mut obj)?;
    let meta = metadata_mut(&mut obj)?;
    check_namespace(call, meta)?;
    let name = meta.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    if name.is_empty()
        && let Some(prefix) = meta.get("generateName").and_then(Value::as_str).filter(|p| !p.is_empty())
    {
        let generated = format!("{prefix}{}", random_suffix());
        meta.insert("name".into(), Value::String(generated));
    }
    if let Some(path_name) = &call.info.name
        && meta.get("name").and_then(Value::as_str) != Some(path_name.as_str())
    {
        return Err(ApiError::bad_request("the name of the object does not match the name on the URL"));
    }
    meta.insert("uid".into(), Value::String(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
    for field in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        meta.remove(field);
    }
    if obj.get("spec").is_some() || res.subresources.iter().any(|s| s == "status") {
        metadata_mut(&mut obj)?.insert("generation".into(), json!(1));
    }
    let strategy = kinds::strategy(&res.group, &res.kind);
    if let Some(strategy) = strategy {
        strategy.default(&mut obj);
        strategy.prepare_for_create(&mut obj);
    } else if res.subresources.iter().any(|s| s == "status") && !matches!(res.kind.as_str(), "Namespace" | "Node") {
        // Status is written by controllers through /status, never by a create.
        if let Some(map) = obj.as_object_mut() {
            map.remove("status");
        }
    }
    let mut errors = meta::validate_object_meta_create(&obj, name_rule(res), res.namespaced);
    if let Some(strategy) = strategy {
        errors.extend(strategy.validate_create(&obj));
    }
    if !errors.is_empty() {
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        return Err(ApiError::invalid(&res.group, &res.kind, &name, errors));
    }
    Ok(obj)
}

/// Prepares a replacement of `old`: keeps system metadata, separates spec
/// and status by subresource, bumps generation, validates.
pub fn prepare_update(call: &Call, mut new: Value, old: &Value) -> Result<Value, ApiError> {
    let res = &call.resource;
    check_type(res, &mut new)?;
    let subresource = match call.info.subresource.as_deref() {
        Some("status") => Subresource::Status,
        _ => Subresource::Main,
    };
    {
        let meta = metadata_mut(&mut new)?;
        check_namespace(call, meta)?;
        if meta.get("name").and_then(Value::as_str) != Some(call.name()) {
            return Err(ApiError::bad_request("the name of the object does not match the name on the URL"));
        }
        for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
            match old.pointer(&format!("/metadata/{field}")) {
                Some(value) => meta.insert(field.into(), value.clone()),
                None => meta.remove(field),
            };
        }
    }
    let has_status = res.subresources.iter().any(|s| s == "status");
    let strategy = kinds::strategy(&res.group, &res.kind);
    if let Some(strategy) = strategy {
        strategy.default(&mut new);
        strategy.prepare_for_update(&mut new, old, subresource);
    } else if has_status {
        kinds::core::split_status(&mut new, old, subresource);
    }
    if subresource == Subresource::Main && new.get("spec") != old.get("spec") {
        let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
        metadata_mut(&mut new)?.insert("generation".into(), json!(generation + 1));
    }
    let mut errors = meta::validate_object_meta_update(&new, old);
    if let Some(strategy) = strategy {
        errors.extend(strategy.validate_update(&new, old, subresource));
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(&res.group, &res.kind, call.name(), errors));
    }
    Ok(new)
}

/// NamespaceLifecycle admission: objects are created only in namespaces that
/// exist and are not being deleted.
pub async fn admit_namespace(call: &Call) -> Result<(), ApiError> {
    let Some(ns) = call.namespace() else { return Ok(()) };
    let Some(namespaces) = call.state.catalog.lookup("", "v1", "namespaces") else { return Ok(()) };
    let namespace = call.state.registry.get(&namespaces, None, ns).await?;
    if namespace.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::forbidden(
            &call.resource.group,
            &call.resource.plural,
            "",
            &format!("unable to create new content in namespace {ns} because it is being terminated"),
        ));
    }
    Ok(())
}
