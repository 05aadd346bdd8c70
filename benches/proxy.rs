//! Service proxy benchmark (`scripts/bench-proxy.sh`, root): for 1, 1,000
//! and 10,000 Services × 5 endpoints, the time to render the rules and to
//! apply them in a fresh network namespace, for a full sync and for one
//! endpoint change; then per-connection latency to a ClusterIP with 10 and
//! with 10,000 Services installed. Prints figures; asserts nothing.

use kube::netfilter::fixtures::{self, ready};
use kube::netfilter::nft::{Nft, NftCommand};
use kube::netfilter::state::ProxyState;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const ENDPOINTS: u32 = 5;

fn sh(script: &str) {
    let status = Command::new("sh").arg("-ec").arg(script).status().expect("run sh");
    assert!(status.success(), "failed: {script}");
}

/// Network namespaces of the benchmark, deleted on drop.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: &str) -> String {
        let netns = format!("kt-pxbench{}-{name}", std::process::id());
        sh(&format!("ip netns add {netns}; ip -n {netns} link set lo up"));
        self.0.push(netns.clone());
        netns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for netns in self.0.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", netns]).status();
        }
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// A state with `count` Services (plus `default/web` → the server pod).
fn loaded(count: u32) -> ProxyState {
    let (mut services, mut slices) = fixtures::many(count, ENDPOINTS);
    services.push(fixtures::service("default", "web", "10.43.0.100", &[("http", 80, "TCP")]));
    slices.push(fixtures::slice("default", "web", "a", ("http", 8080, "TCP"), &[ready("10.42.0.11", "node-a")]));
    let mut state = ProxyState::new(fixtures::config());
    state.replace_services(services);
    state.replace_slices(slices);
    state
}

/// One endpoint of `bench/svc-<n>` replaced by another address.
fn change_one(state: &mut ProxyState, n: u32, round: u32) {
    let ips: Vec<String> = (0..ENDPOINTS).map(|e| format!("10.99.{}.{}", round % 250, e + 1)).collect();
    let endpoints: Vec<_> = ips.iter().map(|ip| ready(ip, "node-b")).collect();
    state.upsert_slice(fixtures::slice("bench", &format!("svc-{n}"), "x", ("http", 8080, "TCP"), &endpoints));
}

fn sync_figures(count: u32) {
    let mut namespaces = Namespaces(Vec::new());
    let nft = NftCommand::in_netns(&namespaces.add(&format!("sync{count}")));
    let started = Instant::now();
    let mut state = loaded(count);
    let tx = state.plan().expect("a full plan");
    let render = started.elapsed();
    let started = Instant::now();
    let json = tx.to_json().expect("encode");
    let encode = started.elapsed();
    let started = Instant::now();
    nft.apply_json("full", &json).expect("full apply");
    let apply = started.elapsed();
    println!(
        "{count:>6} services: full   render {:>10}  encode {:>10}  apply {:>10}  ({} commands, {} KiB)",
        millis(render),
        millis(encode),
        millis(apply),
        tx.len(),
        json.len() / 1024
    );
    let (mut plan_times, mut apply_times, mut totals) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..7 {
        let started = Instant::now();
        change_one(&mut state, count / 2, round);
        let tx = state.plan().expect("an incremental plan");
        let planned = started.elapsed();
        nft.apply(&tx).expect("incremental apply");
        totals.push(started.elapsed());
        apply_times.push(started.elapsed() - planned);
        plan_times.push(planned);
    }
    println!(
        "{count:>6} services: 1 change render {:>10}  apply {:>10}  total {:>10}  (median of 7)",
        millis(median(plan_times)),
        millis(median(apply_times)),
        millis(median(totals))
    );
}

/// Runs `f` on a thread that joined network namespace `netns` (the rest
/// of the process stays where it is).
fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// Median connect + request + answer time to 10.43.0.100:80 from a client
/// pod, with `count` other Services installed.
fn latency_figures(count: u32) {
    let mut namespaces = Namespaces(Vec::new());
    let node = namespaces.add(&format!("node{count}"));
    let server = namespaces.add(&format!("srv{count}"));
    let client = namespaces.add(&format!("cli{count}"));
    sh(&format!(
        "ip -n {node} link add kube-bridge type bridge
         ip -n {node} addr add 10.42.0.1/24 dev kube-bridge
         ip -n {node} link set kube-bridge up
         ip netns exec {node} sysctl -qw net.ipv4.ip_forward=1
         ip netns exec {node} sysctl -qw net.bridge.bridge-nf-call-iptables=1
         for pod in {server}:10.42.0.11 {client}:10.42.0.13; do
           ns=${{pod%%:*}}; ip=${{pod##*:}}; port=v${{ip##*.}}
           ip -n {node} link add $port type veth peer name eth0 netns $ns
           ip -n {node} link set $port master kube-bridge up
           ip -n $ns addr add $ip/24 dev eth0
           ip -n $ns link set eth0 up
           ip -n $ns route add default via 10.42.0.1
         done"
    ));
    let mut state = loaded(count);
    NftCommand::in_netns(&node).apply(&state.plan().expect("plan")).expect("apply");
    let listener = in_netns(&server, || TcpListener::bind("10.42.0.11:8080").expect("bind in the server pod"))
        .join()
        .expect("bind thread");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 64];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"ok");
        }
    });
    let samples = in_netns(&client, || {
        let target: SocketAddr = "10.43.0.100:80".parse().expect("address");
        let mut samples = Vec::new();
        for _ in 0..300 {
            let started = Instant::now();
            let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2)).expect("connect");
            stream.write_all(b"ping").expect("send");
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).expect("read");
            samples.push(started.elapsed());
        }
        samples
    })
    .join()
    .expect("client thread");
    let p50 = median(samples.clone());
    let mut sorted = samples;
    sorted.sort();
    let p99 = sorted[sorted.len() * 99 / 100];
    println!("{count:>6} services: connection to a ClusterIP p50 {:>10}  p99 {:>10}", millis(p50), millis(p99));
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED proxy benchmark: needs root (network namespaces)");
        return;
    }
    let sizes: Vec<u32> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1, 1000, 10000] } else { sizes };
    println!("service proxy: {ENDPOINTS} endpoints per Service");
    for count in &sizes {
        sync_figures(*count);
    }
    for count in [10, 10000] {
        latency_figures(count);
    }
}
