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
    #[error("raft: {0}")]
    Raft(String),
}
