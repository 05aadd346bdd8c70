//! End-to-end tests of a two-node cluster (needs root, a docker-registry and
//! the busybox test image; skipped with a message otherwise, failed instead
//! when KUBE_TEST_REQUIRE_ROOT=1): the real `kube server` with its local
//! agent in node namespace n1, and a real `kube agent --join` in a second
//! node namespace `n2` on the same test LAN ([`common::multinode`]), driven by
//! the real kubectl. Pods are pinned to nodes with `nodeName`; traffic
//! between them crosses the VXLAN overlay, Services and DNS are answered on
//! the node the client runs on, and NodePorts are reached from the LAN
//! namespace (outside the cluster). Nothing touches the root namespace's network.

mod common;

use common::multinode::MultiNode;
use common::netns::{LAN_PREFIX, ip};
use std::time::Duration;

const JOINED: &str = "n2";
/// The LAN namespace's own address: a machine outside the cluster.
const OUTSIDE_IP_SUFFIX: u32 = 2;

fn cluster() -> MultiNode {
    let cluster = MultiNode::start(&[JOINED]);
    cluster.wait_all_ready(Duration::from_secs(90));
    cluster
}

/// Waits until `pod` is Running (and Ready).
fn wait_running(cluster: &MultiNode, pod: &str) {
    cluster.wait_for(
        &format!("{pod} Running and Ready"),
        &["get", "pod", pod, "-o", "jsonpath={.status.phase} {.status.conditions[?(@.type==\"Ready\")].status}"],
        Duration::from_secs(90),
        |out| out == "Running True",
    );
}

/// Waits until `pod` Succeeded (a failure stops the test with its output).
fn wait_succeeded(cluster: &MultiNode, pod: &str, output: impl Fn() -> String) {
    cluster.wait_for(
        &format!("{pod} Succeeded"),
        &["get", "pod", pod, "-o", "jsonpath={.status.phase}"],
        Duration::from_secs(90),
        |out| {
            assert_ne!(out, "Failed", "pod {pod} failed; its output:\n{}\n{}", output(), cluster.joined_logs());
            out == "Succeeded"
        },
    );
}

/// A shell loop that runs `command` until it succeeds, at most `tries` times, 0.5 s apart.
/// (Debian's static busybox `wget -T` crashes on a refused connection: use `timeout`.)
fn retried(command: &str, tries: u32) -> String {
    format!("for i in $(seq {tries}); do {command} && exit 0; sleep 0.5; done; exit 1")
}

fn jsonpath(cluster: &MultiNode, args: &[&str], path: &str) -> String {
    let mut all = args.to_vec();
    let expr = format!("jsonpath={path}");
    all.extend(["-o", expr.as_str()]);
    cluster.ok(&all).trim().to_string()
}

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {port: 80, targetPort: 8080, nodePort: 30080}
";

