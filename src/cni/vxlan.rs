//! The overlay device `kube-vxlan`, like flannel's vxlan backend: VNI 1,
//! UDP 8472, local = the node IP on the underlying interface, learning off,
//! MTU = underlying MTU − 50, address = the podCIDR's network address (/32).
//! Peers are programmed as routes, permanent neighbours and FDB entries on
//! it, reconciled against what the kernel has ([`super::peers::OverlayPlan`]).

use super::error::{CniError, Result, errno};
use super::link;
use super::peers::{OverlayPlan, OverlayState, VNI};
use super::subnet::Subnet;
use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::{Handle, IpVersion, LinkVxlan, RouteMessageBuilder};
use std::collections::BTreeMap;
use std::net::IpAddr;

pub const VXLAN: &str = "kube-vxlan";
pub const PORT: u16 = 8472;
/// Outer IPv4 + UDP + VXLAN + inner Ethernet headers.
pub const OVERHEAD: u32 = 50;

/// The device as set up: what peers need to know and what pods use.
#[derive(Clone, Debug)]
pub struct Vxlan {
    pub index: u32,
    pub mac: Vec<u8>,
    pub mtu: u32,
}

/// The interface the overlay runs over: `iface` if given, else the one
/// holding `node_ip`; returns its index and MTU.
pub async fn underlay(handle: &Handle, node_ip: IpAddr, iface: Option<&str>) -> Result<(u32, u32)> {
    let found = match iface {
        Some(name) => link::by_name(handle, name)
            .await?
            .ok_or_else(|| CniError::Host(format!("--flannel-iface {name}: no such interface")))?,
        None => {
            let index = link::holding_address(handle, node_ip).await?.ok_or_else(|| {
                CniError::Host(format!("no interface holds the node IP {node_ip} (set --flannel-iface or --node-ip)"))
            })?;
            link::by_index(handle, index)
                .await?
                .ok_or_else(|| CniError::Host(format!("interface #{index} of {node_ip} vanished")))?
        }
    };
    Ok((found.header.index, link::mtu(&found).unwrap_or(1500)))
}

fn vxlan_info(link: &LinkMessage) -> Vec<InfoVxlan> {
    link.attributes
        .iter()
        .filter_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => Some(infos),
            _ => None,
        })
        .flatten()
        .filter_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(data)) => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// True when an existing device has the configuration we would give it.
fn matches(link: &LinkMessage, node_ip: IpAddr, underlay: u32) -> bool {
    let info = vxlan_info(link);
    let local = info.iter().any(|i| match (i, node_ip) {
        (InfoVxlan::Local(a), IpAddr::V4(ip)) => *a == ip,
        (InfoVxlan::Local6(a), IpAddr::V6(ip)) => *a == ip,
        _ => false,
    });
    local
        && info.contains(&InfoVxlan::Id(VNI))
        && info.contains(&InfoVxlan::Link(underlay))
        && info.contains(&InfoVxlan::Port(PORT))
}

/// Creates (or keeps, or recreates when its settings changed) the device and
/// gives it the podCIDR's network address.
pub async fn ensure(handle: &Handle, node_ip: IpAddr, underlay: u32, mtu: u32, pod_cidr: Subnet) -> Result<Vxlan> {
    let existing = link::by_name(handle, VXLAN).await?;
    let keep = existing.as_ref().is_some_and(|l| matches(l, node_ip, underlay));
    if !keep {
        if existing.is_some() {
            tracing::info!(device = VXLAN, "recreating the VXLAN device (node IP or interface changed)");
            link::delete_by_name(handle, VXLAN).await?;
        }
        let builder = LinkVxlan::new(VXLAN, VNI).dev(underlay).port(PORT).learning(false).mtu(mtu);
        let builder = match node_ip {
            IpAddr::V4(ip) => builder.local(ip),
            IpAddr::V6(ip) => builder.local6(ip),
        };
        handle
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(CniError::netlink(format!("create {VXLAN} (VNI {VNI}, port {PORT}, local {node_ip})")))?;
    }
    let device = link::by_name(handle, VXLAN)
        .await?
        .ok_or_else(|| CniError::Host(format!("{VXLAN} vanished right after its creation")))?;
    let index = device.header.index;
    let host_prefix = if pod_cidr.is_ipv4() { 32 } else { 128 };
    link::add_address(handle, index, pod_cidr.network(), host_prefix, VXLAN).await?;
    link::set_up(handle, index, Some(mtu), VXLAN).await?;
    let mac = link::mac(&device).ok_or_else(|| CniError::Host(format!("{VXLAN} has no MAC address")))?;
    Ok(Vxlan { index, mac, mtu })
}

type Route = (Subnet, IpAddr);
type Neighbour = (IpAddr, [u8; 6]);
type Fdb = ([u8; 6], IpAddr);

/// What the kernel has on the device, with the messages to delete each entry.
#[derive(Default)]
struct Current {
    routes: BTreeMap<Route, RouteMessage>,
    neighbours: BTreeMap<Neighbour, NeighbourMessage>,
    fdb: BTreeMap<Fdb, NeighbourMessage>,
}

