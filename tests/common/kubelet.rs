//! Playing the kubelet for tests that run no agent: fake Ready nodes with
//! heartbeat Leases, pods marked Running and Ready by status patches, and
//! graceful deletions finished by force, plus small kubectl JSON helpers.

use super::Cluster;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The two fake nodes most tests start with: (name, labels).
pub const NODES: &[(&str, &str)] = &[("node-a", "disk: hdd"), ("node-b", "disk: hdd")];

/// A fake node: Ready, with allocatable resources, last heard of now.
pub fn node_yaml(name: &str, labels: &str) -> String {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
    format!(
        r#"
apiVersion: v1
kind: Node
metadata: {{name: {name}, labels: {{kubernetes.io/hostname: {name}, {labels}}}}}
status:
  capacity: {{cpu: "4", memory: 8Gi, pods: "110"}}
  allocatable: {{cpu: "4", memory: 8Gi, pods: "110"}}
  addresses: [{{type: InternalIP, address: 192.168.77.{host}}}, {{type: Hostname, address: {name}}}]
  conditions:
  - {{type: Ready, status: "True", reason: KubeletReady, message: kubelet is posting ready status, lastHeartbeatTime: "{now}"}}
"#,
        host = name.bytes().last().unwrap_or(1) % 250
    )
}

/// Plays the kubelets' heartbeats: renews each node's Lease every 2 s until dropped.
pub struct Heartbeats {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeats {
    /// Creates the nodes (`name`, `labels`) and starts renewing their leases.
    pub fn start(cluster: &Cluster, nodes: &[(&str, &str)]) -> Heartbeats {
        for (name, labels) in nodes {
            let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &node_yaml(name, labels));
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let names: Vec<String> = nodes.iter().map(|(n, _)| n.to_string()).collect();
        let (kubeconfig, home) = (cluster.kubeconfig.clone(), cluster.dir.path().to_path_buf());
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ");
                let leases: Vec<String> = names
                    .iter()
                    .map(|n| format!("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {n}, namespace: kube-node-lease}}\nspec: {{holderIdentity: {n}, leaseDurationSeconds: 40, renewTime: \"{now}\"}}\n"))
                    .collect();
                let mut child = Command::new(super::client("kubectl"))
                    .args(["apply", "-f", "-"])
                    .env("KUBECONFIG", &kubeconfig)
                    .env("HOME", &home)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("run kubectl");
                if let Some(mut stdin) = child.stdin.take() {
                    use std::io::Write;
                    let _ = stdin.write_all(leases.join("---\n").as_bytes());
                }
                let _ = child.wait();
                for _ in 0..20 {
                    if flag.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        Heartbeats { stop, thread: Some(thread) }
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout`.
pub fn eventually<T>(cluster: &Cluster, what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", cluster.log_tail());
        // (The caller's last observation is in its closure; the log tail shows the controllers' view.)
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn get_json(cluster: &Cluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&cluster.ok(&all)).expect("kubectl -o json")
}

pub fn items(cluster: &Cluster, args: &[&str]) -> Vec<Value> {
    get_json(cluster, args)["items"].as_array().cloned().unwrap_or_default()
}

pub fn text<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

pub fn deleting(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_some()
}

/// The pods of `selector` that are not being deleted.
pub fn live_pods(cluster: &Cluster, selector: &str) -> Vec<Value> {
    items(cluster, &["get", "pods", "-l", selector]).into_iter().filter(|p| !deleting(p)).collect()
}

/// Plays the kubelet for one pod: Running and Ready with an IP.
pub fn mark_ready(cluster: &Cluster, pod: &Value, ip: &str) {
    let containers: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true, "restartCount": 0,
            "started": true, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}})
        })
        .collect();
    let patch = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "True"}, {"type": "Ready", "status": "True"}],
        "containerStatuses": containers}});
    cluster.ok(&[
        "patch",
        "pod",
        text(pod, "/metadata/name"),
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ]);
}

/// One kubelet pass: bound pods not yet ready become ready, pods being deleted go.
pub fn kubelet_pass(cluster: &Cluster, selector: &str, next_ip: &mut u32) {
    for pod in items(cluster, &["get", "pods", "-l", selector]) {
        let name = text(&pod, "/metadata/name");
        if deleting(&pod) {
            let _ = cluster.kubectl(&["delete", "pod", name, "--grace-period=0", "--force", "--wait=false"]);
        } else if !text(&pod, "/spec/nodeName").is_empty() && text(&pod, "/status/phase") != "Running" {
            *next_ip += 1;
            mark_ready(cluster, &pod, &format!("10.42.0.{next_ip}"));
        }
    }
}

pub fn kubectl_child(cluster: &Cluster, args: &[&str]) -> Child {
    Command::new(super::client("kubectl"))
        .args(args)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("HOME", cluster.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl")
}
