//! Objects over the store: JSON objects under `/registry/...` keys with
//! `metadata.resourceVersion` taken from the key's mod revision. Every writer
//! (REST handlers, controllers, the local agent) goes through here.

pub mod allocator;
mod list;
mod watch;

pub use list::{ListOptions, ListResult};
pub use watch::{ObjectEvent, ObjectWatch};

use super::catalog::ResourceInfo;
use super::error::ApiError;
use crate::store::{Compare, KeyValue, Op, OpResult, RangeRequest, Revision, Store, StoreError, Txn};
use bytes::Bytes;
use serde_json::Value;
use std::time::Duration;

/// The object store of the API server.
#[derive(Clone)]
pub struct Registry {
    store: Store,
}

/// A store failure as the API reports it.
pub fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::Compacted { requested, compacted } => {
            ApiError::expired(format!("too old resource version: {requested} ({compacted})"))
        }
        StoreError::FutureRevision { requested, current } => {
            ApiError::timeout(format!("Too large resource version: {requested}, current: {current}"))
        }
        StoreError::NoLeader(_) | StoreError::ShuttingDown => ApiError::service_unavailable(err.to_string()),
        other => ApiError::internal("storage", &other),
    }
}

/// Parses a `resourceVersion` string; empty means "unset".
pub fn parse_resource_version(text: &str) -> Result<Option<Revision>, ApiError> {
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<Revision>() {
        Ok(rv) if rv >= 0 => Ok(Some(rv)),
        _ => Err(ApiError::bad_request(format!("invalid resource version: {text:?}"))),
    }
}

/// The JSON object of a stored key, with its resource version.
pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|err| ApiError::internal(&format!("decode stored object {}", kv.key), &err))?;
    set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

pub fn set_resource_version(obj: &mut Value, revision: Revision) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(revision.to_string()));
    }
}

fn encode(obj: &Value) -> Result<Bytes, ApiError> {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("selfLink");
    }
    serde_json::to_vec(&obj).map(Bytes::from).map_err(|err| ApiError::internal("encode object", &err))
}

pub fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

pub fn namespace_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/namespace").and_then(Value::as_str).filter(|ns| !ns.is_empty())
}

/// Whether a deleted object has no finalizers left (and may leave the store).
pub fn finalized(res: &ResourceInfo, obj: &Value) -> bool {
    let empty = |pointer: &str| obj.pointer(pointer).and_then(Value::as_array).is_none_or(Vec::is_empty);
    obj.pointer("/metadata/deletionTimestamp").is_some()
        && empty("/metadata/finalizers")
        && (res.kind != "Namespace" || empty("/spec/finalizers"))
        && !(res.kind == "Pod" && obj.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty()))
}

/// The `metadata.resourceVersion` the client sent, if any.
pub fn resource_version_of(obj: &Value) -> Result<Option<Revision>, ApiError> {
    parse_resource_version(obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default())
}

impl Registry {
    pub fn new(store: Store) -> Registry {
        Registry { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The stored object, or 404.
    pub async fn get(&self, res: &ResourceInfo, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
        self.try_get(res, namespace, name).await?.ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))
    }

    pub async fn try_get(&self, res: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<Option<Value>, ApiError> {
        let request = RangeRequest { key: res.key(ns, name), ..Default::default() };
        let response = self.store.range(request).await.map_err(store_error)?;
        response.kvs.first().map(decode).transpose()
    }

    /// Stores a new object (the caller filled in its metadata); 409 if it exists.
    pub async fn create(&self, res: &ResourceInfo, obj: Value, ttl: Option<Duration>) -> Result<Value, ApiError> {
        let name = name_of(&obj).to_string();
        let key = res.key(namespace_of(&obj), &name);
        let txn = Txn {
            compare: vec![Compare::Exists { key: key.clone(), exists: false }],
            success: vec![Op::Put { key, value: encode(&obj)?, ttl }],
            failure: vec![],
        };
        let response = self.store.txn(txn).await.map_err(store_error)?;
        if !response.succeeded {
            return Err(ApiError::already_exists(&res.group, &res.plural, &name));
        }
        let mut obj = obj;
        set_resource_version(&mut obj, response.revision);
        Ok(obj)
    }

    /// Replaces the object if its mod revision is still `expected`; 409 otherwise.
    pub async fn replace(&self, res: &ResourceInfo, obj: Value, expected: Revision) -> Result<Value, ApiError> {
        let name = name_of(&obj).to_string();
        let key = res.key(namespace_of(&obj), &name);
        let txn = Txn {
            compare: vec![Compare::ModRevision { key: key.clone(), revision: expected }],
            success: vec![Op::Put { key, value: encode(&obj)?, ttl: None }],
            failure: vec![],
        };
        let response = self.store.txn(txn).await.map_err(store_error)?;
        if !response.succeeded {
            return Err(ApiError::stale_update(&res.group, &res.plural, &name));
        }
        let mut obj = obj;
        set_resource_version(&mut obj, response.revision);
        Ok(obj)
    }

    /// Like [`Registry::replace`], but an object being deleted whose last
    /// finalizer is gone is removed instead (pods wait for their node's agent).
    pub async fn replace_or_finalize(
        &self,
        res: &ResourceInfo,
        obj: Value,
        expected: Revision,
    ) -> Result<Value, ApiError> {
        if finalized(res, &obj) {
            let name = name_of(&obj).to_string();
            return self.remove(res, namespace_of(&obj), &name, expected).await;
        }
        self.replace(res, obj, expected).await
    }

    /// Removes the object if its mod revision is still `expected`; 409 otherwise.
    pub async fn remove(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        expected: Revision,
    ) -> Result<Value, ApiError> {
        let key = res.key(ns, name);
        let txn = Txn {
            compare: vec![Compare::ModRevision { key: key.clone(), revision: expected }],
            success: vec![Op::Delete { key }],
            failure: vec![],
        };
        let response = self.store.txn(txn).await.map_err(store_error)?;
        match response.results.first() {
            Some(OpResult::Delete { prev: Some(prev) }) if response.succeeded => decode(prev),
            _ => Err(ApiError::stale_update(&res.group, &res.plural, name)),
        }
    }

    /// Reads the object, lets `change` compute its new form and writes that,
    /// retrying on conflicts (upstream's GuaranteedUpdate). `change` returning
    /// `None` leaves the object unchanged.
    pub async fn update_with<F>(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        mut change: F,
    ) -> Result<Value, ApiError>
    where
        F: FnMut(&Value) -> Result<Option<Value>, ApiError>,
    {
        for _ in 0..16 {
            let current = self.get(res, ns, name).await?;
            let Some(revision) = resource_version_of(&current)? else {
                return Err(ApiError::internal("update", &"stored object without resourceVersion"));
            };
            let Some(next) = change(&current)? else { return Ok(current) };
            match self.replace(res, next, revision).await {
                Err(err) if err.code == 409 => continue,
                other => return other,
            }
        }
        Err(ApiError::conflict(&res.group, &res.plural, name, "too many concurrent updates; try again"))
    }
}
