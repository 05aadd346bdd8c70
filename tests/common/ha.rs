//! Highly available control planes for root-only tests: servers (no local
//! agent) each in a node namespace of a test [`Lan`], the first founding the
//! store's group with `--cluster-init`, the others joining it by token.
//! kubectl runs inside a server's namespace against that server. Servers
//! are stopped by PID on drop, then the namespaces go.

use super::client;
use super::netns::{Lan, Netns};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const API_PORT: u16 = 6443;

/// One `kube server` of the group.
pub struct Server {
    pub name: String,
    pub ns: Netns,
    pub dir: tempfile::TempDir,
    flags: Vec<String>,
    child: Option<Child>,
}

impl Server {
    pub fn ip(&self) -> &str {
        self.ns.lan_ip.as_deref().expect("server on the LAN")
    }

    pub fn url(&self) -> String {
        format!("https://{}:{API_PORT}", self.ip())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        format!("--- {} ---\n{}", self.name, lines[lines.len().saturating_sub(40)..].join("\n"))
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server/token")).expect("server token").trim().to_string()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts (or restarts) the server process with its flags.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("server log");
        let ip = self.ip().to_string();
        let child = self
            .ns
            .enter(env!("CARGO_BIN_EXE_kube"))
            .args(["server", "--disable-agent", "--bind-address", "0.0.0.0", "--advertise-address", &ip])
            .args(["--node-name", &self.name, "--https-listen-port", &API_PORT.to_string()])
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(&self.flags)
            .env("RUST_LOG", "info,openraft=off")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kube server");
        self.child = Some(child);
    }

    /// kill -9, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (SIGKILL after 15 s).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::stop_child(child, Duration::from_secs(15));
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// The real kubectl against this server, from inside its namespace.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command().args(args).output().expect("run kubectl")
    }

    /// A kubectl command line for this server that other threads can run
    /// (`ip netns exec <ns> kubectl`, with its kubeconfig).
    pub fn kubectl_command(&self) -> Command {
        let mut command = self.ns.exec(client("kubectl"));
        command.args(["--request-timeout", "10s"]).env("KUBECONFIG", self.kubeconfig()).env("HOME", self.dir.path());
        command
    }

    /// kubectl that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} on {} failed:\n{}\n{}",
            self.name,
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of `manifest`, which must succeed.
    pub fn apply(&self, manifest: &str) {
        use std::io::Write;
        let mut child = self
            .kubectl_command()
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl apply");
        child.stdin.take().expect("stdin").write_all(manifest.as_bytes()).expect("write the manifest");
        let out = child.wait_with_output().expect("kubectl apply");
        assert!(out.status.success(), "kubectl apply failed:\n{}\n{manifest}", String::from_utf8_lossy(&out.stderr));
    }

    /// Whether `/readyz` answers ok.
    pub fn ready(&self) -> bool {
        self.kubeconfig().exists() && self.kubectl(&["get", "--raw", "/readyz"]).stdout.starts_with(b"ok")
    }

    /// Waits until the server is ready; panics if it exits or takes 90 s.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("{} exited with {status}:\n{}", self.name, self.log());
            }
            if self.ready() {
                return;
            }
            assert!(Instant::now() < deadline, "{} not ready after 90 s:\n{}", self.name, self.log_tail());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A gauge of `/metrics` (e.g. `kube_store_is_leader`), if it answers.
    pub fn metric(&self, name: &str) -> Option<i64> {
        let out = self.kubectl(&["get", "--raw", "/metrics"]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A busybox pod that sleeps, bound to `node`, its image from `registry`.
pub fn pod_yaml(name: &str, node: &str, registry: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {registry}/{image}\n    command: [sh, -c, 'exec sleep 3600']\n",
        image = super::agent::IMAGE,
    )
}

/// Servers on one LAN (dropped first, then the LAN).
pub struct Servers {
    pub servers: Vec<Server>,
    pub lan: Lan,
}

impl Servers {
    /// `count` servers: the first with `--cluster-init`, the rest joining it.
    pub fn start(count: usize) -> Servers {
        let lan = Lan::new("ha");
        let mut servers = Servers { servers: Vec::new(), lan };
        servers.add(vec!["--cluster-init".to_string()]);
        servers.servers[0].wait_ready();
        for _ in 1..count {
            let (url, token) = (servers.servers[0].url(), servers.servers[0].token());
            servers.add(vec!["--join".to_string(), url, "--token".to_string(), token]);
        }
        for server in &mut servers.servers[1..] {
            server.wait_ready();
        }
        servers
    }

    /// Adds (and spawns) a server with `flags` on a new node of the LAN.
    pub fn add(&mut self, flags: Vec<String>) -> &mut Server {
        let ns = self.lan.add_node();
        let name = format!("s{}", self.servers.len() + 1);
        let mut server = Server { name, ns, dir: tempfile::tempdir().expect("temp dir"), flags, child: None };
        server.spawn();
        self.servers.push(server);
        self.servers.last_mut().expect("just added")
    }

    /// The index of the store's leader, once the running servers agree on one.
    pub fn leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let leaders: Vec<usize> = (0..self.servers.len())
                .filter(|&i| self.servers[i].is_running() && self.servers[i].metric("kube_store_is_leader") == Some(1))
                .collect();
            if let [one] = leaders.as_slice() {
                return *one;
            }
            assert!(Instant::now() < deadline, "no single leader among the servers: {leaders:?}\n{}", self.tails());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn tails(&self) -> String {
        self.servers.iter().map(Server::log_tail).collect::<Vec<_>>().join("\n")
    }

    /// Cuts (or restores) server `i`'s link to the LAN.
    pub fn set_link(&self, i: usize, up: bool) {
        let port = format!("p{}", i + 1);
        let out = Command::new("ip")
            .args(["-n", &self.lan.ns.name, "link", "set", &port, if up { "up" } else { "down" }])
            .output()
            .expect("run ip");
        assert!(out.status.success(), "ip link set {port}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
