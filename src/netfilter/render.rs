//! One Service's desired state rendered as nft objects: its chains (with
//! their rules), its affinity sets and its entries in the shared verdict
//! maps. Pure; the fixed chains and maps live in [`super::base`].
//!
//! Per port: `svc-…` chooses among all endpoints at random (`numgen`), `local-…` among this
//! node's (Local traffic policies), `ext-…` handles NodePort / external /
//! LoadBalancer traffic, and one `ep-…@ip:port` chain per endpoint DNATs.

use super::ProxyConfig;
use super::base::{MARK_FOR_MASQUERADE, REJECT};
use super::expr::{self, Stmt};
use super::model::{Endpoint, Protocol, ServicePort};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The shared verdict maps a Service adds elements to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapName {
    /// `ip daddr . meta l4proto . th dport` → the service's chain.
    ServiceIps,
    /// `meta l4proto . th dport` on a node address → the service's chain.
    ServiceNodePorts,
    /// Same keys, checked in the filter hooks: reject (no endpoints) or drop.
    NoEndpointServices,
    NoEndpointNodePorts,
}

impl MapName {
    pub const ALL: [MapName; 4] =
        [MapName::ServiceIps, MapName::ServiceNodePorts, MapName::NoEndpointServices, MapName::NoEndpointNodePorts];

    pub fn nft(self) -> &'static str {
        match self {
            MapName::ServiceIps => "service-ips",
            MapName::ServiceNodePorts => "service-nodeports",
            MapName::NoEndpointServices => "no-endpoint-services",
            MapName::NoEndpointNodePorts => "no-endpoint-nodeports",
        }
    }

    /// Whether the map is keyed by address too.
    pub fn has_address(self) -> bool {
        matches!(self, MapName::ServiceIps | MapName::NoEndpointServices)
    }
}

/// The key of a map element; `ip` is `None` in the node-port maps.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ElementKey {
    pub map: MapName,
    pub ip: Option<IpAddr>,
    pub protocol: Protocol,
    pub port: u16,
}

/// What a map element does with the packet.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Goto(String),
    Drop,
}

/// A session-affinity set: client addresses remembered for `timeout` seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AffinitySet {
    pub timeout: u32,
}

/// Everything one Service contributes to the table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fragment {
    /// Chain name → its rules, in order.
    pub chains: BTreeMap<String, Vec<Vec<Stmt>>>,
    pub sets: BTreeMap<String, AffinitySet>,
    pub elements: BTreeMap<ElementKey, Target>,
}

/// `<ns>/<name>/<proto>/<port name or number>`: unique per service port, as
/// Kubernetes names never contain `/`.
fn port_id(port: &ServicePort) -> String {
    format!("{}/{}/{}/{}", port.service.namespace, port.service.name, port.protocol.nft(), port.label)
}

fn endpoint_id(port: &ServicePort, endpoint: &Endpoint) -> String {
    match endpoint.ip {
        IpAddr::V4(ip) => format!("{}@{ip}:{}", port_id(port), endpoint.port),
        IpAddr::V6(ip) => format!("{}@[{ip}]:{}", port_id(port), endpoint.port),
    }
}

/// Renders the ports of one Service. IPv4 only for now: IPv6 addresses and
/// endpoints are left out (the maps and base chains are IPv4).
pub fn render_service(ports: &[ServicePort], config: &ProxyConfig) -> Fragment {
    let mut fragment = Fragment::default();
    for port in ports {
        render_port(&mut fragment, port, config);
    }
    fragment
}

