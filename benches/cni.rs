//! Pod network setup time per pod: src/cni (in-process netlink) against the
//! reference CNI plugins `bridge` + `host-local` (Debian's
//! containernetworking-plugins, one fork/exec per call as a runtime does).
//! Needs root; runs entirely in `kt-bench…` network namespaces it creates
//! and removes. `cargo bench --bench cni` (PODS=<n> to change the count).

use kube::cni::{Netlink, NodeConfig, PodNetwork, PodRequest, Subnet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PLUGINS: &str = "/usr/lib/cni";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The namespaces of the run, deleted on drop (also on a panic).
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: String) -> PathBuf {
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        self.0.push(name.clone());
        Path::new("/run/netns").join(name)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.0.iter().rev() {
            let _ = Command::new("ip").args(["netns", "delete", name]).output();
        }
    }
}

fn summary(what: &str, times: &mut [Duration]) {
    times.sort();
    let total: Duration = times.iter().sum();
    let mean = total / times.len().max(1) as u32;
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    println!("{what:<40} mean {mean:>10.2?}  median {median:>10.2?}  max {max:>10.2?}  ({} pods)", times.len());
}

/// One call of the reference bridge plugin inside the node namespace.
fn reference(command: &str, node: &Path, pod: &Path, id: &str, config: &str) -> Duration {
    let started = Instant::now();
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", node.display()))
        .arg("--")
        .arg(format!("{PLUGINS}/bridge"))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", pod)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", PLUGINS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the bridge plugin");
    child.stdin.take().expect("stdin").write_all(config.as_bytes()).expect("write config");
    let out = child.wait_with_output().expect("bridge plugin");
    let elapsed = started.elapsed();
    assert!(out.status.success(), "bridge {command}: {}", String::from_utf8_lossy(&out.stdout));
    elapsed
}

fn main() {
    if !nix::unistd::geteuid().is_root() || !Path::new(PLUGINS).join("bridge").exists() {
        println!("SKIPPED cni bench: needs root and containernetworking-plugins ({PLUGINS})");
        return;
    }
    let pods: usize = std::env::var("PODS").ok().and_then(|n| n.parse().ok()).unwrap_or(20);
    let tag = format!("kt-bench{}", std::process::id());
    let mut namespaces = Namespaces(Vec::new());
    let node = namespaces.add(format!("{tag}-node"));
    let node_name = format!("{tag}-node");
    // The underlay: a veth whose peer stays in the node namespace (no dummy driver here).
    ip(&["-n", &node_name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer"]);
    ip(&["-n", &node_name, "addr", "add", "192.168.77.11/24", "dev", "eth0"]);
    ip(&["-n", &node_name, "link", "set", "eth0", "up"]);
    let state = tempfile::tempdir().expect("tempdir");

    let network = Netlink::new(NodeConfig {
        node_ip: "192.168.77.11".parse().expect("ip"),
        iface: None,
        ipam_dir: state.path().join("ipam"),
        netns: Some(node.clone()),
    });
    let started = Instant::now();
    network.setup_node(Subnet::parse("10.42.0.0/24").expect("subnet")).expect("node setup");
    println!("kube cni node setup (bridge + vxlan + sysctls)   {:?}", started.elapsed());
    let (mut add, mut del) = (Vec::new(), Vec::new());
    let mut uids = Vec::new();
    for i in 0..pods {
        let netns = namespaces.add(format!("{tag}-k{i}"));
        let uid = format!("bench-pod-{i}");
        let started = Instant::now();
        network.add_pod(&PodRequest { uid: &uid, namespace: "bench", name: &uid, netns: &netns }).expect("add pod");
        add.push(started.elapsed());
        uids.push(uid);
    }
    for uid in &uids {
        let started = Instant::now();
        network.delete_pod(uid).expect("delete pod");
        del.push(started.elapsed());
    }
    summary("kube cni ADD (veth + IPAM + eth0 config)", &mut add);
    summary("kube cni DEL", &mut del);

    let config = format!(
        r#"{{"cniVersion":"1.0.0","name":"bench","type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":false,"mtu":1450,
            "ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.42.1.0/24"}}]],"dataDir":"{}"}}}}"#,
        state.path().join("host-local").display()
    );
    let (mut add, mut del) = (Vec::new(), Vec::new());
    let mut made = Vec::new();
    for i in 0..pods {
        let netns = namespaces.add(format!("{tag}-r{i}"));
        let id = format!("bench{i}");
        add.push(reference("ADD", &node, &netns, &id, &config));
        made.push((netns, id));
    }
    for (netns, id) in &made {
        del.push(reference("DEL", &node, netns, id, &config));
    }
    summary("reference bridge+host-local ADD", &mut add);
    summary("reference bridge+host-local DEL", &mut del);
}
