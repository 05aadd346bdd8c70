//! End-to-end tests of `kube snapshot`: the real `kube server` (no agent) on
//! loopback, driven by the real kubectl and the real `kube snapshot`
//! subcommands. Save, list, restore with the server stopped, start again:
//! the objects are back and resource versions keep growing. Scheduled
//! snapshots keep their retention and leave on-demand ones alone. A snapshot
//! restored onto a fresh server (with the old one's keys) brings the cluster back.

mod common;

use common::Cluster;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn kube(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kube"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run kube")
}

fn kube_ok(dir: &Path, args: &[&str]) -> String {
    let out = kube(dir, args);
    assert!(
        out.status.success(),
        "kube {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kube_fails(dir: &Path, args: &[&str]) -> String {
    let out = kube(dir, args);
    assert!(!out.status.success(), "kube {args:?} should have failed:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn resource_version(cluster: &Cluster, args: &[&str]) -> i64 {
    let mut all = args.to_vec();
    all.extend(["-o", "jsonpath={.metadata.resourceVersion}"]);
    let rv = cluster.ok(&all);
    rv.trim().parse().unwrap_or_else(|_| panic!("resourceVersion {rv:?} of {args:?}"))
}

/// The snapshot names `kube snapshot list` prints (first column, no header).
fn listed(dir: &Path) -> Vec<String> {
    let out = kube_ok(dir, &["snapshot", "list"]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["Name", "Location", "Size", "Created"], "{out}");
    lines.filter_map(|l| l.split_whitespace().next().map(String::from)).collect()
}

#[test]
fn save_list_restore_brings_the_objects_back() {
    let mut cluster = Cluster::start_with(&["--snapshot-interval", "0", "--node-name", "snapnode"]);
    let dir = cluster.dir.path().to_path_buf();
    cluster.ok(&["create", "namespace", "snap"]);
    cluster.ok(&["create", "configmap", "keep", "-n", "snap", "--from-literal=color=blue"]);
    cluster.ok(&["create", "deployment", "web", "-n", "snap", "--image=busybox", "--replicas=2"]);
    let kept_rv = resource_version(&cluster, &["get", "configmap", "keep", "-n", "snap"]);

    // Save: the server writes the file and the command prints its path.
    let path = kube_ok(&dir, &["snapshot", "save"]).trim().to_string();
    let snapshots = dir.join("server/db/snapshots");
    assert!(path.starts_with(&snapshots.display().to_string()), "{path}");
    let name = Path::new(&path).file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("on-demand-snapnode-"), "{name}");
    assert!(std::fs::metadata(&path).unwrap().len() > 1000);
    assert_eq!(listed(&dir), std::slice::from_ref(&name));
    let named = kube_ok(&dir, &["snapshot", "save", "--name", "before-upgrade"]);
    assert!(named.contains("before-upgrade-snapnode-"), "{named}");
    let err = kube_fails(&dir, &["snapshot", "save", "--name", "../escape"]);
    assert!(err.contains("invalid snapshot name"), "{err}");

    // Only admins may ask for one.
    let out = cluster.kubectl_stdin(&["--as=jane", "create", "--raw", "/v1-kube/snapshots", "-f", "-"], "{}");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Forbidden") || err.contains("forbidden"), "{err}");

    // Changes after the snapshot.
    cluster.ok(&["delete", "configmap", "keep", "-n", "snap"]);
    cluster.ok(&["create", "configmap", "later", "-n", "snap", "--from-literal=x=y"]);
    let latest_rv = resource_version(&cluster, &["get", "configmap", "later", "-n", "snap"]);
    assert!(latest_rv > kept_rv);

    // Restore needs the server stopped.
    let err = kube_fails(&dir, &["snapshot", "restore", &path]);
    assert!(err.contains("in use") && err.contains("stop `kube server`"), "{err}");
    cluster.stop();

    // A truncated copy is refused and changes nothing.
    let raw = std::fs::read(&path).unwrap();
    let truncated = dir.join("truncated-snapshot");
    std::fs::write(&truncated, &raw[..raw.len() - 100]).unwrap();
    let err = kube_fails(&dir, &["snapshot", "restore", truncated.to_str().unwrap()]);
    assert!(err.contains("corrupt or truncated"), "{err}");

    // Restore by name: the old store is kept aside.
    let out = kube_ok(&dir, &["snapshot", "restore", &name]);
    assert!(out.contains("the previous store was moved to"), "{out}");
    let aside: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("db-old-"))
        .collect();
    assert_eq!(aside.len(), 1, "{out}");

    cluster.start_again();
    let color = cluster.ok(&["get", "configmap", "keep", "-n", "snap", "-o", "jsonpath={.data.color}"]);
    assert_eq!(color, "blue");
    assert_eq!(resource_version(&cluster, &["get", "configmap", "keep", "-n", "snap"]), kept_rv);
    let later = cluster.kubectl(&["get", "configmap", "later", "-n", "snap"]);
    assert!(!later.status.success(), "an object created after the snapshot is gone");
    let replicas = cluster.ok(&["get", "deployment", "web", "-n", "snap", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas, "2");
    assert!(cluster.ok(&["get", "namespaces"]).contains("snap"));

    // Versions never go backwards for clients that saw the later writes.
    cluster.ok(&["create", "configmap", "fresh", "-n", "snap", "--from-literal=a=b"]);
    let fresh_rv = resource_version(&cluster, &["get", "configmap", "fresh", "-n", "snap"]);
    assert!(fresh_rv > latest_rv, "new resourceVersion {fresh_rv} must exceed {latest_rv}");
    let list: serde_json::Value =
        serde_json::from_str(&cluster.ok(&["get", "--raw", "/api/v1/namespaces/snap/configmaps"])).unwrap();
    let list_rv: i64 = list["metadata"]["resourceVersion"].as_str().unwrap_or_default().parse().unwrap_or(0);
    assert!(list_rv >= fresh_rv, "list resourceVersion {list_rv} < {fresh_rv}");

    // Delete and prune work on the folder.
    let out = kube_ok(&dir, &["snapshot", "delete", &name]);
    assert!(out.contains(&name), "{out}");
    let names = listed(&dir);
    assert!(names.iter().all(|n| n != &name) && names.len() == 1, "{names:?}");
    let err = kube_fails(&dir, &["snapshot", "delete", &name]);
    assert!(err.contains("no snapshot"), "{err}");
    kube_ok(&dir, &["snapshot", "prune", "--name", "before-upgrade", "--snapshot-retention", "1"]);
    assert_eq!(listed(&dir).len(), 1);
    kube_ok(&dir, &["snapshot", "prune", "--name", "before-upgrade", "--snapshot-retention", "0"]);
    assert!(listed(&dir).is_empty());
}

#[test]
fn scheduled_snapshots_keep_the_retention_and_spare_on_demand_ones() {
    let cluster = Cluster::start_with(&["--snapshot-interval", "1s", "--snapshot-retention", "2"]);
    let dir = cluster.dir.path().to_path_buf();
    let on_demand = kube_ok(&dir, &["snapshot", "save"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.log().contains("pruned a scheduled snapshot") {
        assert!(Instant::now() < deadline, "no scheduled snapshot was pruned:\n{}", cluster.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }
    // A tick may be between its save and its prune: look again then.
    let mut names = listed(&dir);
    let scheduled = |names: &[String]| names.iter().filter(|n| n.starts_with("scheduled-")).count();
    for _ in 0..20 {
        if scheduled(&names) <= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        names = listed(&dir);
    }
    assert!((1..=2).contains(&scheduled(&names)), "{names:?}");
    let on_demand = Path::new(on_demand.trim()).file_name().unwrap().to_string_lossy().into_owned();
    assert!(names.contains(&on_demand), "{names:?}");
}

#[test]
fn restore_resets_an_ha_founder_to_a_single_server() {
    let raft_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cluster = Cluster::start_with(&["--cluster-init", "--raft-port", &raft_port.to_string()]);
    let dir = cluster.dir.path().to_path_buf();
    assert!(dir.join("server/raft-peer").exists());
    cluster.ok(&["create", "configmap", "ha-kept", "--from-literal=k=v"]);
    let path = kube_ok(&dir, &["snapshot", "save"]).trim().to_string();
    cluster.ok(&["delete", "configmap", "ha-kept"]);
    cluster.stop();
    let err = kube_fails(&dir, &["snapshot", "save"]);
    assert!(err.contains("the server did not save a snapshot"), "{err}");

    let out = kube_ok(&dir, &["snapshot", "restore", &path]);
    assert!(out.contains("membership was reset"), "{out}");
    assert!(!dir.join("server/raft-peer").exists() && !dir.join("server/raft-id").exists());

    // Started again with --cluster-init it founds a new group over the snapshot.
    cluster.start_again();
    assert_eq!(cluster.ok(&["get", "configmap", "ha-kept", "-o", "jsonpath={.data.k}"]), "v");
    assert!(dir.join("server/raft-peer").exists());
    cluster.ok(&["create", "configmap", "ha-new"]);
}

/// Copies the files of `from` (one level) into `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn a_snapshot_restored_onto_a_fresh_server_brings_the_cluster_back() {
    let mut old = Cluster::start_with(&["--snapshot-interval", "0"]);
    old.ok(&["create", "namespace", "moved"]);
    old.ok(&["create", "configmap", "cargo", "-n", "moved", "--from-literal=k=v"]);
    old.ok(&["create", "serviceaccount", "robot", "-n", "moved"]);
    let token = old.ok(&["create", "token", "robot", "-n", "moved"]).trim().to_string();
    let path = kube_ok(old.dir.path(), &["snapshot", "save"]).trim().to_string();
    let old_kubeconfig = std::fs::read_to_string(&old.kubeconfig).unwrap();
    old.stop();

    // A new machine: the old server's keys and token, then the snapshot.
    let old_dir = old.dir.path().to_path_buf();
    let new = Cluster::start_prepared(&["--snapshot-interval", "0"], |dir| {
        copy_dir(&old_dir.join("tls"), &dir.join("tls"));
        copy_dir(&old_dir.join("server"), &dir.join("server"));
        kube_ok(dir, &["snapshot", "restore", &path]);
    });
    assert_eq!(new.ok(&["get", "configmap", "cargo", "-n", "moved", "-o", "jsonpath={.data.k}"]), "v");
    assert_eq!(
        std::fs::read_to_string(new.dir.path().join("server/token")).unwrap(),
        std::fs::read_to_string(old_dir.join("server/token")).unwrap(),
        "the join token is the old one"
    );
    // Credentials of the old cluster still work: its admin kubeconfig and a service-account token.
    let kubeconfig = new.dir.path().join("old.kubeconfig");
    std::fs::write(&kubeconfig, old_kubeconfig).unwrap();
    let server = format!("--server=https://127.0.0.1:{}", new.port);
    let out = Command::new(common::client("kubectl"))
        .args([&server, "get", "namespace", "moved", "-o", "name"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "namespace/moved", "{out:?}");
    let out = Command::new(common::client("kubectl"))
        .args([&server, "--kubeconfig=/dev/null", "--insecure-skip-tls-verify", "--token", &token])
        .args(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "system:serviceaccount:moved:robot", "{out:?}");
}
