//! In-process three-member tests over mutual TLS on 127.0.0.1: joining,
//! forwarded writes, follower read-index reads, leader loss.

use std::collections::BTreeSet;
use std::time::Duration;

use super::tests::{put, wait_until};
use super::tls::test_ca::TestCa;
use super::*;

/// A free loopback port, never the same twice in this test process (tests
/// running in parallel would otherwise race for one).
pub(super) fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if HANDED_OUT.lock().unwrap().insert(port) {
            return port;
        }
    }
}

pub(super) fn member(dir: &std::path::Path, id: NodeId, port: u16, ca: &TestCa, join: bool) -> StoreConfig {
    let mut c = StoreConfig::new(dir.join(format!("m{id}")));
    c.node_id = id;
    c.watch_progress_interval = None;
    c.peer = Some(PeerConfig {
        listen_addr: format!("127.0.0.1:{port}").parse().unwrap(),
        advertise_addr: format!("127.0.0.1:{port}"),
        tls: ca.member(),
        join,
    });
    c
}

pub(super) fn all() -> RangeRequest {
    RangeRequest { key: String::new(), prefix: true, ..Default::default() }
}

/// Three voting members founded by member 1, with their peer ports.
pub(super) async fn three_members(dir: &std::path::Path, ca: &TestCa) -> (Vec<Store>, Vec<u16>) {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut stores = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        stores.push(Store::open(member(dir, i as NodeId + 1, *port, ca, i > 0)).await.unwrap());
    }
    for (i, port) in ports.iter().enumerate().skip(1) {
        stores[0].add_learner(i as NodeId + 1, &format!("127.0.0.1:{port}")).await.unwrap();
    }
    stores[0].change_membership(BTreeSet::from([1, 2, 3])).await.unwrap();
    (stores, ports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_forward_and_survive_leader_loss() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let s1 = Store::open(member(dir.path(), 1, ports[0], &ca, false)).await.unwrap();
    let s2 = Store::open(member(dir.path(), 2, ports[1], &ca, true)).await.unwrap();
    let s3 = Store::open(member(dir.path(), 3, ports[2], &ca, true)).await.unwrap();
    put(&s1, "/a", "1").await;
    s1.add_learner(2, &format!("127.0.0.1:{}", ports[1])).await.unwrap();
    s1.add_learner(3, &format!("127.0.0.1:{}", ports[2])).await.unwrap();
    s1.change_membership(BTreeSet::from([1, 2, 3])).await.unwrap();
    // Followers learn the new membership from the next append.
    let (a, b) = (s2.clone(), s3.clone());
    wait_until(Duration::from_secs(10), "followers to see three voters", || {
        let (a, b) = (a.clone(), b.clone());
        async move { b.voters() == BTreeSet::from([1, 2, 3]) && a.members().len() == 3 }
    })
    .await;

    // A write on a follower is forwarded; a read on another follower sees it.
    let r = put(&s2, "/b", "from-2").await;
    let seen = s3.range(all()).await.unwrap();
    assert_eq!(seen.revision, r.revision);
    assert_eq!(seen.kvs.len(), 2);

    // Lose the leader in the middle of a stream of writes.
    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push(put(&s2, &format!("/stream/{i:02}"), "x").await.revision);
    }
    s1.shutdown().await.unwrap();
    let (a, b) = (s2.clone(), s3.clone());
    wait_until(Duration::from_secs(20), "a new leader", || {
        let (a, b) = (a.clone(), b.clone());
        async move {
            let l = a.leader();
            l.is_some() && l != Some(1) && l == b.leader()
        }
    })
    .await;
    for i in 20..40 {
        let key = format!("/stream/{i:02}");
        // Writes right after the election may race it; retry until acknowledged.
        loop {
            match s3.txn(Txn { success: vec![super::tests::put_op(&key, "x")], ..Default::default() }).await {
                Ok(r) => {
                    acked.push(r.revision);
                    break;
                }
                Err(e) => {
                    eprintln!("retrying after {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    let d2 = s2.range(all()).await.unwrap();
    let d3 = s3.range(all()).await.unwrap();
    assert_eq!(d2, d3, "members' states are identical");
    assert_eq!(d2.kvs.iter().filter(|k| k.key.starts_with("/stream/")).count(), 40);
    let mut sorted = acked.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 40, "every acknowledged write has its own revision");
    s2.shutdown().await.unwrap();
    s3.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_catches_up_from_snapshot_restart_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let s1 = Store::open(member(dir.path(), 1, ports[0], &ca, false)).await.unwrap();
    for i in 0..30 {
        put(&s1, &format!("/k/{}", i % 4), &i.to_string()).await;
    }
    s1.compact(10).await.unwrap();
    // Snapshot and drop the whole log: members can only catch up from the snapshot.
    s1.inner.raft.trigger().snapshot().await.unwrap();
    let raft = s1.inner.raft.clone();
    wait_until(Duration::from_secs(10), "a snapshot", || {
        let raft = raft.clone();
        async move { raft.metrics().borrow().snapshot.is_some() }
    })
    .await;
    let upto = s1.inner.raft.metrics().borrow().snapshot.unwrap().index;
    s1.inner.raft.trigger().purge_log(upto).await.unwrap();
    let raft = s1.inner.raft.clone();
    wait_until(Duration::from_secs(10), "the log purge", || {
        let raft = raft.clone();
        async move { raft.metrics().borrow().purged.is_some_and(|p| p.index == upto) }
    })
    .await;

    let s2 = Store::open(member(dir.path(), 2, ports[1], &ca, true)).await.unwrap();
    let s3 = Store::open(member(dir.path(), 3, ports[2], &ca, true)).await.unwrap();
    s1.add_learner(2, &addr(1)).await.unwrap();
    s1.add_learner(3, &addr(2)).await.unwrap();
    s1.change_membership(BTreeSet::from([1, 2, 3])).await.unwrap();
    put(&s1, "/after", "snapshot").await;
    let at = |rev| RangeRequest { revision: Some(rev), ..all() };
    for s in [&s2, &s3] {
        assert_eq!(s.range(all()).await.unwrap(), s1.range(all()).await.unwrap());
        assert_eq!(s.range(at(12)).await.unwrap(), s1.range(at(12)).await.unwrap());
        assert_eq!(s.compacted_revision(), 10);
        // It could only have caught up by installing the snapshot.
        assert!(s.inner.raft.metrics().borrow().snapshot.is_some());
    }

    // Restart member 3 from its data directory.
    s3.shutdown().await.unwrap();
    drop(s3);
    put(&s2, "/while-3-was-down", "x").await;
    let s3 = Store::open(member(dir.path(), 3, ports[2], &ca, true)).await.unwrap();
    let rev = put(&s1, "/after-restart", "x").await.revision;
    let s3c = s3.clone();
    wait_until(Duration::from_secs(10), "member 3 to catch up", || {
        let s = s3c.clone();
        async move { s.range_stale(all()).await.unwrap().revision >= rev }
    })
    .await;
    assert_eq!(s3.range(all()).await.unwrap(), s1.range(all()).await.unwrap());

    s1.remove_member(3).await.unwrap();
    assert_eq!(s1.voters(), BTreeSet::from([1, 2]));
    assert!(!s1.members().contains_key(&3));
    put(&s2, "/two-left", "x").await;
    assert_eq!(s2.range(all()).await.unwrap(), s1.range(all()).await.unwrap());
    for s in [s1, s2, s3] {
        s.shutdown().await.unwrap();
    }
}
