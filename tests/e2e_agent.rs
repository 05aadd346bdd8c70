//! End-to-end tests of the node agent: the real `kube server` with its local
//! agent, driven by the real kubectl, runs busybox pods pulled from the local
//! test registry (scripts/test-registry.sh + scripts/build-test-images.sh).
//! Needs root: skipped with a message otherwise, and failed instead when
//! KUBE_TEST_REQUIRE_ROOT=1 (CI). Every container, mount and folder it makes
//! is removed, also when a test fails.

mod common;

use common::Cluster;
use std::time::{Duration, Instant};

const IMAGE: &str = "busybox:latest";

/// Why these tests cannot run here, if they cannot.
fn unmet() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root".into());
    }
    let registry = registry();
    if std::net::TcpStream::connect_timeout(&registry.parse().ok()?, Duration::from_secs(2)).is_err() {
        return Some(format!(
            "no test registry on {registry} (scripts/test-registry.sh start && scripts/build-test-images.sh)"
        ));
    }
    None
}

fn registry() -> String {
    std::env::var("KUBE_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

/// True when the test may go on; panics in CI (KUBE_TEST_REQUIRE_ROOT=1) when it may not.
fn can_run(test: &str) -> bool {
    match unmet() {
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

/// A `kube server` with its local agent on a temp data folder.
struct AgentCluster {
    cluster: Cluster,
    node: String,
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
    fn start() -> AgentCluster {
        let node = nix::unistd::gethostname().expect("hostname").to_string_lossy().to_lowercase();
        AgentCluster { cluster: Cluster::start_with_agent(), node }
    }

    fn apply(&self, manifest: &str) {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], manifest);
        assert!(out.status.success(), "apply failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Polls `check` on kubectl's output until it holds.
    fn wait_for(&self, what: &str, args: &[&str], timeout: Duration, check: impl Fn(&str) -> bool) -> String {
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

    fn pod(&self, name: &str, command: &str, policy: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  restartPolicy: {policy}\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {registry}/{IMAGE}\n    command: [sh, -c, {command:?}]\n    resources: {{limits: {{memory: 64Mi}}}}\n",
            node = self.node,
            registry = registry(),
        )
    }

    /// Waits until `kubectl logs <pod> [extra]` prints `want`. Until the API
    /// server routes `pods/log` to the agent, the agent's CRI log file is read
    /// instead (and the fallback is printed).
    fn wait_logs(&self, pod: &str, extra: &[&str], want: &str) {
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
    fn log_file(&self, pod: &str, previous: bool) -> String {
        let root = self.dir.path().join("agent/logs");
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

    /// The PIDs whose cgroup belongs to the pod with `uid`.
    fn pod_processes(uid: &str) -> Vec<i32> {
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
    fn force_cleanup(&self) {
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

#[test]
fn pods_run_log_fail_and_go_away() {
    if !can_run("pods_run_log_fail_and_go_away") {
        return;
    }
    let cluster = AgentCluster::start();
    cluster.wait_for("node Ready", &["get", "nodes"], Duration::from_secs(30), |out| {
        out.lines().any(|l| l.starts_with(&cluster.node) && l.split_whitespace().nth(1) == Some("Ready"))
    });

    // A long-running pod: Running 1/1, its log, then deletion stops it.
    let started = Instant::now();
    cluster.apply(&cluster.pod("hello", "echo hello; sleep 3600", "Always"));
    cluster.wait_for("hello Running 1/1", &["get", "pod", "hello", "--no-headers"], Duration::from_secs(60), |out| {
        let cols: Vec<&str> = out.split_whitespace().collect();
        cols.get(1) == Some(&"1/1") && cols.get(2) == Some(&"Running")
    });
    eprintln!("pod start latency (apply → Running 1/1, first pull included): {:?}", started.elapsed());
    cluster.wait_logs("hello", &[], "hello\n");
    let uid = cluster.ok(&["get", "pod", "hello", "-o", "jsonpath={.metadata.uid}"]);
    assert!(!AgentCluster::pod_processes(&uid).is_empty(), "no process in the cgroup of pod {uid}");
    let status = cluster.ok(&[
        "get",
        "pod",
        "hello",
        "-o",
        "jsonpath={.status.hostIP} {.status.containerStatuses[0].containerID} {.status.containerStatuses[0].imageID}",
    ]);
    assert!(status.starts_with("127.0.0.1 kube://"), "status: {status}");
    assert!(status.contains("@sha256:"), "status: {status}");

    // A pod that exits 1 with restartPolicy Never ends Failed with exitCode 1.
    cluster.apply(&cluster.pod("fails", "echo bye; exit 1", "Never"));
    cluster.wait_for(
        "fails Failed",
        &[
            "get",
            "pod",
            "fails",
            "-o",
            "jsonpath={.status.phase} {.status.containerStatuses[0].state.terminated.exitCode}",
        ],
        Duration::from_secs(60),
        |out| out == "Failed 1",
    );
    cluster.wait_logs("fails", &[], "bye\n");

    // Deleting stops the process and the object goes away.
    let started = Instant::now();
    cluster.ok(&["delete", "pod", "hello", "--timeout=60s"]);
    eprintln!("pod delete latency (grace 2 s, sh ignores SIGTERM): {:?}", started.elapsed());
    let out = cluster.kubectl(&["get", "pod", "hello"]);
    assert!(!out.status.success(), "pod hello still there: {}", String::from_utf8_lossy(&out.stdout));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !AgentCluster::pod_processes(&uid).is_empty() {
        assert!(Instant::now() < deadline, "processes of pod {uid} survived its deletion");
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.ok(&["delete", "pod", "fails", "--timeout=60s"]);
    assert!(!cluster.dir.path().join("agent/pods").join(uid.trim()).exists(), "pod folder left behind");
}

#[test]
fn containers_outlive_an_agent_restart() {
    if !can_run("containers_outlive_an_agent_restart") {
        return;
    }
    let mut cluster = AgentCluster::start();
    cluster.apply(&cluster.pod("survivor", "echo up; sleep 3600", "Always"));
    cluster.wait_for("survivor Running", &["get", "pod", "survivor", "--no-headers"], Duration::from_secs(60), |out| {
        out.split_whitespace().nth(2) == Some("Running")
    });
    let uid = cluster.ok(&["get", "pod", "survivor", "-o", "jsonpath={.metadata.uid}"]);
    let before = AgentCluster::pod_processes(&uid);
    assert!(!before.is_empty(), "no process for pod {uid}");
    cluster.restart();
    cluster.wait_for(
        "adopted",
        &["get", "pod", "survivor", "-o", "jsonpath={.status.containerStatuses[0].restartCount} {.status.phase}"],
        Duration::from_secs(30),
        |out| out == "0 Running",
    );
    assert_eq!(AgentCluster::pod_processes(&uid), before, "the container was restarted instead of adopted");
    assert!(cluster.log().contains("adopted a running container"), "{}", cluster.log_tail());
    cluster.ok(&["delete", "pod", "survivor", "--timeout=60s"]);
    assert!(AgentCluster::pod_processes(&uid).is_empty(), "adopted container survived deletion");
}

#[test]
fn crashing_containers_back_off() {
    if !can_run("crashing_containers_back_off") {
        return;
    }
    let cluster = AgentCluster::start();
    cluster.apply(&cluster.pod("crasher", "echo crash; exit 3", "Always"));
    cluster.wait_for(
        "CrashLoopBackOff",
        &["get", "pod", "crasher", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason} {.status.containerStatuses[0].lastState.terminated.exitCode}"],
        Duration::from_secs(60),
        |out| out == "CrashLoopBackOff 3",
    );
    let restarts = cluster.ok(&["get", "pod", "crasher", "-o", "jsonpath={.status.containerStatuses[0].restartCount}"]);
    assert!(restarts.trim().parse::<u32>().expect("restartCount") >= 1);
    cluster.wait_logs("crasher", &["--previous"], "crash\n");
}
