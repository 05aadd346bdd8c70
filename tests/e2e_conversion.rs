//! End-to-end tests of resources served in one version and stored in another:
//! `events.k8s.io/v1` Events (the core Events under newer names) and
//! `autoscaling/v1` HorizontalPodAutoscalers (the v2 objects), with the real
//! kubectl: every verb through either version sees the same objects.

mod common;

use common::Cluster;
use serde_json::Value;

fn json(cluster: &Cluster, args: &[&str]) -> Value {
    let mut full = args.to_vec();
    full.extend(["-o", "json"]);
    serde_json::from_str(&cluster.ok(&full)).unwrap_or_else(|err| panic!("kubectl {args:?}: not JSON: {err}"))
}

#[test]
fn events_are_one_object_in_both_apis() {
    let cluster = Cluster::start();
    let event = r#"
apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: hello, namespace: default}
eventTime: "2026-01-01T00:00:00.000000Z"
reportingController: example.com/tester
reportingInstance: tester-1
action: Testing
reason: Greeting
type: Normal
note: hello there
regarding: {kind: Pod, name: web, namespace: default}
"#;
    let out = cluster.kubectl_stdin(&["create", "-f", "-"], event);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let core = json(&cluster, &["get", "events.v1.", "hello"]);
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "hello there");
    assert_eq!(core["involvedObject"]["name"], "web");
    assert_eq!(core["reportingComponent"], "example.com/tester");
    let new = json(&cluster, &["get", "events.v1.events.k8s.io", "hello"]);
    assert_eq!(new["apiVersion"], "events.k8s.io/v1");
    assert_eq!(new["note"], "hello there");
    assert!(new.get("message").is_none(), "{new}");
    // A patch in the new API's names lands on the same object.
    cluster.ok(&["patch", "events.v1.events.k8s.io", "hello", "--type=merge", "-p", r#"{"note":"patched"}"#]);
    assert_eq!(json(&cluster, &["get", "events.v1.", "hello"])["message"], "patched");
    let list = json(&cluster, &["get", "events.v1.events.k8s.io"]);
    assert!(list["items"].as_array().is_some_and(|items| items.iter().any(|e| e["note"] == "patched")), "{list}");
    let table = cluster.ok(&["get", "events.v1.events.k8s.io"]);
    assert!(table.contains("Greeting") && table.contains("pod/web") && table.contains("patched"), "{table}");
    cluster.ok(&["delete", "events.v1.events.k8s.io", "hello"]);
    let gone = cluster.fails(&["get", "events.v1.", "hello"]);
    assert!(gone.contains("NotFound"), "{gone}");
}

#[test]
fn autoscalers_read_and_write_in_v1_and_v2() {
    let cluster = Cluster::start();
    let v1 = r#"
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 5
  targetCPUUtilizationPercentage: 70
"#;
    let out = cluster.kubectl_stdin(&["create", "-f", "-"], v1);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v2 = json(&cluster, &["get", "horizontalpodautoscalers.v2.autoscaling", "web"]);
    assert_eq!(v2["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert_eq!(v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70);
    assert_eq!(v2["spec"]["minReplicas"], 1, "v2 defaults minReplicas");
    // A memory target added through v2 survives a v1 update.
    let memory = r#"{"spec":{"metrics":[
        {"type":"Resource","resource":{"name":"cpu","target":{"type":"Utilization","averageUtilization":70}}},
        {"type":"Resource","resource":{"name":"memory","target":{"type":"Utilization","averageUtilization":80}}}]}}"#;
    cluster.ok(&["patch", "horizontalpodautoscalers.v2.autoscaling", "web", "--type=merge", "-p", memory]);
    cluster.ok(&[
        "patch",
        "horizontalpodautoscalers.v1.autoscaling",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxReplicas":7}}"#,
    ]);
    let v1 = json(&cluster, &["get", "horizontalpodautoscalers.v1.autoscaling", "web"]);
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 70);
    assert_eq!(v1["spec"]["maxReplicas"], 7);
    let v2 = json(&cluster, &["get", "horizontalpodautoscalers.v2.autoscaling", "web"]);
    assert_eq!(v2["spec"]["metrics"].as_array().map(Vec::len), Some(2), "{v2}");
    assert_eq!(v2["spec"]["maxReplicas"], 7);
    assert!(v2["metadata"].get("annotations").is_none(), "round-trip annotations leaked into v2: {v2}");
    let table = cluster.ok(&["get", "hpa"]);
    assert!(table.contains("Deployment/web") && table.contains("cpu: <unknown>/70%, memory: <unknown>/80%"), "{table}");
}
