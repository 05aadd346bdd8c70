//! PATCH: JSON, merge, strategic merge and server-side apply patches, applied
//! to the current object in a retry loop so concurrent writers do not lose
//! each other's changes. An apply patch creates the object when it is absent.

use super::objects::{admit_namespace, check_type, prepare_create, prepare_update};
use super::{Call, decode_body, respond};
use crate::server::error::ApiError;
use crate::server::patch::{self, PatchError, PatchKind};
use crate::server::registry::set_resource_version;
use axum::response::Response;
use bytes::Bytes;
use http::{StatusCode, header};
use serde_json::Value;

fn patch_error(call: &Call, err: PatchError) -> ApiError {
    match err {
        PatchError::JsonPatchFailed(_) => {
            ApiError::invalid(&call.resource.group, &call.resource.kind, call.name(), vec![])
                .with_message(err.to_string())
        }
        _ => ApiError::bad_request(err.to_string()),
    }
}

/// `obj` in the stored form (a no-op unless the resource is converted).
fn to_stored(call: &Call, obj: Value) -> Value {
    match call.conversion {
        Some(conversion) => (conversion.to_stored)(&obj),
        None => obj,
    }
}

pub async fn patch(call: Call, body: Bytes) -> Result<Response, ApiError> {
    let content_type = call.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let kind =
        PatchKind::from_content_type(content_type).ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
    let patch_body = decode_body(&call.headers, &body)?;
    let manager = call.param("fieldManager").map(str::to_string);
    if kind == PatchKind::Apply && manager.is_none() {
        return Err(ApiError::invalid("meta.k8s.io", "PatchOptions", "", vec![]).with_message(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    let force = call.param("force") == Some("true");
    let dry_run = call.dry_run()?;
    let registry = call.state.registry.clone();
    let res = call.resource.clone();
    for _ in 0..16 {
        let current = registry.try_get(&res, call.namespace(), call.name()).await?;
        let Some(current) = current else {
            if kind != PatchKind::Apply {
                return Err(ApiError::not_found(&res.group, &res.plural, call.name()));
            }
            let mut obj = to_stored(&call, patch_body.clone());
            super::field_validation::check(&call, &obj)?;
            check_type(&res, &mut obj)?;
            let mut obj = prepare_create(&call, obj)?;
            crate::server::patch::apply::record(
                &mut obj,
                None,
                &patch_body,
                manager.as_deref().unwrap_or_default(),
                &res.api_version(),
            );
            admit_namespace(&call).await?;
            super::service_account_admission::admit(&call, &mut obj).await?;
            let _admitted = crate::server::quota::admit_create(&call, &obj).await?;
            if dry_run {
                return Ok(respond(StatusCode::CREATED, &obj, call.negotiated));
            }
            match super::write::create_allocating(&call, obj, None).await {
                Err(err) if err.code == 409 => continue,
                Err(err) => return Err(err),
                Ok(created) => return Ok(respond(StatusCode::CREATED, &created, call.negotiated)),
            }
        };
        let revision = crate::server::registry::resource_version_of(&current)?.unwrap_or(0);
        // Patches speak the client's version of the object.
        let served = match call.conversion {
            Some(conversion) => (conversion.to_served)(&current),
            None => current.clone(),
        };
        let mut patched = match kind {
            PatchKind::Apply => {
                crate::server::patch::apply::apply(&served, &patch_body, manager.as_deref().unwrap_or_default(), force)
                    .map_err(|err| err.into_api_error(&res.group, &res.plural, call.name()))?
            }
            _ => patch::apply(kind, &served, &patch_body).map_err(|err| patch_error(&call, err))?,
        };
        if kind == PatchKind::Apply {
            crate::server::patch::apply::record(
                &mut patched,
                Some(&served),
                &patch_body,
                manager.as_deref().unwrap_or_default(),
                &res.api_version(),
            );
        }
        let mut patched = to_stored(&call, patched);
        let warnings = super::field_validation::check(&call, &patched)?;
        // A patch cannot move an object: name and namespace stay as addressed.
        patched["metadata"]["name"] = Value::String(call.name().to_string());
        if let Some(ns) = call.namespace() {
            patched["metadata"]["namespace"] = Value::String(ns.to_string());
        }
        if let Some(meta) = patched.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        let mut prepared = prepare_update(&call, patched, &current)?;
        if !dry_run {
            super::write::reallocate(&call, &mut prepared, &current).await?;
        }
        let mut unchanged = prepared.clone();
        set_resource_version(&mut unchanged, revision);
        if dry_run || unchanged == current {
            return Ok(respond(StatusCode::OK, &unchanged, call.negotiated));
        }
        match registry.replace_or_finalize(&res, prepared, revision).await {
            Err(err) if err.code == 409 => continue,
            Err(err) => return Err(err),
            Ok(stored) => {
                let response = respond(StatusCode::OK, &stored, call.negotiated);
                return Ok(super::field_validation::with_warnings(response, &warnings));
            }
        }
    }
    Err(ApiError::conflict(&res.group, &res.plural, call.name(), "too many concurrent updates; try again"))
}
