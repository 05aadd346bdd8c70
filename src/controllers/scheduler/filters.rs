//! The node-local filter plugins with upstream's reason texts:
//! NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts,
//! NodeResourcesFit. (PodTopologySpread and InterPodAffinity need the
//! whole cluster: [`super::spread`], [`super::interpod`].)

use super::framework::{Cycle, Failure};
use super::info::{NodeInfo, RESOURCES};
use serde_json::Value;

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

pub fn node_unschedulable(cycle: &Cycle, node: &NodeInfo) -> Result<(), Failure> {
    let tolerated = cycle.pod.tolerations().iter().any(|t| {
        text(t, "key") == "node.kubernetes.io/unschedulable"
            || (text(t, "key").is_empty() && text(t, "operator") == "Exists")
    });
    if node.unschedulable && !tolerated {
        return Err(Failure::unresolvable("NodeUnschedulable", "node(s) were unschedulable"));
    }
    Ok(())
}

pub fn node_name(cycle: &Cycle, node: &NodeInfo) -> Result<(), Failure> {
    let wanted = cycle.pod.pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    if !wanted.is_empty() && wanted != node.name {
        return Err(Failure::unresolvable("NodeName", "node(s) didn't match the requested node name"));
    }
    Ok(())
}

/// Whether a toleration tolerates a taint (upstream `ToleratesTaint`).
pub fn tolerates(toleration: &Value, taint: &Value) -> bool {
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
        "Equal" | "" => text(toleration, "value") == text(taint, "value"),
        _ => false,
    }
}

/// The first NoSchedule/NoExecute taint no toleration tolerates.
pub fn untolerated<'a>(taints: &'a [Value], tolerations: &[Value]) -> Option<&'a Value> {
    taints
        .iter()
        .filter(|t| matches!(text(t, "effect"), "NoSchedule" | "NoExecute"))
        .find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

pub fn taint_toleration(cycle: &Cycle, node: &NodeInfo) -> Result<(), Failure> {
    match untolerated(&node.taints, cycle.pod.tolerations()) {
        Some(taint) => Err(Failure::unresolvable(
            "TaintToleration",
            &format!("node(s) had untolerated taint {{{}: {}}}", text(taint, "key"), text(taint, "value")),
        )),
        None => Ok(()),
    }
}

/// One nodeSelectorTerm's match expressions / fields against a node.
pub fn term_matches(term: &Value, node: &NodeInfo) -> bool {
    fn check<'n>(requirements: Option<&Value>, get: &dyn Fn(&str) -> Option<&'n str>) -> bool {
        requirements.and_then(Value::as_array).into_iter().flatten().all(|req| {
            let values: Vec<&str> =
                req.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            let actual = get(text(req, "key"));
            let number = |s: Option<&str>| s.and_then(|s| s.parse::<i64>().ok());
            match text(req, "operator") {
                "In" => actual.is_some_and(|a| values.contains(&a)),
                "NotIn" => actual.is_none_or(|a| !values.contains(&a)),
                "Exists" => actual.is_some(),
                "DoesNotExist" => actual.is_none(),
                "Gt" => matches!((number(actual), number(values.first().copied())), (Some(a), Some(v)) if a > v),
                "Lt" => matches!((number(actual), number(values.first().copied())), (Some(a), Some(v)) if a < v),
                _ => false,
            }
        })
    }
    let label = |key: &str| node.labels.get(key).map(String::as_str);
    let field = |key: &str| (key == "metadata.name").then_some(node.name.as_str());
    let has_any = term.get("matchExpressions").and_then(Value::as_array).is_some_and(|a| !a.is_empty())
        || term.get("matchFields").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    has_any && check(term.get("matchExpressions"), &label) && check(term.get("matchFields"), &field)
}

/// Whether the node satisfies the pod's nodeSelector and required node affinity.
pub fn matches_node_selector(pod: &Value, node: &NodeInfo) -> bool {
    if let Some(selector) = pod.pointer("/spec/nodeSelector").and_then(Value::as_object)
        && selector.iter().any(|(key, value)| node.labels.get(key).map(String::as_str) != value.as_str())
    {
        return false;
    }
    let required =
        pod.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms");
    match required.and_then(Value::as_array) {
        Some(terms) => terms.iter().any(|term| term_matches(term, node)),
        None => true,
    }
}

pub fn node_affinity(cycle: &Cycle, node: &NodeInfo) -> Result<(), Failure> {
    if matches_node_selector(&cycle.pod.pod, node) {
        Ok(())
    } else {
        Err(Failure::unresolvable("NodeAffinity", "node(s) didn't match Pod's node affinity/selector"))
    }
}

