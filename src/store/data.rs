//! The state machine's data in sled: latest key values, per-key history for
//! reads at a past revision, the event log (by revision) that watches replay,
//! the TTL index and the applied/revision/compaction markers. Each applied
//! transaction is one atomic sled transaction; watchers are told after commit.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use sled::Transactional;
use sled::transaction::TransactionError;
use tokio::sync::broadcast;

use super::codec::{self, CodecError};
use super::command::{LogId, LogTxn, StoredMembership};
use super::mvcc::{self, LatestReader};
use super::types::{KeyValue, RangeRequest, RangeResponse, Revision, TxnResponse, WatchEvent};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("sled {op} failed")]
    Sled {
        op: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error(transparent)]
    Corrupt(#[from] CodecError),
    #[error("corrupt {what} in state machine metadata: {source}")]
    Meta {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("revision {requested} is compacted (oldest is {compacted})")]
    Compacted { requested: Revision, compacted: Revision },
    #[error("revision {requested} is in the future (current is {current})")]
    FutureRevision { requested: Revision, current: Revision },
}

fn sled_err(op: &'static str) -> impl FnOnce(sled::Error) -> DataError {
    move |source| DataError::Sled { op, source }
}

/// All events of one revision, as applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionEvents {
    pub revision: Revision,
    pub events: Vec<WatchEvent>,
}

pub(super) const META_REVISION: &[u8] = b"revision";
pub(super) const META_COMPACTED: &[u8] = b"compacted";
pub(super) const META_APPLIED: &[u8] = b"applied";
pub(super) const META_MEMBERSHIP: &[u8] = b"membership";
/// While a `Command::Batch` entry is half applied: its log id and how many
/// of its transactions are applied (each commits on its own).
pub(super) const META_BATCH_PROGRESS: &[u8] = b"batch_progress";

/// Where a transaction sits in its log entry.
#[derive(Clone, Copy, Debug)]
pub struct InEntry {
    /// Its position among the entry's transactions.
    pub index: usize,
    /// Whether it is the entry's last: only then is the entry applied.
    pub last: bool,
}

impl InEntry {
    /// The only transaction of a `Command::Txn` entry.
    pub const ALONE: InEntry = InEntry { index: 0, last: true };
}

/// The trees a snapshot carries, in a fixed order (index = tag in the dump).
pub const SNAPSHOT_TREES: [&str; 5] = ["sm_kv", "sm_history", "sm_events", "sm_ttl", "sm_meta"];

pub struct SmData {
    pub(super) trees: [sled::Tree; 5],
    /// Held for writing while a transaction commits, for reading while the
    /// latest state is scanned, so readers never see half a transaction.
    lock: RwLock<()>,
    revision: AtomicI64,
    compacted: AtomicI64,
    events_tx: broadcast::Sender<Arc<RevisionEvents>>,
}

impl LatestReader for SmData {
    type Error = DataError;
    fn latest(&self, key: &str) -> Result<Option<KeyValue>, DataError> {
        match self.kv().get(key.as_bytes()).map_err(sled_err("get"))? {
            Some(raw) => Ok(Some(codec::decode_kv(&raw)?)),
            None => Ok(None),
        }
    }
}

impl SmData {
    pub fn open(db: &sled::Db, watch_capacity: usize) -> Result<SmData, DataError> {
        let open = |name: &str| db.open_tree(name).map_err(sled_err("open_tree"));
        let trees = [
            open(SNAPSHOT_TREES[0])?,
            open(SNAPSHOT_TREES[1])?,
            open(SNAPSHOT_TREES[2])?,
            open(SNAPSHOT_TREES[3])?,
            open(SNAPSHOT_TREES[4])?,
        ];
        let (events_tx, _) = broadcast::channel(watch_capacity.max(16));
        let data = SmData {
            trees,
            lock: RwLock::new(()),
            revision: AtomicI64::new(0),
            compacted: AtomicI64::new(0),
            events_tx,
        };
        data.reload_counters()?;
        Ok(data)
    }

    fn kv(&self) -> &sled::Tree {
        &self.trees[0]
    }
    fn history(&self) -> &sled::Tree {
        &self.trees[1]
    }
    fn events(&self) -> &sled::Tree {
        &self.trees[2]
    }
    fn ttl(&self) -> &sled::Tree {
        &self.trees[3]
    }
    fn meta(&self) -> &sled::Tree {
        &self.trees[4]
    }

