//! Root-only tests of the service proxy's data path: a "node" network
//! namespace with a bridge, "pod" namespaces on veths running busybox
//! httpd, and a "LAN" namespace outside the node; the rules the proxy
//! renders are applied in the node namespace and real connections are
//! made. Also compares the applied ruleset with golden `.nft` listings.
//! Nothing here touches the root network namespace.

use kube::netfilter::fixtures::{self, EndpointSpec, ready};
use kube::netfilter::nft::{Nft, NftCommand};
use kube::netfilter::state::ProxyState;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn unmet() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    for tool in ["ip", "nft", "busybox"] {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output();
        if !found.is_ok_and(|o| o.status.success()) {
            return Some(format!("needs `{tool}` (scripts/install-test-deps.sh)"));
        }
    }
    None
}

/// Whether the test can run here; prints SKIPPED otherwise, or panics when
/// KUBE_TEST_REQUIRE_ROOT=1.
fn can_run(test: &str) -> bool {
    match unmet() {
        None => true,
        Some(why) if std::env::var("KUBE_TEST_REQUIRE_ROOT").as_deref() == Ok("1") => {
            panic!("{test}: {why}, and KUBE_TEST_REQUIRE_ROOT=1")
        }
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

fn run(args: &[&str]) -> Output {
    let output = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    assert!(output.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn sh_in(netns: &str, script: &str) {
    run(&["ip", "netns", "exec", netns, "sh", "-ec", script]);
}

/// Network namespaces and servers of one test; removed on drop, also when
/// the test fails (servers first, by PID, then the namespaces).
struct Topology {
    prefix: String,
    namespaces: Vec<String>,
    servers: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        for netns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", netns]).status();
        }
    }
}

const NODE_IP: &str = "192.168.77.1";
const LAN_IP: &str = "192.168.77.2";
/// Pods p1, p2 (servers) and p3 (client) on the node's bridge.
const PODS: [(&str, &str); 3] = [("p1", "10.42.0.11"), ("p2", "10.42.0.12"), ("p3", "10.42.0.13")];

impl Topology {
    /// Nothing yet; namespaces are named `kt-px<pid><tag>-<name>`.
    fn new(tag: &str) -> Topology {
        let prefix = format!("kt-px{}{tag}", std::process::id());
        Topology { prefix, namespaces: Vec::new(), servers: Vec::new(), dir: tempfile::tempdir().expect("temp dir") }
    }

    fn netns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn add_netns(&mut self, name: &str) -> String {
        let netns = self.netns(name);
        run(&["ip", "netns", "add", &netns]);
        self.namespaces.push(netns.clone());
        run(&["ip", "-n", &netns, "link", "set", "lo", "up"]);
        netns
    }

    /// node (bridge kube-bridge 10.42.0.1/24, lan0 192.168.77.1/24 with the
    /// default route via the LAN), lan, and the pods. As on a real node the
    /// bridge hands bridged traffic to netfilter (`bridge-nf-call-iptables`,
    /// so replies between pods on one bridge are un-NATed) and its ports
    /// are in hairpin mode (a pod reaching itself through a Service).
    fn build(tag: &str) -> Topology {
        let mut topology = Topology::new(tag);
        let node = topology.add_netns("node");
        let lan = topology.add_netns("lan");
        sh_in(
            &node,
            &format!(
                "ip link add kube-bridge type bridge
                 ip addr add 10.42.0.1/24 dev kube-bridge
                 ip link set kube-bridge up
                 ip link add lan0 type veth peer name eth0 netns {lan}
                 ip addr add {NODE_IP}/24 dev lan0
                 ip link set lan0 up
                 ip route add default via {LAN_IP}
                 sysctl -qw net.ipv4.ip_forward=1
                 sysctl -qw net.bridge.bridge-nf-call-iptables=1"
            ),
        );
        sh_in(&lan, &format!("ip addr add {LAN_IP}/24 dev eth0; ip link set eth0 up"));
        for (pod, ip) in PODS {
            let netns = topology.add_netns(pod);
            sh_in(
                &node,
                &format!(
                    "ip link add veth-{pod} type veth peer name eth0 netns {netns}
                     ip link set veth-{pod} master kube-bridge up
                     ip link set veth-{pod} type bridge_slave hairpin on"
                ),
            );
            sh_in(
                &netns,
                &format!("ip addr add {ip}/24 dev eth0; ip link set eth0 up; ip route add default via 10.42.0.1"),
            );
        }
        topology
    }

    /// busybox httpd in `netns` on `listen`, answering `body`.
    fn serve(&mut self, netns_name: &str, listen: &str, body: &str) {
        let root: PathBuf = self.dir.path().join(format!("{netns_name}-{}", listen.replace(':', "-")));
        std::fs::create_dir_all(&root).expect("web root");
        std::fs::write(root.join("index.html"), body).expect("index.html");
        let netns = self.netns(netns_name);
        let child = Command::new("ip")
            .args(["netns", "exec", &netns, "busybox", "httpd", "-f", "-p", listen, "-h"])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start busybox httpd");
        self.servers.push(child);
    }

    /// `wget http://url/` from `netns`: Ok(body) or Err(wget's message).
    fn fetch(&self, netns_name: &str, url: &str) -> Result<String, String> {
        // `timeout` rather than wget's own -T, which crashes Debian's busybox 1.35.
        let output = Command::new("ip")
            .args(["netns", "exec", &self.netns(netns_name), "timeout", "5", "busybox", "wget", "-q", "-O", "-", url])
            .output()
            .expect("run wget");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
        }
    }

    /// Polls until `url` answers from `netns` (servers just started).
    fn wait_for(&self, netns_name: &str, url: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.fetch(netns_name, url) {
                Ok(body) => return body,
                Err(err) if Instant::now() > deadline => panic!("{url} from {netns_name} never answered: {err}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn nft(&self) -> NftCommand {
        NftCommand::in_netns(&self.netns("node"))
    }
}

/// Applies what the state plans next; returns whether it was a full rebuild.
fn sync(state: &mut ProxyState, nft: &NftCommand) -> bool {
    let tx = state.plan().expect("something to apply");
    nft.apply(&tx).unwrap_or_else(|e| panic!("apply: {e}"));
    tx.full
}

fn web_slice(endpoints: &[EndpointSpec]) -> Value {
    fixtures::slice("default", "web", "a", ("http", 8080, "TCP"), endpoints)
}

#[test]
fn services_answer_through_the_rendered_rules() {
    if !can_run("services_answer_through_the_rendered_rules") {
        return;
    }
    let mut topology = Topology::build("path");
    topology.serve("p1", "8080", "p1");
    topology.serve("p2", "8080", "p2");
    topology.serve("node", "10.42.0.1:53", "node-local dns");
    topology.wait_for("p3", "http://10.42.0.11:8080/");
    topology.wait_for("p3", "http://10.42.0.12:8080/");

    let both = [ready("10.42.0.11", "node-a"), ready("10.42.0.12", "node-b")];
    let web = fixtures::service("default", "web", "10.43.0.100", &[("http", 80, "TCP")]);
    let mut node_port = fixtures::service("default", "np", "10.43.0.101", &[("http", 80, "TCP")]);
    node_port["spec"]["type"] = json!("NodePort");
    node_port["spec"]["ports"][0]["nodePort"] = json!(30080);
    let mut sticky = fixtures::service("default", "sticky", "10.43.0.102", &[("http", 80, "TCP")]);
    sticky["spec"]["sessionAffinity"] = json!("ClientIP");
    let lonely = fixtures::service("default", "lonely", "10.43.0.103", &[("http", 80, "TCP")]);
    let hairpin = fixtures::service("default", "self", "10.43.0.104", &[("http", 80, "TCP")]);
    let mut state = ProxyState::new(fixtures::config());
    state.replace_services(vec![web, node_port, sticky, lonely, hairpin]);
    state.replace_slices(vec![
        web_slice(&both),
        fixtures::slice("default", "np", "a", ("http", 8080, "TCP"), &both),
        fixtures::slice("default", "sticky", "a", ("http", 8080, "TCP"), &both),
        fixtures::slice("default", "self", "a", ("http", 8080, "TCP"), &[ready("10.42.0.11", "node-a")]),
    ]);
    let nft = topology.nft();
    assert!(sync(&mut state, &nft));

    // ClusterIP from another pod, spread over both endpoints at random.
    let answers: Vec<String> = (0..30).map(|_| topology.wait_for("p3", "http://10.43.0.100/")).collect();
    assert!(answers.iter().any(|a| a == "p1") && answers.iter().any(|a| a == "p2"), "{answers:?}");

    // Session affinity: one client, one endpoint.
    let first = topology.wait_for("p3", "http://10.43.0.102/");
    for _ in 0..15 {
        assert_eq!(topology.fetch("p3", "http://10.43.0.102/").as_ref(), Ok(&first), "affinity broke");
    }

    // No endpoints: refused at once, not a timeout.
    let started = Instant::now();
    let refused = topology.fetch("p3", "http://10.43.0.103/").expect_err("a Service without endpoints answered");
    assert!(refused.contains("refused"), "{refused}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

    // NodePort on the node's address, from outside the node.
    let body = topology.wait_for("lan", &format!("http://{NODE_IP}:30080/"));
    assert!(body == "p1" || body == "p2", "{body}");

    // Hairpin: a pod reaching itself through its Service.
    assert_eq!(topology.wait_for("p1", "http://10.43.0.104/"), "p1");

    // Cluster DNS address goes to the node-local server.
    assert_eq!(topology.wait_for("p3", "http://10.43.0.10:53/"), "node-local dns");

    // An endpoint goes away: an incremental sync, and no rule for it is left.
    state.upsert_slice(web_slice(&[ready("10.42.0.11", "node-a")]));
    assert!(!sync(&mut state, &nft), "one change is an incremental sync");
    for _ in 0..15 {
        assert_eq!(topology.fetch("p3", "http://10.43.0.100/").as_deref(), Ok("p1"));
    }
    let listing = nft.list_table().expect("list table");
    assert!(!listing.contains("ep-default/web/tcp/http@10.42.0.12"), "stale rules:\n{listing}");
    assert!(listing.contains("ep-default/np/tcp/http@10.42.0.12"), "other Services keep theirs");

    // The Service goes away entirely: its address is refused like any unused one.
    state.delete_service(&fixtures::service("default", "web", "10.43.0.100", &[]));
    assert!(!sync(&mut state, &nft));
    let refused = topology.fetch("p3", "http://10.43.0.100/").expect_err("a deleted Service answered");
    assert!(refused.contains("refused"), "{refused}");
    assert!(!nft.list_table().expect("list").contains("default/web/"), "stale rules after delete");
}

#[test]
fn applied_rulesets_match_the_golden_listings() {
    if !can_run("applied_rulesets_match_the_golden_listings") {
        return;
    }
    let mut topology = Topology::new("gold");
    topology.add_netns("node");
    let nft = topology.nft();
    let golden_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/netfilter");
    let mut mismatched = Vec::new();
    for (name, services, slices) in fixtures::scenarios() {
        let mut state = ProxyState::new(fixtures::config());
        state.replace_services(services);
        state.replace_slices(slices);
        assert!(sync(&mut state, &nft));
        let listing = nft.list_table().expect("list table");
        let path = golden_dir.join(format!("{name}.nft"));
        if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
            std::fs::write(&path, &listing).expect("write golden listing");
        } else if std::fs::read_to_string(&path).unwrap_or_default() != listing {
            mismatched.push(format!("{}:\n{listing}", path.display()));
        }
    }
    assert!(mismatched.is_empty(), "listings differ (UPDATE_GOLDEN=1 to accept):\n{}", mismatched.join("\n"));
}
