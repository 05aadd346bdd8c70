//! Unique allocations kept in the store: Service cluster IPs and node ports.
//! Each allocated value is a key (`/registry/core/serviceips/10.43.0.7`)
//! created only if absent, so two services can never get the same one.

use super::{Registry, store_error};
use crate::server::error::ApiError;
use crate::store::{Compare, Op, RangeRequest, Txn};
use bytes::Bytes;
use std::collections::HashSet;

pub const SERVICE_IPS: &str = "/registry/core/serviceips/";
pub const NODE_PORTS: &str = "/registry/core/servicenodeports/";

impl Registry {
    /// Reserves `value` under `prefix` for `owner`; false when someone holds it.
    pub async fn reserve(&self, prefix: &str, value: &str, owner: &str) -> Result<bool, ApiError> {
        let key = format!("{prefix}{value}");
        let txn = Txn {
            compare: vec![Compare::Exists { key: key.clone(), exists: false }],
            success: vec![Op::Put { key, value: Bytes::from(owner.to_string()), ttl: None }],
            failure: vec![Op::Get { key: format!("{prefix}{value}") }],
        };
        let response = self.store.txn(txn).await.map_err(store_error)?;
        if response.succeeded {
            return Ok(true);
        }
        // Reserving again for the same owner is not a conflict.
        Ok(
            matches!(response.results.first(), Some(crate::store::OpResult::Get { kv: Some(kv) }) if kv.value == owner.as_bytes()),
        )
    }

    /// Releases `value` if `owner` holds it.
    pub async fn release(&self, prefix: &str, value: &str, owner: &str) -> Result<(), ApiError> {
        let key = format!("{prefix}{value}");
        let current =
            self.store.range(RangeRequest { key: key.clone(), ..Default::default() }).await.map_err(store_error)?;
        let Some(kv) = current.kvs.first() else { return Ok(()) };
        if kv.value != owner.as_bytes() {
            return Ok(());
        }
        let txn = Txn {
            compare: vec![Compare::ModRevision { key: key.clone(), revision: kv.mod_revision }],
            success: vec![Op::Delete { key }],
            failure: vec![],
        };
        self.store.txn(txn).await.map_err(store_error)?;
        Ok(())
    }

    /// Every value reserved under `prefix`.
    pub async fn reserved(&self, prefix: &str) -> Result<HashSet<String>, ApiError> {
        let request = RangeRequest { key: prefix.to_string(), prefix: true, ..Default::default() };
        let response = self.store.range(request).await.map_err(store_error)?;
        Ok(response.kvs.iter().filter_map(|kv| kv.key.strip_prefix(prefix).map(str::to_string)).collect())
    }
}
