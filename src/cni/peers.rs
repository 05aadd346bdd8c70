//! The overlay's desired state as pure functions: which peers the Node
//! objects describe (flannel's annotations), the annotations this node
//! publishes, and the route / neighbour / FDB entries to add and remove to
//! get from what the kernel has to what the peers need.

use super::link::{format_mac, parse_mac};
use super::subnet::Subnet;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::IpAddr;

pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
pub const VNI: u32 = 1;

/// Another node of the overlay.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub node: String,
    pub pod_cidr: Subnet,
    pub vtep_mac: [u8; 6],
    pub public_ip: IpAddr,
}

/// The annotations that make this node a peer for the others.
pub fn annotations(vtep_mac: &[u8], public_ip: IpAddr) -> Value {
    json!({
        BACKEND_DATA: json!({"VNI": VNI, "VtepMAC": format_mac(vtep_mac)}).to_string(),
        BACKEND_TYPE: "vxlan",
        PUBLIC_IP: public_ip.to_string(),
    })
}

/// The peer a Node object describes, if it has a podCIDR and vxlan annotations.
pub fn peer_of(node: &Value) -> Option<Peer> {
    let annotation = |key: &str| node.pointer("/metadata/annotations")?.get(key)?.as_str();
    if annotation(BACKEND_TYPE)? != "vxlan" {
        return None;
    }
    let data: Value = serde_json::from_str(annotation(BACKEND_DATA)?).ok()?;
    Some(Peer {
        node: node.pointer("/metadata/name")?.as_str()?.to_string(),
        pod_cidr: Subnet::parse(node.pointer("/spec/podCIDR")?.as_str()?).ok()?,
        vtep_mac: parse_mac(data.get("VtepMAC")?.as_str()?)?,
        public_ip: annotation(PUBLIC_IP)?.parse().ok()?,
    })
}

/// Every peer of `self_node` among `nodes`.
pub fn peers<'a>(nodes: impl IntoIterator<Item = &'a Value>, self_node: &str) -> Vec<Peer> {
    let mut peers: Vec<Peer> = nodes.into_iter().filter_map(peer_of).filter(|p| p.node != self_node).collect();
    peers.sort();
    peers
}

/// What the kernel holds (or should hold) on the VXLAN device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverlayState {
    /// podCIDR → via (the peer's podCIDR network address), onlink.
    pub routes: BTreeSet<(Subnet, IpAddr)>,
    /// peer VTEP address (podCIDR network address) → peer VTEP MAC.
    pub neighbours: BTreeSet<(IpAddr, [u8; 6])>,
    /// peer VTEP MAC → peer node IP.
    pub fdb: BTreeSet<([u8; 6], IpAddr)>,
}

impl OverlayState {
    /// The entries `peers` need.
    pub fn desired(peers: &[Peer]) -> OverlayState {
        let mut state = OverlayState::default();
        for peer in peers {
            let vtep = peer.pod_cidr.network();
            state.routes.insert((peer.pod_cidr, vtep));
            state.neighbours.insert((vtep, peer.vtep_mac));
            state.fdb.insert((peer.vtep_mac, peer.public_ip));
        }
        state
    }
}

/// The changes from `current` to `desired`: removals first, then additions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverlayPlan {
    pub remove: OverlayState,
    pub add: OverlayState,
}

impl OverlayPlan {
    pub fn between(current: &OverlayState, desired: &OverlayState) -> OverlayPlan {
        fn diff<T: Ord + Clone>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> BTreeSet<T> {
            a.difference(b).cloned().collect()
        }
        OverlayPlan {
            remove: OverlayState {
                routes: diff(&current.routes, &desired.routes),
                neighbours: diff(&current.neighbours, &desired.neighbours),
                fdb: diff(&current.fdb, &desired.fdb),
            },
            add: OverlayState {
                routes: diff(&desired.routes, &current.routes),
                neighbours: diff(&desired.neighbours, &current.neighbours),
                fdb: diff(&desired.fdb, &current.fdb),
            },
        }
    }

    pub fn is_empty(&self) -> bool {
        self.remove == OverlayState::default() && self.add == OverlayState::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: &str, mac: &str, ip: &str) -> Value {
        json!({"metadata": {"name": name, "annotations": annotations(&parse_mac(mac).expect("mac"), ip.parse().expect("ip"))},
               "spec": {"podCIDR": cidr}})
    }

    #[test]
    fn annotations_are_flannels() {
        let a = annotations(&[0x0a, 0, 0, 0, 0, 1], "192.168.70.2".parse().expect("ip"));
        assert_eq!(a[BACKEND_DATA], r#"{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"}"#);
        assert_eq!(a[BACKEND_TYPE], "vxlan");
        assert_eq!(a[PUBLIC_IP], "192.168.70.2");
    }

    #[test]
    fn peers_skip_self_and_incomplete_nodes() {
        let nodes = vec![
            node("a", "10.42.0.0/24", "0a:00:00:00:00:01", "192.168.70.1"),
            node("b", "10.42.1.0/24", "0a:00:00:00:00:02", "192.168.70.2"),
            json!({"metadata": {"name": "c"}, "spec": {"podCIDR": "10.42.2.0/24"}}),
            json!({"metadata": {"name": "d", "annotations": {BACKEND_TYPE: "vxlan"}}, "spec": {}}),
        ];
        let peers = peers(&nodes, "a");
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].node, "b");
        assert_eq!(peers[0].pod_cidr.to_string(), "10.42.1.0/24");
        assert_eq!(peers[0].public_ip.to_string(), "192.168.70.2");
    }

    #[test]
    fn plans_add_change_and_remove() {
        let b = peer_of(&node("b", "10.42.1.0/24", "0a:00:00:00:00:02", "192.168.70.2")).expect("b");
        let c = peer_of(&node("c", "10.42.2.0/24", "0a:00:00:00:00:03", "192.168.70.3")).expect("c");
        let empty = OverlayState::default();
        let both = OverlayState::desired(&[b.clone(), c.clone()]);
        let plan = OverlayPlan::between(&empty, &both);
        assert_eq!(plan.add, both);
        assert!(plan.remove.routes.is_empty());
        assert!(OverlayPlan::between(&both, &both).is_empty());
        // c changes its VTEP MAC (its VXLAN device was recreated): neighbour and
        // FDB entry are replaced, the route stays.
        let mut c2 = c.clone();
        c2.vtep_mac = [0x0a, 0, 0, 0, 0, 0x33];
        let plan = OverlayPlan::between(&both, &OverlayState::desired(&[b.clone(), c2]));
        assert!(plan.add.routes.is_empty() && plan.remove.routes.is_empty());
        assert_eq!(plan.remove.neighbours.len(), 1);
        assert_eq!(plan.add.fdb.iter().next().map(|e| e.0[5]), Some(0x33));
        // b goes away: everything of b is removed.
        let plan = OverlayPlan::between(&both, &OverlayState::desired(&[c]));
        assert_eq!(plan.remove, OverlayState::desired(&[b]));
        assert!(plan.add == OverlayState::default());
    }
}
