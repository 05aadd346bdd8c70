//! End-to-end tests of highly available servers: three real `kube server`
//! processes in namespaces of a test LAN, joined by token into one store
//! group, driven by the real kubectl. A leader is killed with SIGKILL while a
//! client writes; a server is cut off the LAN and comes back; joins with a
//! wrong token or CA pin are refused.

mod common;

use common::ha::{Server, Servers};
use common::{can_run, root_unmet};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Polls `check` until it holds, for at most `within`.
fn eventually(what: &str, within: Duration, servers: &Servers, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} not reached within {within:?}\n{}", servers.tails());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The ConfigMap names a server lists (None when it does not answer).
fn configmaps(server: &Server) -> Option<BTreeSet<String>> {
    let out = server.kubectl(&["get", "configmaps", "-o", "name"]);
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("configmap/"))
            .filter(|n| n.starts_with("w-"))
            .map(str::to_string)
            .collect()
    })
}

/// What a client writing through one server saw.
#[derive(Default)]
struct Writes {
    acknowledged: Vec<(String, Instant)>,
    failures: usize,
}

/// Creates ConfigMaps `w-0`, `w-1`, … through `command_of` until `stop`.
fn write_until(command_of: impl Fn() -> Command, stop: &AtomicBool, writes: &Mutex<Writes>) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("w-{n}");
        let out = command_of().args(["create", "configmap", &name, "--from-literal=n=1"]).output();
        let mut w = writes.lock().unwrap_or_else(|e| e.into_inner());
        match out {
            Ok(out) if out.status.success() => {
                w.acknowledged.push((name, Instant::now()));
                n += 1;
            }
            // AlreadyExists: an earlier try was stored although its answer got lost.
            Ok(out) if String::from_utf8_lossy(&out.stderr).contains("AlreadyExists") => n += 1,
            _ => w.failures += 1,
        }
    }
}

#[test]
fn three_servers_replicate_and_survive_the_leader_being_killed() {
    if !can_run("three_servers_replicate_and_survive_the_leader_being_killed", root_unmet()) {
        return;
    }
    let mut servers = Servers::start(3);
    for server in &servers.servers {
        eventually("three voters", Duration::from_secs(30), &servers, || server.metric("kube_store_voters") == Some(3));
    }
    let ips = |server: &Server| {
        server.ok(&["get", "endpoints", "kubernetes", "-o", "jsonpath={.subsets[*].addresses[*].ip}"])
    };
    let all: BTreeSet<String> = servers.servers.iter().map(|s| s.ip().to_string()).collect();
    eventually("every server in the kubernetes endpoints", Duration::from_secs(30), &servers, || {
        ips(&servers.servers[0]).split_whitespace().map(str::to_string).collect::<BTreeSet<_>>() == all
    });
    // A write on one server is read on every other (reads are linearizable).
    servers.servers[0].ok(&["create", "configmap", "w-first", "--from-literal=a=b"]);
    for server in &servers.servers[1..] {
        assert!(configmaps(server).is_some_and(|names| names.contains("w-first")), "{}", servers.tails());
    }

    let leader = servers.leader(Duration::from_secs(20));
    let writer = (leader + 1) % 3;
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(Mutex::new(Writes::default()));
    let acked = |writes: &Mutex<Writes>| writes.lock().unwrap_or_else(|e| e.into_inner()).acknowledged.len();
    std::thread::scope(|scope| {
        let (stop_ref, writes_ref) = (stop.clone(), writes.clone());
        let command_of = {
            let server = &servers.servers[writer];
            let (ns, dir) = (server.ns.name.clone(), server.dir.path().to_path_buf());
            move || {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns]).arg(common::client("kubectl"));
                c.args(["--request-timeout", "10s"]).env("KUBECONFIG", dir.join("admin.kubeconfig")).env("HOME", &dir);
                c.stderr(Stdio::piped()).stdout(Stdio::null());
                c
            }
        };
        scope.spawn(move || write_until(command_of, &stop_ref, &writes_ref));
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked(&writes) < 10 {
            assert!(Instant::now() < deadline, "the writer got no 10 acknowledgements\n{}", servers.tails());
            std::thread::sleep(Duration::from_millis(50));
        }
        let killed_at = Instant::now();
        servers.servers[leader].kill();
        let before_kill = acked(&writes);
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked(&writes) < before_kill + 10 {
            assert!(Instant::now() < deadline, "writes did not resume after the leader's kill\n{}", servers.tails());
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
        let w = writes.lock().unwrap_or_else(|e| e.into_inner());
        let resumed =
            w.acknowledged.iter().map(|(_, at)| *at).find(|at| *at > killed_at).expect("a write after the kill");
        let outage = resumed.duration_since(killed_at);
        eprintln!("writes resumed {outage:?} after the leader's kill ({} failed tries)", w.failures);
        assert!(outage < Duration::from_secs(5), "the API took {outage:?} to take writes again\n{}", servers.tails());
    });

    // No acknowledged write is lost, on any surviving server.
    let acknowledged: BTreeSet<String> =
        writes.lock().unwrap_or_else(|e| e.into_inner()).acknowledged.iter().map(|(n, _)| n.clone()).collect();
    for (i, server) in servers.servers.iter().enumerate().filter(|(i, _)| *i != leader) {
        let names = configmaps(server).unwrap_or_else(|| panic!("server {i} does not list\n{}", servers.tails()));
        let lost: Vec<_> = acknowledged.difference(&names).collect();
        assert!(lost.is_empty(), "server {i} lost acknowledged writes {lost:?}");
    }
    let new_leader = servers.leader(Duration::from_secs(20));
    assert_ne!(new_leader, leader);

    let dead = servers.servers[leader].ip().to_string();
    eventually("the killed server out of the kubernetes endpoints", Duration::from_secs(40), &servers, || {
        let now = ips(&servers.servers[writer]);
        now.split_whitespace().count() == 2 && !now.split_whitespace().any(|ip| ip == dead)
    });

    // Controllers keep reconciling on the servers that are left.
    let survivor = &servers.servers[writer];
    survivor.ok(&["create", "deployment", "after-kill", "--image=busybox:latest", "--replicas=2"]);
    eventually("the Deployment's ReplicaSet", Duration::from_secs(60), &servers, || {
        survivor
            .kubectl(&["get", "replicasets", "-l", "app=after-kill", "-o", "name"])
            .stdout
            .starts_with(b"replicaset.apps/")
    });

    // The killed server comes back and catches up.
    servers.servers[leader].spawn();
    servers.servers[leader].wait_ready();
    let back = &servers.servers[leader];
    eventually("the restarted server has every write", Duration::from_secs(30), &servers, || {
        configmaps(back).is_some_and(|names| acknowledged.is_subset(&names))
    });
}

