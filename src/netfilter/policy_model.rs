//! NetworkPolicy (networking.k8s.io/v1) decided for this node's pods, as
//! upstream defines it: which local pods are isolated for ingress / egress
//! and which peers and ports each may talk to. Pure: API objects in,
//! [`PodPolicy`] per isolated local pod out; [`super::policy_render`] turns
//! that into nftables chains.

use super::model::Protocol;
use crate::server::config::Cidr;
use crate::server::selectors::LabelSelector;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The label upstream puts on every Namespace; namespaceSelectors use it to
/// pick namespaces by name, so it is assumed even when a Namespace lacks it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// What the policy rules need to know about a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// The pod as a label-selector target (`{"metadata": {"labels": …}}`).
    pub labels: Value,
    pub ip: Ipv4Addr,
    pub node: Option<String>,
    /// Named container ports: (name, protocol, number).
    pub named_ports: Vec<(String, Protocol, u16)>,
}

impl PodInfo {
    /// A running pod with an IPv4 pod-network address; `None` for pods
    /// without one, host-network pods and finished pods (their address may
    /// already belong to someone else).
    pub fn from_pod(pod: &Value) -> Option<PodInfo> {
        let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str)?;
        let name = pod.pointer("/metadata/name").and_then(Value::as_str)?;
        if pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true) {
            return None;
        }
        let phase = pod.pointer("/status/phase").and_then(Value::as_str);
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            return None;
        }
        let ip: Ipv4Addr = pod.pointer("/status/podIP").and_then(Value::as_str)?.parse().ok()?;
        let mut named_ports = Vec::new();
        for container in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
            for port in container.get("ports").and_then(Value::as_array).into_iter().flatten() {
                let port_name = port.get("name").and_then(Value::as_str).filter(|n| !n.is_empty());
                let number = port.get("containerPort").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok());
                let protocol = Protocol::parse(port.get("protocol").and_then(Value::as_str));
                if let (Some(port_name), Some(number), Some(protocol)) = (port_name, number, protocol) {
                    named_ports.push((port_name.to_string(), protocol, number));
                }
            }
        }
        Some(PodInfo {
            namespace: namespace.to_string(),
            name: name.to_string(),
            labels: labels_object(pod.pointer("/metadata/labels")),
            ip,
            node: pod.pointer("/spec/nodeName").and_then(Value::as_str).map(str::to_string),
            named_ports,
        })
    }
}

/// `{"metadata": {"labels": …}}`: what [`LabelSelector::matches`] reads.
pub fn labels_object(labels: Option<&Value>) -> Value {
    serde_json::json!({"metadata": {"labels": labels.cloned().unwrap_or_else(|| serde_json::json!({}))}})
}

/// A Namespace's labels as a selector target, with the name label added.
pub fn namespace_labels(name: &str, labels: Option<&Value>) -> Value {
    let mut object = labels_object(labels);
    if let Some(map) = object.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        map.insert(NAMESPACE_NAME_LABEL.to_string(), Value::String(name.to_string()));
    }
    object
}

/// A port of a rule as written: a number or a container port name, with
/// an optional `endPort`; `None` means every port of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    Any,
    Number(u16, Option<u16>),
    Named(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub protocol: Protocol,
    pub port: PortRef,
}

/// A peer as written in `from` / `to`.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerSpec {
    /// Pods chosen by `podSelector` in the policy's own namespace
    /// (`namespaces: None`) or in the namespaces `namespaceSelector` picks.
    Pods { namespaces: Option<LabelSelector>, pods: LabelSelector },
    /// `ipBlock`: an IPv4 CIDR minus its exceptions.
    Block { cidr: Cidr, except: Vec<Cidr> },
}

/// One ingress or egress rule: `peers: None` is "from / to everyone",
/// `ports` empty is "every port".
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSpec {
    pub peers: Option<Vec<PeerSpec>>,
    pub ports: Vec<PortSpec>,
}

/// A parsed NetworkPolicy; `ingress` / `egress` are `None` when the policy
/// does not apply in that direction (its policyTypes leave it out).
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    pub pod_selector: LabelSelector,
    pub ingress: Option<Vec<RuleSpec>>,
    pub egress: Option<Vec<RuleSpec>>,
}

/// A CIDR as an ipBlock writes it (host bits are ignored, like upstream's
/// parser); IPv6 blocks are not enforced yet and give `None`.
pub fn parse_block(text: &str) -> Option<Cidr> {
    let (addr, prefix) = text.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Some(Cidr { addr: Ipv4Addr::from(u32::from(addr) & mask), prefix })
}

fn selector(value: Option<&Value>) -> Result<LabelSelector, String> {
    match value {
        None | Some(Value::Null) => Ok(LabelSelector::default()),
        Some(value) => LabelSelector::from_label_selector_json(value).map_err(|err| err.to_string()),
    }
}

