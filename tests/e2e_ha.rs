//! End-to-end tests of highly available servers: three real `kube server`
//! processes in namespaces of a test LAN, joined by token into one store
//! group, driven by the real kubectl. A leader is killed with SIGKILL while a
//! client writes; a server is cut off the LAN and comes back; joins with a
//! wrong token or CA pin are refused; two agents joined to one server carry
//! on through the others when it dies.

mod common;

use common::ha::{Server, Servers};
use common::multinode::JoinedNode;
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

/// `name=node podIP` of every Running pod labelled `app=spread`.
fn spread_pods(server: &Server) -> Vec<(String, String, String)> {
    let out = server.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=spread",
        "--field-selector",
        "status.phase=Running",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP}{\"\\n\"}{end}",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace().map(str::to_string);
            Some((words.next()?, words.next()?, words.next()?))
        })
        .collect()
}

#[test]
fn agents_fail_over_between_servers_and_keep_their_nodes() {
    if !can_run("agents_fail_over_between_servers_and_keep_their_nodes", common::agent_unmet()) {
        return;
    }
    let mut servers = Servers::start(3);
    let (url, token) = (servers.servers[0].url(), servers.servers[0].token());
    let agents: Vec<JoinedNode> =
        ["n1", "n2"].iter().map(|name| JoinedNode::join_lan(&servers.lan, name, url.clone(), token.clone())).collect();
    let logs = |servers: &Servers| {
        let agents: String = agents.iter().map(|a| format!("--- agent {}:\n{}\n", a.name, a.log_tail())).collect();
        format!("{agents}{}", servers.tails())
    };
    let watcher = 1;
    let deadline = Instant::now() + Duration::from_secs(90);
    let ready = "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}";
    loop {
        let out = servers.servers[watcher].ok(&["get", "nodes", "-o", ready]);
        if out.contains("n1=True") && out.contains("n2=True") {
            break;
        }
        assert!(Instant::now() < deadline, "agents not Ready: {out}\n{}", logs(&servers));
        std::thread::sleep(Duration::from_millis(200));
    }

    // Every agent learns all three servers from the kubernetes Endpoints.
    let all: BTreeSet<String> = servers.servers.iter().map(Server::url).collect();
    eventually("agents know every server", Duration::from_secs(30), &servers, || {
        agents.iter().all(|a| a.known_servers().into_iter().collect::<BTreeSet<_>>() == all)
    });

    // A Deployment spreads over both agents; its pods reach each other across nodes.
    servers.servers[watcher].apply(&common::agent::spread_deployment(
        "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www",
    ));
    eventually("one spread replica Running on each agent", Duration::from_secs(90), &servers, || {
        let nodes: BTreeSet<String> = spread_pods(&servers.servers[watcher]).into_iter().map(|p| p.1).collect();
        nodes.len() == 2
    });
    let pods = spread_pods(&servers.servers[watcher]);
    let fetch = |server: &Server, from: &str, ip: &str| {
        let url = format!("http://{ip}:8080/");
        // Debian's static busybox `wget -T` crashes: `timeout` bounds it.
        let out = server.kubectl(&["exec", from, "--", "timeout", "3", "wget", "-qO-", &url]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    eventually("pod to pod across agents", Duration::from_secs(30), &servers, || {
        fetch(&servers.servers[watcher], &pods[0].0, &pods[1].2) == pods[1].0
    });

    // The server the agents joined dies: they carry on through the others.
    let lease = |server: &Server, node: &str| {
        let out = server.kubectl(&["get", "lease", "-n", "kube-node-lease", node, "-o", "jsonpath={.spec.renewTime}"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let renewed_before: Vec<String> = ["n1", "n2"].iter().map(|n| lease(&servers.servers[watcher], n)).collect();
    servers.servers[0].kill();
    eventually("both node leases renewed after the kill", Duration::from_secs(40), &servers, || {
        ["n1", "n2"].iter().zip(&renewed_before).all(|(n, before)| {
            let now = lease(&servers.servers[watcher], n);
            !now.is_empty() && now != *before
        })
    });
    for agent in &agents {
        assert!(agent.log().contains("switched to another API server"), "{}", logs(&servers));
    }
    let late = common::ha::pod_yaml("late", "n2", &common::agent::registry());
    servers.servers[watcher].apply(&late);
    eventually("a pod created after the kill runs on n2", Duration::from_secs(60), &servers, || {
        let out = servers.servers[watcher].kubectl(&["get", "pod", "late", "-o", "jsonpath={.status.phase}"]);
        out.stdout == b"Running"
    });
    let hostname = servers.servers[2].ok(&["exec", "late", "--", "cat", "/etc/hostname"]);
    assert_eq!(hostname.trim(), "late", "exec through a surviving server");
    let nodes = servers.servers[2].ok(&["get", "nodes", "-o", ready]);
    assert!(nodes.contains("n1=True") && nodes.contains("n2=True"), "{nodes}\n{}", logs(&servers));
    servers.servers[watcher].ok(&["delete", "deployment", "spread", "--wait=false"]);
    servers.servers[watcher].ok(&["delete", "pod", "late", "--grace-period=1"]);
    drop(agents);
    drop(servers);
}

/// A Node for `name` with the InternalIP its agent would report.
fn server_node(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nstatus:\n  addresses:\n  - {{type: InternalIP, address: {ip}}}\n"
    )
}

#[test]
fn deleted_and_removed_servers_leave_the_store_group() {
    if !can_run("deleted_and_removed_servers_leave_the_store_group", root_unmet()) {
        return;
    }
    let mut servers = Servers::start(4);
    let voters = |servers: &Servers, i: usize| servers.servers[i].metric("kube_store_voters");
    eventually("4 voters", Duration::from_secs(30), &servers, || voters(&servers, 0) == Some(4));

    // Deleting a dead server's Node removes its store member.
    let lost_ip = servers.servers[3].ip().to_string();
    servers.servers[3].kill();
    servers.leader(Duration::from_secs(15));
    servers.servers[0].apply(&server_node("s4", &lost_ip));
    let addresses = servers.servers[0].ok(&["get", "node", "s4", "-o", "jsonpath={.status.addresses[*].address}"]);
    assert_eq!(addresses, lost_ip, "the Node keeps its addresses");
    servers.servers[0].ok(&["delete", "node", "s4"]);
    eventually("s4 removed from the group", Duration::from_secs(30), &servers, || {
        (0..3).all(|i| voters(&servers, i) == Some(3))
    });

    // `kube server --remove` takes a stopped server out through another one.
    let (url, token) = (servers.servers[0].url(), servers.servers[0].token());
    let remove = |server: &Server| {
        server
            .ns
            .enter(env!("CARGO_BIN_EXE_kube"))
            .args(["server", "--remove", "--join", &url, "--token", &token, "--node-name", &server.name])
            .arg("--data-dir")
            .arg(server.dir.path())
            .output()
            .expect("run kube server --remove")
    };
    let refused = remove(&servers.servers[1]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("still running"), "{stderr}");
    servers.servers[2].stop();
    let removed = remove(&servers.servers[2]);
    let stdout = String::from_utf8_lossy(&removed.stdout);
    assert!(removed.status.success(), "{stdout}{}", String::from_utf8_lossy(&removed.stderr));
    assert!(stdout.contains("removed s3 (store member"), "{stdout}");
    assert!(!servers.servers[2].dir.path().join("db").exists(), "the old store was set aside");
    eventually("two voters and members left", Duration::from_secs(30), &servers, || {
        (0..2).all(|i| voters(&servers, i) == Some(2) && servers.servers[i].metric("kube_store_members") == Some(2))
    });

    // The two remaining servers still commit writes and are the endpoints.
    servers.servers[1].ok(&["create", "configmap", "after-removal"]);
    let both: BTreeSet<String> = servers.servers[..2].iter().map(|s| s.ip().to_string()).collect();
    eventually("the kubernetes endpoints list the two members", Duration::from_secs(30), &servers, || {
        let out = servers.servers[0].kubectl(&[
            "get",
            "endpoints",
            "kubernetes",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ]);
        String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect::<BTreeSet<_>>() == both
    });
}