#[test]
fn pods_services_and_dns_work_across_nodes() {
    if !common::can_run("pods_services_and_dns_work_across_nodes", common::agent_unmet()) {
        return;
    }
    let cluster = cluster();
    let n1 = cluster.node.clone();
    let n2 = cluster.node(JOINED);
    let n2_ip = n2.ip.clone();
    assert_eq!(
        jsonpath(&cluster, &["get", "node", JOINED], "{.status.addresses[?(@.type==\"InternalIP\")].address}"),
        n2_ip
    );
    let cidrs = jsonpath(&cluster, &["get", "nodes"], "{.items[*].spec.podCIDR}");
    let cidrs: Vec<&str> = cidrs.split_whitespace().collect();
    assert_eq!(cidrs.len(), 2, "each node has a podCIDR: {cidrs:?}");
    assert_ne!(cidrs[0], cidrs[1]);

    // The backend runs on the server's node n1.
    let httpd = "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www";
    cluster.apply(&cluster.pod_on("web", &n1, "app: web", httpd, "Always"));
    wait_running(&cluster, "web");
    let web_ip = jsonpath(&cluster, &["get", "pod", "web"], "{.status.podIP}");

    // Pod to pod across the overlay: a pod on n2 fetches the page by pod IP.
    let fetch = retried(&format!("timeout 3 wget -qO- http://{web_ip}:8080/"), 40);
    cluster.apply(&cluster.pod_on("by-ip", JOINED, "app: client", &fetch, "Never"));
    wait_succeeded(&cluster, "by-ip", || n2.pod_log_file("by-ip"));
    let host_ip = jsonpath(&cluster, &["get", "pod", "by-ip"], "{.status.hostIP}");
    assert_eq!(host_ip, n2_ip, "the client ran on n2");
    assert_eq!(n2.pod_log_file("by-ip"), "hello-from-web\n");

    // A ClusterIP Service and its DNS name, from a pod on n2.
    cluster.apply(SERVICE);
    cluster.wait_for(
        "endpoints of web",
        &["get", "endpoints", "web", "-o", "jsonpath={.subsets[*].addresses[*].ip}"],
        Duration::from_secs(30),
        |out| out == web_ip,
    );
    let cluster_ip = jsonpath(&cluster, &["get", "service", "web"], "{.spec.clusterIP}");
    let fetch = retried(&format!("timeout 3 wget -qO- http://{cluster_ip}/"), 40);
    cluster.apply(&cluster.pod_on("by-service", JOINED, "app: client", &fetch, "Never"));
    wait_succeeded(&cluster, "by-service", || n2.pod_log_file("by-service"));
    assert_eq!(n2.pod_log_file("by-service"), "hello-from-web\n");

    let lookup = retried("nslookup web.default.svc.cluster.local", 40);
    cluster.apply(&cluster.pod_on("by-name", JOINED, "app: client", &lookup, "Never"));
    wait_succeeded(&cluster, "by-name", || n2.pod_log_file("by-name"));
    let answer = n2.pod_log_file("by-name");
    assert!(answer.contains(&format!("Address: {cluster_ip}")), "nslookup from n2:\n{answer}");
    // Short names through the search domains, and the page through the name.
    let by_short_name = retried("timeout 3 wget -qO- http://web/", 40);
    cluster.apply(&cluster.pod_on("by-short-name", JOINED, "app: client", &by_short_name, "Never"));
    wait_succeeded(&cluster, "by-short-name", || n2.pod_log_file("by-short-name"));
    assert_eq!(n2.pod_log_file("by-short-name"), "hello-from-web\n");

    // NodePort on n2's address, from the LAN namespace outside the cluster, backend on n1.
    let lan = &cluster.net.as_ref().expect("node net").lan;
    let outside = format!("{LAN_PREFIX}.{OUTSIDE_IP_SUFFIX}");
    ip(&["-n", &lan.ns.name, "addr", "add", &format!("{outside}/24"), "dev", "lan"]);
    let url = format!("http://{n2_ip}:30080/");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let page = loop {
        let out = lan
            .ns
            .exec("busybox")
            .args(["timeout", "3", "busybox", "wget", "-qO-", &url])
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .output()
            .expect("run wget");
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "NodePort {url} from the LAN: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            cluster.joined_logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(page, "hello-from-web\n");

    // A Deployment with pod anti-affinity lands one replica on each node.
    cluster.apply(&common::agent::spread_deployment("exec sleep 3600"));
    let placed = cluster.wait_for(
        "spread replicas Running on both nodes",
        &[
            "get",
            "pods",
            "-l",
            "app=spread",
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName}={.status.phase}{\"\\n\"}{end}",
        ],
        Duration::from_secs(90),
        |out| out.lines().filter(|l| l.ends_with("=Running")).count() == 2,
    );
    let mut nodes: Vec<&str> = placed.lines().filter_map(|l| l.split('=').next()).collect();
    nodes.sort_unstable();
    let mut want = vec![n1.as_str(), JOINED];
    want.sort_unstable();
    assert_eq!(nodes, want, "replicas per node:\n{placed}");
}

#[test]
fn logs_and_exec_reach_pods_on_the_joined_node() {
    if !common::can_run("logs_and_exec_reach_pods_on_the_joined_node", common::agent_unmet()) {
        return;
    }
    let cluster = cluster();
    let script = "echo one; echo two; echo three; exec sleep 3600";
    cluster.apply(&cluster.pod_on("talker", JOINED, "app: talker", script, "Always"));
    wait_running(&cluster, "talker");
    assert_eq!(jsonpath(&cluster, &["get", "pod", "talker"], "{.spec.nodeName}"), JOINED);

    // kubectl logs goes API server → n2's agent (:10250) and back.
    cluster.wait_logs("talker", &[], "one\ntwo\nthree\n");
    assert_eq!(cluster.ok(&["logs", "talker", "--tail=1"]), "three\n");
    assert_eq!(cluster.ok(&["logs", "talker", "-c", "main", "--tail=2"]), "two\nthree\n");
    let stamped = cluster.ok(&["logs", "talker", "--timestamps", "--tail=1"]);
    assert!(stamped.ends_with(" three\n") && stamped.starts_with("20"), "{stamped:?}");
    let wrong = cluster.fails(&["logs", "talker", "-c", "nope"]);
    assert!(wrong.contains("container nope is not valid for pod talker"), "{wrong}");

    // kubectl exec on the joined node: output, exit codes and stdin.
    assert_eq!(cluster.ok(&["exec", "talker", "--", "cat", "/etc/hostname"]), "talker\n");
    let failed = cluster.kubectl(&["exec", "talker", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(failed.status.code(), Some(3), "{failed:?}");
    assert_eq!(String::from_utf8_lossy(&failed.stdout), "out\n");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("err"), "{failed:?}");
    let echoed = cluster.kubectl_stdin(&["exec", "-i", "talker", "--", "cat"], "through n2\n");
    assert!(echoed.status.success(), "{echoed:?}");
    assert_eq!(String::from_utf8_lossy(&echoed.stdout), "through n2\n");

    // Resource metrics of n2 come from its agent's /stats/summary.
    let top =
        cluster.wait_for("top pod talker", &["top", "pod", "talker", "--no-headers"], Duration::from_secs(30), |o| {
            o.starts_with("talker ")
        });
    assert!(top.split_whitespace().nth(2).is_some_and(|m| m.ends_with("Mi")), "top pod: {top}");
    cluster.wait_for("top node lists n2", &["top", "node", "--no-headers"], Duration::from_secs(30), |o| {
        o.lines().any(|l| l.starts_with(&format!("{JOINED} ")))
    });

    // Only the API server may use the agent's API: a caller without its
    // client certificate (here: none, or the admin's) is refused.
    let n2_ip = cluster.node(JOINED).ip.clone();
    let url = format!("https://{n2_ip}:10250/containerLogs/default/talker/main");
    let net = cluster.net.as_ref().expect("node net");
    let anonymous = net.node.exec("curl").args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &url]).output();
    let anonymous = anonymous.expect("run curl");
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401", "{anonymous:?}");
    let tls = cluster.dir.path().join("tls");
    let admin = net
        .node
        .exec("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &url, "--cert"])
        .arg(tls.join("client-admin.crt"))
        .arg("--key")
        .arg(tls.join("client-admin.key"))
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&admin.stdout), "403", "{admin:?}");
}

