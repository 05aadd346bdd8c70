//! The node's pod bridge `kube-bridge`: holds the gateway address (first
//! address of the podCIDR), every pod's host-side veth is its port. Also
//! the node sysctls pod traffic needs (forwarding, bridge netfilter).

use super::error::{CniError, Result, errno};
use super::link;
use super::netns;
use super::subnet::Subnet;
use rtnetlink::{Handle, LinkBridge};

pub const BRIDGE: &str = "kube-bridge";

/// Creates (or reuses) the bridge with the gateway address of `pod_cidr`,
/// up; returns its index.
pub async fn ensure(handle: &Handle, pod_cidr: Subnet, mtu: u32) -> Result<u32> {
    let gateway = pod_cidr
        .gateway()
        .ok_or_else(|| CniError::Subnet { text: pod_cidr.to_string(), message: "too small for a gateway".into() })?;
    let index = match link::by_name(handle, BRIDGE).await? {
        Some(existing) => existing.header.index,
        None => {
            match handle.link().add(LinkBridge::new(BRIDGE).mtu(mtu).build()).execute().await {
                Ok(()) => {}
                Err(err) if errno(&err) == Some(libc::EEXIST) => {}
                Err(err) => return Err(CniError::netlink(format!("create bridge {BRIDGE}"))(err)),
            }
            link::by_name(handle, BRIDGE)
                .await?
                .ok_or_else(|| CniError::Host(format!("bridge {BRIDGE} vanished right after its creation")))?
                .header
                .index
        }
    };
    link::add_address(handle, index, gateway, pod_cidr.prefix, BRIDGE).await?;
    link::set_up(handle, index, None, BRIDGE).await?;
    Ok(index)
}

/// Forwarding on, and bridged IPv4 traffic through netfilter (the service
/// proxy needs it for replies between pods of one bridge). Both are
/// per-namespace sysctls of the calling thread's namespace.
pub fn node_sysctls() -> Result<()> {
    netns::write_sysctl("net/ipv4/ip_forward", "1")?;
    if let Err(err) = netns::write_sysctl("net/bridge/bridge-nf-call-iptables", "1") {
        tracing::warn!(error = %err, "bridged traffic will bypass netfilter (no br_netfilter?)");
    }
    Ok(())
}
