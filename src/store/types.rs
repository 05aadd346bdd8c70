//! The store's public data types: keys with their revisions, range reads,
//! transactions and watch events, with etcd's meaning for each field.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The store's global revision. Every write transaction increments it by one;
/// revision 0 means "nothing written yet" (and, in a compare, "key absent").
pub type Revision = i64;

/// One key as stored: its current value and etcd's three counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created this key (since its last delete).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
    /// Number of writes since creation (1 after the create).
    pub version: i64,
    /// Unix time in milliseconds at which the leader deletes this key, if it has a TTL.
    pub expires_at_ms: Option<i64>,
}

/// A read of one key, or of every key under a prefix, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// The key, or the prefix when `prefix` is set.
    pub key: String,
    pub prefix: bool,
    /// Start from this key (inclusive) instead of the first key under the prefix:
    /// the continue key of a paginated list.
    pub start: Option<String>,
    /// Read as of this revision; `None` reads the latest state.
    pub revision: Option<Revision>,
    /// At most this many keys; `None` or 0 means no limit.
    pub limit: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// True when `limit` cut the result short.
    pub more: bool,
    /// How many keys matched in all (from `start`), ignoring `limit`.
    pub count: usize,
    /// The revision the read was served at.
    pub revision: Revision,
}

/// A condition of a transaction, evaluated against the latest state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compare {
    /// The key's mod revision equals `revision`; 0 means the key does not exist.
    ModRevision { key: String, revision: Revision },
    /// The key exists (`exists: true`) or does not (`exists: false`).
    Exists { key: String, exists: bool },
}

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create or replace the key; with a TTL the leader deletes it once expired.
    Put {
        key: String,
        value: Bytes,
        ttl: Option<Duration>,
    },
    Delete {
        key: String,
    },
    Get {
        key: String,
    },
}

/// The result of one [`Op`], in the same position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Put { kv: KeyValue, prev: Option<KeyValue> },
    Delete { prev: Option<KeyValue> },
    Get { kv: Option<KeyValue> },
}

/// If every compare holds, run `success`, otherwise `failure`; all or nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    pub succeeded: bool,
    /// The store revision after the transaction (unchanged if it wrote nothing).
    pub revision: Revision,
    pub results: Vec<OpResult>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch. For a delete, `kv` carries the key, an empty
/// value and the delete's revision as `mod_revision`; `prev` holds the last value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev: Option<KeyValue>,
}

/// What a watch yields: the events of one or more revisions, in order, or a
/// progress notice (`events` empty) saying the store has reached `revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: Revision,
    pub events: Vec<WatchEvent>,
}