fn parse_peer(peer: &Value) -> Result<Option<PeerSpec>, String> {
    if let Some(block) = peer.get("ipBlock") {
        let text = block.get("cidr").and_then(Value::as_str).unwrap_or_default();
        if text.contains(':') {
            return Ok(None);
        }
        let cidr = parse_block(text).ok_or_else(|| format!("ipBlock cidr {text:?} is not an IPv4 CIDR"))?;
        let except = block.get("except").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str);
        let except = except.filter(|e| !e.contains(':')).filter_map(parse_block).collect();
        return Ok(Some(PeerSpec::Block { cidr, except }));
    }
    let namespaces = match peer.get("namespaceSelector") {
        None | Some(Value::Null) => None,
        Some(value) => Some(selector(Some(value))?),
    };
    Ok(Some(PeerSpec::Pods { namespaces, pods: selector(peer.get("podSelector"))? }))
}

fn parse_port(port: &Value) -> Result<PortSpec, String> {
    let protocol_text = port.get("protocol").and_then(Value::as_str);
    let protocol = Protocol::parse(protocol_text).ok_or_else(|| format!("unknown protocol {protocol_text:?}"))?;
    let end = port.get("endPort").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok());
    let port = match port.get("port") {
        None | Some(Value::Null) => PortRef::Any,
        Some(Value::String(name)) => match name.parse::<u16>() {
            Ok(number) => PortRef::Number(number, end),
            Err(_) => PortRef::Named(name.clone()),
        },
        Some(value) => {
            let number = value.as_u64().and_then(|p| u16::try_from(p).ok());
            PortRef::Number(number.ok_or_else(|| format!("port {value} is not a port number"))?, end)
        }
    };
    Ok(PortSpec { protocol, port })
}

fn parse_rules(rules: Option<&Value>, peers_field: &str) -> Result<Vec<RuleSpec>, String> {
    let mut parsed = Vec::new();
    for rule in rules.and_then(Value::as_array).into_iter().flatten() {
        let peers = match rule.get(peers_field).and_then(Value::as_array) {
            None => None,
            Some(list) if list.is_empty() => None,
            Some(list) => {
                let mut peers = Vec::new();
                for peer in list {
                    peers.extend(parse_peer(peer)?);
                }
                Some(peers)
            }
        };
        let ports = rule.get("ports").and_then(Value::as_array).into_iter().flatten();
        let ports = ports.map(parse_port).collect::<Result<Vec<_>, _>>()?;
        parsed.push(RuleSpec { peers, ports });
    }
    Ok(parsed)
}

impl Policy {
    /// Parses a NetworkPolicy; an error names what is wrong (the policy is
    /// then left out, as the API server would have refused it).
    pub fn from_object(policy: &Value) -> Result<Policy, String> {
        let namespace = policy.pointer("/metadata/namespace").and_then(Value::as_str).ok_or("no namespace")?;
        let name = policy.pointer("/metadata/name").and_then(Value::as_str).ok_or("no name")?;
        let spec = policy.get("spec").cloned().unwrap_or(Value::Null);
        let types: Option<Vec<&str>> =
            spec.get("policyTypes").and_then(Value::as_array).map(|t| t.iter().filter_map(Value::as_str).collect());
        let has_egress_rules = spec.get("egress").and_then(Value::as_array).is_some_and(|e| !e.is_empty());
        let (ingress, egress) = match types {
            Some(types) if !types.is_empty() => (types.contains(&"Ingress"), types.contains(&"Egress")),
            _ => (true, has_egress_rules),
        };
        Ok(Policy {
            namespace: namespace.to_string(),
            name: name.to_string(),
            pod_selector: selector(spec.get("podSelector"))?,
            ingress: if ingress { Some(parse_rules(spec.get("ingress"), "from")?) } else { None },
            egress: if egress { Some(parse_rules(spec.get("egress"), "to")?) } else { None },
        })
    }

    pub fn selects(&self, pod: &PodInfo) -> bool {
        pod.namespace == self.namespace && self.pod_selector.matches(&pod.labels)
    }
}

/// A resolved peer: pod addresses, an address block, or everyone.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Peer {
    Any,
    Pods(BTreeSet<Ipv4Addr>),
    Block { cidr: (Ipv4Addr, u8), except: Vec<(Ipv4Addr, u8)> },
}

/// A resolved port range `first..=last` of one protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    pub protocol: Protocol,
    pub first: u16,
    pub last: u16,
}

/// Traffic one rule lets through: from / to `peer`, on `ports` (`None`:
/// every port and protocol).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Allow {
    pub peer: Peer,
    pub ports: Option<Vec<PortRange>>,
}

/// The policy of one isolated local pod: `None` in a direction where no
/// policy selects it (everything allowed); an empty list denies all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPolicy {
    pub ip: Ipv4Addr,
    pub pod: String,
    pub ingress: Option<Vec<Allow>>,
    pub egress: Option<Vec<Allow>>,
}

