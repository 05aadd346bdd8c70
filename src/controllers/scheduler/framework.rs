//! The scheduling framework: filter plugins say why a node cannot take a
//! pod (with upstream's reason texts), score plugins rank the nodes that
//! can; `schedule` runs them and picks a node or explains the failure.

use super::quantity::milli_of;
use serde_json::Value;
use std::collections::BTreeMap;

/// A node and the pods already assigned to it.
pub struct NodeInfo {
    pub node: Value,
    pub pods: Vec<Value>,
}

impl NodeInfo {
    pub fn name(&self) -> &str {
        self.node.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
    }
}

/// A filter's verdict on one node: `Err(reason)` as upstream prints it.
pub type Filter = fn(&Value, &NodeInfo) -> Result<(), String>;
/// A score plugin: 0..=100 for one node (higher is better).
pub type Score = fn(&Value, &NodeInfo, &[NodeInfo]) -> i64;

pub const FILTERS: &[(&str, Filter)] = &[
    ("NodeUnschedulable", node_unschedulable),
    ("NodeName", node_name),
    ("TaintToleration", taint_toleration),
    ("NodeAffinity", node_affinity),
    ("NodePorts", node_ports),
    ("NodeResourcesFit", resources_fit),
];

pub const SCORES: &[(&str, Score)] = &[("NodeResourcesLeastAllocated", least_allocated), ("PodTopologySpread", spread)];

/// The chosen node's name, or upstream's FailedScheduling message.
pub fn schedule(pod: &Value, nodes: &[NodeInfo]) -> Result<String, String> {
    if nodes.is_empty() {
        return Err("no nodes available to schedule pods".into());
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut feasible = Vec::new();
    for info in nodes {
        match FILTERS.iter().try_for_each(|(_, filter)| filter(pod, info)) {
            Ok(()) => feasible.push(info),
            Err(reason) => *reasons.entry(reason).or_default() += 1,
        }
    }
    if feasible.is_empty() {
        let parts: Vec<String> = reasons.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
        let total = nodes.len();
        return Err(format!(
            "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling.",
            parts.join(", ")
        ));
    }
    let best = feasible
        .iter()
        .map(|info| (SCORES.iter().map(|(_, score)| score(pod, info, nodes)).sum::<i64>(), info.name()))
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)));
    best.map(|(_, name)| name.to_string()).ok_or_else(|| "no nodes available to schedule pods".into())
}

fn node_unschedulable(pod: &Value, info: &NodeInfo) -> Result<(), String> {
    let unschedulable = info.node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true);
    let tolerated = tolerations(pod).iter().any(|t| {
        t.get("key").and_then(Value::as_str) == Some("node.kubernetes.io/unschedulable")
            || (t.get("key").is_none() && t.get("operator").and_then(Value::as_str) == Some("Exists"))
    });
    if unschedulable && !tolerated { Err("node(s) were unschedulable".into()) } else { Ok(()) }
}

fn node_name(pod: &Value, info: &NodeInfo) -> Result<(), String> {
    match pod.pointer("/spec/nodeName").and_then(Value::as_str) {
        Some(name) if !name.is_empty() && name != info.name() => {
            Err("node(s) didn't match the requested node name".into())
        }
        _ => Ok(()),
    }
}

fn tolerations(pod: &Value) -> Vec<Value> {
    pod.pointer("/spec/tolerations").and_then(Value::as_array).cloned().unwrap_or_default()
}

/// Whether a toleration tolerates a taint (upstream `ToleratesTaint`).
pub fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let effect = text(toleration, "effect");
    if !effect.is_empty() && effect != text(taint, "effect") {
        return false;
    }
    let key = text(toleration, "key");
    if !key.is_empty() && key != text(taint, "key") {
        return false;
    }
    match toleration.get("operator").and_then(Value::as_str).unwrap_or("Equal") {
        "Exists" => true,
        "Equal" => text(toleration, "value") == text(taint, "value"),
        _ => false,
    }
}

