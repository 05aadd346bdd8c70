//! End-to-end tests of `kubectl port-forward`: the real kubectl (SPDY
//! tunnelled in WebSocket, its default since v1.31) forwards a local port in
//! the node namespace to busybox httpd in a pod of the server's own agent
//! and in one on a joined node (through that node's agent); a forward to a
//! closed port reports upstream's error. The official Python client forwards
//! over the WebSocket channel protocol. Needs root (agent
//! cluster): skipped with a message otherwise, failed when KUBE_TEST_REQUIRE_ROOT=1.

mod common;

use common::agent::{AgentCluster, IMAGE, registry};
use common::multinode::MultiNode;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn can_run(test: &str) -> bool {
    common::can_run(test, common::agent_unmet())
}

/// Bytes of the large file the web pod serves (`/big`, random).
const BIG: usize = 4 << 20;

/// busybox httpd serving a page and a large random file on 8080, Ready once the port is open.
fn web_pod(node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {registry}/{IMAGE}
    command: [sh, -c, 'mkdir -p /www && echo hello-portforward > /www/index.html && head -c {BIG} /dev/urandom > /www/big && exec httpd -f -p 8080 -h /www']
    readinessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
"#,
        registry = registry(),
    )
}

/// A running kubectl port-forward, stopped by PID when dropped (also when the test fails).
struct Forward(Option<Child>);

impl Forward {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            common::stop_child(child, Duration::from_secs(5));
        }
    }
}

/// `kubectl port-forward pod/web <ports>` in the node namespace, its output
/// in files under `dir`; `websockets: false` makes kubectl speak plain SPDY
/// (its `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`, as before v1.31).
fn port_forward(cluster: &AgentCluster, ports: &str, dir: &Path, websockets: bool) -> Forward {
    let out = std::fs::File::create(dir.join(format!("pf-{ports}.out"))).expect("stdout file");
    let err = std::fs::File::create(dir.join(format!("pf-{ports}.err"))).expect("stderr file");
    cluster
        .client_command("kubectl")
        .args(["port-forward", "pod/web", ports])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("HOME", cluster.dir.path())
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map(|child| Forward(Some(child)))
        .expect("start kubectl port-forward")
}

fn output(dir: &Path, ports: &str) -> (String, String) {
    let read = |ext: &str| std::fs::read_to_string(dir.join(format!("pf-{ports}.{ext}"))).unwrap_or_default();
    (read("out"), read("err"))
}

