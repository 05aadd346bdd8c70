//! Linearizability under a leader crash: several clients run get / put /
//! compare-and-swap on a few keys against a three-member cluster while the
//! leader is stopped and restarted; the recorded history must pass
//! [`super::linearizability::check`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;

use super::fault_cluster::FaultCluster;
use super::linearizability::{Call, Op as LinOp, Output, Value, check};
use super::tests::put_op;
use super::*;

const KEYS: usize = 3;
const CLIENTS: usize = 4;
const OPS_PER_CLIENT: u64 = 120;

/// What every client learned: the mod revision each value was written at
/// (a compare-and-swap compares revisions; the model compares values).
type Revisions = Arc<Mutex<HashMap<u64, Revision>>>;

fn value_of(kv: Option<&KeyValue>, revs: &Revisions) -> Value {
    let kv = kv?;
    let v: u64 = std::str::from_utf8(&kv.value).ok()?.parse().ok()?;
    revs.lock().unwrap().insert(v, kv.mod_revision);
    Some(v)
}

/// Runs one operation against `store`; an error leaves its outcome unknown.
async fn run_op(store: &Store, key: &str, op: &LinOp, revs: &Revisions) -> Result<Output, String> {
    let put = |v: u64| put_op(key, &v.to_string());
    let fut = async {
        match op {
            LinOp::Get => {
                let r = store
                    .range(RangeRequest { key: key.into(), ..Default::default() })
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Output::Get(value_of(r.kvs.first(), revs)))
            }
            LinOp::Put(v) => {
                let r = store.txn(Txn { success: vec![put(*v)], ..Default::default() }).await;
                let r = r.map_err(|e| e.to_string())?;
                revs.lock().unwrap().insert(*v, r.revision);
                Ok(Output::Put)
            }
            LinOp::Cas { expect, new } => {
                let revision = match expect {
                    None => 0,
                    Some(e) => *revs.lock().unwrap().get(e).ok_or("the expected value's revision is unknown")?,
                };
                let compare = vec![Compare::ModRevision { key: key.into(), revision }];
                let r = store.txn(Txn { compare, success: vec![put(*new)], failure: vec![] }).await;
                let r = r.map_err(|e| e.to_string())?;
                if r.succeeded {
                    revs.lock().unwrap().insert(*new, r.revision);
                }
                Ok(Output::Cas(r.succeeded))
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), fut).await.unwrap_or_else(|_| Err("timed out".into()))
}

/// The first running member from `member` on (members may be stopped).
fn running_member(cluster: &FaultCluster, member: &mut usize) -> Store {
    loop {
        if let Some(s) = cluster.get(*member % 3) {
            return s;
        }
        *member += 1;
    }
}

async fn client(id: usize, cluster: Arc<FaultCluster>, start: Instant, revs: Revisions) -> Vec<Call> {
    let now = || start.elapsed().as_nanos() as u64;
    let mut history = Vec::new();
    let mut last_seen: HashMap<usize, Value> = HashMap::new();
    let mut member = id;
    for seq in 0..OPS_PER_CLIENT {
        let (k, kind, pause) = {
            let mut rng = rand::rng();
            (rng.random_range(0..KEYS), rng.random_range(0..10), rng.random_range(5..30))
        };
        let value = (id as u64 + 1) * 1_000_000 + seq;
        let op = match kind {
            0..4 => LinOp::Get,
            4..7 => LinOp::Put(value),
            _ => LinOp::Cas { expect: last_seen.get(&k).copied().flatten(), new: value },
        };
        let key = format!("/lin/{k}");
        // Forwarding that failed to connect never sent the request, so it
        // certainly did not happen: retry it elsewhere (keeping it as an
        // operation of unknown outcome would only widen the search).
        let (call, out, on) = loop {
            let store = running_member(&cluster, &mut member);
            let call = now();
            match run_op(&store, &key, &op, &revs).await {
                Err(e) if e.contains("is unreachable") => {
                    member += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                r => break (call, r, store.id()),
            }
        };
        let out = match out {
            Ok(out) => Some(out),
            Err(e) => {
                eprintln!("client {id}: {op:?} on member {on}: {e}");
                None
            }
        };
        let ret = now();
        match (&op, &out) {
            (_, None) => member += 1,
            (LinOp::Get, Some(Output::Get(v))) => {
                last_seen.insert(k, *v);
            }
            (LinOp::Put(v), _) | (LinOp::Cas { new: v, .. }, Some(Output::Cas(true))) => {
                last_seen.insert(k, Some(*v));
            }
            _ => {}
        }
        history.push(Call { key, op, call, ret: out.map(|o| (ret, o)) });
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    history
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_under_leader_crash_is_linearizable() {
    let cluster = Arc::new(FaultCluster::start().await);
    let revs = Revisions::default();
    let start = Instant::now();
    let clients: Vec<_> =
        (0..CLIENTS).map(|id| tokio::spawn(client(id, cluster.clone(), start, revs.clone()))).collect();
    // Crash the leader a third of the way in; bring it back later.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let leader = cluster.leader().await;
    cluster.stop(leader).await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    cluster.restart(leader).await;
    let mut history = Vec::new();
    for c in clients {
        history.extend(c.await.unwrap());
    }
    let unknown = history.iter().filter(|c| c.ret.is_none()).count();
    let writes = history.iter().filter(|c| c.op != LinOp::Get && c.ret.is_some()).count();
    eprintln!("{} operations ({writes} acknowledged writes, {unknown} of unknown outcome)", history.len());
    assert!(writes > 50, "the clients got writes through");
    let checked = Instant::now();
    check(&history).unwrap();
    eprintln!("checked in {:?}", checked.elapsed());
    // The final state agrees with a fresh read everywhere.
    let all = super::cluster_tests::all();
    let reference = cluster.get(new_leader).unwrap().range(all.clone()).await.unwrap();
    for s in cluster.running() {
        assert_eq!(s.range(all.clone()).await.unwrap().kvs, reference.kvs);
    }
    assert!(reference.kvs.iter().all(|kv| kv.value != Bytes::new()));
    cluster.shutdown().await;
}
