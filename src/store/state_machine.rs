//! openraft's `RaftStateMachine` over [`SmData`]: applies committed entries,
//! builds snapshots (a dump of the state machine's sled trees, which carries
//! latest keys, history within the window, TTLs, counters and membership) and
//! installs them on members that fell behind the purged log.

// openraft's trait signatures fix the (large) storage error type.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};

use super::command::{
    Command, CommandResponse, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use super::data::{DataError, InEntry, SmData};
use super::types::TxnResponse;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot data is truncated or malformed")]
    Malformed,
    #[error("snapshot metadata: {0}")]
    Meta(#[from] serde_json::Error),
}

const CURRENT_SNAPSHOT: &[u8] = b"current";

#[derive(Clone)]
pub struct StateMachineStore {
    data: Arc<SmData>,
    /// Holds the last built or installed snapshot (meta + data).
    snapshots: sled::Tree,
}

fn sm_write(e: DataError) -> StorageError {
    StorageError::IO { source: StorageIOError::write_state_machine(&e) }
}

fn sm_read(e: DataError) -> StorageError {
    StorageError::IO { source: StorageIOError::read_state_machine(&e) }
}

fn snap_err(meta: Option<&SnapshotMeta>, e: &(impl std::error::Error + 'static)) -> StorageError {
    StorageError::IO { source: StorageIOError::read_snapshot(meta.map(|m| m.signature()), e) }
}

/// Serializes dumped records as `tag u8, key len u32, key, value len u32, value`.
fn encode_records(records: &[(u8, sled::IVec, sled::IVec)]) -> Vec<u8> {
    let size: usize = records.iter().map(|(_, k, v)| 9 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(size);
    for (tag, k, v) in records {
        out.push(*tag);
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
    }
    out
}

pub(super) type Record = (u8, Vec<u8>, Vec<u8>);

pub(super) fn decode_records(mut buf: &[u8]) -> Result<Vec<Record>, SnapshotError> {
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], SnapshotError> {
        if buf.len() < n {
            return Err(SnapshotError::Malformed);
        }
        let (head, tail) = buf.split_at(n);
        *buf = tail;
        Ok(head)
    }
    fn len(buf: &mut &[u8]) -> Result<usize, SnapshotError> {
        let raw: [u8; 4] = take(buf, 4)?.try_into().map_err(|_| SnapshotError::Malformed)?;
        Ok(u32::from_be_bytes(raw) as usize)
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let tag = take(&mut buf, 1)?[0];
        let n = len(&mut buf)?;
        let k = take(&mut buf, n)?.to_vec();
        let n = len(&mut buf)?;
        let v = take(&mut buf, n)?.to_vec();
        out.push((tag, k, v));
    }
    Ok(out)
}

/// The stored form of a snapshot: meta length, meta JSON, data.
pub(super) fn encode_stored(meta: &SnapshotMeta, data: &[u8]) -> Result<Vec<u8>, SnapshotError> {
    let meta = serde_json::to_vec(meta)?;
    let mut out = Vec::with_capacity(8 + meta.len() + data.len());
    out.extend_from_slice(&(meta.len() as u64).to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(data);
    Ok(out)
}

pub(super) fn decode_stored(raw: &[u8]) -> Result<(SnapshotMeta, Vec<u8>), SnapshotError> {
    let n: [u8; 8] = raw.get(..8).and_then(|b| b.try_into().ok()).ok_or(SnapshotError::Malformed)?;
    let n = u64::from_be_bytes(n) as usize;
    let meta = raw.get(8..8 + n).ok_or(SnapshotError::Malformed)?;
    let meta = serde_json::from_slice(meta)?;
    Ok((meta, raw[8 + n..].to_vec()))
}

/// The meta and encoded data of a snapshot of `records` (a [`SmData::dump`]).
/// The applied id and membership come from the dump itself, so they match
/// the data even while entries keep being applied.
pub(super) fn snapshot_of(records: &[(u8, sled::IVec, sled::IVec)]) -> Result<(SnapshotMeta, Vec<u8>), SnapshotError> {
    let data = encode_records(records);
    let meta_tree = super::data::SNAPSHOT_TREES.len() as u8 - 1;
    let lookup =
        |key: &[u8]| records.iter().find(|(t, k, _)| *t == meta_tree && k.as_ref() == key).map(|(_, _, v)| v.clone());
    let last_log_id: Option<LogId> = match lookup(b"applied") {
        Some(v) => serde_json::from_slice(&v)?,
        None => None,
    };
    let last_membership: StoredMembership = match lookup(b"membership") {
        Some(v) => serde_json::from_slice(&v)?,
        None => StoredMembership::default(),
    };
    let snapshot_id = match &last_log_id {
        Some(l) => format!("{}-{}-{}", l.leader_id, l.index, super::command::now_ms()),
        None => format!("--{}", super::command::now_ms()),
    };
    Ok((SnapshotMeta { last_log_id, last_membership, snapshot_id }, data))
}

impl StateMachineStore {
    pub fn new(db: &sled::Db, data: Arc<SmData>) -> Result<StateMachineStore, DataError> {
        let snapshots = db.open_tree("sm_snapshot").map_err(|source| DataError::Sled { op: "open_tree", source })?;
        Ok(StateMachineStore { data, snapshots })
    }

    fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        let stored = encode_stored(meta, data).map_err(|e| snap_err(Some(meta), &e))?;
        self.snapshots
            .insert(CURRENT_SNAPSHOT, stored)
            .map_err(|e| StorageError::IO { source: StorageIOError::write_snapshot(Some(meta.signature()), &e) })?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    #[tracing::instrument(level = "info", skip(self))]
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let records = self.data.dump().map_err(sm_read)?;
        let (meta, data) = snapshot_of(&records).map_err(|e| snap_err(None, &e))?;
        self.save_snapshot(&meta, &data)?;
        tracing::info!(bytes = data.len(), snapshot = %meta.snapshot_id, "built snapshot");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        self.data.applied_state().map_err(sm_read)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut out = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let resp = match entry.payload {
                EntryPayload::Blank => {
                    self.data.apply_marker(&log_id, None).map_err(sm_write)?;
                    CommandResponse::None
                }
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(log_id), m);
                    self.data.apply_marker(&log_id, Some(&stored)).map_err(sm_write)?;
                    CommandResponse::None
                }
                EntryPayload::Normal(Command::Txn(txn)) => {
                    CommandResponse::Txn(self.data.apply_txn(&txn, &log_id, InEntry::ALONE).map_err(sm_write)?)
                }
                EntryPayload::Normal(Command::Batch(txns)) => {
                    // Transactions a crash left applied are skipped; nobody
                    // waits for their answers after a restart.
                    let done = self.data.batch_progress(&log_id).map_err(sm_read)?;
                    let mut rs = Vec::with_capacity(txns.len());
                    for (index, txn) in txns.iter().enumerate() {
                        if index < done {
                            let revision = self.data.revision();
                            rs.push(TxnResponse { succeeded: false, revision, results: Vec::new() });
                            continue;
                        }
                        let at = InEntry { index, last: index + 1 == txns.len() };
                        rs.push(self.data.apply_txn(txn, &log_id, at).map_err(sm_write)?);
                    }
                    CommandResponse::Batch(rs)
                }
                EntryPayload::Normal(Command::Compact { revision }) => {
                    let revision = self.data.compact(revision, &log_id).map_err(sm_write)?;
                    tracing::info!(revision, "compacted");
                    CommandResponse::Compacted { revision }
                }
            };
            out.push(resp);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    #[tracing::instrument(level = "info", skip(self, snapshot), fields(snapshot = %meta.snapshot_id))]
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let records = decode_records(&data).map_err(|e| snap_err(Some(meta), &e))?;
        self.data.load(records).map_err(sm_write)?;
        if let Some(log_id) = &meta.last_log_id {
            self.data.apply_marker(log_id, Some(&meta.last_membership)).map_err(sm_write)?;
        }
        self.save_snapshot(meta, &data)?;
        tracing::info!(revision = self.data.revision(), "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let raw = self
            .snapshots
            .get(CURRENT_SNAPSHOT)
            .map_err(|e| StorageError::IO { source: StorageIOError::read_snapshot(None, &e) })?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let (meta, data) = decode_stored(&raw).map_err(|e| snap_err(None, &e))?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}