/// Waits until kubectl listens on the local port.
fn wait_forwarding(cluster: &AgentCluster, forward: &mut Forward, ports: &str, dir: &Path) {
    let local = ports.split(':').next().unwrap_or_default();
    let want = format!("Forwarding from 127.0.0.1:{local} -> ");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (out, err) = output(dir, ports);
        if out.contains(&want) {
            return;
        }
        if let Ok(Some(status)) = forward.child().try_wait() {
            panic!("kubectl port-forward exited with {status}:\n{out}\n{err}\n{}", cluster.log_tail());
        }
        assert!(Instant::now() < deadline, "kubectl port-forward not listening:\n{out}\n{err}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `wget -qO- http://127.0.0.1:<port><path>` from the node namespace (bounded by `timeout`).
fn fetch(cluster: &AgentCluster, port: &str, path: &str) -> std::process::Output {
    let net = cluster.net.as_ref().expect("agent clusters have a node namespace");
    net.node
        .exec("timeout")
        .args(["10", "busybox", "wget", "-qO-", &format!("http://127.0.0.1:{port}{path}")])
        .output()
        .expect("run wget")
}

/// Waits until the `web` pod is Running and Ready.
fn wait_web_ready(cluster: &AgentCluster) {
    cluster.wait_for(
        "web Running and Ready",
        &["get", "pod", "web", "-o", "jsonpath={.status.phase} {.status.conditions[?(@.type==\"Ready\")].status}"],
        Duration::from_secs(90),
        |out| out == "Running True",
    );
}

/// Two connections through one port-forward get the page, a third the large file: SPDY in WebSocket
/// (kubectl's default), then plain SPDY (its fallback). `agent_log` is the
/// log of the agent that serves the pod, which says which way it was asked.
fn serves_the_page(cluster: &AgentCluster, agent_log: &dyn Fn() -> String) {
    let dir = cluster.dir.path().to_path_buf();
    for (websockets, ports, said) in
        [(true, "18080:8080", "port-forward (SPDY over WebSocket)"), (false, "18082:8080", "port-forward (SPDY)")]
    {
        let local = &ports[..5];
        let mut forward = port_forward(cluster, ports, &dir, websockets);
        wait_forwarding(cluster, &mut forward, ports, &dir);
        for round in 1..=2 {
            let got = fetch(cluster, local, "/");
            let (out, err) = output(&dir, ports);
            assert!(
                got.status.success() && String::from_utf8_lossy(&got.stdout) == "hello-portforward\n",
                "GET {round} through {ports}: {got:?}\nkubectl:\n{out}\n{err}\n{}",
                cluster.log_tail()
            );
        }
        // Many DATA frames: all of them arrive, in order.
        let big = fetch(cluster, local, "/big");
        assert!(big.status.success(), "GET /big through {ports}: {:?}", String::from_utf8_lossy(&big.stderr));
        assert_eq!(big.stdout.len(), BIG, "GET /big through {ports}");
        let digest: String = Sha256::digest(&big.stdout).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(cluster.ok(&["exec", "web", "--", "sha256sum", "/www/big"]), format!("{digest}  /www/big\n"));
        let (out, _) = output(&dir, ports);
        eprintln!("kubectl port-forward {ports} said:\n{out}");
        assert_eq!(out.matches(&format!("Handling connection for {local}")).count(), 3, "kubectl said:\n{out}");
        assert!(forward.child().try_wait().expect("poll kubectl").is_none(), "kubectl port-forward stopped on its own");
        assert!(agent_log().contains(said), "the agent did not log {said:?}");
    }
}

/// Nothing listens on 9999 in the pod: the error stream says so, as
/// upstream's runtimes word it, and kubectl gives up on the connection.
fn reports_a_closed_port(cluster: &AgentCluster) {
    let dir = cluster.dir.path().to_path_buf();
    let mut forward = port_forward(cluster, "18081:9999", &dir, true);
    wait_forwarding(cluster, &mut forward, "18081:9999", &dir);
    let got = fetch(cluster, "18081", "/");
    assert!(got.stdout.is_empty(), "a closed port served {:?}", String::from_utf8_lossy(&got.stdout));
    let deadline = Instant::now() + Duration::from_secs(15);
    let exited = loop {
        if let Some(status) = forward.child().try_wait().expect("poll kubectl") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = output(&dir, "18081:9999");
    eprintln!("kubectl port-forward to a closed port said:\n{out}{err}");
    let uid = cluster.ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]);
    let want = format!("error forwarding port 9999 to pod web_default, uid {uid}: failed to connect to localhost:9999");
    assert!(err.contains(&want), "kubectl's errors lack {want:?}:\n{out}\n{err}");
    assert!(err.contains("connect: connection refused"), "kubectl's errors:\n{err}");
    match exited {
        Some(status) => assert!(!status.success(), "kubectl exited 0 after the error:\n{err}"),
        None => panic!("kubectl port-forward kept running after the error:\n{out}\n{err}"),
    }
}

#[test]
fn port_forward_reaches_the_pod_and_reports_closed_ports() {
    if !can_run("port_forward_reaches_the_pod_and_reports_closed_ports") {
        return;
    }
    let cluster = AgentCluster::start();
    cluster.apply(&web_pod(&cluster.node));
    wait_web_ready(&cluster);
    serves_the_page(&cluster, &|| cluster.log());
    reports_a_closed_port(&cluster);

    // RBAC: port-forward is `create pods/portforward`, which `view` does not grant.
    cluster.ok(&["create", "clusterrolebinding", "viewer", "--clusterrole=view", "--user=viewer"]);
    let refused = cluster.kubectl(&["port-forward", "--as=viewer", "pod/web", "18083:8080"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a viewer port-forwarded: {refused:?}");
    assert!(
        err.contains("pods \"web\" is forbidden: User \"viewer\" cannot create resource \"pods/portforward\""),
        "{err}"
    );
}

#[test]
fn port_forward_reaches_a_pod_on_a_joined_node() {
    if !can_run("port_forward_reaches_a_pod_on_a_joined_node") {
        return;
    }
    let cluster = MultiNode::start(&["n2"]);
    cluster.wait_all_ready(Duration::from_secs(90));
    cluster.apply(&web_pod("n2"));
    wait_web_ready(&cluster);
    // API server → n2's agent (:10250), the upgraded connection spliced through.
    serves_the_page(&cluster, &|| cluster.joined_logs());
    assert!(cluster.log().contains("port-forward on another node"), "the server did not proxy to n2");
    reports_a_closed_port(&cluster);
}

/// The official Python client (`.cache/pyclient`, scripts/fetch-python-client.sh), if there is one.
fn python() -> Option<std::path::PathBuf> {
    let cache = std::env::var_os("KUBE_TEST_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache"));
    let path = std::env::var_os("KUBE_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| cache.join("pyclient/bin/python"));
    path.exists().then_some(path)
}

/// `kubernetes.stream.portforward` (the WebSocket channel protocol): an HTTP
/// GET through port 8080, then what the error channel says about port 9999.
const PYTHON_FORWARD: &str = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import portforward
config.load_kube_config(sys.argv[1])
api = client.CoreV1Api()
def exchange(port, request):
    pf = portforward(api.connect_get_namespaced_pod_portforward, "web", "default", ports=str(port))
    sock = pf.socket(port)
    sock.setblocking(True)
    data = b""
    try:
        # A refused port may close the stream before the request is out.
        sock.sendall(request)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (BrokenPipeError, ConnectionResetError):
        pass
    sock.close()
    return data, pf.error(port)
page, error = exchange(8080, b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
print("body:", page.split(b"\r\n\r\n", 1)[-1].decode(), end="")
print("error 8080:", error)
_, error = exchange(9999, b"hello")
print("error 9999:", error)
"#;

#[test]
fn the_python_client_forwards_over_websocket_channels() {
    let unmet = common::agent_unmet()
        .or_else(|| python().is_none().then(|| "no Python client (scripts/fetch-python-client.sh)".to_string()));
    if !common::can_run("the_python_client_forwards_over_websocket_channels", unmet) {
        return;
    }
    let cluster = AgentCluster::start();
    cluster.apply(&web_pod(&cluster.node));
    wait_web_ready(&cluster);
    let net = cluster.net.as_ref().expect("node namespace");
    let out = net
        .node
        .exec("timeout")
        .arg("60")
        .arg(python().expect("python"))
        .args(["-c", PYTHON_FORWARD])
        .arg(&cluster.kubeconfig)
        .env("HOME", cluster.dir.path())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.log_tail()
    );
    assert!(stdout.starts_with("body: hello-portforward\nerror 8080: None\n"), "{stdout}");
    let uid = cluster.ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]);
    let want = format!(
        "error 9999: error forwarding port 9999 to pod web_default, uid {uid}: failed to connect to localhost:9999"
    );
    assert!(stdout.contains(&want) && stdout.contains("connection refused"), "{stdout}");
    assert!(cluster.log().contains("port-forward (WebSocket channels)"), "the server did not log the channel protocol");
}