/// Everything the decision reads.
pub struct PolicyInputs<'a> {
    pub node_name: &'a str,
    pub pods: &'a [&'a PodInfo],
    /// Namespace name → its labels as a selector target.
    pub namespaces: &'a BTreeMap<String, Value>,
    pub policies: &'a [&'a Policy],
}

impl PolicyInputs<'_> {
    fn namespace_matches(&self, namespace: &str, selector: &LabelSelector) -> bool {
        match self.namespaces.get(namespace) {
            Some(labels) => selector.matches(labels),
            None => selector.matches(&namespace_labels(namespace, None)),
        }
    }

    fn peer_pods(&self, policy: &Policy, namespaces: &Option<LabelSelector>, pods: &LabelSelector) -> Vec<&PodInfo> {
        let in_scope = |pod: &PodInfo| match namespaces {
            None => pod.namespace == policy.namespace,
            Some(selector) => self.namespace_matches(&pod.namespace, selector),
        };
        self.pods.iter().copied().filter(|pod| in_scope(pod) && pods.matches(&pod.labels)).collect()
    }

    /// The port ranges of a rule; a named port is looked up in `targets`'
    /// containers (the pod itself for ingress, the peers for egress).
    fn ports(&self, specs: &[PortSpec], targets: &[&PodInfo]) -> Option<Vec<PortRange>> {
        if specs.is_empty() {
            return None;
        }
        let mut ranges = BTreeSet::new();
        for spec in specs {
            let protocol = spec.protocol;
            match &spec.port {
                PortRef::Any => {
                    ranges.insert(PortRange { protocol, first: 0, last: u16::MAX });
                }
                PortRef::Number(first, end) => {
                    let last = end.filter(|end| end >= first).unwrap_or(*first);
                    ranges.insert(PortRange { protocol, first: *first, last });
                }
                PortRef::Named(name) => {
                    for pod in targets {
                        for (port_name, port_protocol, number) in &pod.named_ports {
                            if port_name == name && *port_protocol == protocol {
                                ranges.insert(PortRange { protocol, first: *number, last: *number });
                            }
                        }
                    }
                }
            }
        }
        Some(ranges.into_iter().collect())
    }

    /// The union of what the selecting policies' rules allow; `pod` is the
    /// local pod, `ingress` picks the direction.
    fn allowed(&self, pod: &PodInfo, ingress: bool) -> Option<Vec<Allow>> {
        let mut isolated = false;
        let mut allows = BTreeSet::new();
        for policy in self.policies.iter().filter(|p| p.selects(pod)) {
            let Some(rules) = (if ingress { &policy.ingress } else { &policy.egress }) else { continue };
            isolated = true;
            for rule in rules {
                let mut resolved: Vec<(Peer, Vec<&PodInfo>)> = Vec::new();
                match &rule.peers {
                    None => resolved.push((Peer::Any, self.pods.to_vec())),
                    Some(peers) => {
                        for peer in peers {
                            match peer {
                                PeerSpec::Pods { namespaces, pods } => {
                                    let matched = self.peer_pods(policy, namespaces, pods);
                                    let ips: BTreeSet<Ipv4Addr> = matched.iter().map(|p| p.ip).collect();
                                    if !ips.is_empty() {
                                        resolved.push((Peer::Pods(ips), matched));
                                    }
                                }
                                PeerSpec::Block { cidr, except } => {
                                    let except = except.iter().map(|c| (c.addr, c.prefix)).collect();
                                    let block = Peer::Block { cidr: (cidr.addr, cidr.prefix), except };
                                    resolved.push((block, self.pods.to_vec()));
                                }
                            }
                        }
                    }
                }
                for (peer, peer_pods) in resolved {
                    let targets: Vec<&PodInfo> = if ingress { vec![pod] } else { peer_pods };
                    let ports = self.ports(&rule.ports, &targets);
                    // Ports were listed but none resolved (an unknown name): nothing allowed.
                    if ports.as_ref().is_some_and(Vec::is_empty) {
                        continue;
                    }
                    allows.insert(Allow { peer, ports });
                }
            }
        }
        isolated.then(|| allows.into_iter().collect())
    }

    /// The isolated pods on this node, ordered by address.
    pub fn local_policies(&self) -> Vec<PodPolicy> {
        let mut local: Vec<&PodInfo> =
            self.pods.iter().copied().filter(|p| p.node.as_deref() == Some(self.node_name)).collect();
        local.sort_by_key(|p| p.ip);
        local.dedup_by_key(|p| p.ip);
        local
            .into_iter()
            .filter_map(|pod| {
                let ingress = self.allowed(pod, true);
                let egress = self.allowed(pod, false);
                (ingress.is_some() || egress.is_some()).then(|| PodPolicy {
                    ip: pod.ip,
                    pod: format!("{}/{}", pod.namespace, pod.name),
                    ingress,
                    egress,
                })
            })
            .collect()
    }
}
