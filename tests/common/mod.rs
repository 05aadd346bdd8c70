//! End-to-end harness: starts the real `kube server` binary on a free
//! loopback port with its own data folder, and drives it with the real
//! `kubectl` and `helm` (fetched by `scripts/fetch-clients.sh`). The server is
//! stopped by PID when the harness is dropped, also when a test fails.
//! With its agent ([`Cluster::start_with_agent`]) the server runs in a node
//! network namespace on a test LAN ([`netns`]), with a private registry
//! there, so the agent never programs the root namespace.

#![allow(dead_code)]

pub mod agent;
pub mod ha;
pub mod kubelet;
pub mod multinode;
pub mod netns;

use netns::{Lan, Netns};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A path to a client binary: `$KUBE_TEST_<NAME>` or `.cache/bin/<name>`.
pub fn client(name: &str) -> PathBuf {
    let var = format!("KUBE_TEST_{}", name.to_uppercase());
    let path = std::env::var_os(&var)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/bin").join(name));
    assert!(path.exists(), "{} not found: run scripts/fetch-clients.sh (or set {var})", path.display());
    path
}

/// Why root-only network tests cannot run here, if they cannot.
pub fn root_unmet() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root".into());
    }
    let missing: Vec<&str> = ["ip", "nsenter", "busybox"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
        })
        .collect();
    (!missing.is_empty()).then(|| format!("{} not installed (scripts/install-test-deps.sh)", missing.join(", ")))
}

/// The image registry storage the tests' registries serve
/// (`$KUBE_TEST_CACHE/registry/storage`, default `.cache/registry/storage`).
pub fn registry_storage() -> PathBuf {
    std::env::var_os("KUBE_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache"))
        .join("registry/storage")
}

/// Why agent tests (root, a node namespace, images) cannot run here, if they cannot.
pub fn agent_unmet() -> Option<String> {
    if let Some(why) = root_unmet() {
        return Some(why);
    }
    if !Command::new("sh").args(["-c", "command -v docker-registry"]).output().is_ok_and(|o| o.status.success()) {
        return Some("docker-registry not installed (scripts/install-test-deps.sh)".into());
    }
    let storage = registry_storage();
    if !storage.join("docker/registry/v2/repositories/busybox").is_dir() {
        return Some(format!(
            "no busybox image in {} (scripts/test-registry.sh start && scripts/build-test-images.sh)",
            storage.display()
        ));
    }
    None
}

