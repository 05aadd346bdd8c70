//! What travels through the Raft log: openraft's type configuration, the
//! commands a log entry carries (transactions with absolute TTL deadlines,
//! compaction) and what applying one answers.

use std::io::Cursor;

use bytes::Bytes;
use openraft::{BasicNode, TokioRuntime};
use serde::{Deserialize, Serialize};

use super::types::{Compare, Op, Revision, Txn, TxnResponse};

/// A member's id in the Raft group.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft's type configuration for the store.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type Vote = openraft::Vote<NodeId>;

/// A state machine command, deterministic on every member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Txn(LogTxn),
    /// Transactions proposed together (group commit), applied in order,
    /// each with its own revision.
    Batch(Vec<LogTxn>),
    /// Drop history older than `revision` (clamped to the current revision).
    Compact {
        revision: Revision,
    },
}

/// A [`Txn`] as logged: TTLs are turned into absolute deadlines by the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogTxn {
    pub compare: Vec<Compare>,
    pub success: Vec<LogOp>,
    pub failure: Vec<LogOp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogOp {
    Put {
        key: String,
        #[serde(with = "base64_bytes")]
        value: Bytes,
        expires_at_ms: Option<i64>,
    },
    Delete {
        key: String,
    },
    Get {
        key: String,
    },
}

impl LogOp {
    pub fn key(&self) -> &str {
        match self {
            LogOp::Put { key, .. } | LogOp::Delete { key } | LogOp::Get { key } => key,
        }
    }
}

impl LogTxn {
    /// Converts a client transaction, fixing TTL deadlines relative to `now_ms`.
    pub fn from_txn(txn: Txn, now_ms: i64) -> LogTxn {
        let conv = |ops: Vec<Op>| -> Vec<LogOp> {
            ops.into_iter()
                .map(|op| match op {
                    Op::Put { key, value, ttl } => LogOp::Put {
                        key,
                        value,
                        expires_at_ms: ttl
                            .map(|d| now_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
                    },
                    Op::Delete { key } => LogOp::Delete { key },
                    Op::Get { key } => LogOp::Get { key },
                })
                .collect()
        };
        LogTxn { compare: txn.compare, success: conv(txn.success), failure: conv(txn.failure) }
    }
}

/// What applying one log entry answers to the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// Blank and membership entries.
    None,
    Txn(TxnResponse),
    Batch(Vec<TxnResponse>),
    Compacted {
        revision: Revision,
    },
}

/// Values travel as base64 strings in the JSON log instead of number arrays.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s.as_bytes()).map(Bytes::from).map_err(serde::de::Error::custom)
    }
}

/// Milliseconds since the Unix epoch on this machine's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
