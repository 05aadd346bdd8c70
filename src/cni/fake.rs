//! A [`PodNetwork`] for agent unit tests: hands out addresses from a
//! counter, records every call, and fails `add_pod` when told to.

use super::error::{CniError, Result};
use super::peers::Peer;
use super::subnet::Subnet;
use super::{NodeSetup, PodNetwork, PodRequest};
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkCall {
    SetupNode(Subnet),
    AddPod { uid: String, netns: PathBuf },
    DeletePod(String),
    ReleaseUnknown(Vec<String>),
    SyncPeers(Vec<String>),
}

#[derive(Default)]
pub struct FakeNetwork {
    pub fail_add: bool,
    calls: Mutex<Vec<NetworkCall>>,
    state: Mutex<(Option<Subnet>, BTreeMap<String, IpAddr>)>,
}

impl FakeNetwork {
    /// A fake whose `add_pod` always fails.
    pub fn failing() -> FakeNetwork {
        FakeNetwork { fail_add: true, ..Default::default() }
    }
    pub fn calls(&self) -> Vec<NetworkCall> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
    fn record(&self, call: NetworkCall) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }
}

impl PodNetwork for FakeNetwork {
    fn setup_node(&self, pod_cidr: Subnet) -> Result<NodeSetup> {
        self.record(NetworkCall::SetupNode(pod_cidr));
        if let Ok(mut state) = self.state.lock() {
            state.0 = Some(pod_cidr);
        }
        let gateway = pod_cidr.gateway().ok_or(CniError::NotReady)?;
        Ok(NodeSetup { pod_cidr, gateway, vtep_mac: vec![2, 0, 0, 0, 0, 1], public_ip: gateway, mtu: 1450 })
    }

    fn add_pod(&self, pod: &PodRequest<'_>) -> Result<IpAddr> {
        self.record(NetworkCall::AddPod { uid: pod.uid.into(), netns: pod.netns.into() });
        if self.fail_add {
            return Err(CniError::Host("injected failure".into()));
        }
        let mut state = self.state.lock().map_err(|_| CniError::Host("fake poisoned".into()))?;
        let subnet = state.0.ok_or(CniError::NotReady)?;
        if let Some(ip) = state.1.get(pod.uid) {
            return Ok(*ip);
        }
        let index = 2 + state.1.len() as u128;
        let ip = subnet.nth(index).ok_or(CniError::Exhausted { subnet: subnet.to_string() })?;
        state.1.insert(pod.uid.into(), ip);
        Ok(ip)
    }

    fn delete_pod(&self, uid: &str) -> Result<()> {
        self.record(NetworkCall::DeletePod(uid.into()));
        if let Ok(mut state) = self.state.lock() {
            state.1.remove(uid);
        }
        Ok(())
    }

    fn pod_ip(&self, uid: &str) -> Option<IpAddr> {
        self.state.lock().ok()?.1.get(uid).copied()
    }

    fn release_unknown(&self, live: &HashSet<String>) -> Result<Vec<IpAddr>> {
        let mut sorted: Vec<String> = live.iter().cloned().collect();
        sorted.sort();
        self.record(NetworkCall::ReleaseUnknown(sorted));
        let mut state = self.state.lock().map_err(|_| CniError::Host("fake poisoned".into()))?;
        let stale: Vec<String> = state.1.keys().filter(|uid| !live.contains(*uid)).cloned().collect();
        Ok(stale.iter().filter_map(|uid| state.1.remove(uid)).collect())
    }

    fn sync_peers(&self, peers: &[Peer]) -> Result<()> {
        self.record(NetworkCall::SyncPeers(peers.iter().map(|p| p.node.clone()).collect()));
        Ok(())
    }
}
