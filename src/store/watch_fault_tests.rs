//! Watches under faults: concurrent writers and a leader crash; watches from
//! several start revisions on the surviving members must deliver every
//! change in order, with no gaps or duplicates and the previous value of
//! each change; a watch resumes from any revision in the window, and a
//! compacted one fails with `Compacted`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::fault_cluster::FaultCluster;
use super::tests::put_op;
use super::*;

const PREFIX: &str = "/wf/";

/// Collects `watch`'s events until it has delivered revision `end` (once known).
/// `after` is the revision the watch started after.
async fn collect(mut watch: Watcher, after: Revision, end: Arc<AtomicI64>) -> Vec<(Revision, WatchEvent)> {
    let mut out: Vec<(Revision, WatchEvent)> = Vec::new();
    let mut last = after;
    loop {
        let target = end.load(Ordering::SeqCst);
        if target > 0 && last >= target {
            return out;
        }
        match tokio::time::timeout(Duration::from_millis(200), watch.next()).await {
            Err(_) => continue,
            Ok(None) => panic!("the watch ended"),
            Ok(Some(Err(e))) => panic!("the watch failed: {e}"),
            Ok(Some(Ok(batch))) => {
                last = batch.revision;
                out.extend(batch.events.into_iter().map(|e| (batch.revision, e)));
            }
        }
    }
}

/// Replays `events` (everything from revision 1) over an empty model: each
/// event's `prev` must be the key's previous state and its counters follow.
fn replay(events: &[(Revision, WatchEvent)]) -> HashMap<String, KeyValue> {
    let mut model: HashMap<String, KeyValue> = HashMap::new();
    for (rev, ev) in events {
        assert_eq!(ev.kv.mod_revision, *rev, "event revision");
        let prev = model.get(&ev.kv.key);
        assert_eq!(ev.prev.as_ref(), prev, "prev of {} at {rev}", ev.kv.key);
        match ev.kind {
            EventKind::Put => {
                let (create, version) = prev.map_or((*rev, 1), |p| (p.create_revision, p.version + 1));
                assert_eq!((ev.kv.create_revision, ev.kv.version), (create, version), "counters at {rev}");
                model.insert(ev.kv.key.clone(), ev.kv.clone());
            }
            EventKind::Delete => {
                assert!(prev.is_some(), "a delete at {rev} carries the deleted value");
                assert!(ev.kv.value.is_empty());
                model.remove(&ev.kv.key);
            }
        }
    }
    model
}

