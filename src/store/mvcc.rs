//! The pure MVCC rules, free of sled: evaluating a transaction against the
//! latest state (compares, puts, deletes, the revision counter and per-key
//! counters), picking a key's value as of a revision, paginating a range and
//! choosing which history a compaction may drop.

use std::collections::HashMap;

use bytes::Bytes;

use super::command::{LogOp, LogTxn};
use super::types::{Compare, KeyValue, OpResult, Revision, TxnResponse, WatchEvent};

/// Reads the latest committed value of a key.
pub trait LatestReader {
    type Error;
    fn latest(&self, key: &str) -> Result<Option<KeyValue>, Self::Error>;
}

/// One key changed by a transaction, in the order the ops ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub prev: Option<KeyValue>,
    /// The new value, `None` for a delete.
    pub new: Option<KeyValue>,
}

impl Change {
    /// The watch event this change produces at `revision`.
    pub fn event(&self, revision: Revision) -> WatchEvent {
        match &self.new {
            Some(kv) => WatchEvent { kind: super::types::EventKind::Put, kv: kv.clone(), prev: self.prev.clone() },
            None => WatchEvent {
                kind: super::types::EventKind::Delete,
                kv: tombstone(&self.key, revision),
                prev: self.prev.clone(),
            },
        }
    }
}

/// What a delete looks like in a watch: the key, no value, the delete's revision.
pub fn tombstone(key: &str, revision: Revision) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Bytes::new(),
        create_revision: 0,
        mod_revision: revision,
        version: 0,
        expires_at_ms: None,
    }
}

/// The outcome of a transaction: the answer and the changes to persist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnEffects {
    pub response: TxnResponse,
    pub changes: Vec<Change>,
}

fn compare_holds(cmp: &Compare, kv: Option<&KeyValue>) -> bool {
    match cmp {
        Compare::ModRevision { revision, .. } => kv.map_or(0, |kv| kv.mod_revision) == *revision,
        Compare::Exists { exists, .. } => kv.is_some() == *exists,
    }
}

fn compare_key(cmp: &Compare) -> &str {
    match cmp {
        Compare::ModRevision { key, .. } | Compare::Exists { key, .. } => key,
    }
}