pub fn node_ports(cycle: &Cycle, node: &NodeInfo) -> Result<(), Failure> {
    let clash = cycle.pod.host_ports.iter().any(|(ip, protocol, port)| {
        node.used_ports.iter().any(|(uip, uprotocol, uport)| {
            port == uport && protocol == uprotocol && (ip == uip || ip == "0.0.0.0" || uip == "0.0.0.0")
        })
    });
    if clash {
        return Err(Failure::new("NodePorts", "node(s) didn't have free ports for the requested pod ports"));
    }
    Ok(())
}

/// Every resource the node lacks is a reason, as upstream lists them.
pub fn resources_fit(cycle: &Cycle, node: &NodeInfo) -> Result<(), Failure> {
    let mut reasons = Vec::new();
    if node.pods.len() as i128 + 1 > node.max_pods {
        reasons.push("Too many pods".to_string());
    }
    for (i, resource) in RESOURCES.iter().enumerate() {
        let wanted = cycle.pod.requests[i];
        if wanted > 0 && node.requested[i] + wanted > node.allocatable[i] {
            reasons.push(format!("Insufficient {resource}"));
        }
    }
    if reasons.is_empty() { Ok(()) } else { Err(Failure { plugin: "NodeResourcesFit", reasons, resolvable: true }) }
}

#[cfg(test)]
mod tests {
    use super::super::framework::tests::{cycle_for, node, pod};
    use super::*;
    use serde_json::json;

    #[test]
    fn required_node_affinity_terms_are_ored() {
        let p = pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n3"]}]}]}}}}),
        );
        let check = |n: &NodeInfo| node_affinity(&cycle_for(&p, &[]), n).is_ok();
        assert!(check(&node("n1", json!({"zone": "a"}), "1")));
        assert!(!check(&node("n2", json!({"zone": "b"}), "1")));
        assert!(check(&node("n3", json!({}), "1")));
    }

    #[test]
    fn taints_need_tolerations() {
        let mut tainted = node("n1", json!({}), "1");
        let mut spec = tainted.node.clone();
        spec["spec"] = json!({"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]});
        tainted.set_node(spec);
        let plain = pod(json!({}));
        assert_eq!(
            taint_toleration(&cycle_for(&plain, &[]), &tainted).map_err(|f| f.reasons),
            Err(vec!["node(s) had untolerated taint {dedicated: db}".to_string()])
        );
        let tolerant = pod(
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}),
        );
        assert!(taint_toleration(&cycle_for(&tolerant, &[]), &tainted).is_ok());
        let mut not_ready = node("n2", json!({}), "1");
        let mut status = not_ready.node.clone();
        status["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
        not_ready.set_node(status);
        assert!(taint_toleration(&cycle_for(&plain, &[]), &not_ready).is_err());
    }

    #[test]
    fn requests_must_fit_allocatable_and_every_shortage_is_listed() {
        let p =
            pod(json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "1500m", "memory": "5Gi"}}}]}));
        let small = node("n1", json!({}), "1");
        assert_eq!(
            resources_fit(&cycle_for(&p, &[]), &small).map_err(|f| f.reasons),
            Err(vec!["Insufficient cpu".to_string(), "Insufficient memory".to_string()])
        );
        let mut full = node("n2", json!({}), "8");
        let mut obj = full.node.clone();
        obj["status"]["allocatable"]["pods"] = json!("0");
        full.set_node(obj);
        assert_eq!(
            resources_fit(&cycle_for(&pod(json!({})), &[]), &full).map_err(|f| f.reasons),
            Err(vec!["Too many pods".to_string()])
        );
    }

    #[test]
    fn host_ports_conflict_on_any_address() {
        let with_port = |ip: &str, port: i64| {
            pod(
                json!({"containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip}]}]}),
            )
        };
        let on = |used: Value| {
            let mut n = node("n1", json!({}), "2");
            n.add_pod(std::sync::Arc::new(super::super::info::PodInfo::new(used)));
            n
        };
        let busy = on(with_port("", 8080));
        let reason = node_ports(&cycle_for(&with_port("127.0.0.1", 8080), &[]), &busy).map_err(|f| f.reasons);
        assert_eq!(reason, Err(vec!["node(s) didn't have free ports for the requested pod ports".to_string()]));
        assert!(node_ports(&cycle_for(&with_port("", 8081), &[]), &busy).is_ok());
        let specific = on(with_port("10.0.0.1", 8080));
        assert!(node_ports(&cycle_for(&with_port("10.0.0.2", 8080), &[]), &specific).is_ok());
        assert!(node_ports(&cycle_for(&with_port("0.0.0.0", 8080), &[]), &specific).is_err());
    }
}