async fn writer(cluster: Arc<FaultCluster>, w: usize) -> Vec<(String, Option<String>, Revision)> {
    let mut acked = Vec::new();
    for i in 0..60 {
        let key = format!("{PREFIX}{w}/{}", i % 5);
        let value = format!("{w}-{i}");
        let delete = i % 4 == 3;
        let op = if delete { Op::Delete { key: key.clone() } } else { put_op(&key, &value) };
        let mut member = w + i;
        // Retried until acknowledged: an attempt of unknown outcome may also
        // have happened, which the watches must show just the same.
        let r = loop {
            let Some(s) = cluster.get(member % 3) else {
                member += 1;
                continue;
            };
            match s.txn(Txn { success: vec![op.clone()], ..Default::default() }).await {
                Ok(r) => break r,
                Err(_) => {
                    member += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let deleted = matches!(&r.results[0], OpResult::Delete { prev: Some(_) });
        if !delete || deleted {
            acked.push((key, (!delete).then_some(value), r.revision));
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_survive_a_leader_crash_resume_and_report_compaction() {
    let cluster = Arc::new(FaultCluster::start().await);
    let leader = cluster.leader().await;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let end = Arc::new(AtomicI64::new(0));
    let mut watches = Vec::new();
    let watch_from = |member: usize, after: Revision| {
        let w = cluster.get(member).unwrap().watch(PREFIX, after).unwrap();
        (after, tokio::spawn(collect(w, after, end.clone())))
    };
    watches.push(watch_from(survivors[0], 0));
    let writers: Vec<_> = (0..3).map(|w| tokio::spawn(writer(cluster.clone(), w))).collect();
    for step in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        // The member's applied revision: no read index, which fails mid-election.
        let probe = RangeRequest { key: PREFIX.into(), prefix: true, limit: Some(1), ..Default::default() };
        let rev = cluster.get(survivors[1]).unwrap().range_stale(probe).await.unwrap().revision;
        watches.push(watch_from(survivors[step % 2], rev));
        if step == 1 {
            cluster.stop(leader).await;
        }
    }
    cluster.restart(leader).await;
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let store = cluster.get(survivors[0]).unwrap();
    let last = store.current_revision().await.unwrap();
    end.store(last, Ordering::SeqCst);
    let mut results = Vec::new();
    for (after, task) in watches {
        results.push((after, tokio::time::timeout(Duration::from_secs(20), task).await.unwrap().unwrap()));
    }
    let (_, reference) = &results[0];
    let revs: Vec<_> = reference.iter().map(|(r, _)| *r).collect();
    let mut unique = revs.clone();
    unique.dedup();
    assert_eq!(unique, (1..=last).collect::<Vec<_>>(), "every revision once, in order");
    let model = replay(reference);
    let now = store.range(RangeRequest { key: PREFIX.into(), prefix: true, ..Default::default() }).await.unwrap();
    let mut expected: Vec<_> = model.into_values().collect();
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(now.kvs, expected, "replaying the watch gives the store's state");
    for (key, value, rev) in &acked {
        let hit = reference.iter().find(|(r, e)| r == rev && &e.kv.key == key).expect("acknowledged write watched");
        assert_eq!(hit.1.kind == EventKind::Put, value.is_some());
        if let Some(v) = value {
            assert_eq!(hit.1.kv.value, bytes::Bytes::from(v.clone()));
        }
    }
    for (after, events) in &results[1..] {
        let suffix: Vec<_> = reference.iter().filter(|(r, _)| r > after).cloned().collect();
        assert_eq!(events, &suffix, "the watch from {after}");
    }

    // Resume from any revision in the window, on every member.
    for (i, after) in [1, last / 3, last / 2, last - 1, last].into_iter().enumerate() {
        let w = cluster.get(i % 3).unwrap().watch(PREFIX, after).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(20), collect(w, after, end.clone())).await.unwrap();
        let suffix: Vec<_> = reference.iter().filter(|(r, _)| *r > after).cloned().collect();
        assert_eq!(got, suffix, "resumed from {after}");
    }

    // Compacted history: the distinct error, on every member.
    let compact_at = last / 2;
    store.compact(compact_at).await.unwrap();
    for i in 0..3 {
        let s = cluster.get(i).unwrap();
        let c = s.clone();
        super::tests::wait_until(Duration::from_secs(10), "the compaction applied", || {
            let c = c.clone();
            async move { c.compacted_revision() >= compact_at }
        })
        .await;
        let mut w = s.watch(PREFIX, compact_at - 2).unwrap();
        let err = w.next().await;
        assert!(
            matches!(err, Some(Err(StoreError::Compacted { requested, compacted }))
            if requested == compact_at - 1 && compacted == compact_at),
            "got {err:?}"
        );
        let w = s.watch(PREFIX, compact_at - 1).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(20), collect(w, compact_at - 1, end.clone())).await.unwrap();
        assert_eq!(got.first().map(|(r, _)| *r), Some(compact_at));
    }
    cluster.shutdown().await;
}

/// A watch that starts past the member's applied revision (as on a lagging
/// follower) delivers nothing up to its start.
#[tokio::test]
async fn a_watch_from_a_future_revision_skips_up_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = StoreConfig::new(dir.path());
    c.watch_progress_interval = None;
    let store = Store::open(c).await.unwrap();
    super::tests::put(&store, "/f/a", "1").await;
    let mut w = store.watch("/f/", 3).unwrap();
    for i in 2..=5 {
        super::tests::put(&store, "/f/a", &i.to_string()).await;
    }
    let b = tokio::time::timeout(Duration::from_secs(5), w.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(b.revision, 4, "the first revision after the start");
    store.shutdown().await.unwrap();
}
