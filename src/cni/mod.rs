//! Pod networking, built in (what flannel's vxlan backend plus the
//! `bridge` and `host-local` CNI plugins do in k3s): per node a bridge with
//! the podCIDR's gateway, a veth pair per pod with an address from
//! host-local IPAM, and a VXLAN overlay to the other nodes, all through
//! netlink. The agent talks to it through the narrow [`PodNetwork`] seam;
//! [`Netlink`] is the real implementation and [`FakeNetwork`] the one for
//! unit tests.

pub mod agent;
pub mod bridge;
pub mod error;
pub mod fake;
pub mod ipam;
pub mod link;
pub mod netns;
pub mod peers;
pub mod real;
pub mod subnet;
pub mod veth;
pub mod vxlan;

pub use error::CniError;
pub use fake::{FakeNetwork, NetworkCall};
pub use peers::Peer;
pub use real::{Netlink, NodeConfig};
pub use subnet::Subnet;

use error::Result;
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

/// The pod whose network is added.
#[derive(Clone, Copy, Debug)]
pub struct PodRequest<'a> {
    pub uid: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// The pod's network namespace (a bind-mounted nsfs file).
    pub netns: &'a Path,
}

/// What node setup made, for the Node's annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSetup {
    pub pod_cidr: Subnet,
    pub gateway: IpAddr,
    pub vtep_mac: Vec<u8>,
    pub public_ip: IpAddr,
    pub mtu: u32,
}

/// The seam between the agent and the pod network.
pub trait PodNetwork: Send + Sync {
    /// Sets up the node's bridge and overlay for its `pod_cidr` (idempotent).
    fn setup_node(&self, pod_cidr: Subnet) -> Result<NodeSetup>;
    /// Gives the pod an address and connects it (idempotent: a pod keeps its address).
    fn add_pod(&self, pod: &PodRequest<'_>) -> Result<IpAddr>;
    /// Disconnects the pod and frees its address.
    fn delete_pod(&self, uid: &str) -> Result<()>;
    /// The address the pod holds, if any.
    fn pod_ip(&self, uid: &str) -> Option<IpAddr>;
    /// Frees the addresses of pods not in `live` (after an agent crash).
    fn release_unknown(&self, live: &HashSet<String>) -> Result<Vec<IpAddr>>;
    /// Programs the overlay for exactly these peers.
    fn sync_peers(&self, peers: &[Peer]) -> Result<()>;
}