/// Runs a joining server that must fail; returns its log.
fn refused_join(servers: &Servers, url: &str, token: &str) -> String {
    let ns = servers.lan.add_node();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = ns
        .enter(env!("CARGO_BIN_EXE_kube"))
        .args(["server", "--disable-agent", "--join", url, "--token", token, "--node-name", "intruder"])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kube server");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the join with token {token:?} was not refused within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut log = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
    }
    assert!(!status.success(), "the join with token {token:?} succeeded:\n{log}");
    assert!(!dir.path().join("tls/ca.key").exists(), "a refused server got the cluster's CA key");
    log
}

#[test]
fn a_partitioned_server_catches_up_and_wrong_tokens_are_refused() {
    if !can_run("a_partitioned_server_catches_up_and_wrong_tokens_are_refused", root_unmet()) {
        return;
    }
    let servers = Servers::start(3);
    let leader = servers.leader(Duration::from_secs(20));
    let cut = (leader + 1) % 3;
    servers.set_link(cut, false);
    for n in 0..20 {
        servers.servers[leader].ok(&["create", "configmap", &format!("w-{n}")]);
    }
    servers.set_link(cut, true);
    let expected: BTreeSet<String> = (0..20).map(|n| format!("w-{n}")).collect();
    eventually("the partitioned server caught up", Duration::from_secs(30), &servers, || {
        configmaps(&servers.servers[cut]).is_some_and(|names| expected.is_subset(&names))
    });

    let url = servers.servers[0].url();
    let token = servers.servers[0].token();
    let (pin, _) = token.split_once("::").expect("K10 token");
    let log = refused_join(&servers, &url, &format!("{pin}::server:not-the-secret"));
    assert!(log.contains("refused the server token"), "{log}");
    let wrong_pin = format!("K10{}::server:whatever", "0".repeat(64));
    let log = refused_join(&servers, &url, &wrong_pin);
    assert!(log.contains("does not match the token"), "{log}");
}