const MOVABLE: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: movable}
spec:
  replicas: 1
  selector: {matchLabels: {app: movable}}
  template:
    metadata: {labels: {app: movable}}
    spec:
      terminationGracePeriodSeconds: 2
      nodeSelector: {kube.test/pool: any}
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 5}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 5}
      containers:
      - name: main
        image: REGISTRY/busybox:latest
        command: [sh, -c, 'exec sleep 3600']
        resources: {limits: {memory: 64Mi}}
";

#[test]
fn a_restarted_agent_keeps_its_pods_and_a_lost_node_has_them_rescheduled() {
    if !common::can_run("a_restarted_agent_keeps_its_pods_and_a_lost_node_has_them_rescheduled", common::agent_unmet())
    {
        return;
    }
    let mut cluster = cluster();
    let n1 = cluster.node.clone();
    let httpd = "echo started; mkdir -p /www && echo still-here > /www/index.html && exec httpd -f -p 8080 -h /www";
    cluster.apply(&cluster.pod_on("keeper", JOINED, "app: keeper", httpd, "Always"));
    wait_running(&cluster, "keeper");
    let state = "{.status.podIP} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.running.startedAt}";
    let before = jsonpath(&cluster, &["get", "pod", "keeper"], state);

    // SIGTERM the agent and start it again: the container is adopted, not restarted.
    let node = cluster.node_mut(JOINED);
    node.stop();
    node.start();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while cluster.node(JOINED).log().matches("agent running pods").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "restarted agent not running:\n{}", cluster.joined_logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_running(&cluster, "keeper");
    assert_eq!(jsonpath(&cluster, &["get", "pod", "keeper"], state), before, "the container was restarted");
    assert_eq!(cluster.ok(&["exec", "keeper", "--", "cat", "/etc/hostname"]), "keeper\n");
    let pod_ip = before.split_whitespace().next().unwrap_or_default().to_string();
    let fetch = retried(&format!("timeout 3 wget -qO- http://{pod_ip}:8080/"), 40);
    cluster.apply(&cluster.pod_on("visitor", &n1, "app: visitor", &fetch, "Never"));
    wait_succeeded(&cluster, "visitor", || cluster.ok(&["logs", "visitor"]));
    assert_eq!(cluster.ok(&["logs", "visitor"]), "still-here\n");

    // The agent of n2 goes away for good: its Deployment pod moves to n1.
    for node in [n1.as_str(), JOINED] {
        cluster.ok(&["label", "node", node, "kube.test/pool=any"]);
    }
    cluster.ok(&["cordon", &n1]);
    cluster.apply(&MOVABLE.replace("REGISTRY", &common::agent::registry()));
    let running_on = "jsonpath={range .items[?(@.status.phase==\"Running\")]}{.spec.nodeName}{\"\\n\"}{end}";
    cluster.wait_for(
        "movable Running on n2",
        &["get", "pods", "-l", "app=movable", "-o", running_on],
        Duration::from_secs(60),
        |out| out == format!("{JOINED}\n"),
    );
    cluster.ok(&["uncordon", &n1]);
    cluster.node_mut(JOINED).stop();
    cluster.wait_for(
        "n2 Unknown and tainted unreachable",
        &[
            "get",
            "node",
            JOINED,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.taints[*].key}",
        ],
        Duration::from_secs(90),
        |out| out.starts_with("Unknown") && out.contains("node.kubernetes.io/unreachable"),
    );
    let placed = cluster.wait_for(
        "movable rescheduled to n1",
        &["get", "pods", "-l", "app=movable", "-o", running_on],
        Duration::from_secs(60),
        |out| out.lines().any(|l| l == n1),
    );
    assert!(placed.lines().any(|l| l == n1), "{placed}");
}
