//! The real [`PodNetwork`]: netlink in the node's namespace (the agent's own,
//! or one pinned at a path, as in tests) and in each pod's namespace.

use super::error::{CniError, Result};
use super::ipam::Ipam;
use super::peers::{OverlayState, Peer};
use super::subnet::Subnet;
use super::{NodeSetup, PodNetwork, PodRequest, bridge, netns, veth, vxlan};
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// Where and how the node network is set up.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node IP: VXLAN local address and the public IP peers send to.
    pub node_ip: IpAddr,
    /// The interface the overlay runs over (`--flannel-iface`); default: the one holding `node_ip`.
    pub iface: Option<String>,
    /// The IPAM state folder (`<agent data-dir>/ipam`).
    pub ipam_dir: PathBuf,
    /// The node's network namespace; `None`: the calling process's.
    pub netns: Option<PathBuf>,
}

struct Ready {
    setup: NodeSetup,
    ipam: Ipam,
    bridge: u32,
    vxlan: u32,
}

pub struct Netlink {
    config: NodeConfig,
    ready: RwLock<Option<Arc<Ready>>>,
}

impl Netlink {
    pub fn new(config: NodeConfig) -> Netlink {
        Netlink { config, ready: RwLock::new(None) }
    }

    fn ready(&self) -> Result<Arc<Ready>> {
        self.ready.read().ok().and_then(|r| r.clone()).ok_or(CniError::NotReady)
    }
}

impl PodNetwork for Netlink {
    fn setup_node(&self, pod_cidr: Subnet) -> Result<NodeSetup> {
        let (node_ip, iface) = (self.config.node_ip, self.config.iface.clone());
        let (bridge, vxlan, setup) = netns::run(self.config.netns.as_deref(), move |handle| async move {
            bridge::node_sysctls()?;
            let (underlay, underlay_mtu) = vxlan::underlay(&handle, node_ip, iface.as_deref()).await?;
            let mtu = underlay_mtu.saturating_sub(vxlan::OVERHEAD);
            let device = vxlan::ensure(&handle, node_ip, underlay, mtu, pod_cidr).await?;
            let bridge = bridge::ensure(&handle, pod_cidr, mtu).await?;
            let gateway = pod_cidr.gateway().ok_or_else(|| CniError::Subnet {
                text: pod_cidr.to_string(),
                message: "too small for a gateway".into(),
            })?;
            let setup = NodeSetup { pod_cidr, gateway, vtep_mac: device.mac.clone(), public_ip: node_ip, mtu };
            Ok((bridge, device.index, setup))
        })?;
        let ipam = Ipam::open(&self.config.ipam_dir, pod_cidr)?;
        tracing::info!(pod_cidr = %pod_cidr, mtu = setup.mtu, "node pod network ready");
        if let Ok(mut ready) = self.ready.write() {
            *ready = Some(Arc::new(Ready { setup: setup.clone(), ipam, bridge, vxlan }));
        }
        Ok(setup)
    }

    fn add_pod(&self, pod: &PodRequest<'_>) -> Result<IpAddr> {
        let ready = self.ready()?;
        let ip = ready.ipam.allocate(pod.uid)?;
        let host = veth::host_name(pod.uid);
        let (bridge, mtu, gateway, prefix) =
            (ready.bridge, ready.setup.mtu, ready.setup.gateway, ready.setup.pod_cidr.prefix);
        let pod_netns = pod.netns.to_path_buf();
        let result = netns::run(self.config.netns.as_deref(), {
            let (host, pod_netns) = (host.clone(), pod_netns.clone());
            move |handle| async move { veth::create(&handle, &host, &pod_netns, bridge, mtu).await }
        })
        .and_then(|()| {
            netns::run(Some(&pod_netns), move |handle| async move {
                veth::configure_pod_side(&handle, ip, prefix, gateway).await
            })
        });
        if let Err(err) = result {
            // Leave nothing half-made; the address stays with the pod for the retry.
            let _ = netns::run(self.config.netns.as_deref(), move |handle| async move {
                super::link::delete_by_name(&handle, &host).await
            });
            return Err(err);
        }
        tracing::debug!(pod = %format!("{}/{}", pod.namespace, pod.name), ip = %ip, "pod network added");
        Ok(ip)
    }

    fn delete_pod(&self, uid: &str) -> Result<()> {
        let host = veth::host_name(uid);
        netns::run(self.config.netns.as_deref(), move |handle| async move {
            super::link::delete_by_name(&handle, &host).await
        })?;
        self.ready()?.ipam.release(uid)?;
        Ok(())
    }

    fn pod_ip(&self, uid: &str) -> Option<IpAddr> {
        self.ready().ok()?.ipam.lookup(uid)
    }

    fn release_unknown(&self, live: &HashSet<String>) -> Result<Vec<IpAddr>> {
        self.ready()?.ipam.release_unknown(live)
    }

    fn sync_peers(&self, peers: &[Peer]) -> Result<()> {
        let ready = self.ready()?;
        let desired = OverlayState::desired(peers);
        let index = ready.vxlan;
        let plan = netns::run(self.config.netns.as_deref(), move |handle| async move {
            vxlan::sync(&handle, index, &desired).await
        })?;
        if !plan.is_empty() {
            tracing::info!(
                peers = peers.len(),
                routes_added = plan.add.routes.len(),
                routes_removed = plan.remove.routes.len(),
                "overlay peers updated"
            );
        }
        Ok(())
    }
}