/// The node's taints, plus `node.kubernetes.io/not-ready` for a node that is not Ready.
pub fn taints(node: &Value) -> Vec<Value> {
    let mut taints = node.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
    let ready = node.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("Ready")
            && c.get("status").and_then(Value::as_str) == Some("True")
    });
    let listed = taints.iter().any(|t| t.get("key").and_then(Value::as_str) == Some("node.kubernetes.io/not-ready"));
    if !ready && !listed {
        taints.push(serde_json::json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}));
    }
    taints
}

fn taint_toleration(pod: &Value, info: &NodeInfo) -> Result<(), String> {
    let tolerations = tolerations(pod);
    for taint in taints(&info.node) {
        let effect = taint.get("effect").and_then(Value::as_str).unwrap_or_default();
        if !matches!(effect, "NoSchedule" | "NoExecute") {
            continue;
        }
        if !tolerations.iter().any(|t| tolerates(t, &taint)) {
            let key = taint.get("key").and_then(Value::as_str).unwrap_or_default();
            let value = taint.get("value").and_then(Value::as_str).unwrap_or_default();
            return Err(format!("node(s) had untolerated taint {{{key}: {value}}}"));
        }
    }
    Ok(())
}

/// One nodeSelectorTerm's match expressions / fields against a node.
fn term_matches(term: &Value, node: &Value) -> bool {
    let label = |key: &str| {
        node.pointer("/metadata/labels").and_then(|l| l.get(key)).and_then(Value::as_str).map(str::to_string)
    };
    let field = |key: &str| match key {
        "metadata.name" => node.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    let check = |requirements: Option<&Value>, get: &dyn Fn(&str) -> Option<String>| {
        requirements.and_then(Value::as_array).into_iter().flatten().all(|req| {
            let key = req.get("key").and_then(Value::as_str).unwrap_or_default();
            let values: Vec<&str> =
                req.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            let actual = get(key);
            let actual = actual.as_deref();
            let number = |s: Option<&str>| s.and_then(|s| s.parse::<i64>().ok());
            match req.get("operator").and_then(Value::as_str).unwrap_or_default() {
                "In" => actual.is_some_and(|a| values.contains(&a)),
                "NotIn" => actual.is_none_or(|a| !values.contains(&a)),
                "Exists" => actual.is_some(),
                "DoesNotExist" => actual.is_none(),
                "Gt" => matches!((number(actual), number(values.first().copied())), (Some(a), Some(v)) if a > v),
                "Lt" => matches!((number(actual), number(values.first().copied())), (Some(a), Some(v)) if a < v),
                _ => false,
            }
        })
    };
    let has_any = term.get("matchExpressions").and_then(Value::as_array).is_some_and(|a| !a.is_empty())
        || term.get("matchFields").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    has_any && check(term.get("matchExpressions"), &label) && check(term.get("matchFields"), &field)
}

fn node_affinity(pod: &Value, info: &NodeInfo) -> Result<(), String> {
    let reason = || "node(s) didn't match Pod's node affinity/selector".to_string();
    let labels = info.node.pointer("/metadata/labels");
    if let Some(selector) = pod.pointer("/spec/nodeSelector").and_then(Value::as_object) {
        for (key, value) in selector {
            if labels.and_then(|l| l.get(key)) != Some(value) {
                return Err(reason());
            }
        }
    }
    let required =
        pod.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms");
    if let Some(terms) = required.and_then(Value::as_array)
        && !terms.iter().any(|term| term_matches(term, &info.node))
    {
        return Err(reason());
    }
    Ok(())
}

/// The host ports a pod asks for: (hostIP, protocol, port).
fn host_ports(pod: &Value) -> Vec<(String, String, i64)> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c.get("ports").and_then(Value::as_array).cloned().unwrap_or_default())
        .filter_map(|p| {
            let port = p.get("hostPort").and_then(Value::as_i64).filter(|n| *n > 0)?;
            let ip = p.get("hostIP").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("0.0.0.0");
            let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            Some((ip.to_string(), protocol.to_string(), port))
        })
        .collect()
}