fn render_port(fragment: &mut Fragment, port: &ServicePort, config: &ProxyConfig) {
    let id = port_id(port);
    let all: Vec<&Endpoint> = port.endpoints.iter().filter(|e| e.ip.is_ipv4()).collect();
    let local: Vec<&Endpoint> = all.iter().copied().filter(|e| e.local).collect();
    let cluster_ips: Vec<IpAddr> = port.cluster_ips.iter().copied().filter(IpAddr::is_ipv4).collect();
    let external_ips: Vec<IpAddr> = port.external_ips.iter().copied().filter(IpAddr::is_ipv4).collect();
    let element = |map: MapName, ip: Option<IpAddr>| ElementKey { map, ip, protocol: port.protocol, port: port.port };
    let node_port_key =
        |map: MapName, node_port: u16| ElementKey { map, ip: None, protocol: port.protocol, port: node_port };

    if all.is_empty() {
        // No endpoint anywhere: connections are refused at once, not left to time out.
        let reject = Target::Goto(REJECT.to_string());
        for ip in cluster_ips.iter().chain(&external_ips) {
            fragment.elements.insert(element(MapName::NoEndpointServices, Some(*ip)), reject.clone());
        }
        if let Some(node_port) = port.node_port {
            fragment.elements.insert(node_port_key(MapName::NoEndpointNodePorts, node_port), reject);
        }
        return;
    }

    let cluster_chain = format!("svc-{id}");
    let local_chain = format!("local-{id}");
    let mut endpoint_chains = BTreeMap::new();
    for endpoint in &all {
        let chain = format!("ep-{}", endpoint_id(port, endpoint));
        let set = port.affinity_seconds.map(|timeout| {
            let name = format!("aff-{}", endpoint_id(port, endpoint));
            fragment.sets.insert(name.clone(), AffinitySet { timeout });
            name
        });
        fragment.chains.insert(chain.clone(), endpoint_rules(endpoint, port.protocol, set.as_deref()));
        endpoint_chains.insert((endpoint.ip, endpoint.port), (chain, set));
    }
    let choose = |endpoints: &[&Endpoint]| -> Vec<Vec<Stmt>> {
        let mut rules = Vec::new();
        let chosen: Vec<&(String, Option<String>)> =
            endpoints.iter().filter_map(|e| endpoint_chains.get(&(e.ip, e.port))).collect();
        for (chain, set) in &chosen {
            if let Some(set) = set {
                rules.push(vec![expr::client_in(set), expr::goto(chain)]);
            }
        }
        let chains: Vec<String> = chosen.iter().map(|(chain, _)| chain.clone()).collect();
        rules.extend(expr::random_goto(&chains));
        rules
    };

    let mut cluster_rules = Vec::new();
    if let Some(cidr) = &config.cluster_cidr {
        // Off-cluster clients of a ClusterIP are masqueraded so replies come back here.
        cluster_rules.push(vec![
            expr::not_equals(expr::payload("ip", "saddr"), expr::prefix(cidr)),
            expr::jump(MARK_FOR_MASQUERADE),
        ]);
    }
    cluster_rules.extend(choose(&all));
    fragment.chains.insert(cluster_chain.clone(), cluster_rules);
    let needs_local = port.internal_local || port.external_local;
    if needs_local && !local.is_empty() {
        fragment.chains.insert(local_chain.clone(), choose(&local));
    }

    // Traffic from pods and the node itself (ClusterIP).
    let internal = if !port.internal_local {
        Target::Goto(cluster_chain.clone())
    } else if local.is_empty() {
        Target::Drop
    } else {
        Target::Goto(local_chain.clone())
    };
    for ip in &cluster_ips {
        let map = if internal == Target::Drop { MapName::NoEndpointServices } else { MapName::ServiceIps };
        fragment.elements.insert(element(map, Some(*ip)), internal.clone());
    }

    // Traffic from outside (NodePort, externalIPs, LoadBalancer ingress).
    if port.node_port.is_none() && external_ips.is_empty() {
        return;
    }
    let external_chain = format!("ext-{id}");
    let external_rules = if !port.external_local {
        vec![vec![expr::jump(MARK_FOR_MASQUERADE)], vec![expr::goto(&cluster_chain)]]
    } else {
        // Local: the client address is kept, so only this node's endpoints can
        // answer. Pods and the node itself still reach every endpoint.
        let mut rules = Vec::new();
        if let Some(cidr) = &config.cluster_cidr {
            rules
                .push(vec![expr::equals(expr::payload("ip", "saddr"), expr::prefix(cidr)), expr::goto(&cluster_chain)]);
        }
        rules.push(vec![expr::saddr_is_local(), expr::jump(MARK_FOR_MASQUERADE)]);
        rules.push(vec![expr::saddr_is_local(), expr::goto(&cluster_chain)]);
        rules.push(vec![if local.is_empty() { expr::drop() } else { expr::goto(&local_chain) }]);
        rules
    };
    fragment.chains.insert(external_chain.clone(), external_rules);
    for ip in &external_ips {
        fragment.elements.insert(element(MapName::ServiceIps, Some(*ip)), Target::Goto(external_chain.clone()));
    }
    if let Some(node_port) = port.node_port {
        fragment.elements.insert(node_port_key(MapName::ServiceNodePorts, node_port), Target::Goto(external_chain));
    }
}

/// `ep-…`: hairpin masquerade, affinity bookkeeping, DNAT.
fn endpoint_rules(endpoint: &Endpoint, protocol: Protocol, affinity_set: Option<&str>) -> Vec<Vec<Stmt>> {
    let mut rules = vec![vec![
        expr::equals(expr::addr_field(&endpoint.ip, "saddr"), expr::text(endpoint.ip.to_string())),
        expr::jump(MARK_FOR_MASQUERADE),
    ]];
    if let Some(set) = affinity_set {
        rules.push(vec![expr::remember_client(set)]);
    }
    rules.push(vec![
        expr::equals(expr::meta(nftables::expr::MetaKey::L4proto), expr::text(protocol.nft())),
        expr::dnat(&endpoint.ip, endpoint.port),
    ]);
    rules
}
