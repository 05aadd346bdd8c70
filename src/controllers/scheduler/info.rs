//! What the scheduler knows about pods and nodes, parsed once from their
//! JSON when the watch delivers them (upstream's `PodInfo` / `NodeInfo`):
//! requests, ports, labels, affinity terms, taints and allocatable sums.

use super::quantity::milli_of;
use crate::server::selectors::LabelSelector;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The resources the scheduler accounts (milli-units).
pub const RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// Requests per resource of [`RESOURCES`], in milli-units.
pub type Requests = [i128; 3];

/// Upstream's non-zero defaults for scoring: 100m CPU and 200Mi memory.
pub const DEFAULT_CPU: i128 = 100;
pub const DEFAULT_MEMORY: i128 = 200 * (1 << 20) * 1000;

/// One pod affinity term: which pods (by labels and namespaces) in which topology.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    /// `None` (no labelSelector) selects no pods.
    pub selector: Option<LabelSelector>,
    /// Namespaces named in the term (or the pod's own when none and no selector).
    pub namespaces: BTreeSet<String>,
    /// `namespaceSelector`; an empty one selects every namespace.
    pub namespace_selector: Option<LabelSelector>,
    pub topology_key: String,
}

impl AffinityTerm {
    fn parse(term: &Value, own_namespace: &str) -> AffinityTerm {
        let selector = term
            .get("labelSelector")
            .filter(|s| !s.is_null())
            .and_then(|s| LabelSelector::from_label_selector_json(s).ok());
        let mut namespaces: BTreeSet<String> =
            strings(term.get("namespaces")).into_iter().map(str::to_string).collect();
        let namespace_selector = term
            .get("namespaceSelector")
            .filter(|s| !s.is_null())
            .and_then(|s| LabelSelector::from_label_selector_json(s).ok());
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.insert(own_namespace.to_string());
        }
        let topology_key = term.get("topologyKey").and_then(Value::as_str).unwrap_or_default().to_string();
        AffinityTerm { selector, namespaces, namespace_selector, topology_key }
    }

    /// Whether `pod` is one of the pods this term selects.
    pub fn matches(&self, pod: &PodInfo, namespace_labels: &HashMap<String, Value>) -> bool {
        let in_namespace = self.namespaces.contains(&pod.namespace)
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| s.is_empty() || namespace_labels.get(&pod.namespace).is_some_and(|ns| s.matches(ns)));
        in_namespace && self.selector.as_ref().is_some_and(|s| s.matches(&pod.pod))
    }
}

/// A pod as the scheduler sees it.
#[derive(Debug)]
pub struct PodInfo {
    pub pod: Value,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node_name: String,
    pub requests: Requests,
    /// CPU and memory requests with upstream's non-zero defaults (for scoring).
    pub non_zero: [i128; 2],
    pub host_ports: Vec<(String, String, i64)>,
    pub priority: i64,
    pub preempt_never: bool,
    /// The uid of the pod's controller (system default spreading groups by it).
    pub owner: Option<String>,
    pub terminating: bool,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<(i64, AffinityTerm)>,
    pub preferred_anti_affinity: Vec<(i64, AffinityTerm)>,
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    value.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
}

fn text<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// A pod's requests of `resource` in milli-units (init containers count at their maximum).
pub fn pod_request(pod: &Value, resource: &str) -> i128 {
    let container = |c: &Value| -> i128 {
        let requests = c.pointer("/resources/requests").and_then(|r| r.get(resource));
        let limits = c.pointer("/resources/limits").and_then(|r| r.get(resource));
        requests.or(limits).and_then(milli_of).unwrap_or(0)
    };
    let list = |key: &str| pod.pointer("/spec").and_then(|s| s.get(key)).and_then(Value::as_array);
    let sum: i128 = list("containers").into_iter().flatten().map(container).sum();
    let init = list("initContainers").into_iter().flatten().map(container).max().unwrap_or(0);
    let overhead = pod.pointer("/spec/overhead").and_then(|o| o.get(resource)).and_then(milli_of).unwrap_or(0);
    sum.max(init) + overhead
}

/// The host ports a pod asks for: (hostIP, protocol, port).
pub fn host_ports(pod: &Value) -> Vec<(String, String, i64)> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c.get("ports").and_then(Value::as_array).into_iter().flatten())
        .filter_map(|p| {
            let port = p.get("hostPort").and_then(Value::as_i64).filter(|n| *n > 0)?;
            let ip = p.get("hostIP").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("0.0.0.0");
            let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            Some((ip.to_string(), protocol.to_string(), port))
        })
        .collect()
}