    /// Re-reads the revision counters from sled (after open or a snapshot install).
    pub fn reload_counters(&self) -> Result<(), DataError> {
        let read = |k: &[u8]| -> Result<Revision, DataError> {
            Ok(self.meta().get(k).map_err(sled_err("get meta"))?.and_then(|v| codec::read_rev(&v)).unwrap_or(0))
        };
        self.revision.store(read(META_REVISION)?, Ordering::SeqCst);
        self.compacted.store(read(META_COMPACTED)?, Ordering::SeqCst);
        Ok(())
    }

    pub fn revision(&self) -> Revision {
        self.revision.load(Ordering::SeqCst)
    }

    pub fn compacted(&self) -> Revision {
        self.compacted.load(Ordering::SeqCst)
    }

    /// The last applied log id and membership, as persisted.
    pub fn applied_state(&self) -> Result<(Option<LogId>, StoredMembership), DataError> {
        let applied = match self.meta().get(META_APPLIED).map_err(sled_err("get meta"))? {
            Some(raw) => {
                serde_json::from_slice(&raw).map_err(|source| DataError::Meta { what: "applied log id", source })?
            }
            None => None,
        };
        let membership = match self.meta().get(META_MEMBERSHIP).map_err(sled_err("get meta"))? {
            Some(raw) => {
                serde_json::from_slice(&raw).map_err(|source| DataError::Meta { what: "membership", source })?
            }
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    fn applied_batch(log_id: &LogId, membership: Option<&StoredMembership>) -> sled::Batch {
        let mut meta = sled::Batch::default();
        // Serializing plain openraft ids cannot fail.
        if let Ok(raw) = serde_json::to_vec(&Some(log_id)) {
            meta.insert(META_APPLIED, raw);
        }
        if let Some(m) = membership
            && let Ok(raw) = serde_json::to_vec(m)
        {
            meta.insert(META_MEMBERSHIP, raw);
        }
        meta
    }

    /// Records a log entry that changes no key (blank or membership).
    pub fn apply_marker(&self, log_id: &LogId, membership: Option<&StoredMembership>) -> Result<(), DataError> {
        self.meta().apply_batch(Self::applied_batch(log_id, membership)).map_err(sled_err("apply meta"))
    }

    /// How many transactions of the batch entry `log_id` a crash (or a
    /// snapshot taken) in its middle left applied: re-applying the entry
    /// skips them, so each transaction is applied exactly once.
    pub fn batch_progress(&self, log_id: &LogId) -> Result<usize, DataError> {
        let Some(raw) = self.meta().get(META_BATCH_PROGRESS).map_err(sled_err("get meta"))? else {
            return Ok(0);
        };
        let (id, done): (LogId, usize) =
            serde_json::from_slice(&raw).map_err(|source| DataError::Meta { what: "batch progress", source })?;
        Ok(if id == *log_id { done } else { 0 })
    }

    /// Applies one transaction atomically and tells watchers. The entry is
    /// recorded as applied with its last transaction; before that, the
    /// batch's progress is recorded with each.
    pub fn apply_txn(&self, txn: &LogTxn, log_id: &LogId, at: InEntry) -> Result<TxnResponse, DataError> {
        let current = self.revision();
        let fx = mvcc::eval_txn(self, txn, current)?;
        let rev = fx.response.revision;
        let mut kv = sled::Batch::default();
        let mut history = sled::Batch::default();
        let mut events = sled::Batch::default();
        let mut ttl = sled::Batch::default();
        let mut meta = if at.last {
            let mut m = Self::applied_batch(log_id, None);
            m.remove(META_BATCH_PROGRESS);
            m
        } else {
            let mut m = sled::Batch::default();
            // Serializing plain openraft ids cannot fail.
            if let Ok(raw) = serde_json::to_vec(&(log_id, at.index + 1)) {
                m.insert(META_BATCH_PROGRESS, raw);
            }
            m
        };
        let mut evs = Vec::with_capacity(fx.changes.len());
        for (idx, ch) in fx.changes.iter().enumerate() {
            let key = ch.key.as_bytes();
            match &ch.new {
                Some(new) => kv.insert(key, codec::encode_kv(new)),
                None => kv.remove(key),
            }
            history.insert(codec::history_key(key, rev), codec::encode_history(ch.new.as_ref()));
            let ev = ch.event(rev);
            events.insert(&codec::event_key(rev, idx as u32)[..], codec::encode_event(&ev));
            evs.push(ev);
            if let Some(at) = ch.prev.as_ref().and_then(|p| p.expires_at_ms) {
                ttl.remove(codec::ttl_key(at, key));
            }
            if let Some(new) = &ch.new
                && let Some(at) = new.expires_at_ms
            {
                ttl.insert(codec::ttl_key(at, key), &codec::rev_bytes(new.mod_revision)[..]);
            }
        }
        if rev != current {
            meta.insert(META_REVISION, &codec::rev_bytes(rev)[..]);
        }
        let [t0, t1, t2, t3, t4] = &self.trees;
        let _guard = self.lock.write().unwrap_or_else(|e| e.into_inner());
        (t0, t1, t2, t3, t4)
            .transaction(|(t0, t1, t2, t3, t4)| {
                t0.apply_batch(&kv)?;
                t1.apply_batch(&history)?;
                t2.apply_batch(&events)?;
                t3.apply_batch(&ttl)?;
                t4.apply_batch(&meta)?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(source) => DataError::Sled { op: "transaction", source },
                TransactionError::Abort(()) => {
                    DataError::Sled { op: "transaction", source: sled::Error::Unsupported("aborted".into()) }
                }
            })?;
        if rev != current {
            self.revision.store(rev, Ordering::SeqCst);
            // No receivers is fine: nobody watches.
            let _ = self.events_tx.send(Arc::new(RevisionEvents { revision: rev, events: evs }));
        }
        Ok(fx.response)
    }

    /// Subscribes to live events; every revision after the returned one will
    /// arrive on the receiver, every one up to it is already in the event log.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<RevisionEvents>>, Revision) {
        let _guard = self.lock.read().unwrap_or_else(|e| e.into_inner());
        (self.events_tx.subscribe(), self.revision())
    }

    fn check_revision(&self, requested: Revision) -> Result<(), DataError> {
        let compacted = self.compacted();
        if requested < compacted {
            return Err(DataError::Compacted { requested, compacted });
        }
        let current = self.revision();
        if requested > current {
            return Err(DataError::FutureRevision { requested, current });
        }
        Ok(())
    }

    /// Reads the latest state or the state as of `req.revision`.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, DataError> {
        match req.revision.filter(|r| *r > 0) {
            None => {
                let _guard = self.lock.read().unwrap_or_else(|e| e.into_inner());
                let revision = self.revision();
                let (kvs, more, count) = if req.prefix {
                    let iter = self.kv().range(scan_bounds(req)).map(|r| {
                        let (_, v) = r.map_err(sled_err("scan"))?;
                        Ok::<_, DataError>(codec::decode_kv(&v)?)
                    });
                    mvcc::paginate(iter, req.limit)?
                } else {
                    let kv = self.latest(&req.key)?;
                    mvcc::paginate(kv.map(Ok::<_, DataError>), req.limit)?
                };
                Ok(RangeResponse { kvs, more, count, revision })
            }
            Some(at) => {
                self.check_revision(at)?;
                let (kvs, more, count) = if req.prefix {
                    let bounds = scan_bounds(req);
                    let start = codec::escape_key(match &bounds.0 {
                        std::ops::Bound::Included(s) => s,
                        _ => &[][..],
                    });
                    let iter = self.history().range(start..).map(|r| {
                        let (k, v) = r.map_err(sled_err("scan history"))?;
                        let (key, rev) = codec::parse_history_key(&k)?;
                        Ok::<_, DataError>((key, rev, v))
                    });
                    let iter = HistoryAt { inner: iter, at, end: bounds.1, pending: None };
                    mvcc::paginate(iter, req.limit)?
                } else {
                    let history = self
                        .history()
                        .scan_prefix(codec::history_key_prefix(req.key.as_bytes()))
                        .map(|r| {
                            let (k, v) = r.map_err(sled_err("scan history"))?;
                            let (_, rev) = codec::parse_history_key(&k)?;
                            Ok::<_, DataError>((rev, codec::decode_history(&v)?))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let kv = mvcc::value_at(history, at);
                    mvcc::paginate(kv.map(Ok::<_, DataError>), req.limit)?
                };
                // A compaction that raced the scan may have dropped what we read.
                self.check_revision(at)?;
                Ok(RangeResponse { kvs, more, count, revision: at })
            }
        }
    }

    /// Events under `prefix` with revisions in `from..=to`, grouped per
    /// revision, at most about `max_events` events.
    pub fn replay(
        &self,
        prefix: &str,
        from: Revision,
        to: Revision,
        max_events: usize,
    ) -> Result<(Vec<RevisionEvents>, Revision), DataError> {
        let mut out: Vec<RevisionEvents> = Vec::new();
        let mut scanned_to = to;
        let mut n = 0;
        let start = codec::event_key(from, 0);
        let end = codec::event_key(to.saturating_add(1), 0);
        for item in self.events().range(start..end) {
            let (k, v) = item.map_err(sled_err("scan events"))?;
            let rev = codec::read_rev(&k).ok_or(CodecError { what: "event key" })?;
            if n >= max_events && out.last().is_some_and(|l| l.revision != rev) {
                scanned_to = rev - 1;
                break;
            }
            let ev = codec::decode_event(&v)?;
            if !ev.kv.key.starts_with(prefix) {
                continue;
            }
            n += 1;
            match out.last_mut() {
                Some(last) if last.revision == rev => last.events.push(ev),
                _ => out.push(RevisionEvents { revision: rev, events: vec![ev] }),
            }
        }
        Ok((out, scanned_to))
    }

    /// Keys whose TTL is due at `now_ms`, with the mod revision that set it.
    pub fn expired(&self, now_ms: i64, max: usize) -> Result<Vec<(String, Revision)>, DataError> {
        let end = codec::ttl_key(now_ms.saturating_add(1), b"");
        let mut out = Vec::new();
        for item in self.ttl().range(..end).take(max) {
            let (k, v) = item.map_err(sled_err("scan ttl"))?;
            let (_, key) = codec::parse_ttl_key(&k)?;
            let rev = codec::read_rev(&v).ok_or(CodecError { what: "ttl entry" })?;
            out.push((key, rev));
        }
        Ok(out)
    }

    /// Drops history older than `revision` (clamped to the current one).
    pub fn compact(&self, revision: Revision, log_id: &LogId) -> Result<Revision, DataError> {
        let target = revision.min(self.revision());
        if target > self.compacted() {
            // Readers see the new bound before anything is deleted.
            self.compacted.store(target, Ordering::SeqCst);
            self.drop_history_before(target)?;
        }
        let mut meta = Self::applied_batch(log_id, None);
        meta.insert(META_COMPACTED, &codec::rev_bytes(self.compacted())[..]);
        self.meta().apply_batch(meta).map_err(sled_err("apply meta"))?;
        Ok(self.compacted())
    }

    fn drop_history_before(&self, target: Revision) -> Result<(), DataError> {
        let mut batch = sled::Batch::default();
        let mut pending = 0usize;
        for item in self.events().range(..codec::event_key(target, 0)) {
            let (k, _) = item.map_err(sled_err("scan events"))?;
            batch.remove(k);
            pending += 1;
            if pending >= 10_000 {
                self.events().apply_batch(std::mem::take(&mut batch)).map_err(sled_err("compact"))?;
                pending = 0;
            }
        }
        self.events().apply_batch(batch).map_err(sled_err("compact"))?;
        // Walk the history key by key; drop what no read at >= target needs.
        let mut batch = sled::Batch::default();
        let mut current: Option<Vec<u8>> = None;
        let mut revs: Vec<(Revision, bool)> = Vec::new();
        let flush_key = |key: &[u8], revs: &[(Revision, bool)], batch: &mut sled::Batch| {
            for rev in mvcc::compaction_victims(revs, target) {
                batch.remove(codec::history_key(key, rev));
            }
        };
        for item in self.history().iter() {
            let (k, v) = item.map_err(sled_err("scan history"))?;
            let (key, rev) = codec::parse_history_key(&k)?;
            if current.as_deref() != Some(&key[..]) {
                if let Some(prev) = current.take() {
                    flush_key(&prev, &revs, &mut batch);
                }
                current = Some(key);
                revs.clear();
            }
            revs.push((rev, codec::decode_history(&v)?.is_none()));
        }
        if let Some(prev) = current {
            flush_key(&prev, &revs, &mut batch);
        }
        self.history().apply_batch(batch).map_err(sled_err("compact"))
    }

    /// Every record of the snapshot trees, as (tree index, key, value).
    pub fn dump(&self) -> Result<Vec<(u8, sled::IVec, sled::IVec)>, DataError> {
        let _guard = self.lock.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (i, tree) in self.trees.iter().enumerate() {
            for item in tree.iter() {
                let (k, v) = item.map_err(sled_err("dump"))?;
                out.push((i as u8, k, v));
            }
        }
        Ok(out)
    }

    /// Replaces the whole state with `records` (from [`SmData::dump`]).
    pub fn load(&self, records: Vec<(u8, Vec<u8>, Vec<u8>)>) -> Result<(), DataError> {
        let _guard = self.lock.write().unwrap_or_else(|e| e.into_inner());
        for tree in &self.trees {
            tree.clear().map_err(sled_err("clear"))?;
        }
        let mut batches: [sled::Batch; 5] = Default::default();
        for (i, k, v) in records {
            if let Some(b) = batches.get_mut(i as usize) {
                b.insert(k, v);
            }
        }
        for (tree, batch) in self.trees.iter().zip(batches) {
            tree.apply_batch(batch).map_err(sled_err("load"))?;
        }
        self.reload_counters()
    }
}

type Bounds = (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>);

/// Byte bounds of a prefix range starting at `req.start` (if inside the prefix).
fn scan_bounds(req: &RangeRequest) -> Bounds {
    use std::ops::Bound;
    let prefix = req.key.as_bytes().to_vec();
    let start = match &req.start {
        Some(s) if s.as_bytes() > prefix.as_slice() => s.as_bytes().to_vec(),
        _ => prefix.clone(),
    };
    let end = match prefix_end(&prefix) {
        Some(e) => Bound::Excluded(e),
        None => Bound::Unbounded,
    };
    (Bound::Included(start), end)
}

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Folds a history scan (key, revision, record) into each key's value as of `at`.
struct HistoryAt<I> {
    inner: I,
    at: Revision,
    end: std::ops::Bound<Vec<u8>>,
    /// The key being folded and its value so far.
    pending: Option<(Vec<u8>, Option<KeyValue>)>,
}

impl<I> HistoryAt<I> {
    fn past_end(&self, key: &[u8]) -> bool {
        match &self.end {
            std::ops::Bound::Excluded(e) => key >= e.as_slice(),
            _ => false,
        }
    }
}

impl<I> Iterator for HistoryAt<I>
where
    I: Iterator<Item = Result<(Vec<u8>, Revision, sled::IVec), DataError>>,
{
    type Item = Result<KeyValue, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let item = match self.inner.next() {
                Some(Ok(item)) => Some(item),
                Some(Err(e)) => return Some(Err(e)),
                None => None,
            };
            let done = match &item {
                None => true,
                Some((key, _, _)) => self.past_end(key),
            };
            if done {
                self.inner_exhausted();
                return self.pending.take().and_then(|(_, kv)| kv).map(Ok);
            }
            let (key, rev, raw) = item?;
            let same = self.pending.as_ref().is_some_and(|(k, _)| *k == key);
            let mut emit = None;
            if !same {
                emit = self.pending.take().and_then(|(_, kv)| kv);
                self.pending = Some((key, None));
            }
            if rev <= self.at {
                match codec::decode_history(&raw) {
                    Ok(kv) => {
                        if let Some(p) = self.pending.as_mut() {
                            p.1 = kv;
                        }
                    }
                    Err(e) => return Some(Err(e.into())),
                }
            }
            if let Some(kv) = emit {
                return Some(Ok(kv));
            }
        }
    }
}

impl<I> HistoryAt<I> {
    fn inner_exhausted(&mut self) {
        // After the end, never read the inner iterator again.
        self.end = std::ops::Bound::Excluded(Vec::new());
    }
}

#[cfg(test)]
impl SmData {
    /// Measures the cost of one flush of the database, for group-commit tests.
    pub async fn flush_for_test(&self) {
        let _ = self.kv().insert(b"\xff-flush-probe", b"x");
        let _ = self.kv().remove(b"\xff-flush-probe");
        let _ = self.kv().flush_async().await;
    }
}
