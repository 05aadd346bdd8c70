//! Time from `kube agent` start to its Node being Ready (issue 7's target: 2 s),
//! on a server in a namespace of a test LAN and an agent in another
//! (tests/common/ha.rs, tests/common/multinode.rs): the first join (token
//! exchange, registration), then ROUNDS restarts with the stored identity
//! after the Node was deleted. Needs root. `cargo bench --bench agent_ready`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::ha::Servers;
use common::multinode::JoinedNode;
use std::time::{Duration, Instant};

/// Waits until the server reports `node` Ready; the time it took from `since`.
fn until_ready(servers: &Servers, node: &str, since: Instant) -> Duration {
    let path = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";
    loop {
        let out = servers.servers[0].kubectl(&["get", "node", node, "-o", path]);
        if out.stdout == b"True" {
            return since.elapsed();
        }
        assert!(since.elapsed() < Duration::from_secs(90), "{node} not Ready after 90 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench agent_ready: needs root (network namespaces)");
        return;
    }
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let servers = Servers::start(1);
    let (url, token) = (servers.servers[0].url(), servers.servers[0].token());
    let started = Instant::now();
    let mut agent = JoinedNode::join_lan(&servers.lan, "bench", url, token);
    let first = until_ready(&servers, "bench", started);
    let mut restarts = Vec::new();
    for _ in 0..rounds {
        agent.stop();
        servers.servers[0].ok(&["delete", "node", "bench"]);
        let started = Instant::now();
        agent.start();
        restarts.push(until_ready(&servers, "bench", started));
    }
    restarts.sort();
    println!(
        "agent start → node Ready: first join {first:?} (includes starting its registry); \
         restart with stored identity ({rounds} rounds): p50 {:?}, max {:?} (target < 2 s)",
        restarts[restarts.len() / 2],
        restarts[restarts.len() - 1]
    );
    drop(agent);
    drop(servers);
}