impl PodInfo {
    pub fn new(pod: Value) -> PodInfo {
        let namespace = text(&pod, "/metadata/namespace").to_string();
        let affinity = |kind: &str, when: &str| -> Vec<Value> {
            pod.pointer(&format!("/spec/affinity/{kind}/{when}DuringSchedulingIgnoredDuringExecution"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let required =
            |kind: &str| affinity(kind, "required").iter().map(|t| AffinityTerm::parse(t, &namespace)).collect();
        let preferred = |kind: &str| {
            affinity(kind, "preferred")
                .iter()
                .map(|t| {
                    let weight = t.get("weight").and_then(Value::as_i64).unwrap_or(0);
                    (weight, AffinityTerm::parse(t.get("podAffinityTerm").unwrap_or(&Value::Null), &namespace))
                })
                .collect()
        };
        let requests = RESOURCES.map(|r| pod_request(&pod, r));
        let non_zero = [
            if requests[0] == 0 { DEFAULT_CPU } else { requests[0] },
            if requests[1] == 0 { DEFAULT_MEMORY } else { requests[1] },
        ];
        PodInfo {
            uid: text(&pod, "/metadata/uid").to_string(),
            name: text(&pod, "/metadata/name").to_string(),
            node_name: text(&pod, "/spec/nodeName").to_string(),
            requests,
            non_zero,
            host_ports: host_ports(&pod),
            priority: pod.pointer("/spec/priority").and_then(Value::as_i64).unwrap_or(0),
            preempt_never: text(&pod, "/spec/preemptionPolicy") == "Never",
            owner: crate::controllers::objects::controller_uid(&pod).map(str::to_string),
            terminating: pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()),
            required_affinity: required("podAffinity"),
            required_anti_affinity: required("podAntiAffinity"),
            preferred_affinity: preferred("podAffinity"),
            preferred_anti_affinity: preferred("podAntiAffinity"),
            namespace,
            pod,
        }
    }

    pub fn has_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }

    pub fn tolerations(&self) -> &[Value] {
        self.pod.pointer("/spec/tolerations").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
    }
}

/// A node and the pods counted on it (bound and assumed).
#[derive(Debug, Default)]
pub struct NodeInfo {
    pub node: Value,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub allocatable: Requests,
    pub max_pods: i128,
    pub taints: Vec<Value>,
    pub unschedulable: bool,
    pub pods: Vec<Arc<PodInfo>>,
    pub requested: Requests,
    pub non_zero_requested: [i128; 2],
    pub used_ports: Vec<(String, String, i64)>,
    /// How many pods of each controller uid run here.
    pub owners: HashMap<String, u32>,
    /// How many of the pods have pod (anti-)affinity terms, required anti-affinity terms.
    pub with_affinity: usize,
    pub with_required_anti_affinity: usize,
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
        taints.push(json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}));
    }
    taints
}

fn allocatable(node: &Value, resource: &str) -> i128 {
    node.pointer("/status/allocatable")
        .and_then(|a| a.get(resource))
        .or_else(|| node.pointer("/status/capacity").and_then(|c| c.get(resource)))
        .and_then(milli_of)
        .unwrap_or(0)
}

impl NodeInfo {
    /// A node with no pods yet.
    pub fn new(node: Value) -> NodeInfo {
        let mut info = NodeInfo::default();
        info.set_node(node);
        info
    }

    /// Replaces the node object, keeping the pods.
    pub fn set_node(&mut self, node: Value) {
        self.name = text(&node, "/metadata/name").to_string();
        self.labels = node
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default();
        self.allocatable = RESOURCES.map(|r| allocatable(&node, r));
        self.max_pods = allocatable(&node, "pods") / 1000;
        self.taints = taints(&node);
        self.unschedulable = node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true);
        self.node = node;
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        for (sum, request) in self.requested.iter_mut().zip(pod.requests) {
            *sum += request;
        }
        for (sum, request) in self.non_zero_requested.iter_mut().zip(pod.non_zero) {
            *sum += request;
        }
        self.used_ports.extend(pod.host_ports.iter().cloned());
        if let Some(owner) = &pod.owner {
            *self.owners.entry(owner.clone()).or_default() += 1;
        }
        self.with_affinity += usize::from(pod.has_affinity());
        self.with_required_anti_affinity += usize::from(!pod.required_anti_affinity.is_empty());
        self.pods.push(pod);
    }

    /// Removes the pod of `uid`; returns it if it was here.
    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let at = self.pods.iter().position(|p| p.uid == uid)?;
        let pod = self.pods.swap_remove(at);
        for (sum, request) in self.requested.iter_mut().zip(pod.requests) {
            *sum -= request;
        }
        for (sum, request) in self.non_zero_requested.iter_mut().zip(pod.non_zero) {
            *sum -= request;
        }
        for port in &pod.host_ports {
            if let Some(i) = self.used_ports.iter().position(|p| p == port) {
                self.used_ports.swap_remove(i);
            }
        }
        self.with_affinity -= usize::from(pod.has_affinity());
        self.with_required_anti_affinity -= usize::from(!pod.required_anti_affinity.is_empty());
        if let Some(owner) = &pod.owner
            && let Some(count) = self.owners.get_mut(owner)
        {
            *count -= 1;
            if *count == 0 {
                self.owners.remove(owner);
            }
        }
        Some(pod)
    }

    /// A copy with the same node and pods (for preemption's what-ifs).
    pub fn clone_with_pods(&self) -> NodeInfo {
        let mut copy = NodeInfo::new(self.node.clone());
        for pod in &self.pods {
            copy.add_pod(pod.clone());
        }
        copy
    }
}
