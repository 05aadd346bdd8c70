//! End-to-end tests of the pod network (needs root; skipped with a message
//! otherwise, failed instead when KUBE_TEST_REQUIRE_ROOT=1). Every node and
//! pod is a network namespace the test makes on a LAN bridge of its own;
//! nothing touches the root namespace's network.
//!
//! - `overlay_connects_pods_across_nodes`: src/cni's node setup in two node
//!   namespaces, a pod namespace on each, peers programmed from Node objects
//!   → a ping crosses the VXLAN; removing the peer breaks it.
//! - `pods_get_ips_and_reach_each_other`: the real `kube server` (in a node
//!   namespace) runs two httpd pods and a wget pod that fetches a page from one.

mod common;

use common::netns::{Lan, Netns};
use kube::cni::{Netlink, NodeConfig, PodNetwork, PodRequest, Subnet, peers};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

/// A fake Node object as the API would hold it after the node annotated itself.
fn node_object(name: &str, setup: &kube::cni::NodeSetup) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "annotations": peers::annotations(&setup.vtep_mac, setup.public_ip)},
        "spec": {"podCIDR": setup.pod_cidr.to_string()},
    })
}

fn output(command: &mut Command) -> (bool, String) {
    let out = command.output().expect("run command");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Pings `ip` from inside `from` until it answers or `timeout` passes.
fn ping_until(from: &Netns, ip: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let (ok, text) = output(from.exec("busybox").args(["ping", "-c1", "-W2", ip]));
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(text);
        }
    }
}

#[test]
fn overlay_connects_pods_across_nodes() {
    if !common::can_run("overlay_connects_pods_across_nodes", common::root_unmet()) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let lan = Lan::new("ov");
    let nodes = [lan.add_node(), lan.add_node()];
    let pods = [Netns::new(&format!("{}-pa", nodes[0].name)), Netns::new(&format!("{}-pb", nodes[1].name))];
    let networks: Vec<Netlink> = nodes
        .iter()
        .map(|node| {
            Netlink::new(NodeConfig {
                node_ip: node.lan_ip.as_deref().expect("lan ip").parse().expect("ip"),
                iface: None,
                ipam_dir: dir.path().join(&node.name),
                netns: Some(node.path()),
            })
        })
        .collect();
    let cidrs = ["10.42.0.0/24", "10.42.1.0/24"];
    let setups: Vec<_> = networks
        .iter()
        .zip(cidrs)
        .map(|(net, cidr)| net.setup_node(Subnet::parse(cidr).expect("cidr")).expect("node setup"))
        .collect();
    // Setting up again (an agent restart) keeps the device and its MAC.
    let again = networks[0].setup_node(Subnet::parse(cidrs[0]).expect("cidr")).expect("setup again");
    assert_eq!(again.vtep_mac, setups[0].vtep_mac);
    assert_eq!(setups[0].mtu, 1450, "VXLAN MTU = LAN MTU 1500 - 50");
    let (_, forward) = output(nodes[0].exec("cat").arg("/proc/sys/net/ipv4/ip_forward"));
    assert_eq!(forward.trim(), "1", "ip_forward in the node namespace");

    let ips: Vec<String> = networks
        .iter()
        .zip(&pods)
        .enumerate()
        .map(|(i, (net, pod))| {
            let uid = format!("pod-{i}");
            let request = PodRequest { uid: &uid, namespace: "default", name: &uid, netns: &pod.path() };
            net.add_pod(&request).expect("add pod").to_string()
        })
        .collect();
    assert_eq!(ips, ["10.42.0.2", "10.42.1.2"]);
    let (_, eth0) = output(pods[0].exec("ip").args(["-o", "link", "show", "eth0"]));
    assert!(eth0.contains("mtu 1450"), "pod eth0: {eth0}");
    // Same node: the pod reaches its gateway on the bridge.
    ping_until(&pods[0], "10.42.0.1", Duration::from_secs(5)).expect("pod → gateway");

    let objects = [node_object("n1", &setups[0]), node_object("n2", &setups[1])];
    for (net, name) in networks.iter().zip(["n1", "n2"]) {
        let peers = peers::peers(&objects, name);
        assert_eq!(peers.len(), 1);
        net.sync_peers(&peers).expect("sync peers");
        net.sync_peers(&peers).expect("sync peers again (no change)");
    }
    ping_until(&pods[0], &ips[1], Duration::from_secs(10)).expect("pod A → pod B across the VXLAN");
    ping_until(&pods[1], &ips[0], Duration::from_secs(10)).expect("pod B → pod A across the VXLAN");
    let (_, fdb) = output(nodes[0].exec("bridge").args(["fdb", "show", "dev", "kube-vxlan"]));
    assert!(fdb.contains(&format!("dst {}", setups[1].public_ip)), "FDB of node 1: {fdb}");

    // The peer goes away: route, neighbour and FDB entry are removed, traffic stops.
    networks[0].sync_peers(&[]).expect("remove peers");
    let (_, routes) = output(nodes[0].exec("ip").args(["route", "show", "dev", "kube-vxlan"]));
    assert!(!routes.contains("10.42.1.0/24"), "route left behind: {routes}");
    assert!(ping_until(&pods[0], &ips[1], Duration::ZERO).is_err(), "pod B still reachable without its peer");

    // Deleting a pod removes its veth and frees its address.
    networks[0].delete_pod("pod-0").expect("delete pod");
    assert_eq!(networks[0].pod_ip("pod-0"), None);
    let (_, links) = output(nodes[0].exec("ip").args(["-o", "link", "show", "master", "kube-bridge"]));
    assert!(links.trim().is_empty(), "veth left on the bridge: {links}");
}
