//! The service proxy (kube-proxy's nftables mode, built in): Services,
//! EndpointSlices and the agent's Node become one nftables table,
//! `inet kube-proxy`, applied atomically with `nft -j -f -`.
//!
//! Flow: [`state`] caches the API objects and marks changed Services dirty;
//! [`model`] turns one Service and its slices into per-port desired state;
//! [`render`] turns that into chains, sets and map elements (a [`Fragment`]
//! per Service, plus the fixed [`base`] chains); [`plan`] diffs fragments
//! into one transaction (full or incremental); [`nft`] runs it; [`sync`] is
//! the loop the agent spawns. NetworkPolicy follows the same path:
//! [`policy_state`] caches Pods, Namespaces and NetworkPolicies,
//! [`policy_model`] decides per local pod, [`policy_render`] renders one
//! more fragment.

pub mod base;
pub mod error;
pub mod expr;
pub mod fixtures;
pub mod model;
pub mod nft;
pub mod plan;
pub mod policy_model;
pub mod policy_render;
pub mod policy_state;
pub mod render;
pub mod state;
pub mod sync;

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod policy_tests;

pub use error::NetfilterError;
pub use render::Fragment;
pub use sync::run;

use crate::server::config::Cidr;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The table the proxy owns; nothing else is ever touched.
pub const TABLE: &str = "kube-proxy";

/// What the proxy needs to know besides the API objects.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyConfig {
    /// This node: endpoints on it are "local" for the Local traffic policies.
    pub node_name: String,
    /// The pod network: traffic from outside it to a ClusterIP is masqueraded,
    /// pod traffic leaving it is masqueraded.
    pub cluster_cidr: Option<Cidr>,
    /// The Service network: addresses in it without a Service are rejected.
    pub service_cidr: Option<Cidr>,
    /// The cluster DNS Service address, DNAT'd to `dns_target` port 53.
    pub cluster_dns: Option<Ipv4Addr>,
    /// The node-local DNS server (the node's gateway, first address of its
    /// podCIDR); the sync loop fills it from the Node object.
    pub dns_target: Option<Ipv4Addr>,
    /// How often the whole table is rebuilt to repair drift.
    pub full_resync: Duration,
    /// How long a burst of changes is collected before one sync.
    pub debounce: Duration,
}

impl ProxyConfig {
    pub fn new(node_name: &str) -> ProxyConfig {
        ProxyConfig {
            node_name: node_name.to_string(),
            cluster_cidr: None,
            service_cidr: None,
            cluster_dns: None,
            dns_target: None,
            full_resync: Duration::from_secs(300),
            debounce: Duration::from_millis(50),
        }
    }
}

impl ProxyConfig {
    /// The proxy of an agent: its node, networks and cluster DNS address
    /// (the node-local DNS address comes later, from the Node's podCIDR).
    pub fn for_agent(agent: &crate::agent::AgentConfig) -> ProxyConfig {
        let mut config = ProxyConfig::new(&agent.node_name);
        config.cluster_cidr = Cidr::parse("cluster-cidr", &agent.cluster_cidr).ok();
        config.service_cidr = Cidr::parse("service-cidr", &agent.service_cidr).ok();
        config.cluster_dns = match agent.cluster_dns {
            std::net::IpAddr::V4(ip) => Some(ip),
            std::net::IpAddr::V6(_) => None,
        };
        config
    }
}
