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
//! - `flannel_backend_none_leaves_pods_on_loopback`: `--flannel-backend none`.

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

/// The IP column of `kubectl get pod <name> -o wide`.
fn wide_ip(cluster: &common::agent::AgentCluster, pod: &str) -> String {
    let out = cluster.ok(&["get", "pod", pod, "-o", "wide", "--no-headers"]);
    out.split_whitespace().nth(5).unwrap_or_default().to_string()
}

#[test]
fn pods_get_ips_and_reach_each_other() {
    if !common::can_run("pods_get_ips_and_reach_each_other", common::agent_unmet()) {
        return;
    }
    let cluster = common::agent::AgentCluster::start();
    let node = cluster.node.clone();
    let node_ip = cluster.node_ip().expect("node ip");
    let cidr = cluster.wait_for(
        "podCIDR and VTEP annotations",
        &[
            "get",
            "node",
            &node,
            "-o",
            "jsonpath={.spec.podCIDR} {.metadata.annotations.flannel\\.alpha\\.coreos\\.com/public-ip}",
        ],
        Duration::from_secs(30),
        |out| out.split_whitespace().count() == 2,
    );
    let (cidr, public_ip) = cidr.split_once(' ').expect("two words");
    assert_eq!(public_ip, node_ip);
    let subnet = Subnet::parse(cidr).expect("podCIDR");

    let httpd = |name: &str| {
        let command =
            format!("mkdir -p /www && echo hello-from-{name} > /www/index.html && exec httpd -f -p 8080 -h /www");
        cluster.apply(&cluster.pod(name, &command, "Always"));
    };
    httpd("web-a");
    httpd("web-b");
    for name in ["web-a", "web-b"] {
        cluster.wait_for(
            &format!("{name} Running"),
            &["get", "pod", name, "--no-headers"],
            Duration::from_secs(60),
            |out| out.split_whitespace().nth(2) == Some("Running"),
        );
    }
    let (ip_a, ip_b) = (wide_ip(&cluster, "web-a"), wide_ip(&cluster, "web-b"));
    assert_ne!(ip_a, ip_b, "two pods got the same IP");
    for ip in [&ip_a, &ip_b] {
        assert!(subnet.contains(ip.parse().expect("pod IP")), "{ip} outside the node's podCIDR {subnet}");
    }
    let ips =
        cluster.ok(&["get", "pod", "web-a", "-o", "jsonpath={.status.podIP} {.status.podIPs[0].ip} {.status.hostIP}"]);
    assert_eq!(ips, format!("{ip_a} {ip_a} {node_ip}"));

    // A pod fetches the page of another by its IP, and finds itself in /etc/hosts.
    let fetch = format!("wget -qO- http://{ip_b}:8080/ && grep -w client /etc/hosts");
    cluster.apply(&cluster.pod("client", &fetch, "Never"));
    cluster.wait_for(
        "client Succeeded",
        &["get", "pod", "client", "-o", "jsonpath={.status.phase}"],
        Duration::from_secs(60),
        |out| {
            assert_ne!(out, "Failed", "the client pod failed: {}", cluster.ok(&["logs", "client"]));
            out == "Succeeded"
        },
    );
    let client_ip = cluster.ok(&["get", "pod", "client", "-o", "jsonpath={.status.podIP}"]);
    let logs = cluster.ok(&["logs", "client"]);
    assert_eq!(logs, format!("hello-from-web-b\n{client_ip}\tclient\n"));

    // Deleting a pod releases its address; a new pod never duplicates a live one.
    let ipam = cluster.dir.path().join("agent/ipam");
    assert!(ipam.join(&ip_a).exists(), "no IPAM file for {ip_a}");
    cluster.ok(&["delete", "pod", "web-a", "client", "--timeout=60s"]);
    assert!(!ipam.join(&ip_a).exists(), "{ip_a} still allocated after its pod was deleted");
    assert!(!ipam.join(&client_ip).exists(), "{client_ip} still allocated after its pod was deleted");
    httpd("web-c");
    cluster.wait_for("web-c Running", &["get", "pod", "web-c", "--no-headers"], Duration::from_secs(60), |out| {
        out.split_whitespace().nth(2) == Some("Running")
    });
    let ip_c = wide_ip(&cluster, "web-c");
    assert_ne!(ip_c, ip_b, "the new pod got a live pod's address");
    assert!(subnet.contains(ip_c.parse().expect("pod IP")));
}

#[test]
fn flannel_backend_none_leaves_pods_on_loopback() {
    if !common::can_run("flannel_backend_none_leaves_pods_on_loopback", common::agent_unmet()) {
        return;
    }
    let cluster = common::agent::AgentCluster {
        cluster: common::Cluster::start_with_agent_and(&["--flannel-backend", "none"]),
        node: nix::unistd::gethostname().expect("hostname").to_string_lossy().to_lowercase(),
    };
    cluster.apply(&cluster.pod("lonely", "ip -o link show; ip -o addr show", "Never"));
    cluster.wait_for(
        "lonely Succeeded",
        &["get", "pod", "lonely", "-o", "jsonpath={.status.phase}"],
        Duration::from_secs(60),
        |out| out == "Succeeded",
    );
    let logs = cluster.ok(&["logs", "lonely"]);
    assert!(logs.contains("lo:") && !logs.contains("eth0"), "pod links: {logs}");
    let pod_ip = cluster.ok(&["get", "pod", "lonely", "-o", "jsonpath={.status.podIP}"]);
    assert_eq!(pod_ip, "", "a pod without a pod network reported an IP");
    let net = cluster.net.as_ref().expect("node netns");
    let (_, links) = output(net.node.exec("ip").args(["-o", "link", "show"]));
    assert!(!links.contains("kube-bridge") && !links.contains("kube-vxlan"), "node links: {links}");
}