fn node_ports(pod: &Value, info: &NodeInfo) -> Result<(), String> {
    let wanted = host_ports(pod);
    if wanted.is_empty() {
        return Ok(());
    }
    let used: Vec<(String, String, i64)> = info.pods.iter().flat_map(host_ports).collect();
    let clash = wanted.iter().any(|(ip, protocol, port)| {
        used.iter().any(|(uip, uprotocol, uport)| {
            port == uport && protocol == uprotocol && (ip == uip || ip == "0.0.0.0" || uip == "0.0.0.0")
        })
    });
    if clash { Err("node(s) didn't have free ports for the requested pod ports".into()) } else { Ok(()) }
}

/// A pod's requests of `resource` in milli-units (init containers count at their maximum).
pub fn pod_request(pod: &Value, resource: &str) -> i128 {
    let container = |c: &Value| -> i128 {
        c.pointer(&format!("/resources/requests/{resource}"))
            .or_else(|| c.pointer(&format!("/resources/limits/{resource}")))
            .and_then(milli_of)
            .unwrap_or(0)
    };
    let list = |key: &str| pod.pointer(&format!("/spec/{key}")).and_then(Value::as_array).cloned().unwrap_or_default();
    let sum: i128 = list("containers").iter().map(container).sum();
    let init = list("initContainers").iter().map(container).max().unwrap_or(0);
    let overhead = pod.pointer(&format!("/spec/overhead/{resource}")).and_then(milli_of).unwrap_or(0);
    sum.max(init) + overhead
}

fn allocatable(node: &Value, resource: &str) -> i128 {
    node.pointer(&format!("/status/allocatable/{resource}"))
        .or_else(|| node.pointer(&format!("/status/capacity/{resource}")))
        .and_then(milli_of)
        .unwrap_or(0)
}

fn resources_fit(pod: &Value, info: &NodeInfo) -> Result<(), String> {
    let max_pods = allocatable(&info.node, "pods") / 1000;
    if info.pods.len() as i128 + 1 > max_pods {
        return Err("Too many pods".into());
    }
    for resource in ["cpu", "memory", "ephemeral-storage"] {
        let wanted = pod_request(pod, resource);
        if wanted == 0 {
            continue;
        }
        let used: i128 = info.pods.iter().map(|p| pod_request(p, resource)).sum();
        if used + wanted > allocatable(&info.node, resource) {
            return Err(format!("Insufficient {resource}"));
        }
    }
    Ok(())
}

/// Upstream's non-zero requests for scoring: 100m CPU and 200Mi memory when unset.
fn scoring_request(pod: &Value, resource: &str) -> i128 {
    match (pod_request(pod, resource), resource) {
        (0, "cpu") => 100,
        (0, "memory") => 200 * (1 << 20) * 1000,
        (n, _) => n,
    }
}

fn least_allocated(pod: &Value, info: &NodeInfo, _all: &[NodeInfo]) -> i64 {
    let scores: Vec<i64> = ["cpu", "memory"]
        .iter()
        .map(|resource| {
            let capacity = allocatable(&info.node, resource);
            let used: i128 =
                info.pods.iter().map(|p| scoring_request(p, resource)).sum::<i128>() + scoring_request(pod, resource);
            if capacity == 0 || used > capacity { 0 } else { ((capacity - used) * 100 / capacity) as i64 }
        })
        .collect();
    scores.iter().sum::<i64>() / scores.len() as i64
}

/// The uid of a pod's controller, which groups a workload's pods.
fn owner(pod: &Value) -> Option<&str> {
    super::super::objects::controller_uid(pod)
}

