//! The cluster's store: a Raft-replicated (openraft) MVCC key-value store
//! persisted in sled, with etcd's semantics. It replaces etcd; the API server
//! is its only user and nothing else touches sled.
//!
//! SKELETON: the signatures below are the contract the API server codes
//! against; the bodies are filled in by the store work (issue 2).

mod error;
mod types;

pub use error::StoreError;
pub use types::*;

use std::path::PathBuf;

/// How to open a store member.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Directory holding this member's sled database.
    pub data_dir: PathBuf,
    /// How long compacted-away history is kept: revisions older than this are
    /// compacted automatically (default 5 minutes, like the API server's).
    pub history_window: std::time::Duration,
}

/// A handle to the local store member; cheap to clone.
#[derive(Clone)]
pub struct Store {}

impl Store {
    /// Opens (or creates) the store in `config.data_dir` as a one-voter group.
    pub async fn open(_config: StoreConfig) -> Result<Store, StoreError> {
        todo!("store: open")
    }

    /// Linearizable read of one key or a prefix.
    pub async fn range(&self, _req: RangeRequest) -> Result<RangeResponse, StoreError> {
        todo!("store: range")
    }

    /// A read of this member's applied state without the read-index round trip;
    /// it may lag the leader. Only the watch cache uses it.
    pub async fn range_stale(&self, _req: RangeRequest) -> Result<RangeResponse, StoreError> {
        todo!("store: range_stale")
    }

    /// Runs a transaction; acknowledged only once durable on a quorum.
    pub async fn txn(&self, _txn: Txn) -> Result<TxnResponse, StoreError> {
        todo!("store: txn")
    }

    /// Every change under `prefix` with a revision greater than `after`, in order.
    pub fn watch(&self, _prefix: &str, _after: Revision) -> Result<Watcher, StoreError> {
        todo!("store: watch")
    }

    /// Drops history older than `revision`.
    pub async fn compact(&self, _revision: Revision) -> Result<(), StoreError> {
        todo!("store: compact")
    }

    /// The latest revision (linearizable).
    pub async fn current_revision(&self) -> Result<Revision, StoreError> {
        todo!("store: current_revision")
    }
}

/// A stream of [`WatchBatch`]es; ends with an error if the watch falls behind
/// the compacted history.
pub struct Watcher {}

impl Watcher {
    pub async fn next(&mut self) -> Option<Result<WatchBatch, StoreError>> {
        todo!("store: watcher")
    }
}
