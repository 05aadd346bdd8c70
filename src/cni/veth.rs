//! One pod's veth pair: the host end (`veth` + 8 hex chars of the pod uid's
//! hash) is a port of the node bridge, the other end is created right in the
//! pod's network namespace as `eth0`, with the pod's address and a default
//! route via the gateway.

use super::error::{CniError, Result, errno};
use super::link;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use sha2::Digest;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The pod side's name, as with every CNI plugin.
pub const POD_IFACE: &str = "eth0";

/// The stable host-side name of the pod with `uid` (at most 15 bytes).
pub fn host_name(uid: &str) -> String {
    let digest = sha2::Sha256::digest(uid.as_bytes());
    format!("veth{}", digest.iter().take(4).map(|b| format!("{b:02x}")).collect::<String>())
}

/// Creates the pair (replacing a leftover one of the same pod) from the
/// node namespace: host end on `bridge`, up; peer `eth0` in `pod_netns`.
pub async fn create(handle: &Handle, host: &str, pod_netns: &Path, bridge: u32, mtu: u32) -> Result<()> {
    link::delete_by_name(handle, host).await?;
    let netns = std::fs::File::open(pod_netns).map_err(CniError::io("open pod network namespace", pod_netns))?;
    let peer = LinkMessageBuilder::<LinkUnspec>::new().name(POD_IFACE).mtu(mtu).setns_by_fd(netns.as_raw_fd()).build();
    let message = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host.to_string())
        .mtu(mtu)
        .controller(bridge)
        .up()
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    handle
        .link()
        .add(message)
        .execute()
        .await
        .map_err(CniError::netlink(format!("create veth {host} with {POD_IFACE} in {}", pod_netns.display())))
}

/// Inside the pod namespace: `eth0` gets `ip/prefix`, goes up, and the
/// default route points at `gateway`.
pub async fn configure_pod_side(handle: &Handle, ip: IpAddr, prefix: u8, gateway: IpAddr) -> Result<()> {
    let eth0 = link::by_name(handle, POD_IFACE)
        .await?
        .ok_or_else(|| CniError::Host(format!("{POD_IFACE} missing in the pod namespace after creation")))?;
    let index = eth0.header.index;
    link::add_address(handle, index, ip, prefix, POD_IFACE).await?;
    link::set_up(handle, index, None, POD_IFACE).await?;
    let route = match gateway {
        IpAddr::V4(gw) => RouteMessageBuilder::<std::net::Ipv4Addr>::new().gateway(gw).output_interface(index).build(),
        IpAddr::V6(gw) => RouteMessageBuilder::<std::net::Ipv6Addr>::new().gateway(gw).output_interface(index).build(),
    };
    match handle.route().add(route).execute().await {
        Ok(()) => Ok(()),
        Err(err) if errno(&err) == Some(libc::EEXIST) => Ok(()),
        Err(err) => Err(CniError::netlink(format!("add the default route via {gateway} in the pod"))(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_stable_and_fit_ifnamsiz() {
        let name = host_name("5f1c2d3e-0000-4000-8000-000000000001");
        assert_eq!(name, host_name("5f1c2d3e-0000-4000-8000-000000000001"));
        assert_ne!(name, host_name("5f1c2d3e-0000-4000-8000-000000000002"));
        assert_eq!(name.len(), 12);
        assert!(name.starts_with("veth"));
    }
}
