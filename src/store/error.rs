//! The store's error type: every failure a caller must tell apart.

use super::types::Revision;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The requested revision was compacted away (the API answers 410 Gone).
    #[error("required revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted { requested: Revision, compacted: Revision },
    /// The requested revision is newer than the store's current revision.
    #[error("required revision {requested} is a future revision (current is {current})")]
    FutureRevision { requested: Revision, current: Revision },
    /// The store stopped accepting writes (disk full, failed fsync, corrupt data).
    #[error("store is read-only after a storage failure: {reason}")]
    WritesStopped { reason: String },
    /// No leader is known right now (election in progress, or quorum lost).
    #[error("no raft leader is available: {0}")]
    NoLeader(String),
    /// The store is shutting down.
    #[error("store is shutting down")]
    ShuttingDown,
    #[error("storage I/O failed: {context}")]
    Storage {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Snapshot(#[from] super::snapshot::SnapshotError),
    #[error("raft: {0}")]
    Raft(String),
}

impl From<super::data::DataError> for StoreError {
    fn from(e: super::data::DataError) -> Self {
        use super::data::DataError;
        match e {
            DataError::Compacted { requested, compacted } => StoreError::Compacted { requested, compacted },
            DataError::FutureRevision { requested, current } => StoreError::FutureRevision { requested, current },
            other => StoreError::Storage { context: "state machine".to_string(), source: Box::new(other) },
        }
    }
}

impl StoreError {
    /// Maps a fatal openraft error: a stopped Raft is a shutdown, a storage
    /// failure stops writes.
    pub(super) fn from_fatal(e: &openraft::error::Fatal<u64>) -> StoreError {
        use openraft::error::Fatal;
        match e {
            Fatal::Stopped => StoreError::ShuttingDown,
            Fatal::StorageError(s) => StoreError::WritesStopped { reason: s.to_string() },
            Fatal::Panicked => StoreError::Raft("raft core panicked".to_string()),
        }
    }
}
