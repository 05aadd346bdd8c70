//! The NetworkPolicy half of the proxy's state: Pods, Namespaces and
//! NetworkPolicies as the watches report them, reduced to what the rules
//! read, with a dirty flag so only changes that matter cause a re-render.

use super::policy_model::{PodInfo, PodPolicy, Policy, PolicyInputs, namespace_labels};
use super::policy_render::render_policies;
use super::render::Fragment;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

type ObjectKey = (String, String);

fn object_key(object: &Value) -> Option<ObjectKey> {
    let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str)?;
    let name = object.pointer("/metadata/name").and_then(Value::as_str)?;
    Some((namespace.to_string(), name.to_string()))
}

#[derive(Debug)]
pub struct PolicyState {
    pods: HashMap<ObjectKey, PodInfo>,
    namespaces: BTreeMap<String, Value>,
    policies: HashMap<ObjectKey, Policy>,
    dirty: bool,
}

impl Default for PolicyState {
    fn default() -> PolicyState {
        PolicyState { pods: HashMap::new(), namespaces: BTreeMap::new(), policies: HashMap::new(), dirty: true }
    }
}

impl PolicyState {
    /// Whether the rendered rules may have changed since the last [`PolicyState::render`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub fn upsert_pod(&mut self, pod: &Value) {
        let Some(key) = object_key(pod) else { return };
        match PodInfo::from_pod(pod) {
            Some(info) => {
                if self.pods.get(&key) != Some(&info) {
                    self.pods.insert(key, info);
                    self.dirty = true;
                }
            }
            None => self.delete_pod(pod),
        }
    }

    pub fn delete_pod(&mut self, pod: &Value) {
        if let Some(key) = object_key(pod) {
            self.dirty |= self.pods.remove(&key).is_some();
        }
    }

    pub fn replace_pods(&mut self, pods: &[Value]) {
        self.pods.clear();
        self.dirty = true;
        for pod in pods {
            self.upsert_pod(pod);
        }
    }

    pub fn upsert_namespace(&mut self, namespace: &Value) {
        let Some(name) = namespace.pointer("/metadata/name").and_then(Value::as_str) else { return };
        let labels = namespace_labels(name, namespace.pointer("/metadata/labels"));
        if self.namespaces.get(name) != Some(&labels) {
            self.namespaces.insert(name.to_string(), labels);
            self.dirty = true;
        }
    }

    pub fn delete_namespace(&mut self, namespace: &Value) {
        if let Some(name) = namespace.pointer("/metadata/name").and_then(Value::as_str) {
            self.dirty |= self.namespaces.remove(name).is_some();
        }
    }

    pub fn replace_namespaces(&mut self, namespaces: &[Value]) {
        self.namespaces.clear();
        self.dirty = true;
        for namespace in namespaces {
            self.upsert_namespace(namespace);
        }
    }

    pub fn upsert_policy(&mut self, policy: &Value) {
        let Some(key) = object_key(policy) else { return };
        match Policy::from_object(policy) {
            Ok(parsed) => {
                if self.policies.get(&key) != Some(&parsed) {
                    self.policies.insert(key, parsed);
                    self.dirty = true;
                }
            }
            Err(reason) => {
                tracing::warn!(policy = %format!("{}/{}", key.0, key.1), %reason, "NetworkPolicy ignored: it cannot be enforced");
                self.dirty |= self.policies.remove(&key).is_some();
            }
        }
    }

    pub fn delete_policy(&mut self, policy: &Value) {
        if let Some(key) = object_key(policy) {
            self.dirty |= self.policies.remove(&key).is_some();
        }
    }

    pub fn replace_policies(&mut self, policies: &[Value]) {
        self.policies.clear();
        self.dirty = true;
        for policy in policies {
            self.upsert_policy(policy);
        }
    }

    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    /// What the policies decide for `node_name`'s pods.
    pub fn local_policies(&self, node_name: &str) -> Vec<PodPolicy> {
        let mut pods: Vec<&PodInfo> = self.pods.values().collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut policies: Vec<&Policy> = self.policies.values().collect();
        policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        PolicyInputs { node_name, pods: &pods, namespaces: &self.namespaces, policies: &policies }.local_policies()
    }

    /// The policy chains for `node_name`'s pods; clears the dirty flag.
    pub fn render(&mut self, node_name: &str) -> Fragment {
        self.dirty = false;
        render_policies(&self.local_policies(node_name))
    }
}
