//! Multi-node clusters for end-to-end tests: a [`JoinedNode`] is a second
//! node namespace on the LAN of an agent cluster ([`super::Cluster::start_with_agent`]),
//! with its own private registry and a real `kube agent --join` that
//! registers it with the server by the server's token. On drop the agent is
//! stopped by PID, leftover pod processes and mounts of its data folder are
//! removed, then the registry and the namespace go.

use super::Cluster;
use super::agent::AgentCluster;
use super::netns::{Lan, Netns};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A node that joined the cluster with `kube agent --join`, in a namespace of its own.
pub struct JoinedNode {
    agent: Option<Child>,
    registry: Option<Child>,
    /// The node's name (`--node-name`).
    pub name: String,
    /// Its address on the LAN (`--node-ip`).
    pub ip: String,
    /// `--join` and `--token` of the agent (kept for restarts).
    server: String,
    token: String,
    /// Dropped after the agent stopped: the namespace, then the folder.
    pub netns: Netns,
    pub dir: tempfile::TempDir,
}

/// The server's join token (`<data-dir>/server/token`).
pub fn server_token(cluster: &Cluster) -> String {
    let path = cluster.dir.path().join("server/token");
    std::fs::read_to_string(&path).expect("the server writes <data-dir>/server/token").trim().to_string()
}

impl JoinedNode {
    /// Adds a node namespace to `cluster`'s LAN, starts a registry in it and
    /// `kube agent --join https://<server node ip>:6443` there.
    pub fn join(cluster: &Cluster, name: &str) -> JoinedNode {
        let net = cluster.net.as_ref().expect("an agent cluster (Cluster::start_with_agent)");
        let server_ip = net.node.lan_ip.clone().expect("server node ip");
        let server = format!("https://{server_ip}:{}", cluster.port);
        JoinedNode::join_lan(&net.lan, name, server, server_token(cluster))
    }

    /// Adds a node namespace to `lan`, starts a registry in it and
    /// `kube agent --join <server> --token <token>` there.
    pub fn join_lan(lan: &Lan, name: &str, server: String, token: String) -> JoinedNode {
        let netns = lan.add_node();
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = super::start_registry(&netns, dir.path());
        let mut node = JoinedNode {
            agent: None,
            registry: Some(registry),
            name: name.to_string(),
            ip: netns.lan_ip.clone().expect("node ip"),
            server,
            token,
            netns,
            dir,
        };
        node.start();
        node
    }

