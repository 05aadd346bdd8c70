//! The `metrics.k8s.io/v1beta1` objects, shaped like metrics-server's:
//! CPU in nanocores (`"12345n"`), memory in KiB (`"1024Ki"`), the sample's
//! `timestamp` and the rate's `window` as a Go duration (`"10.5s"`).

use super::rate::{History, Rate};
use serde_json::{Value, json};

const API_VERSION: &str = "metrics.k8s.io/v1beta1";

fn text<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// A Go `time.Duration` string of whole seconds and a trimmed fraction.
pub fn window(nanos: i64) -> String {
    let (seconds, fraction) = (nanos / 1_000_000_000, nanos % 1_000_000_000);
    if fraction == 0 {
        return format!("{seconds}s");
    }
    let digits = format!("{fraction:09}");
    format!("{seconds}.{}s", digits.trim_end_matches('0'))
}

fn timestamp(nanos: i64) -> String {
    jiff::Timestamp::from_second(nanos / 1_000_000_000).map(|t| t.to_string()).unwrap_or_default()
}

pub fn usage(rate: &Rate) -> Value {
    json!({"cpu": format!("{}n", rate.nanocores), "memory": format!("{}Ki", rate.memory_working_set / 1024)})
}

fn metadata(obj: &Value, namespaced: bool) -> Value {
    let mut meta = json!({"name": text(obj, "/metadata/name"), "creationTimestamp": super::super::rest::now_rfc3339()});
    if namespaced {
        meta["namespace"] = json!(text(obj, "/metadata/namespace"));
    }
    if let Some(labels) = obj.pointer("/metadata/labels").filter(|l| l.as_object().is_some_and(|m| !m.is_empty())) {
        meta["labels"] = labels.clone();
    }
    meta
}

/// The NodeMetrics of `node`, if it has a rate.
pub fn node_metrics(node: &Value, history: &History) -> Option<Value> {
    let name = text(node, "/metadata/name");
    let rate = history.rate(&(name.to_string(), String::new(), String::new()))?;
    Some(json!({
        "kind": "NodeMetrics", "apiVersion": API_VERSION, "metadata": metadata(node, false),
        "timestamp": timestamp(rate.time_nanos), "window": window(rate.window_nanos), "usage": usage(&rate),
    }))
}

/// The PodMetrics of `pod`, if every container of it has a rate (metrics-server
/// leaves out pods with partial metrics).
pub fn pod_metrics(pod: &Value, history: &History) -> Option<Value> {
    let (node, uid) = (text(pod, "/spec/nodeName"), text(pod, "/metadata/uid"));
    if node.is_empty() || text(pod, "/status/phase") != "Running" {
        return None;
    }
    let mut containers = Vec::new();
    let mut newest: Option<Rate> = None;
    for container in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
        let name = text(container, "/name");
        let rate = history.rate(&(node.to_string(), uid.to_string(), name.to_string()))?;
        if newest.is_none_or(|n| n.time_nanos < rate.time_nanos) {
            newest = Some(rate);
        }
        containers.push(json!({"name": name, "usage": usage(&rate)}));
    }
    let newest = newest?;
    Some(json!({
        "kind": "PodMetrics", "apiVersion": API_VERSION, "metadata": metadata(pod, true),
        "timestamp": timestamp(newest.time_nanos), "window": window(newest.window_nanos), "containers": containers,
    }))
}

/// `NodeMetricsList` / `PodMetricsList`.
pub fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": format!("{kind}List"), "apiVersion": API_VERSION, "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::stats::{ContainerStats, PodRef, PodStats, Summary, Usage};

    #[test]
    fn windows_read_like_go_durations() {
        assert_eq!(window(10_000_000_000), "10s");
        assert_eq!(window(10_500_000_000), "10.5s");
        assert_eq!(window(1_000_000_001), "1.000000001s");
    }

    #[test]
    fn pod_metrics_need_every_container() {
        let mut history = History::default();
        for (second, cpu) in [(0i64, 0u64), (2, 200_000_000)] {
            history.record(&Summary {
                node_name: "n1".into(),
                time_nanos: second * 1_000_000_000,
                node: Usage { cpu_nanos: cpu, memory_working_set: 4096 },
                pods: vec![PodStats {
                    pod_ref: PodRef { namespace: "default".into(), name: "web".into(), uid: "u1".into() },
                    containers: vec![ContainerStats {
                        name: "main".into(),
                        usage: Usage { cpu_nanos: cpu, memory_working_set: 2048 },
                    }],
                }],
            });
        }
        let pod = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "main"}]}, "status": {"phase": "Running"}});
        let metrics = pod_metrics(&pod, &history).expect("metrics");
        assert_eq!(metrics["containers"][0]["usage"], json!({"cpu": "100000000n", "memory": "2Ki"}));
        assert_eq!(metrics["window"], "2s");
        assert_eq!(metrics["metadata"]["labels"]["app"], "web");
        let mut two = pod.clone();
        two["spec"]["containers"] = json!([{"name": "main"}, {"name": "sidecar"}]);
        assert_eq!(pod_metrics(&two, &history), None);
        let node = node_metrics(&json!({"metadata": {"name": "n1"}}), &history).expect("node");
        assert_eq!(node["usage"]["memory"], "4Ki");
        assert_eq!(node["kind"], "NodeMetrics");
    }
}
