//! End-to-end tests of `kube agent --join`: the real `kube server` (no local
//! agent) and the real `kube agent` binary on loopback, driven by the real
//! kubectl. The agent runs with `--flannel-backend none` and no pods are
//! scheduled to it, so nothing touches host networking. Every process is
//! stopped by PID when its guard drops, also when a test fails.

mod common;

use common::Cluster;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `kube agent` process, stopped (SIGTERM, then SIGKILL) on drop.
struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    fn start(cluster: &Cluster, token: &str, node: &str, data_dir: &Path) -> Agent {
        let log = data_dir.with_extension("log");
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("agent log");
        let child = Command::new(env!("CARGO_BIN_EXE_kube"))
            .args(["agent", "--join", &format!("https://127.0.0.1:{}", cluster.port), "--token", token])
            .args(["--node-name", node, "--node-ip", "127.0.0.1", "--flannel-backend", "none"])
            .args(["--node-taint", "kube.test/join=only:NoSchedule", "--node-label", "kube.test/joined=yes"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--private-registry", "/nonexistent/registries.yaml"])
            .env("RUST_LOG", "info,libcgroups=error")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start kube agent");
        Agent { child: Some(child), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the agent to exit on its own; returns whether it succeeded.
    fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("agent running");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.success();
            }
            assert!(Instant::now() < deadline, "kube agent still running after {within:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            common::stop_child(child, Duration::from_secs(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

fn server_token(cluster: &Cluster) -> String {
    let path = cluster.dir.path().join("server/token");
    std::fs::read_to_string(&path).expect("the server writes <data-dir>/server/token").trim().to_string()
}

/// Polls `check` until it returns true or `within` passes.
fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} not within {within:?}:\n{}", context());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn node_ready(cluster: &Cluster, node: &str) -> bool {
    let out =
        cluster.kubectl(&["get", "node", node, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "True"
}

fn jsonpath(cluster: &Cluster, args: &[&str], path: &str) -> String {
    let mut all = args.to_vec();
    let expr = format!("jsonpath={path}");
    all.extend(["-o", expr.as_str()]);
    cluster.ok(&all).trim().to_string()
}

#[test]
fn agent_joins_by_token_keeps_its_identity_and_survives_a_server_restart() {
    let mut cluster = Cluster::start();
    let token = server_token(&cluster);
    assert!(token.starts_with("K10") && token.contains("::server:"), "{token}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cluster.dir.path().join("server/token")).expect("token").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let cacerts = cluster.kubectl(&["get", "--raw", "/cacerts"]);
    assert!(String::from_utf8_lossy(&cacerts.stdout).contains("BEGIN CERTIFICATE"));

    let data_dir = cluster.dir.path().join("agent-n2");
    let mut agent = Agent::start(&cluster, &token, "n2", &data_dir);
    eventually(Duration::from_secs(60), "node n2 Ready", || node_ready(&cluster, "n2"), || agent.log());
    assert_eq!(jsonpath(&cluster, &["get", "node", "n2"], "{.metadata.labels.kube\\.test/joined}"), "yes");
    assert_eq!(jsonpath(&cluster, &["get", "node", "n2"], "{.spec.taints[0].key}"), "kube.test/join");
    assert!(!jsonpath(&cluster, &["get", "node", "n2"], "{.metadata.labels}").contains("control-plane"));
    cluster.ok(&["get", "secret", "-n", "kube-system", "n2.node-password.kube"]);

    // The node identity is what the agent's certificate maps to, and it is limited.
    let can = |verb: &str, extra: &[&str]| {
        let mut args = vec!["auth", "can-i", verb];
        args.extend_from_slice(extra);
        args.extend(["--as", "system:node:n2", "--as-group", "system:nodes"]);
        String::from_utf8_lossy(&cluster.kubectl(&args).stdout).trim().to_string()
    };
    assert_eq!(can("list", &["secrets", "-A"]), "no");
    assert_eq!(can("update", &["nodes/n2", "--subresource=status"]), "yes");
    assert_eq!(can("update", &["nodes/other", "--subresource=status"]), "no");
    // The Node restriction: its own Node only, and no Secret its pods do not use.
    cluster
        .kubectl_stdin(&["apply", "-f", "-"], r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "other"}}"#);
    let as_node = ["--as", "system:node:n2", "--as-group", "system:nodes"];
    let label = |node: &str| cluster.kubectl(&[&["label", "node", node, "kube.test/by=n2"][..], &as_node[..]].concat());
    assert!(label("n2").status.success());
    let refused = label("other");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only its own"), "{refused:?}");
    let read =
        cluster.kubectl(&[&["get", "secret", "-n", "kube-system", "n2.node-password.kube"][..], &as_node[..]].concat());
    assert!(!read.status.success(), "a node read a secret no pod of it uses");
    // A pod bound to "other" (no agent runs it) makes its secret readable by "other" only.
    cluster.ok(&["create", "secret", "generic", "s1", "--from-literal=k=v"]);
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"}, "spec": {"nodeName": "other",
        "containers": [{"name": "c", "image": "busybox", "env": [{"name": "K",
        "valueFrom": {"secretKeyRef": {"name": "s1", "key": "k"}}}]}]}}"#;
    let created = cluster.kubectl_stdin(&["apply", "-f", "-"], pod);
    assert!(created.status.success(), "{created:?}");
    let as_other = ["--as", "system:node:other", "--as-group", "system:nodes"];
    cluster.ok(&[&["get", "secret", "s1"][..], &as_other[..]].concat());
    assert!(!cluster.kubectl(&[&["get", "secret", "s1"][..], &as_node[..]].concat()).status.success());
    let delete = cluster.kubectl(&[&["delete", "pod", "p1", "--wait=false"][..], &as_node[..]].concat());
    assert!(String::from_utf8_lossy(&delete.stderr).contains("not bound to it"), "{delete:?}");

    // A restarted agent reuses its certificate and keeps the node.
    let cert_path = data_dir.join("agent/client-kubelet.crt");
    let cert = std::fs::read(&cert_path).expect("node certificate kept in the data dir");
    let uid = jsonpath(&cluster, &["get", "node", "n2"], "{.metadata.uid}");
    agent.stop();
    let mut agent = Agent::start(&cluster, &token, "n2", &data_dir);
    eventually(
        Duration::from_secs(30),
        "restarted agent running",
        || agent.log().matches("agent running pods").count() == 2,
        || agent.log(),
    );
    assert!(agent.log().contains("reusing the node certificate"), "{}", agent.log());
    assert_eq!(std::fs::read(&cert_path).expect("certificate"), cert, "the certificate was replaced");
    assert_eq!(jsonpath(&cluster, &["get", "node", "n2"], "{.metadata.uid}"), uid);
    assert!(node_ready(&cluster, "n2"));

    // Another machine (another data dir, so another node password) cannot take the name.
    let mut impostor = Agent::start(&cluster, &token, "n2", &cluster.dir.path().join("agent-impostor"));
    assert!(!impostor.wait_exit(Duration::from_secs(30)), "the impostor must fail");
    assert!(impostor.log().contains("already registered with a different node password"), "{}", impostor.log());

    // The agent reconnects after a server restart and renews its lease again.
    cluster.restart();
    let lease = |c: &Cluster| jsonpath(c, &["get", "lease", "-n", "kube-node-lease", "n2"], "{.spec.renewTime}");
    let before = lease(&cluster);
    eventually(
        Duration::from_secs(40),
        "lease renewed after the server restart",
        || lease(&cluster) != before,
        || agent.log(),
    );
    assert!(node_ready(&cluster, "n2"));
    agent.stop();
}

#[test]
fn wrong_tokens_are_refused_with_a_clear_message() {
    let cluster = Cluster::start();
    let token = server_token(&cluster);
    let (hash, secret) = token.rsplit_once(':').expect("K10<hash>::server:<secret>");

    let mut wrong = Agent::start(&cluster, &format!("{hash}:not-the-secret"), "n3", &cluster.dir.path().join("a3"));
    assert!(!wrong.wait_exit(Duration::from_secs(30)), "a wrong secret must fail");
    assert!(wrong.log().contains("refused the join token"), "{}", wrong.log());
    assert!(wrong.log().contains("the join token is not valid for this server"), "{}", wrong.log());

    let log_before = cluster.log();
    let other_ca = format!("K10{}::server:{secret}", "0".repeat(64));
    let mut mismatch = Agent::start(&cluster, &other_ca, "n4", &cluster.dir.path().join("a4"));
    assert!(!mismatch.wait_exit(Duration::from_secs(30)), "a CA mismatch must fail");
    let expected = format!("the server's CA does not match the token (expected {}, got ", "0".repeat(64));
    assert!(mismatch.log().contains(&expected), "{}", mismatch.log());
    // Refused before any credential: the server saw no join request.
    let new_lines = cluster.log()[log_before.len()..].to_string();
    assert!(!new_lines.contains("join request"), "{new_lines}");
    assert!(!cluster.dir.path().join("a4/agent/node-password").exists());

    let nodes = cluster.ok(&["get", "nodes", "-o", "name"]);
    assert!(!nodes.contains("n3") && !nodes.contains("n4"), "{nodes}");

    // A bootstrap token from `kube token create` joins too, until it is deleted.
    let kube_token = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kube"))
            .arg("token")
            .args(args)
            .arg("--data-dir")
            .arg(cluster.dir.path())
            .output()
            .expect("run kube token");
        assert!(out.status.success(), "kube token {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let bootstrap = kube_token(&["create", "--ttl", "1h", "--description", "e2e"]);
    let (pin, id_secret) = bootstrap.split_once("::").expect("K10<hash>::<id>.<secret>");
    assert_eq!(pin, hash.trim_end_matches("::server"), "the bootstrap token pins the same CA");
    let (id, _) = id_secret.split_once('.').expect("<id>.<secret>");
    assert!(id.len() == 6 && id_secret.len() == 23, "{bootstrap}");
    let listed = kube_token(&["list"]);
    assert!(listed.contains(id_secret) && listed.contains("e2e") && listed.contains("authentication"), "{listed}");
    let joined = Agent::start(&cluster, &bootstrap, "n5", &cluster.dir.path().join("a5"));
    eventually(Duration::from_secs(60), "node n5 Ready", || node_ready(&cluster, "n5"), || joined.log());
    assert!(kube_token(&["delete", id]).contains("deleted"));
    assert!(!kube_token(&["list"]).contains(id_secret));
    let mut late = Agent::start(&cluster, &bootstrap, "n6", &cluster.dir.path().join("a6"));
    assert!(!late.wait_exit(Duration::from_secs(30)), "a deleted bootstrap token must fail");
    assert!(late.log().contains("refused the join token"), "{}", late.log());
}
