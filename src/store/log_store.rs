//! openraft's `RaftLogStorage` in sled: entries keyed by big-endian index,
//! plus the vote, the committed id and the last purged id. `append` writes the
//! entries and hands its callback to the flusher task, which flushes once
//! (`flush_async`) for every callback queued meanwhile and only then reports
//! them durable, in order: concurrent proposals share one fsync (group
//! commit) while Raft keeps appending. A failed flush stops writes.

// openraft's trait signatures fix the (large) storage error type.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use tokio::sync::mpsc;

use openraft::{AnyError, ErrorSubject, ErrorVerb, RaftLogId, RaftLogReader, StorageIOError};

use super::command::{Entry, LogId, StorageError, TypeConfig, Vote};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"last_purged";

/// Why the log stopped accepting writes, shared with the [`super::Store`].
#[derive(Clone, Default)]
pub struct Health {
    failure: Arc<Mutex<Option<String>>>,
    /// Test hook: make the next flushes fail as if the disk did.
    pub(crate) inject_flush_failure: Arc<AtomicBool>,
    /// Test hook: make every flush take this much longer (a slow disk).
    pub(crate) extra_flush_ms: Arc<AtomicU64>,
    /// How many group flushes the log did and how many appends they covered.
    appends: Arc<AtomicU64>,
    appended_entries: Arc<AtomicU64>,
}

impl Health {
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// (flushes, appends): their ratio is the group-commit batch size.
    #[cfg(test)]
    pub fn append_counts(&self) -> (u64, u64) {
        (self.appends.load(Ordering::Relaxed), self.appended_entries.load(Ordering::Relaxed))
    }

    fn fail(&self, reason: String) {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            tracing::error!(%reason, "store stops accepting writes");
            *f = Some(reason);
        }
    }
}

#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    logs: sled::Tree,
    meta: sled::Tree,
    health: Health,
    flusher: mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
}

/// Flushes once for every group of callbacks queued meanwhile, then answers
/// them in order. Ends when every [`LogStore`] clone is gone.
async fn run_flusher(db: sled::Db, health: Health, mut rx: mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>) {
    let mut group = Vec::new();
    while rx.recv_many(&mut group, 4096).await > 0 {
        let res = flush_db(&db, &health).await;
        health.appends.fetch_add(1, Ordering::Relaxed);
        health.appended_entries.fetch_add(group.len() as u64, Ordering::Relaxed);
        tracing::trace!(appends = group.len(), ok = res.is_ok(), "group flushed");
        for cb in group.drain(..) {
            cb.log_io_completed(match &res {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            });
        }
    }
}

/// Flushes everything written so far to disk; a failure stops writes for good.
async fn flush_db(db: &sled::Db, health: &Health) -> Result<(), std::io::Error> {
    if let Some(reason) = health.failure() {
        return Err(std::io::Error::other(reason));
    }
    let delay = health.extra_flush_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let res = if health.inject_flush_failure.load(Ordering::SeqCst) {
        Err(std::io::Error::other("injected flush failure"))
    } else {
        db.flush_async().await.map(|_| ()).map_err(std::io::Error::other)
    };
    if let Err(e) = &res {
        health.fail(format!("flushing the raft log failed: {e}"));
    }
    res
}

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: &sled::Error) -> StorageError {
    StorageError::IO { source: StorageIOError::new(subject, verb, AnyError::new(e)) }
}

fn read_logs_err<E: std::error::Error + 'static>(e: E) -> StorageError {
    StorageError::IO { source: StorageIOError::read_logs(&e) }
}

impl LogStore {
    /// Opens the log trees and starts the flusher task (on the current
    /// runtime); the returned handle ends once the store is dropped.
    pub fn open(db: &sled::Db, health: Health) -> Result<(LogStore, tokio::task::JoinHandle<()>), sled::Error> {
        let (flusher, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_flusher(db.clone(), health.clone(), rx));
        Ok((
            LogStore {
                db: db.clone(),
                logs: db.open_tree("raft_log")?,
                meta: db.open_tree("raft_meta")?,
                health,
                flusher,
            },
            task,
        ))
    }

    async fn flush(&self) -> Result<(), std::io::Error> {
        flush_db(&self.db, &self.health).await
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.meta.get(key).map_err(read_logs_err)? {
            Some(raw) => Ok(Some(serde_json::from_slice(&raw).map_err(read_logs_err)?)),
            None => Ok(None),
        }
    }

    fn write_json<T: serde::Serialize>(&self, key: &[u8], v: &T) -> Result<(), StorageError> {
        let raw = serde_json::to_vec(v).map_err(|e| StorageError::IO { source: StorageIOError::write_logs(&e) })?;
        self.meta.insert(key, raw).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        Ok(())
    }

    fn decode(raw: &[u8]) -> Result<Entry, StorageError> {
        serde_json::from_slice(raw).map_err(read_logs_err)
    }
}

fn bound_bytes(b: Bound<&u64>) -> Bound<[u8; 8]> {
    match b {
        Bound::Included(i) => Bound::Included(i.to_be_bytes()),
        Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let range = (bound_bytes(range.start_bound()), bound_bytes(range.end_bound()));
        self.logs
            .range(range)
            .map(|item| {
                let (_, v) = item.map_err(read_logs_err)?;
                Self::decode(&v)
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.read_json(PURGED)?;
        let last = match self.logs.last().map_err(read_logs_err)? {
            Some((_, v)) => Some(*Self::decode(&v)?.get_log_id()),
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_json(VOTE, vote)?;
        self.flush().await.map_err(|e| StorageError::IO { source: StorageIOError::write_vote(&e) })
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_json(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Durable with the next flush; losing it only means re-applying less.
        self.write_json(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_json::<Option<LogId>>(COMMITTED)?.flatten())
    }

    #[tracing::instrument(level = "trace", skip_all)]
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        let mut n = 0usize;
        for entry in entries {
            let raw = serde_json::to_vec(&entry)
                .map_err(|e| StorageError::IO { source: StorageIOError::write_log_entry(*entry.get_log_id(), &e) })?;
            batch.insert(&entry.get_log_id().index.to_be_bytes()[..], raw);
            n += 1;
        }
        if let Err(e) = self.logs.apply_batch(batch) {
            self.health.fail(format!("writing the raft log failed: {e}"));
            return Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, &e));
        }
        tracing::trace!(entries = n, "appended, waiting for the group flush");
        // The flusher flushes after receiving this, so after the write above.
        if let Err(mpsc::error::SendError(callback)) = self.flusher.send(callback) {
            callback.log_io_completed(Err(std::io::Error::other("log flusher stopped")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating log");
        let mut batch = sled::Batch::default();
        for item in self.logs.range(log_id.index.to_be_bytes()..) {
            let (k, _) = item.map_err(read_logs_err)?;
            batch.remove(k);
        }
        self.logs.apply_batch(batch).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        self.flush().await.map_err(|e| StorageError::IO { source: StorageIOError::write_logs(&e) })
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging log");
        // Record the purge point first: a crash in between leaves extra entries, not a hole.
        self.write_json(PURGED, &Some(log_id))?;
        let mut batch = sled::Batch::default();
        for item in self.logs.range(..=log_id.index.to_be_bytes()) {
            let (k, _) = item.map_err(read_logs_err)?;
            batch.remove(k);
        }
        self.logs.apply_batch(batch).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        Ok(())
    }
}
