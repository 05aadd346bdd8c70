//! End-to-end tests of resource metrics and autoscaling: the real `kube
//! server` with its local agent in a node namespace, the real kubectl. A
//! Deployment of CPU-burning busybox pods shows in `kubectl top pod` and
//! `kubectl top node`; `kubectl autoscale` scales it up, and once the pods
//! idle (the Deployment patched to `sleep`) back down. Needs root: skipped
//! with a message otherwise, failed when KUBE_TEST_REQUIRE_ROOT=1.

mod common;

use common::agent::{AgentCluster, IMAGE, registry};
use std::time::{Duration, Instant};

fn can_run(test: &str) -> bool {
    common::can_run(test, common::agent_unmet())
}

fn deployment(node: &str, command: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      nodeName: {node}\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: {registry}/{IMAGE}\n        command: [sh, -c, {command:?}]\n        resources: {{requests: {{cpu: 100m}}, limits: {{cpu: 300m, memory: 64Mi}}}}\n",
        registry = registry(),
    )
}

/// The millicores of a `kubectl top pod` CPU cell (`123m`).
fn millicores(cell: &str) -> Option<u64> {
    cell.strip_suffix('m').and_then(|m| m.parse().ok())
}

fn replicas(cluster: &AgentCluster) -> u64 {
    cluster.ok(&["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"]).trim().parse().unwrap_or(0)
}

#[test]
fn top_shows_usage_and_the_autoscaler_scales_up_and_down() {
    if !can_run("top_shows_usage_and_the_autoscaler_scales_up_and_down") {
        return;
    }
    let cluster = AgentCluster::start();
    cluster.wait_for("node Ready", &["get", "nodes"], Duration::from_secs(30), |out| {
        out.lines().any(|l| l.starts_with(&cluster.node) && l.split_whitespace().nth(1) == Some("Ready"))
    });
    cluster.apply(&deployment(&cluster.node, "while :; do :; done"));
    cluster.wait_for(
        "web pod Running",
        &["get", "pods", "-l", "app=web", "--no-headers"],
        Duration::from_secs(60),
        |o| o.lines().any(|l| l.split_whitespace().nth(2) == Some("Running")),
    );

    // kubectl top pod: the burning pod uses well over 50m.
    let top = cluster.wait_for("top pod > 50m", &["top", "pod", "-l", "app=web"], Duration::from_secs(30), |out| {
        out.lines().skip(1).any(|l| l.split_whitespace().nth(1).and_then(millicores).is_some_and(|m| m > 50))
    });
    assert!(top.starts_with("NAME"), "top pod: {top}");
    eprintln!("kubectl top pod:\n{top}");
    let containers = cluster.ok(&["top", "pod", "-l", "app=web", "--containers"]);
    assert!(containers.contains("main"), "top pod --containers: {containers}");
    // kubectl top node lists the node with its share of CPU and memory.
    let nodes = cluster.wait_for("top node", &["top", "node"], Duration::from_secs(20), |out| {
        out.lines().any(|l| l.starts_with(&cluster.node))
    });
    assert!(nodes.contains("CPU(cores)") && nodes.contains("MEMORY(bytes)"), "top node: {nodes}");
    eprintln!("kubectl top node:\n{nodes}");
    // The raw API: a PodMetrics get by name and a 404 for an unknown pod.
    let pod = cluster.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"]);
    let path = format!("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/{}", pod.trim());
    let raw = cluster.ok(&["get", "--raw", &path]);
    assert!(raw.contains("\"kind\":\"PodMetrics\"") && raw.contains("\"window\""), "pod metrics: {raw}");
    let metrics: serde_json::Value = serde_json::from_str(&raw).expect("pod metrics JSON");
    let memory = metrics.pointer("/containers/0/usage/memory").and_then(|m| m.as_str()).unwrap_or_default();
    let kib: u64 = memory.strip_suffix("Ki").and_then(|k| k.parse().ok()).unwrap_or(0);
    assert!(kib > 0, "memory working set: {raw}");
    let missing = cluster.fails(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope"]);
    assert!(missing.contains("NotFound") || missing.contains("not found"), "unknown pod: {missing}");

    // kubectl autoscale, then no scale-down stabilization for the test's sake.
    cluster.ok(&["autoscale", "deployment", "web", "--cpu-percent=50", "--min=1", "--max=3"]);
    cluster.ok(&[
        "patch",
        "hpa",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":0}}}}"#,
    ]);
    let started = Instant::now();
    cluster.wait_for(
        "scaled up",
        &["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"],
        Duration::from_secs(90),
        |o| o.trim().parse::<u64>().is_ok_and(|r| r > 1),
    );
    eprintln!("scaled up to {} after {:?}", replicas(&cluster), started.elapsed());
    let hpa = cluster.wait_for("hpa targets", &["get", "hpa", "web"], Duration::from_secs(30), |o| o.contains("cpu: "));
    let header: Vec<&str> = hpa.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"], "{hpa}");
    assert!(hpa.contains("Deployment/web") && hpa.contains("/50%"), "get hpa: {hpa}");
    eprintln!("kubectl get hpa:\n{hpa}");
    let v1 = cluster.ok(&["get", "--raw", "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/web"]);
    assert!(v1.contains("\"targetCPUUtilizationPercentage\":50"), "autoscaling/v1 view: {v1}");
    let conditions = cluster.ok(&["get", "hpa", "web", "-o", "jsonpath={.status.conditions[*].type}"]);
    assert!(conditions.contains("AbleToScale") && conditions.contains("ScalingActive"), "{conditions}");

    // The load stops: the pods idle, the autoscaler scales back to one.
    cluster.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/command","value":["sh","-c","sleep 3600"]}]"#,
    ]);
    let started = Instant::now();
    cluster.wait_for(
        "scaled down",
        &["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"],
        Duration::from_secs(120),
        |o| o.trim() == "1",
    );
    eprintln!("scaled down to 1 after {:?}", started.elapsed());
    let events = cluster.ok(&["get", "events", "--field-selector", "reason=SuccessfulRescale"]);
    assert!(events.contains("New size"), "rescale events: {events}");
    cluster.ok(&["delete", "hpa", "web"]);
    cluster.ok(&["delete", "deployment", "web", "--wait=false"]);
}