    /// The API servers the agent keeps (`<data-dir>/agent/servers`).
    pub fn known_servers(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.data_dir().join("agent/servers")).unwrap_or_default();
        text.lines().map(str::to_string).collect()
    }

    /// The agent's `--data-dir` (its state is under `<data-dir>/agent`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    /// Starts the agent (again, after [`JoinedNode::stop`]); its log is appended to.
    pub fn start(&mut self) {
        assert!(self.agent.is_none(), "the agent of {} is already running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("agent log");
        let child = self
            .netns
            .enter(env!("CARGO_BIN_EXE_kube"))
            .args(["agent", "--join", &self.server, "--token", &self.token])
            .args(["--node-name", &self.name, "--node-ip", &self.ip])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--private-registry", "/nonexistent/registries.yaml"])
            .env("RUST_LOG", "info,libcgroups=error,hickory_server=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kube agent in the node namespace");
        self.agent = Some(child);
    }

    pub fn is_running(&mut self) -> bool {
        self.agent.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the agent: SIGTERM, then SIGKILL after 15 s. Its containers keep running.
    pub fn stop(&mut self) {
        if let Some(child) = self.agent.take() {
            super::stop_child(child, Duration::from_secs(15));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The output of container `main` of `pod` (namespace default) as its
    /// newest CRI log file on this node holds it (without going through the API).
    pub fn pod_log_file(&self, pod: &str) -> String {
        super::agent::pod_log(&self.data_dir().join("agent"), pod, false)
    }

    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Last-resort cleanup of an agent's data folder (`agent_dir` = `<data-dir>/agent`):
/// kills leftover containers of its pods and unmounts whatever is mounted below it.
pub fn force_cleanup(agent_dir: &Path) {
    for entry in std::fs::read_dir(agent_dir.join("pods")).into_iter().flatten().flatten() {
        let uid = entry.file_name().to_string_lossy().into_owned();
        for pid in AgentCluster::pod_processes(&uid) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }
    let prefix = agent_dir.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut targets: Vec<&str> =
        mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|m| m.starts_with(&prefix)).collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for target in targets {
        let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
    }
}

impl Drop for JoinedNode {
    fn drop(&mut self) {
        self.stop();
        force_cleanup(&self.data_dir().join("agent"));
        if let Some(mut registry) = self.registry.take() {
            let _ = registry.kill();
            let _ = registry.wait();
        }
    }
}

/// A server node (the server with its local agent, on a LAN) and joined nodes.
/// Dropped in order: the test's objects are deleted while every agent still
/// runs (so each tears its pods down), then the joined nodes, then the server.
pub struct MultiNode {
    pub joined: Vec<JoinedNode>,
    pub cluster: AgentCluster,
}

impl std::ops::Deref for MultiNode {
    type Target = AgentCluster;
    fn deref(&self) -> &AgentCluster {
        &self.cluster
    }
}

impl MultiNode {
    /// The server node plus one joined node per name.
    pub fn start(names: &[&str]) -> MultiNode {
        let cluster = AgentCluster::start();
        let joined = names.iter().map(|name| JoinedNode::join(&cluster, name)).collect();
        MultiNode { joined, cluster }
    }

    /// The joined node called `name`.
    pub fn node(&self, name: &str) -> &JoinedNode {
        self.joined.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no joined node {name}"))
    }

    pub fn node_mut(&mut self, name: &str) -> &mut JoinedNode {
        self.joined.iter_mut().find(|n| n.name == name).unwrap_or_else(|| panic!("no joined node {name}"))
    }

    /// Waits until every node (the server's and the joined ones) is Ready.
    pub fn wait_all_ready(&self, timeout: Duration) {
        let mut names = vec![self.cluster.node.clone()];
        names.extend(self.joined.iter().map(|n| n.name.clone()));
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.kubectl(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
            ]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if names.iter().all(|n| text.lines().any(|l| l == format!("{n}=True"))) {
                return;
            }
            let logs: Vec<String> = self.joined.iter().map(|n| format!("--- {}:\n{}", n.name, n.log_tail())).collect();
            assert!(
                Instant::now() < deadline,
                "nodes {names:?} not all Ready; last:\n{text}\n{}\n{}",
                logs.join("\n"),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A busybox pod bound to `node` (by nodeName), running `command`.
    pub fn pod_on(&self, name: &str, node: &str, labels: &str, command: &str, policy: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec:\n  nodeName: {node}\n  restartPolicy: {policy}\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {registry}/{image}\n    command: [sh, -c, {command:?}]\n    resources: {{limits: {{memory: 64Mi}}}}\n",
            registry = super::agent::registry(),
            image = super::agent::IMAGE,
        )
    }

    /// All the joined nodes' logs, for failure messages.
    pub fn joined_logs(&self) -> String {
        self.joined.iter().map(|n| format!("--- agent {}:\n{}\n", n.name, n.log_tail())).collect()
    }
}

impl Drop for MultiNode {
    fn drop(&mut self) {
        if self.cluster.is_running() {
            let _ = self.kubectl(&["delete", "deployments", "--all", "--wait=false"]);
            // Pods of a node whose agent is stopped would never finish terminating.
            let stopped: Vec<String> =
                self.joined.iter_mut().filter_map(|n| (!n.is_running()).then(|| n.name.clone())).collect();
            for node in stopped {
                let selector = format!("spec.nodeName={node}");
                let _ = self.kubectl(&[
                    "delete",
                    "pods",
                    "--all",
                    "--field-selector",
                    &selector,
                    "--force",
                    "--grace-period=0",
                ]);
            }
            let _ = self.kubectl(&["delete", "pods", "--all", "--grace-period=1", "--timeout=30s"]);
        }
        self.joined.clear();
    }
}