/// True when the test may go on; panics in CI (KUBE_TEST_REQUIRE_ROOT=1) when it may not.
pub fn can_run(test: &str, unmet: Option<String>) -> bool {
    match unmet {
        None => true,
        Some(why) if std::env::var("KUBE_TEST_REQUIRE_ROOT").as_deref() == Ok("1") => {
            panic!("{test}: {why}, and KUBE_TEST_REQUIRE_ROOT=1")
        }
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// The network a node of an agent cluster lives in: its namespace on a LAN
/// and the private registry inside it. Dropped after the server stopped:
/// the registry is stopped by PID, then the namespaces go.
pub struct NodeNet {
    registry: Option<Child>,
    pub node: Netns,
    pub lan: Lan,
}

/// The port of the API server inside a node namespace (nothing else binds there).
const NODE_API_PORT: u16 = 6443;
/// Where the node's private registry listens, inside its namespace.
pub const NODE_REGISTRY: &str = "127.0.0.1:5000";

impl NodeNet {
    /// A LAN with one node namespace and a registry in it serving
    /// [`registry_storage`] read-only.
    pub fn start(dir: &Path) -> NodeNet {
        let lan = Lan::new("e2e");
        let node = lan.add_node();
        let registry = start_registry(&node, dir);
        NodeNet { registry: Some(registry), node, lan }
    }
}

/// Starts a docker-registry inside `node` on [`NODE_REGISTRY`] serving
/// [`registry_storage`] read-only (config and log in `dir`), and waits until
/// it answers. The caller stops it by PID.
pub fn start_registry(node: &Netns, dir: &Path) -> Child {
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    uploadpurging:\n      enabled: false\n    readonly:\n      enabled: true\nhttp:\n  addr: {NODE_REGISTRY}\n  secret: kube-test-node-registry\n",
            registry_storage().display()
        ),
    )
    .expect("write registry config");
    let log = std::fs::File::create(dir.join("registry.log")).expect("registry log");
    let mut registry = node
        .enter("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start docker-registry in the node namespace");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.connects(NODE_REGISTRY) {
        let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
        if Instant::now() >= deadline {
            let _ = registry.kill();
            let _ = registry.wait();
            panic!("the node's registry did not answer on {NODE_REGISTRY}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    registry
}

impl Drop for NodeNet {
    fn drop(&mut self) {
        if let Some(mut registry) = self.registry.take() {
            let _ = registry.kill();
            let _ = registry.wait();
        }
    }
}

/// Stops a process this test started: SIGTERM, then SIGKILL after `grace`.
pub fn stop_child(mut child: Child, grace: Duration) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub struct Cluster {
    /// The node namespace of an agent cluster (first, so it goes before the folder).
    pub net: Option<NodeNet>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub kubeconfig: PathBuf,
    server: Option<Child>,
    extra_args: Vec<String>,
    with_agent: bool,
}

impl Cluster {
    /// Starts a control plane (no local agent) and waits until `/readyz` says ok.
    pub fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// Like [`Cluster::start`], with extra `kube server` flags.
    pub fn start_with(extra: &[&str]) -> Cluster {
        Cluster::launch(extra, false)
    }

    /// A server with its local agent (pods really run; needs root), in a
    /// node namespace of its own on a test LAN, pulling from a private
    /// registry there.
    pub fn start_with_agent() -> Cluster {
        Cluster::start_with_agent_and(&[])
    }

    /// Like [`Cluster::start_with_agent`], with extra `kube server` flags.
    pub fn start_with_agent_and(extra: &[&str]) -> Cluster {
        Cluster::launch(extra, true)
    }

    /// A control plane whose data folder `prepare` fills before the first start
    /// (e.g. a restored snapshot and another cluster's keys).
    pub fn start_prepared(extra: &[&str], prepare: impl FnOnce(&Path)) -> Cluster {
        Cluster::launch_in(tempfile::tempdir().expect("temp dir"), extra, false, prepare)
    }

    fn launch(extra: &[&str], with_agent: bool) -> Cluster {
        Cluster::launch_in(tempfile::tempdir().expect("temp dir"), extra, with_agent, |_| {})
    }

    fn launch_in(dir: tempfile::TempDir, extra: &[&str], with_agent: bool, prepare: impl FnOnce(&Path)) -> Cluster {
        prepare(dir.path());
        let net = with_agent.then(|| NodeNet::start(dir.path()));
        let mut cluster = Cluster {
            port: if with_agent { NODE_API_PORT } else { free_port() },
            kubeconfig: dir.path().join("admin.kubeconfig"),
            dir,
            server: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            with_agent,
            net,
        };
        cluster.spawn();
        cluster
    }

    fn spawn(&mut self) {
        // Appended, so a restarted server's log follows the first one's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("server log");
        let (mut command, bind, advertise) = match &self.net {
            Some(net) => (
                net.node.enter(env!("CARGO_BIN_EXE_kube")),
                "0.0.0.0".to_string(),
                net.node.lan_ip.clone().expect("node ip"),
            ),
            None => (Command::new(env!("CARGO_BIN_EXE_kube")), "127.0.0.1".into(), "127.0.0.1".into()),
        };
        let child = command
            .args(["server", "--bind-address", &bind, "--advertise-address", &advertise])
            .args(if self.with_agent { &[][..] } else { &["--disable-agent"][..] })
            .arg("--https-listen-port")
            .arg(self.port.to_string())
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .env("RUST_LOG", "info,openraft=warn,libcgroups=error,hickory_server=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kube server");
        self.server = Some(child);
        self.wait_ready();
    }

    /// Stops the server (SIGTERM, then waits) and starts it again on the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts a stopped server again on the same data (after [`Cluster::stop`]).
    pub fn start_again(&mut self) {
        assert!(self.server.is_none(), "the server is still running");
        self.spawn();
    }

    /// The node's IP on the test LAN (agent clusters only).
    pub fn node_ip(&self) -> Option<String> {
        self.net.as_ref()?.node.lan_ip.clone()
    }

    /// A command for a client binary: inside the node namespace for agent clusters.
    pub fn client_command(&self, name: &str) -> Command {
        match &self.net {
            Some(net) => net.node.exec(client(name)),
            None => Command::new(client(name)),
        }
    }

    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    pub fn stop(&mut self) {
        if let Some(child) = self.server.take() {
            stop_child(child, Duration::from_secs(15));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(child) = self.server.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("kube server exited with {status}:\n{}", self.log());
            }
            if self.kubeconfig.exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "kube server not ready after 90 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs the real kubectl against this cluster.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.client_command("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .output()
            .expect("run kubectl")
    }

    /// kubectl with stdin.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .client_command("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// kubectl that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs the real helm against this cluster.
    pub fn helm(&self, args: &[&str]) -> Output {
        self.client_command("helm")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .env("HELM_CACHE_HOME", self.dir.path().join("helm-cache"))
            .env("HELM_CONFIG_HOME", self.dir.path().join("helm-config"))
            .env("HELM_DATA_HOME", self.dir.path().join("helm-data"))
            .output()
            .expect("run helm")
    }

    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