/// Evaluates `txn` on top of `current` (the store revision before it). The
/// revision advances by one only if some op actually changed a key.
pub fn eval_txn<R: LatestReader>(reader: &R, txn: &LogTxn, current: Revision) -> Result<TxnEffects, R::Error> {
    let mut succeeded = true;
    for cmp in &txn.compare {
        let kv = reader.latest(compare_key(cmp))?;
        if !compare_holds(cmp, kv.as_ref()) {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded { &txn.success } else { &txn.failure };
    let next = current + 1;
    // Keys touched earlier in this txn, as they are after those ops.
    let mut overlay: HashMap<&str, Option<KeyValue>> = HashMap::new();
    let mut results = Vec::with_capacity(ops.len());
    let mut changes = Vec::new();
    for op in ops {
        let key = op.key();
        let before = match overlay.get(key) {
            Some(v) => v.clone(),
            None => reader.latest(key)?,
        };
        match op {
            LogOp::Get { .. } => results.push(OpResult::Get { kv: before }),
            LogOp::Put { value, expires_at_ms, .. } => {
                let kv = KeyValue {
                    key: key.to_string(),
                    value: value.clone(),
                    create_revision: before.as_ref().map_or(next, |b| b.create_revision),
                    mod_revision: next,
                    version: before.as_ref().map_or(1, |b| b.version + 1),
                    expires_at_ms: *expires_at_ms,
                };
                overlay.insert(key, Some(kv.clone()));
                changes.push(Change { key: key.to_string(), prev: before.clone(), new: Some(kv.clone()) });
                results.push(OpResult::Put { kv, prev: before });
            }
            LogOp::Delete { .. } => {
                if before.is_some() {
                    overlay.insert(key, None);
                    changes.push(Change { key: key.to_string(), prev: before.clone(), new: None });
                }
                results.push(OpResult::Delete { prev: before });
            }
        }
    }
    let revision = if changes.is_empty() { current } else { next };
    Ok(TxnEffects { response: TxnResponse { succeeded, revision, results }, changes })
}

/// Given one key's history `(revision, value)` in ascending revision order,
/// its value as of `at` (`None` if absent or deleted then).
pub fn value_at<I>(history: I, at: Revision) -> Option<KeyValue>
where
    I: IntoIterator<Item = (Revision, Option<KeyValue>)>,
{
    let mut found = None;
    for (rev, kv) in history {
        if rev > at {
            break;
        }
        found = kv;
    }
    found
}

/// Which revisions of one key's history (ascending, with "is a delete") a
/// compaction to `compact` may drop: everything older than `compact` except
/// the newest older record, which is still the value as of `compact` unless
/// it is a delete. Returned oldest first, so an interrupted compaction never
/// drops a delete while older values survive.
pub fn compaction_victims(history: &[(Revision, bool)], compact: Revision) -> Vec<Revision> {
    let older: Vec<&(Revision, bool)> = history.iter().filter(|(r, _)| *r < compact).collect();
    let Some((last_rev, last_is_delete)) = older.last().map(|e| **e) else {
        return Vec::new();
    };
    let mut victims: Vec<Revision> = older.iter().map(|(r, _)| *r).filter(|r| *r != last_rev).collect();
    if last_is_delete {
        victims.push(last_rev);
    }
    victims
}

/// Applies `limit` to the keys of a range (already from `start`, in order).
/// Returns (page, more, count of all matches).
pub fn paginate<I, E>(iter: I, limit: Option<usize>) -> Result<(Vec<KeyValue>, bool, usize), E>
where
    I: IntoIterator<Item = Result<KeyValue, E>>,
{
    let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
    let mut kvs = Vec::new();
    let mut count = 0;
    for kv in iter {
        let kv = kv?;
        count += 1;
        if kvs.len() < limit {
            kvs.push(kv);
        }
    }
    let more = count > kvs.len();
    Ok((kvs, more, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[derive(Default)]
    struct Map(HashMap<String, KeyValue>);

    impl LatestReader for Map {
        type Error = Infallible;
        fn latest(&self, key: &str) -> Result<Option<KeyValue>, Infallible> {
            Ok(self.0.get(key).cloned())
        }
    }

    impl Map {
        fn apply(&mut self, fx: &TxnEffects) {
            for c in &fx.changes {
                match &c.new {
                    Some(kv) => self.0.insert(c.key.clone(), kv.clone()),
                    None => self.0.remove(&c.key),
                };
            }
        }
    }

    fn put(key: &str, v: &str) -> LogOp {
        LogOp::Put { key: key.into(), value: Bytes::copy_from_slice(v.as_bytes()), expires_at_ms: None }
    }

    fn txn(compare: Vec<Compare>, success: Vec<LogOp>) -> LogTxn {
        LogTxn { compare, success, failure: vec![LogOp::Get { key: "a".into() }] }
    }

    #[test]
    fn counters_follow_etcd() {
        let mut m = Map::default();
        let fx = eval_txn(&m, &txn(vec![], vec![put("a", "1")]), 0).unwrap();
        assert_eq!(fx.response.revision, 1);
        m.apply(&fx);
        let fx = eval_txn(&m, &txn(vec![], vec![put("a", "2"), put("b", "1")]), 1).unwrap();
        assert_eq!(fx.response.revision, 2);
        m.apply(&fx);
        let a = m.0["a"].clone();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 2, 2));
        let b = m.0["b"].clone();
        assert_eq!((b.create_revision, b.mod_revision, b.version), (2, 2, 1));
        // A delete of a missing key and a read do not advance the revision.
        let fx = eval_txn(&m, &txn(vec![], vec![LogOp::Delete { key: "zz".into() }]), 2).unwrap();
        assert_eq!(fx.response.revision, 2);
        assert!(fx.changes.is_empty());
        // Delete then re-create restarts the counters.
        let fx = eval_txn(&m, &txn(vec![], vec![LogOp::Delete { key: "a".into() }]), 2).unwrap();
        assert_eq!(fx.response.revision, 3);
        assert_eq!(fx.changes[0].event(3).kv.mod_revision, 3);
        m.apply(&fx);
        let fx = eval_txn(&m, &txn(vec![], vec![put("a", "3")]), 3).unwrap();
        m.apply(&fx);
        let a = m.0["a"].clone();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (4, 4, 1));
    }

    #[test]
    fn compares_are_all_or_nothing() {
        let mut m = Map::default();
        m.apply(&eval_txn(&m, &txn(vec![], vec![put("a", "1")]), 0).unwrap());
        let absent = Compare::ModRevision { key: "b".into(), revision: 0 };
        let a_at_1 = Compare::ModRevision { key: "a".into(), revision: 1 };
        let a_at_9 = Compare::ModRevision { key: "a".into(), revision: 9 };
        let a_exists = Compare::Exists { key: "a".into(), exists: true };
        let ok = eval_txn(&m, &txn(vec![absent.clone(), a_at_1, a_exists], vec![put("b", "x")]), 1).unwrap();
        assert!(ok.response.succeeded);
        let bad = eval_txn(&m, &txn(vec![absent, a_at_9], vec![put("b", "x")]), 1).unwrap();
        assert!(!bad.response.succeeded);
        assert!(bad.changes.is_empty());
        assert_eq!(bad.response.revision, 1);
        assert!(matches!(&bad.response.results[0], OpResult::Get { kv: Some(kv) } if kv.key == "a"));
    }

    #[test]
    fn value_at_picks_latest_not_after() {
        let kv = |r| Some(tombstone("k", r));
        let h = vec![(2, kv(2)), (5, None), (7, kv(7))];
        assert_eq!(value_at(h.clone(), 1), None);
        assert_eq!(value_at(h.clone(), 4).map(|k| k.mod_revision), Some(2));
        assert_eq!(value_at(h.clone(), 6), None);
        assert_eq!(value_at(h, 9).map(|k| k.mod_revision), Some(7));
    }

    #[test]
    fn compaction_keeps_value_as_of_compact_revision() {
        let h = [(2, false), (5, false), (7, true), (9, false)];
        assert_eq!(compaction_victims(&h, 6), vec![2]);
        assert_eq!(compaction_victims(&h, 8), vec![2, 5, 7]);
        assert_eq!(compaction_victims(&h, 2), Vec::<Revision>::new());
        assert_eq!(compaction_victims(&h, 100), vec![2, 5, 7]);
    }

    #[test]
    fn paginate_counts_everything() {
        let items: Vec<Result<KeyValue, Infallible>> = (0..5).map(|i| Ok(tombstone(&i.to_string(), 1))).collect();
        let (page, more, count) = paginate(items.clone(), Some(2)).unwrap();
        assert_eq!((page.len(), more, count), (2, true, 5));
        let (page, more, count) = paginate(items, None).unwrap();
        assert_eq!((page.len(), more, count), (5, false, 5));
    }
}
