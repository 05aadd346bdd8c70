//! Tests of snapshot files: save at a revision, restore into a fresh folder
//! and open it (keys, counters and revision survive; writes continue),
//! corrupt and truncated files refused, restore refused while the store is open.

use std::path::Path;

use super::tests::put;
use super::*;

fn config(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.watch_progress_interval = None;
    c
}

fn everything() -> RangeRequest {
    RangeRequest { key: String::new(), prefix: true, ..Default::default() }
}

/// A store (member 5) with keys written several times and one deleted; returns the
/// snapshot's path, what the store held and its revision.
async fn saved(dir: &Path) -> (std::path::PathBuf, Vec<KeyValue>, Revision) {
    // Another member id than the restored store's: the membership is reset.
    let mut saving = config(&dir.join("db"));
    saving.node_id = 5;
    let store = Store::open(saving).await.unwrap();
    for i in 0..40 {
        put(&store, &format!("/registry/k/{}", i % 13), &format!("v{i}")).await;
    }
    let del = Txn { success: vec![Op::Delete { key: "/registry/k/5".into() }], ..Default::default() };
    store.txn(del).await.unwrap();
    let before = store.range(everything()).await.unwrap();
    let path = dir.join("snapshots").join("on-demand-node-1");
    let info = store.save_snapshot(&path).await.unwrap();
    assert_eq!(info.revision, before.revision);
    assert_eq!(info.keys, 12);
    assert_eq!(info.size, std::fs::metadata(&path).unwrap().len());
    // Writes after the snapshot are not in it.
    put(&store, "/registry/k/after", "x").await;
    store.shutdown().await.unwrap();
    (path, before.kvs, before.revision)
}

#[tokio::test]
async fn restore_into_a_fresh_folder_keeps_keys_counters_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    let (file, before, revision) = saved(dir.path()).await;
    assert_eq!(revision, 41);
    let fresh = dir.path().join("fresh");
    let restored = snapshot::restore(&file, &fresh).unwrap();
    assert_eq!(restored.revision, revision);
    assert_eq!(restored.moved_aside, None);

    let store = Store::open(config(&fresh)).await.unwrap();
    assert_eq!(store.current_revision().await.unwrap(), revision);
    let after = store.range(everything()).await.unwrap();
    assert_eq!(after.kvs, before, "keys, create/mod revisions and versions survive");
    assert!(after.kvs.iter().all(|kv| kv.key != "/registry/k/after"));
    // History within the window survives too.
    let at13 = store.range(RangeRequest { revision: Some(13), ..everything() }).await.unwrap();
    assert_eq!(at13.kvs.len(), 13);
    assert_eq!(put(&store, "/registry/k/new", "x").await.revision, revision + 1);
    assert_eq!(store.voters(), [1].into_iter().collect());
    store.shutdown().await.unwrap();
    drop(store);

    // And it all persists across a restart of the restored store.
    let store = Store::open(config(&fresh)).await.unwrap();
    assert_eq!(store.current_revision().await.unwrap(), revision + 1);
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn restore_over_a_newer_store_moves_it_aside_and_keeps_revisions_growing() {
    let dir = tempfile::tempdir().unwrap();
    let (file, before, revision) = saved(dir.path()).await;
    let store_dir = dir.path().join("db");
    // The store went on to revision + 1 after the snapshot.
    let restored = snapshot::restore(&file, &store_dir).unwrap();
    assert_eq!(restored.snapshot.revision, revision);
    assert_eq!(restored.revision, revision + 1, "the revision never goes backwards");
    let aside = restored.moved_aside.expect("the old store is kept");
    assert!(aside.join("sled").exists(), "{}", aside.display());

    let store = Store::open(config(&store_dir)).await.unwrap();
    assert_eq!(store.range(everything()).await.unwrap().kvs, before);
    let resumed = store.range(RangeRequest { revision: Some(revision), ..everything() }).await;
    assert!(matches!(resumed, Err(StoreError::Compacted { .. })), "{resumed:?}");
    assert_eq!(put(&store, "/registry/k/new", "x").await.revision, revision + 2);
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn corrupt_and_truncated_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _, _) = saved(dir.path()).await;
    let raw = std::fs::read(&file).unwrap();
    assert!(snapshot::verify(&file).is_ok());

    let truncated = dir.path().join("truncated");
    std::fs::write(&truncated, &raw[..raw.len() / 2]).unwrap();
    let err = snapshot::restore(&truncated, &dir.path().join("r1")).unwrap_err();
    assert!(matches!(err, SnapshotError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("corrupt or truncated"), "{err}");
    assert!(!dir.path().join("r1").exists(), "nothing is written for a bad file");

    let mut flipped = raw.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let corrupt = dir.path().join("corrupt");
    std::fs::write(&corrupt, &flipped).unwrap();
    let err = snapshot::verify(&corrupt).unwrap_err();
    assert!(matches!(err, SnapshotError::Checksum { .. }), "{err}");

    let other = dir.path().join("other");
    std::fs::write(&other, b"not a snapshot at all").unwrap();
    assert!(matches!(snapshot::verify(&other), Err(SnapshotError::NotASnapshot { .. })));

    // A bad file leaves the existing store untouched.
    let err = snapshot::restore(&corrupt, &dir.path().join("db")).unwrap_err();
    assert!(matches!(err, SnapshotError::Checksum { .. }), "{err}");
    assert!(dir.path().join("db").join("sled").exists());
}

#[tokio::test]
async fn a_damaged_old_store_is_replaced_anyway() {
    let dir = tempfile::tempdir().unwrap();
    let (file, before, revision) = saved(dir.path()).await;
    let store_dir = dir.path().join("db");
    // sled cannot open its data file when a folder stands in its place.
    let db_file = store_dir.join("sled").join("db");
    std::fs::remove_file(&db_file).unwrap();
    std::fs::create_dir(&db_file).unwrap();
    let restored = snapshot::restore(&file, &store_dir).unwrap();
    assert!(restored.old_store_unreadable.is_some());
    assert_eq!(restored.revision, revision);
    assert!(restored.moved_aside.is_some());
    let store = Store::open(config(&store_dir)).await.unwrap();
    assert_eq!(store.range(everything()).await.unwrap().kvs, before);
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn restore_refuses_while_the_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _, revision) = saved(dir.path()).await;
    let store_dir = dir.path().join("db");
    let mut same = config(&store_dir);
    same.node_id = 5;
    let store = Store::open(same).await.unwrap();
    let err = snapshot::restore(&file, &store_dir).unwrap_err();
    assert!(matches!(err, SnapshotError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("stop `kube server`"), "{err}");
    // Nothing moved: the open store still works.
    assert!(store_dir.join("sled").exists());
    assert_eq!(put(&store, "/registry/k/still", "x").await.revision, revision + 2);
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn snapshot_files_are_private_and_written_atomically() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (file, _, _) = saved(dir.path()).await;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let names: Vec<_> = std::fs::read_dir(file.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("on-demand-node-1")], "no temporary file is left");
}