impl Current {
    fn state(&self) -> OverlayState {
        OverlayState {
            routes: self.routes.keys().cloned().collect(),
            neighbours: self.neighbours.keys().cloned().collect(),
            fdb: self.fdb.keys().cloned().collect(),
        }
    }
}

fn route_address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn neighbour_address(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        NeighbourAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn lladdr(message: &NeighbourMessage) -> Option<[u8; 6]> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(mac) => mac.as_slice().try_into().ok(),
        _ => None,
    })
}

fn destination(message: &NeighbourMessage) -> Option<IpAddr> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(d) => neighbour_address(d),
        _ => None,
    })
}

async fn read(handle: &Handle, index: u32) -> Result<Current> {
    let mut current = Current::default();
    for version in [IpVersion::V4, IpVersion::V6] {
        let query = match version {
            IpVersion::V4 => RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            IpVersion::V6 => RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        };
        let mut routes = handle.route().get(query).execute();
        while let Some(route) = routes.try_next().await.map_err(CniError::netlink("list routes"))? {
            let on_device = route.attributes.contains(&RouteAttribute::Oif(index));
            let main = route.header.table == RouteHeader::RT_TABLE_MAIN;
            let find = |dst: bool| {
                route.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(d) if dst => route_address(d),
                    RouteAttribute::Gateway(g) if !dst => route_address(g),
                    _ => None,
                })
            };
            if let (true, true, Some(dst), Some(via)) = (on_device, main, find(true), find(false)) {
                let subnet = Subnet { addr: dst, prefix: route.header.destination_prefix_length };
                current.routes.insert((subnet, via), route);
            }
        }
    }
    let mut neighbours = handle.neighbours().get().execute();
    while let Some(n) = neighbours.try_next().await.map_err(CniError::netlink("list neighbours"))? {
        if n.header.ifindex != index || n.header.state != NeighbourState::Permanent {
            continue;
        }
        if let (Some(ip), Some(mac)) = (destination(&n), lladdr(&n)) {
            current.neighbours.insert((ip, mac), n);
        }
    }
    let mut fdb = handle.neighbours().get().set_address_family(AddressFamily::Bridge).execute();
    while let Some(n) = fdb.try_next().await.map_err(CniError::netlink("list FDB entries"))? {
        if n.header.ifindex != index {
            continue;
        }
        if let (Some(mac), Some(dst)) = (lladdr(&n), destination(&n)) {
            current.fdb.insert((mac, dst), n);
        }
    }
    Ok(current)
}

fn peer_route(index: u32, (subnet, via): &Route) -> RouteMessage {
    match (subnet.addr, via) {
        (IpAddr::V4(dst), IpAddr::V4(gw)) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix(dst, subnet.prefix)
            .gateway(*gw)
            .output_interface(index)
            .onlink()
            .build(),
        (IpAddr::V6(dst), IpAddr::V6(gw)) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
            .destination_prefix(dst, subnet.prefix)
            .gateway(*gw)
            .output_interface(index)
            .onlink()
            .build(),
        _ => RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
    }
}

fn tolerate(result: std::result::Result<(), rtnetlink::Error>, ok: i32, what: String) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(err) if errno(&err) == Some(ok) => Ok(()),
        Err(err) => Err(CniError::netlink(what)(err)),
    }
}

/// Brings the device's routes, neighbours and FDB entries to `desired`;
/// returns the plan it applied.
pub async fn sync(handle: &Handle, index: u32, desired: &OverlayState) -> Result<OverlayPlan> {
    let current = read(handle, index).await?;
    let plan = OverlayPlan::between(&current.state(), desired);
    for key in &plan.remove.routes {
        if let Some(message) = current.routes.get(key) {
            let result = handle.route().del(message.clone()).execute().await;
            tolerate(result, libc::ESRCH, format!("remove route {} via {}", key.0, key.1))?;
        }
    }
    for key in &plan.remove.neighbours {
        if let Some(message) = current.neighbours.get(key) {
            let result = handle.neighbours().del(message.clone()).execute().await;
            tolerate(result, libc::ENOENT, format!("remove neighbour {}", key.0))?;
        }
    }
    for key in &plan.remove.fdb {
        if let Some(message) = current.fdb.get(key) {
            let result = handle.neighbours().del(message.clone()).execute().await;
            tolerate(result, libc::ENOENT, format!("remove FDB entry {}", link::format_mac(&key.0)))?;
        }
    }
    // Neighbour and FDB first, so the route never points at an unresolved VTEP.
    for (ip, mac) in &plan.add.neighbours {
        let result = handle
            .neighbours()
            .add(index, *ip)
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await;
        tolerate(result, libc::EEXIST, format!("add neighbour {ip} → {}", link::format_mac(mac)))?;
    }
    for (mac, dst) in &plan.add.fdb {
        let result = handle
            .neighbours()
            .add_bridge(index, mac)
            .destination(*dst)
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await;
        tolerate(result, libc::EEXIST, format!("add FDB entry {} → {dst}", link::format_mac(mac)))?;
    }
    for key in &plan.add.routes {
        let result = handle.route().add(peer_route(index, key)).replace().execute().await;
        tolerate(result, libc::EEXIST, format!("add route {} via {} onlink", key.0, key.1))?;
    }
    Ok(plan)
}
