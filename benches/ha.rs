//! Highly available servers: how long the API refuses writes after the Raft
//! leader is killed (p50/p99 over KILLS kills, 20 by default), and write
//! throughput of 3 servers against 1. Needs root; the servers run in `kt-…`
//! network namespaces of a test LAN (tests/common/ha.rs), the client inside
//! the LAN's namespace with the admin certificate. `cargo bench --bench ha`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::ha::{Server, Servers};
use kube::server::client::{Client, RemoteConfig, ServerTrust};
use serde_json::json;
use std::time::{Duration, Instant};

/// An admin client of `server` (its own kubeconfig's certificate).
fn admin_client(server: &Server) -> Client {
    let tls = server.dir.path().join("tls");
    let read = |name: &str| std::fs::read_to_string(tls.join(name)).expect("admin credentials");
    let config = RemoteConfig {
        server: server.url(),
        trust: ServerTrust::Pinned(read("ca.crt")),
        identity: Some((read("client-admin.crt"), read("client-admin.key"))),
        authorization: None,
    };
    Client::remote(&config).expect("remote client")
}

/// Gives the LAN's namespace an address (192.168.77.2) so a client there reaches the servers.
fn address_the_lan(servers: &Servers) {
    let address = format!("{}.2/24", common::netns::LAN_PREFIX);
    common::netns::ip(&["-n", &servers.lan.ns.name, "addr", "add", &address, "dev", "lan"]);
}

/// Runs `work` on a runtime whose sockets live in the LAN's namespace.
fn in_lan<T: Send + 'static>(servers: &Servers, work: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let path = servers.lan.ns.path();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the LAN namespace");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the LAN namespace");
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(work)
    })
    .join()
    .expect("bench thread")
}

async fn write(client: &Client, name: &str) -> Result<(), String> {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}});
    client.create("/api/v1/namespaces/default/configmaps", cm).await.map(|_| ()).map_err(|err| err.message)
}

/// Writes `total` ConfigMaps with `parallel` writers; writes per second.
fn throughput(servers: &Servers, tag: &str, total: usize, parallel: usize) -> f64 {
    let clients: Vec<Client> = servers.servers.iter().map(admin_client).collect();
    let tag = tag.to_string();
    in_lan(servers, async move {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..parallel {
            let client = clients[w % clients.len()].clone();
            let tag = tag.clone();
            tasks.spawn(async move {
                for i in (w..total).step_by(parallel) {
                    if let Err(err) = write(&client, &format!("{tag}-{i}")).await {
                        panic!("write {i} failed: {err}");
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a writer failed");
        }
        total as f64 / started.elapsed().as_secs_f64()
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench ha: needs root (network namespaces)");
        return;
    }
    let kills: usize = std::env::var("KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(20);
    let one = Servers::start(1);
    address_the_lan(&one);
    let single = throughput(&one, "one", 2000, 16);
    drop(one);
    let mut servers = Servers::start(3);
    address_the_lan(&servers);
    let triple = throughput(&servers, "three", 2000, 16);
    println!("write throughput, 16 writers: 1 server {single:.0}/s, 3 servers {triple:.0}/s");

    let mut outages = Vec::new();
    for k in 0..kills {
        let leader = servers.leader(Duration::from_secs(30));
        let survivor = admin_client(&servers.servers[(leader + 1) % 3]);
        servers.servers[leader].kill();
        let killed = Instant::now();
        let name = format!("after-kill-{k}");
        let outage = in_lan(&servers, async move {
            while write(&survivor, &name).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            killed.elapsed()
        });
        outages.push(outage);
        servers.servers[leader].spawn();
        servers.servers[leader].wait_ready();
    }
    outages.sort();
    println!(
        "writes refused after a leader kill ({kills} kills): p50 {:?}, p99 {:?}, max {:?} (target < 2 s)",
        percentile(&outages, 0.5),
        percentile(&outages, 0.99),
        outages[outages.len() - 1]
    );
}