/// Fewer pods of the same workload on a node scores higher (selector spreading).
fn spread(pod: &Value, info: &NodeInfo, all: &[NodeInfo]) -> i64 {
    let Some(uid) = owner(pod) else { return 0 };
    let count = |n: &NodeInfo| n.pods.iter().filter(|p| owner(p) == Some(uid)).count() as i64;
    let max = all.iter().map(count).max().unwrap_or(0);
    if max == 0 { 100 } else { 100 * (max - count(info)) / max }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: Value, cpu: &str) -> NodeInfo {
        NodeInfo {
            node: json!({"metadata": {"name": name, "labels": labels},
                "status": {"allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True"}]}}),
            pods: Vec::new(),
        }
    }

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "ownerReferences": [{"uid": "rs", "controller": true}]}, "spec": spec})
    }

    #[test]
    fn node_selector_mismatch_has_upstreams_message() {
        let p = pod(json!({"nodeSelector": {"disk": "ssd"}, "containers": [{"name": "a"}]}));
        let nodes = [node("n1", json!({"disk": "hdd"}), "2")];
        assert_eq!(
            schedule(&p, &nodes),
            Err("0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.".into())
        );
        let nodes = [node("n1", json!({"disk": "hdd"}), "2"), node("n2", json!({"disk": "ssd"}), "2")];
        assert_eq!(schedule(&p, &nodes), Ok("n2".into()));
    }

    #[test]
    fn required_node_affinity_terms_are_ored() {
        let p = pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n3"]}]}]}}}}),
        );
        assert!(node_affinity(&p, &node("n1", json!({"zone": "a"}), "1")).is_ok());
        assert!(node_affinity(&p, &node("n2", json!({"zone": "b"}), "1")).is_err());
        assert!(node_affinity(&p, &node("n3", json!({}), "1")).is_ok());
    }

    #[test]
    fn taints_need_tolerations() {
        let mut tainted = node("n1", json!({}), "1");
        tainted.node["spec"] = json!({"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]});
        let plain = pod(json!({}));
        assert_eq!(taint_toleration(&plain, &tainted), Err("node(s) had untolerated taint {dedicated: db}".into()));
        let tolerant = pod(
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}),
        );
        assert!(taint_toleration(&tolerant, &tainted).is_ok());
        let mut not_ready = node("n2", json!({}), "1");
        not_ready.node["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
        assert!(taint_toleration(&plain, &not_ready).is_err());
    }

    #[test]
    fn requests_must_fit_allocatable() {
        let p = pod(json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "1500m"}}}]}));
        let mut small = node("n1", json!({}), "1");
        assert_eq!(resources_fit(&p, &small), Err("Insufficient cpu".into()));
        small.node["status"]["allocatable"]["cpu"] = json!("2");
        assert!(resources_fit(&p, &small).is_ok());
        small.pods.push(p.clone());
        assert_eq!(resources_fit(&p, &small), Err("Insufficient cpu".into()));
        let mut full = node("n2", json!({}), "8");
        full.node["status"]["allocatable"]["pods"] = json!("0");
        assert_eq!(resources_fit(&pod(json!({})), &full), Err("Too many pods".into()));
    }

    #[test]
    fn host_ports_conflict_on_any_address() {
        let with_port = |ip: &str, port: i64| {
            pod(
                json!({"containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip}]}]}),
            )
        };
        let mut busy = node("n1", json!({}), "2");
        busy.pods.push(with_port("", 8080));
        assert_eq!(
            node_ports(&with_port("127.0.0.1", 8080), &busy),
            Err("node(s) didn't have free ports for the requested pod ports".into())
        );
        assert!(node_ports(&with_port("", 8081), &busy).is_ok());
        let mut specific = node("n2", json!({}), "2");
        specific.pods.push(with_port("10.0.0.1", 8080));
        assert!(node_ports(&with_port("10.0.0.2", 8080), &specific).is_ok());
        assert!(node_ports(&with_port("0.0.0.0", 8080), &specific).is_err());
    }

    #[test]
    fn scores_prefer_emptier_nodes_and_spread_workloads() {
        let p = pod(json!({"containers": [{"name": "a"}]}));
        let mut busy = node("a-busy", json!({}), "2");
        busy.pods.push(pod(json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]})));
        let idle = node("b-idle", json!({}), "2");
        let nodes = [busy, idle];
        assert!(least_allocated(&p, &nodes[1], &nodes) > least_allocated(&p, &nodes[0], &nodes));
        assert_eq!(spread(&p, &nodes[0], &nodes), 0);
        assert_eq!(spread(&p, &nodes[1], &nodes), 100);
        assert_eq!(schedule(&p, &nodes), Ok("b-idle".into()));
    }
}
