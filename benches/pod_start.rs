//! Pod startup latency (issue 5): create → Running and Ready, image present,
//! through the scheduler and the local agent of a `kube server` in a node
//! namespace (tests/common/agent.rs). ROUNDS single pods one after another
//! (default 20), then BURST pods created at once (default 30; the issue's
//! figure is 100). Needs root and the test registry's busybox image.
//! `cargo bench --bench pod_start`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::agent::{AgentCluster, IMAGE, registry};
use futures::StreamExt;
use kube::server::client::{Client, RemoteConfig, ServerTrust};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const PODS: &str = "/api/v1/namespaces/default/pods";

fn admin_client(cluster: &AgentCluster) -> Client {
    let tls = cluster.dir.path().join("tls");
    let read = |name: &str| std::fs::read_to_string(tls.join(name)).expect("admin credentials");
    let ip = cluster.node_ip().expect("node ip");
    let config = RemoteConfig {
        server: format!("https://{ip}:{}", cluster.port),
        trust: ServerTrust::Pinned(read("ca.crt")),
        identity: Some((read("client-admin.crt"), read("client-admin.key"))),
        authorization: None,
    };
    Client::remote(&config).expect("remote client")
}

/// Runs `work` on a runtime whose sockets live in the node's namespace.
fn in_node<T: Send + 'static>(
    cluster: &AgentCluster,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let path = cluster.net.as_ref().expect("agent cluster").node.path();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the node namespace");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the node namespace");
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work)
    })
    .join()
    .expect("bench thread")
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"bench": "start"}},
           "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "main",
             "image": format!("{}/{IMAGE}", registry()), "command": ["sh", "-c", "exec sleep 3600"]}]}})
}

fn ready(pod: &Value) -> bool {
    let conditions = pod.pointer("/status/conditions").and_then(Value::as_array);
    conditions.into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Creates `names` at once; each one's time from its create to Ready.
async fn start_pods(client: Client, names: Vec<String>) -> Vec<Duration> {
    let list = client.get(&format!("{PODS}?labelSelector=bench%3Dstart")).await.expect("list pods");
    let version = list.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("0").to_string();
    let watch = format!("{PODS}?watch=1&labelSelector=bench%3Dstart&resourceVersion={version}");
    let mut events = Box::pin(client.watch(&watch).await.expect("watch pods"));
    let mut created = std::collections::HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for name in names.clone() {
        let client = client.clone();
        tasks.spawn(async move {
            let at = Instant::now();
            client.create(PODS, pod(&name)).await.expect("create pod");
            (name, at)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (name, at) = done.expect("create task");
        created.insert(name, at);
    }
    let mut took = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while took.len() < names.len() {
        let event = tokio::time::timeout_at(deadline, events.next()).await.expect("pods Ready within 120 s");
        let Some((_, object)) = event else { panic!("the watch ended") };
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        if ready(&object) && !took.contains_key(&name) {
            let at = created.get(&name).copied().unwrap_or_else(Instant::now);
            took.insert(name, at.elapsed());
        }
    }
    for name in &names {
        let _ = client.delete(&format!("{PODS}/{name}"), Some(json!({"gracePeriodSeconds": 0}))).await;
    }
    took.into_values().collect()
}

/// Waits until no bench pod is left.
async fn until_gone(client: Client) {
    loop {
        let list = client.list(&format!("{PODS}?labelSelector=bench%3Dstart")).await.expect("list pods");
        if list.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report(what: &str, mut took: Vec<Duration>, target: &str) {
    took.sort();
    let at = |p: f64| took[((took.len() as f64 - 1.0) * p).round() as usize];
    println!("{what}: p50 {:?}, p99 {:?}, max {:?}{target}", at(0.5), at(0.99), at(1.0));
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench pod_start: needs root (network namespaces)");
        return;
    }
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (rounds, burst) = (env("ROUNDS", 20), env("BURST", 30));
    let cluster = AgentCluster::start();
    let client = admin_client(&cluster);
    // The first pod pulls the image; it is not counted.
    in_node(&cluster, start_pods(client.clone(), vec!["warm".into()]));
    in_node(&cluster, until_gone(client.clone()));
    let mut single = Vec::new();
    for round in 0..rounds {
        single.extend(in_node(&cluster, start_pods(client.clone(), vec![format!("one-{round}")])));
        in_node(&cluster, until_gone(client.clone()));
    }
    report(&format!("single pods ({rounds} in a row)"), single, " (targets: p50 < 100 ms, p99 < 300 ms)");
    let names = (0..burst).map(|i| format!("burst-{i}")).collect();
    let together = in_node(&cluster, start_pods(client.clone(), names));
    report(&format!("{burst} pods at once"), together, "");
    in_node(&cluster, until_gone(client));
}
