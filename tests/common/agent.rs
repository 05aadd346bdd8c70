//! The agent tests' cluster: a `kube server` with its local agent in a node
//! namespace of its own ([`Cluster::start_with_agent`]), helpers to run
//! busybox pods from the node's private registry and to wait on kubectl, and
//! a last-resort cleanup of pod processes and mounts when a test fails.

use super::Cluster;
use std::time::{Duration, Instant};

pub const IMAGE: &str = "busybox:latest";

/// The registry pods pull from: the node namespace's private one (always
/// on 127.0.0.1:5000 there, whatever port the cache's registry uses).
pub fn registry() -> String {
    super::NODE_REGISTRY.to_string()
}

pub struct AgentCluster {
    pub cluster: Cluster,
    pub node: String,
}

impl std::ops::Deref for AgentCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl std::ops::DerefMut for AgentCluster {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }
}

impl AgentCluster {
    pub fn start() -> AgentCluster {
        let node = nix::unistd::gethostname().expect("hostname").to_string_lossy().to_lowercase();
        AgentCluster { cluster: Cluster::start_with_agent(), node }
    }

    pub fn apply(&self, manifest: &str) {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], manifest);
        assert!(out.status.success(), "apply failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Polls `check` on kubectl's output until it holds.
    pub fn wait_for(&self, what: &str, args: &[&str], timeout: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.kubectl(args);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && check(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{what} not reached; last output:\n{text}\n{}", self.log_tail());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn pod(&self, name: &str, command: &str, policy: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  restartPolicy: {policy}\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {registry}/{IMAGE}\n    command: [sh, -c, {command:?}]\n    resources: {{limits: {{memory: 64Mi}}}}\n",
            node = self.node,
            registry = registry(),
        )
    }

    /// Waits until `kubectl logs <pod> [extra]` prints `want`. Until the API
    /// server routes `pods/log` to the agent, the agent's CRI log file is read
    /// instead (and the fallback is printed).
    pub fn wait_logs(&self, pod: &str, extra: &[&str], want: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut args = vec!["logs", pod];
        args.extend_from_slice(extra);
        loop {
            let out = self.kubectl(&args);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let got = if stderr.contains("is not supported on pods/log") {
                eprintln!("NOTE: the API server does not route pods/log yet; reading the agent's log file");
                self.log_file(pod, extra.contains(&"--previous"))
            } else {
                stdout
            };
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "logs of {pod}: {got:?} (stderr {stderr}), want {want:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The content of a pod's newest (or previous) CRI log of container `main`.
    pub fn log_file(&self, pod: &str, previous: bool) -> String {
        pod_log(&self.dir.path().join("agent"), pod, previous)
    }

    /// The PIDs whose cgroup belongs to the pod with `uid`.
    pub fn pod_processes(uid: &str) -> Vec<i32> {
        let needle = format!("kubepods/pod{uid}");
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(&needle)))
            .collect()
    }

    /// Last-resort cleanup: kill leftover containers of our pods and unmount our mounts.
    pub fn force_cleanup(&self) {
        let pods = self.dir.path().join("agent/pods");
        for entry in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            let uid = entry.file_name().to_string_lossy().into_owned();
            for pid in Self::pod_processes(&uid) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            }
        }
        let prefix = self.dir.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut targets: Vec<&str> =
            mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|m| m.starts_with(&prefix)).collect();
        targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for target in targets {
            let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl Drop for AgentCluster {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.kubectl(&["delete", "pods", "--all", "--grace-period=1", "--timeout=30s"]);
        }
        self.stop();
        self.force_cleanup();
    }
}

/// What container `main` of `pod` (namespace default) wrote, as the newest
/// (or previous) CRI log file under `agent_dir` holds it (empty if none).
pub fn pod_log(agent_dir: &std::path::Path, pod: &str, previous: bool) -> String {
    let root = agent_dir.join("logs");
    let Some(dir) = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&format!("default_{pod}_")))
    else {
        return String::new();
    };
    let mut runs: Vec<u32> = std::fs::read_dir(dir.path().join("main"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    runs.sort_unstable();
    let pick = if previous { runs.len().checked_sub(2) } else { runs.len().checked_sub(1) };
    let Some(run) = pick.map(|i| runs[i]) else { return String::new() };
    let text = std::fs::read_to_string(dir.path().join("main").join(format!("{run}.log"))).unwrap_or_default();
    text.lines().filter_map(|l| l.splitn(4, ' ').nth(3)).map(|c| format!("{c}\n")).collect()
}

/// A Deployment of two busybox replicas running `command`, one per node
/// (required pod anti-affinity on the hostname), from the node registry.
pub fn spread_deployment(command: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: spread}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: spread}}}}
  template:
    metadata: {{labels: {{app: spread}}}}
    spec:
      terminationGracePeriodSeconds: 2
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - topologyKey: kubernetes.io/hostname
            labelSelector: {{matchLabels: {{app: spread}}}}
      containers:
      - name: main
        image: {registry}/{IMAGE}
        command: [sh, -c, {command:?}]
        resources: {{limits: {{memory: 64Mi}}}}
",
        registry = registry(),
    )
}
