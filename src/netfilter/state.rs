//! The proxy's state machine: caches Services, EndpointSlices and the
//! agent's Node as the watches report them, remembers which Services
//! changed, and turns that into the next transaction. Pure apart from the
//! clock-free bookkeeping; the sync loop drives it.

use super::ProxyConfig;
use super::base::render_base;
use super::model::{ServiceKey, service_ports};
use super::plan::{Desired, Transaction};
use super::policy_state::PolicyState;
use super::render::render_service;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

/// `namespace/name` of an EndpointSlice.
type SliceKey = (String, String);

fn slice_key(slice: &Value) -> Option<SliceKey> {
    let namespace = slice.pointer("/metadata/namespace").and_then(Value::as_str)?;
    let name = slice.pointer("/metadata/name").and_then(Value::as_str)?;
    Some((namespace.to_string(), name.to_string()))
}

/// The node-local DNS address: the first address of the Node's podCIDR.
pub fn gateway_of(node: &Value) -> Option<Ipv4Addr> {
    let cidr = node.pointer("/spec/podCIDR").and_then(Value::as_str)?;
    let (addr, _) = cidr.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    Some(Ipv4Addr::from(u32::from(addr).checked_add(1)?))
}

pub struct ProxyState {
    config: ProxyConfig,
    services: HashMap<ServiceKey, Value>,
    slices: HashMap<SliceKey, (ServiceKey, Value)>,
    slices_of: HashMap<ServiceKey, BTreeSet<SliceKey>>,
    dirty: BTreeSet<ServiceKey>,
    desired: Desired,
    needs_full: bool,
    /// NetworkPolicy inputs; their chains are one more fragment of `desired`.
    policies: PolicyState,
}

/// The fragment key the NetworkPolicy chains are stored under: no Service
/// can have it (a Service's namespace is never empty).
fn policy_fragment_key() -> ServiceKey {
    ServiceKey::new("", "network-policies")
}

impl ProxyState {
    pub fn new(config: ProxyConfig) -> ProxyState {
        let desired = Desired::new(render_base(&config));
        ProxyState {
            config,
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_of: HashMap::new(),
            dirty: BTreeSet::new(),
            desired,
            needs_full: true,
            policies: PolicyState::default(),
        }
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// Whether a sync has something to do.
    pub fn pending(&self) -> bool {
        self.needs_full || !self.dirty.is_empty() || self.policies.is_dirty()
    }

    /// Pods, Namespaces and NetworkPolicies go here.
    pub fn policies_mut(&mut self) -> &mut PolicyState {
        &mut self.policies
    }

    pub fn upsert_service(&mut self, service: Value) {
        if let Some(key) = ServiceKey::of_service(&service) {
            self.dirty.insert(key.clone());
            self.services.insert(key, service);
        }
    }

    pub fn delete_service(&mut self, service: &Value) {
        if let Some(key) = ServiceKey::of_service(service) {
            self.services.remove(&key);
            self.dirty.insert(key);
        }
    }

    /// A fresh list: Services missing from it are gone.
    pub fn replace_services(&mut self, services: Vec<Value>) {
        let old: Vec<ServiceKey> = self.services.keys().cloned().collect();
        self.dirty.extend(old);
        self.services.clear();
        for service in services {
            self.upsert_service(service);
        }
    }

    pub fn upsert_slice(&mut self, slice: Value) {
        let (Some(key), Some(service)) = (slice_key(&slice), ServiceKey::of_slice(&slice)) else { return };
        self.forget_slice(&key);
        self.dirty.insert(service.clone());
        self.slices_of.entry(service.clone()).or_default().insert(key.clone());
        self.slices.insert(key, (service, slice));
    }

    pub fn delete_slice(&mut self, slice: &Value) {
        if let Some(key) = slice_key(slice) {
            self.forget_slice(&key);
        }
    }

    fn forget_slice(&mut self, key: &SliceKey) {
        if let Some((service, _)) = self.slices.remove(key) {
            if let Some(keys) = self.slices_of.get_mut(&service) {
                keys.remove(key);
                if keys.is_empty() {
                    self.slices_of.remove(&service);
                }
            }
            self.dirty.insert(service);
        }
    }

    pub fn replace_slices(&mut self, slices: Vec<Value>) {
        let old: Vec<SliceKey> = self.slices.keys().cloned().collect();
        for key in old {
            self.forget_slice(&key);
        }
        for slice in slices {
            self.upsert_slice(slice);
        }
    }

    /// The agent's Node: its podCIDR gives the node-local DNS address.
    pub fn set_node(&mut self, node: &Value) {
        let gateway = gateway_of(node);
        if gateway != self.config.dns_target {
            tracing::info!(dns_target = ?gateway, "service proxy: node-local DNS address changed");
            self.config.dns_target = gateway;
            self.desired.set_base(render_base(&self.config));
            self.needs_full = true;
        }
    }

    /// The next sync rebuilds the whole table (after a failure, or to repair drift).
    pub fn request_full(&mut self) {
        self.needs_full = true;
    }

    /// Folds the changed Services into the desired table and returns the
    /// transaction to apply: incremental when possible, else full. `None`
    /// when nothing changed.
    pub fn plan(&mut self) -> Option<Transaction> {
        let mut tx = Transaction::default();
        let dirty = std::mem::take(&mut self.dirty);
        for key in &dirty {
            let fragment = self.services.get(key).map(|service| {
                let slices: Vec<&Value> = self
                    .slices_of
                    .get(key)
                    .into_iter()
                    .flatten()
                    .filter_map(|k| self.slices.get(k).map(|(_, s)| s))
                    .collect();
                render_service(&service_ports(service, &slices, &self.config.node_name), &self.config)
            });
            self.desired.replace_service(key, fragment, &mut tx);
        }
        if self.policies.is_dirty() {
            let fragment = self.policies.render(&self.config.node_name);
            self.desired.replace_service(&policy_fragment_key(), Some(fragment), &mut tx);
        }
        if std::mem::take(&mut self.needs_full) {
            return Some(self.desired.full_transaction());
        }
        (!tx.is_empty()).then_some(tx)
    }

    pub fn service_count(&self) -> usize {
        self.desired.service_count()
    }
}
