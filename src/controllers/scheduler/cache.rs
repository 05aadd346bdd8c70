//! The scheduler cache (upstream's `internal/cache`): node infos kept from
//! the node and pod watches, with pods counted on their node as soon as the
//! scheduler decides (`assume`), until the watch confirms the binding or the
//! binding fails (`forget`). A decision reads it in O(nodes), never lists.

use super::info::{NodeInfo, PodInfo};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Where a pod is counted, and whether only because the scheduler assumed it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placement {
    node: String,
    assumed: bool,
}

#[derive(Default)]
pub struct Cache {
    /// Every node by name; pods bound to a node not (or no longer) known
    /// keep a placeholder without a node object.
    nodes: BTreeMap<String, NodeInfo>,
    pods: HashMap<String, Placement>,
    /// Namespace objects by name (their labels feed namespaceSelectors).
    namespaces: HashMap<String, Value>,
}

/// Whether a pod still occupies its node (not finished).
pub fn occupies(pod: &Value) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    !node.is_empty() && !matches!(phase, "Succeeded" | "Failed")
}

impl Cache {
    /// The nodes that exist, in name order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values().filter(|n| !n.name.is_empty())
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name).filter(|n| !n.name.is_empty())
    }

    pub fn node_count(&self) -> usize {
        self.nodes().count()
    }

    pub fn namespaces(&self) -> &HashMap<String, Value> {
        &self.namespaces
    }

    pub fn set_namespace(&mut self, ns: Value) {
        let name = ns.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        self.namespaces.insert(name, ns);
    }

    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    pub fn set_node(&mut self, node: Value) {
        let name = node.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        match self.nodes.get_mut(&name) {
            Some(info) => info.set_node(node),
            None => {
                self.nodes.insert(name, NodeInfo::new(node));
            }
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            if info.pods.is_empty() {
                self.nodes.remove(name);
            } else {
                // The pods stay counted until they go; the node is no candidate.
                info.name.clear();
                info.node = Value::Null;
            }
        }
    }

    /// Applies a pod from the watch: counted on its node while it occupies
    /// one (confirming an assumed pod), dropped when finished.
    pub fn set_pod(&mut self, pod: Value) {
        let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
        if !occupies(&pod) {
            // A pending pod the scheduler assumed stays assumed until its binding is confirmed.
            if self.pods.get(&uid).is_some_and(|p| !p.assumed) || crate::controllers::objects::phase(&pod) != "Pending"
            {
                self.remove_pod(&uid);
            }
            return;
        }
        let info = Arc::new(PodInfo::new(pod));
        self.place(info, false);
    }

    /// Counts a pod on `info.node_name` right after the scheduler chose it.
    pub fn assume(&mut self, info: PodInfo) {
        self.place(Arc::new(info), true);
    }

    /// Undoes [`Cache::assume`] when the binding failed.
    pub fn forget(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(|p| p.assumed) {
            self.remove_pod(uid);
        }
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    pub fn is_assumed(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|p| p.assumed)
    }

    fn place(&mut self, info: Arc<PodInfo>, assumed: bool) {
        self.remove_pod(&info.uid);
        let node = info.node_name.clone();
        self.pods.insert(info.uid.clone(), Placement { node: node.clone(), assumed });
        self.nodes.entry(node).or_default().add_pod(info);
    }

    pub fn remove_pod(&mut self, uid: &str) {
        let Some(placement) = self.pods.remove(uid) else { return };
        if let Some(info) = self.nodes.get_mut(&placement.node) {
            info.remove_pod(uid);
            if info.name.is_empty() && info.pods.is_empty() {
                self.nodes.remove(&placement.node);
            }
        }
    }

    /// Forgets everything the watches told (before a relist); assumed pods stay.
    pub fn clear_observed(&mut self) {
        let observed: Vec<String> = self.pods.iter().filter(|(_, p)| !p.assumed).map(|(uid, _)| uid.clone()).collect();
        for uid in observed {
            self.remove_pod(&uid);
        }
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in names {
            self.remove_node(&name);
        }
        self.namespaces.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str) -> Value {
        json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "10"}}})
    }

    fn pod(uid: &str, node: &str, phase: &str) -> Value {
        json!({"metadata": {"name": uid, "namespace": "default", "uid": uid},
            "spec": {"nodeName": node, "containers": [{"name": "a", "resources": {"requests": {"cpu": "500m"}}}]},
            "status": {"phase": phase}})
    }

    #[test]
    fn assumed_pods_count_until_confirmed_or_forgotten() {
        let mut cache = Cache::default();
        cache.set_node(node("n1"));
        cache.assume(PodInfo::new(pod("a", "n1", "Pending")));
        assert_eq!(cache.node("n1").map(|n| n.requested[0]), Some(500));
        assert!(cache.is_assumed("a"));
        // The watch still shows the pod unbound: it stays assumed.
        cache.set_pod(pod("a", "", "Pending"));
        assert!(cache.is_assumed("a"));
        // The binding arrives: confirmed, counted once.
        cache.set_pod(pod("a", "n1", "Pending"));
        assert!(!cache.is_assumed("a"));
        assert_eq!(cache.node("n1").map(|n| n.pods.len()), Some(1));
        cache.assume(PodInfo::new(pod("b", "n1", "Pending")));
        cache.forget("b");
        assert_eq!(cache.node("n1").map(|n| n.requested[0]), Some(500));
        // Finished pods free their node.
        cache.set_pod(pod("a", "n1", "Succeeded"));
        assert_eq!(cache.node("n1").map(|n| n.requested[0]), Some(0));
    }

    #[test]
    fn pods_on_unknown_nodes_wait_for_the_node() {
        let mut cache = Cache::default();
        cache.set_pod(pod("a", "n2", "Running"));
        assert_eq!(cache.node_count(), 0);
        cache.set_node(node("n2"));
        assert_eq!(cache.node("n2").map(|n| n.pods.len()), Some(1));
        cache.remove_node("n2");
        assert!(cache.node("n2").is_none());
        cache.remove_pod("a");
        cache.set_node(node("n2"));
        assert_eq!(cache.node("n2").map(|n| n.pods.len()), Some(0));
    }
}
