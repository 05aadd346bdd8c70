//! End-to-end tests of `kubectl exec` and container probes: the real
//! `kube server` with its local agent, driven by the real kubectl, runs
//! busybox pods from the local test registry (scripts/test-registry.sh +
//! scripts/build-test-images.sh). Needs root: skipped with a message
//! otherwise, and failed instead when KUBE_TEST_REQUIRE_ROOT=1 (CI).

mod common;

use common::Cluster;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

const IMAGE: &str = "busybox:latest";

fn registry() -> String {
    std::env::var("KUBE_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

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

/// A `kube server` with its local agent; deletes its pods when dropped.
struct Agent {
    cluster: Cluster,
}

impl std::ops::Deref for Agent {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.cluster.is_running() {
            let _ = self.cluster.kubectl(&["delete", "pods", "--all", "--grace-period=0", "--force", "--timeout=30s"]);
        }
    }
}

impl Agent {
    fn start() -> Agent {
        Agent { cluster: Cluster::start_with_agent() }
    }

    fn apply(&self, manifest: &str) {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], manifest);
        assert!(out.status.success(), "apply failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Polls `check` on the pod's JSON until it holds.
    fn wait_pod(&self, pod: &str, what: &str, timeout: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.kubectl(&["get", "pod", pod, "-o", "json"]);
            let json: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if out.status.success() && check(&json) {
                return json;
            }
            if Instant::now() >= deadline {
                let events = self.kubectl(&["get", "events"]);
                panic!(
                    "{pod}: {what} not reached; status:\n{:#}\nevents:\n{}\n{}",
                    json["status"],
                    String::from_utf8_lossy(&events.stdout),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_running(&self, pod: &str) -> Value {
        self.wait_pod(pod, "Running", Duration::from_secs(60), |p| {
            p["status"]["phase"] == "Running"
                && p["status"]["containerStatuses"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().all(|c| c["state"]["running"].is_object()))
        })
    }
}

fn condition(pod: &Value, kind: &str) -> String {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn container_manifest(name: &str, command: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    image: {registry}/{IMAGE}\n    command: [sh, -c, {command:?}]\n{extra}",
        registry = registry()
    )
}

fn pod_manifest(name: &str, containers: &[String]) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n{}",
        containers.concat()
    )
}

#[test]
fn exec_runs_commands_in_the_container() {
    if !can_run("exec_runs_commands_in_the_container") {
        return;
    }
    let cluster = Agent::start();
    let sleeper = "trap 'exit 0' TERM; echo started; while true; do sleep 1; done";
    cluster.apply(&pod_manifest(
        "shell",
        &[
            container_manifest("main", sleeper, "    env: [{name: GREETING, value: hello}]\n    workingDir: /tmp\n"),
            container_manifest("side", sleeper, ""),
        ],
    ));
    cluster.wait_running("shell");

    // Output, environment and working directory of the container.
    assert_eq!(cluster.ok(&["exec", "shell", "-c", "main", "--", "hostname"]), "shell\n");
    assert_eq!(cluster.ok(&["exec", "shell", "-c", "main", "--", "sh", "-c", "echo $GREETING; pwd"]), "hello\n/tmp\n");
    // The same PID namespace as the container: its init is PID 1.
    let ps = cluster.ok(&["exec", "shell", "-c", "main", "--", "cat", "/proc/1/cmdline"]);
    assert!(ps.contains("trap"), "PID 1 is the container's command: {ps:?}");

    // Exit codes become kubectl's exit status; stderr stays stderr.
    let out = cluster.kubectl(&["exec", "shell", "-c", "main", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));

    // stdin, closed at its end.
    let out = cluster.kubectl_stdin(&["exec", "-i", "shell", "-c", "main", "--", "cat"], "hi\nthere\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\nthere\n");

    // -c picks the container: each has its own mount namespace.
    cluster.ok(&["exec", "shell", "-c", "side", "--", "touch", "/side-only"]);
    let out = cluster.kubectl(&["exec", "shell", "-c", "main", "--", "ls", "/side-only"]);
    assert_eq!(out.status.code(), Some(1));
    cluster.ok(&["exec", "shell", "-c", "side", "--", "ls", "/side-only"]);

    // Errors a user can act on.
    let err = cluster.fails(&["exec", "shell", "-c", "nope", "--", "true"]);
    assert!(err.contains("container nope is not valid for pod shell"), "{err}");
    let err = cluster.fails(&["exec", "missing", "--", "true"]);
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");
    let err = cluster.fails(&["exec", "shell", "-c", "main", "--", "/no/such/binary"]);
    assert!(err.contains("/no/such/binary"), "{err}");

    exec_with_a_terminal(&cluster);
    copy_files_both_ways(&cluster);
    attach_follows_the_output(&cluster);
}

/// `kubectl attach` shows the container's output as it is written.
fn attach_follows_the_output(cluster: &Agent) {
    cluster.apply(&pod_manifest(
        "ticker",
        &[container_manifest("main", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done", "")],
    ));
    cluster.wait_running("ticker");
    // Through the harness: an agent cluster's server lives in its node namespace.
    let mut child = cluster
        .client_command("kubectl")
        .args(["attach", "ticker", "-c", "main"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("HOME", cluster.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl attach");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(20));
    let second = rx.recv_timeout(Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
    let (first, second) = (first.expect("attach printed output"), second.expect("attach kept following"));
    let number = |line: &str| line.strip_prefix("tick ").and_then(|n| n.parse::<u64>().ok());
    let (a, b) = (number(&first).expect("a tick"), number(&second).expect("a tick"));
    assert_eq!(b, a + 1, "lines in order as written: {first:?}, {second:?}");
    let err = cluster.fails(&["attach", "-i", "ticker", "-c", "main"]);
    assert!(err.contains("stdin"), "{err}");
}

/// `kubectl cp` is tar over exec, both directions.
fn copy_files_both_ways(cluster: &Cluster) {
    let source = cluster.dir.path().join("to-pod.txt");
    std::fs::write(&source, "copied\n").expect("write source");
    let source = source.to_string_lossy().into_owned();
    cluster.ok(&["cp", &source, "shell:/tmp/copied.txt", "-c", "main"]);
    assert_eq!(cluster.ok(&["exec", "shell", "-c", "main", "--", "cat", "/tmp/copied.txt"]), "copied\n");
    let back = cluster.dir.path().join("from-pod.txt");
    let back_arg = back.to_string_lossy().into_owned();
    cluster.ok(&["cp", "shell:/tmp/copied.txt", &back_arg, "-c", "main"]);
    assert_eq!(std::fs::read_to_string(&back).expect("copied back"), "copied\n");
}

/// `kubectl exec -it` on a pty of our own: the command sees a terminal of the
/// size kubectl's terminal has, and the exit code still comes through.
fn exec_with_a_terminal(cluster: &Cluster) {
    let pty = nix::pty::openpty(Some(&nix::pty::Winsize { ws_row: 33, ws_col: 111, ws_xpixel: 0, ws_ypixel: 0 }), None)
        .expect("openpty");
    let slave = |pty: &OwnedFd| Stdio::from(pty.try_clone().expect("dup pty"));
    // Through the harness: an agent cluster's server lives in its node namespace.
    let mut child = cluster
        .client_command("kubectl")
        .args(["exec", "-it", "shell", "-c", "main", "--", "sh", "-c", "tty; stty size; exit 5"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("HOME", cluster.dir.path())
        .stdin(slave(&pty.slave))
        .stdout(slave(&pty.slave))
        .stderr(slave(&pty.slave))
        .spawn()
        .expect("run kubectl");
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once kubectl (the last holder of the slave) exits.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        let _ = master.flush();
        String::from_utf8_lossy(&all).into_owned()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait kubectl") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kubectl exec -it did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = reader.join().expect("reader");
    assert_eq!(status.code(), Some(5), "output: {output:?}");
    assert!(output.contains("/dev/pts/"), "tty names a pty: {output:?}");
    assert!(output.contains("33 111"), "the terminal has kubectl's size: {output:?}");
}

/// The events about `pod` with `reason`, as (message, count).
fn events(cluster: &Cluster, pod: &str, reason: &str) -> Vec<(String, u64)> {
    let out = cluster.kubectl(&["get", "events", "-o", "json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == pod && e["reason"] == reason)
        .map(|e| (e["message"].as_str().unwrap_or_default().to_string(), e["count"].as_u64().unwrap_or(1)))
        .collect()
}

fn container_status(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

#[test]
fn probes_drive_readiness_and_restarts() {
    if !can_run("probes_drive_readiness_and_restarts") {
        return;
    }
    let cluster = Agent::start();
    let quick = "periodSeconds: 1, failureThreshold: 1";
    // Readiness by httpGet against busybox httpd (port by name).
    cluster.apply(&pod_manifest(
        "web",
        &[container_manifest(
            "main",
            "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www",
            &format!(
                "    ports: [{{name: http, containerPort: 8080}}]\n    readinessProbe: {{httpGet: {{path: /index.html, port: http}}, {quick}}}\n"
            ),
        )],
    ));
    // Liveness by tcpSocket on a port nobody listens on: killed and restarted.
    cluster.apply(&pod_manifest(
        "doomed",
        &[container_manifest(
            "main",
            "exec sleep 3600",
            "    livenessProbe: {tcpSocket: {port: 8081}, periodSeconds: 1, failureThreshold: 2}\n",
        )],
    ));
    // A startup probe (exec) that holds readiness back until /tmp/go exists;
    // the liveness probe, which would fail and restart the container before
    // that, must not run until the startup probe passed.
    cluster.apply(&pod_manifest(
        "slow",
        &[container_manifest(
            "main",
            "exec sleep 3600",
            &format!(
                "    startupProbe: {{exec: {{command: [test, -e, /tmp/go]}}, periodSeconds: 1, failureThreshold: 600}}\n    livenessProbe: {{exec: {{command: [test, -e, /tmp/go]}}, {quick}}}\n    readinessProbe: {{exec: {{command: [\"true\"]}}, {quick}}}\n"
            ),
        )],
    ));

    let ready = cluster.wait_pod("web", "Ready", Duration::from_secs(60), |p| condition(p, "Ready") == "True");
    assert_eq!(condition(&ready, "ContainersReady"), "True");
    assert_eq!(container_status(&ready)["ready"], true);
    cluster.ok(&["exec", "web", "--", "rm", "/www/index.html"]);
    let unready = cluster.wait_pod("web", "not Ready", Duration::from_secs(20), |p| condition(p, "Ready") == "False");
    assert_eq!(container_status(&unready)["ready"], false);
    assert_eq!(container_status(&unready)["restartCount"], 0, "readiness never restarts");
    let failed = events(&cluster, "web", "Unhealthy");
    assert!(
        failed.iter().any(|(m, _)| m.starts_with("Readiness probe failed: HTTP probe failed with statuscode: 404")),
        "{failed:?}"
    );

    let restarted = cluster.wait_pod("doomed", "a restart", Duration::from_secs(60), |p| {
        container_status(p)["restartCount"].as_u64().is_some_and(|n| n >= 1)
    });
    assert!(container_status(&restarted)["lastState"]["terminated"].is_object());
    let unhealthy = events(&cluster, "doomed", "Unhealthy");
    assert!(
        unhealthy
            .iter()
            .any(|(m, _)| m.starts_with("Liveness probe failed: dial tcp") && m.contains("connection refused")),
        "{unhealthy:?}"
    );
    let killing = events(&cluster, "doomed", "Killing");
    assert!(killing.iter().any(|(m, _)| m == "Container main failed liveness probe, will be restarted"), "{killing:?}");

    // The startup probe has failed a few times: still not started, not ready.
    let deadline = Instant::now() + Duration::from_secs(30);
    while events(&cluster, "slow", "Unhealthy").iter().map(|(_, n)| n).sum::<u64>() < 3 {
        assert!(Instant::now() < deadline, "no failed startup probes recorded");
        std::thread::sleep(Duration::from_millis(300));
    }
    let slow = cluster.wait_running("slow");
    assert_eq!(container_status(&slow)["started"], false);
    assert_eq!(condition(&slow, "Ready"), "False");
    cluster.ok(&["exec", "slow", "--", "touch", "/tmp/go"]);
    let slow = cluster.wait_pod("slow", "Ready", Duration::from_secs(20), |p| condition(p, "Ready") == "True");
    assert_eq!(container_status(&slow)["started"], true);
    assert_eq!(container_status(&slow)["restartCount"], 0);
}
