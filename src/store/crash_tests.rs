//! Crash safety: a child process (this test binary, re-run with an env var)
//! writes to a one-member store and prints every acknowledged revision; the
//! test SIGKILLs it at a random moment, reopens the store and checks that
//! every acknowledged write survived with its value and revision.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;

use super::tests::put_op;
use super::*;

/// Set in the child: the data directory to write to.
const CHILD_DIR: &str = "KUBE_STORE_CRASH_CHILD_DIR";
/// Set in the child: a prefix for this round's keys.
const CHILD_ROUND: &str = "KUBE_STORE_CRASH_CHILD_ROUND";

/// The child's side: runs only when re-executed by the test below. Four
/// writers put keys forever; each acknowledged write is printed as
/// `ACK <key> <value> <revision>` (one `println!`, so one line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_writer() {
    let (Ok(dir), Ok(round)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_ROUND)) else {
        return;
    };
    let mut c = StoreConfig::new(dir);
    c.watch_progress_interval = None;
    let store = Store::open(c).await.expect("the child opens the store");
    println!("READY");
    let mut writers = Vec::new();
    for w in 0..4 {
        let (store, round) = (store.clone(), round.clone());
        writers.push(tokio::spawn(async move {
            for i in 0u64.. {
                let key = format!("/crash/{round}/{w}/{}", i % 50);
                let value = format!("{round}-{w}-{i}");
                let txn = Txn { success: vec![put_op(&key, &value)], ..Default::default() };
                let r = store.txn(txn).await.expect("the child's write");
                println!("ACK {key} {value} {}", r.revision);
            }
        }));
    }
    for w in writers {
        let _ = w.await;
    }
}

struct Ack {
    key: String,
    value: String,
    revision: Revision,
}

/// Runs one child until it acknowledged a random number of writes (or a
/// random time passed), SIGKILLs it and returns what it acknowledged.
fn run_and_kill(dir: &std::path::Path, round: usize) -> Vec<Ack> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args(["--exact", "store::crash_tests::crash_child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning the child");
    let stdout = child.stdout.take().expect("the child's stdout");
    let mut rng = rand::rng();
    let kill_after_acks = rng.random_range(1..400);
    let kill_after = Duration::from_millis(rng.random_range(50..1500));
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acks = Vec::new();
    let mut ready_at = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "the child never got going");
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(line) if line == "READY" => ready_at = Some(Instant::now()),
            Ok(line) => acks.extend(parse_ack(&line)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the child exited on its own"),
        }
        if acks.len() >= kill_after_acks || ready_at.is_some_and(|t| t.elapsed() >= kill_after) {
            break;
        }
    }
    child.kill().expect("SIGKILL the child");
    let _ = child.wait();
    let _ = reader.join();
    // Lines the child printed before it died are acknowledged too; a cut-off
    // last line does not parse and is ignored.
    acks.extend(rx.try_iter().filter_map(|l| parse_ack(&l)));
    acks
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    let (key, value, rev) = (parts.next()?, parts.next()?, parts.next()?);
    Some(Ack { key: key.to_string(), value: value.to_string(), revision: rev.parse().ok()? })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut total = 0;
    for round in 0..4 {
        let acks = tokio::task::block_in_place(|| run_and_kill(dir.path(), round));
        total += acks.len();
        let mut c = StoreConfig::new(dir.path());
        c.watch_progress_interval = None;
        let store = Store::open(c).await.expect("reopening after SIGKILL");
        let current = store.current_revision().await.unwrap();
        let mut revs: Vec<_> = acks.iter().map(|a| a.revision).collect();
        revs.sort();
        revs.dedup();
        assert_eq!(revs.len(), acks.len(), "every acknowledged write had its own revision");
        for ack in &acks {
            assert!(ack.revision <= current, "revision {} acknowledged, store is at {current}", ack.revision);
            let at = RangeRequest { key: ack.key.clone(), revision: Some(ack.revision), ..Default::default() };
            let got = store.range(at).await.unwrap();
            let kv = got.kvs.first().unwrap_or_else(|| panic!("acknowledged {} lost", ack.key));
            assert_eq!(kv.value, Bytes::from(ack.value.clone()), "value of {}", ack.key);
            assert_eq!(kv.mod_revision, ack.revision, "revision of {}", ack.key);
        }
        eprintln!("round {round}: {} acknowledged writes present, store at revision {current}", acks.len());
        store.shutdown().await.unwrap();
        drop(store);
        let path = dir.path().to_path_buf();
        super::tests::wait_until(Duration::from_secs(5), "the store's lock released", || {
            let p = path.clone();
            async move { !super::in_use(&p) }
        })
        .await;
    }
    assert!(total > 0, "the children acknowledged nothing");
}
