//! A small benchmark of the server on a real socket (ignored by default; run
//! by scripts/bench-dns.sh): queries/s and p50/p99 latency per kind of
//! question, from concurrent UDP clients, with 10,000 extra Services indexed.

use super::fixture;
use super::*;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::json;
use std::sync::RwLock;
use std::time::Instant;

const EXTRA_SERVICES: u32 = 10_000;
const CLIENTS: usize = 4;

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).expect("a name"), qtype));
    message.to_vec().expect("encode a query")
}

/// One client: sends `bytes` and waits for each answer until `until`.
async fn client(server: SocketAddr, bytes: Vec<u8>, until: Instant) -> Vec<Duration> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind a client");
    socket.connect(server).await.expect("connect");
    let mut buffer = vec![0u8; 4096];
    let mut latencies = Vec::new();
    while Instant::now() < until {
        let started = Instant::now();
        socket.send(&bytes).await.expect("send");
        match tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buffer)).await {
            Ok(Ok(_)) => latencies.push(started.elapsed()),
            _ => panic!("no answer within 2 s"),
        }
    }
    latencies
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: scripts/bench-dns.sh"]
async fn bench() {
    let seconds: u64 = std::env::var("KUBE_DNS_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut index = fixture::index();
    for n in 0..EXTRA_SERVICES {
        let ip = format!("10.43.{}.{}", 100 + n / 250, 1 + n % 250);
        let svc = json!({"metadata": {"namespace": "bench", "name": format!("svc-{n}")},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}});
        index.upsert(Kind::Services, &svc);
    }
    let upstream = fixture::fake_upstream().await;
    let config = DnsConfig {
        listen: vec!["127.0.0.1:0".parse().expect("an address")],
        domain: "cluster.local".into(),
        upstreams: vec![upstream.addr],
    };
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let running = serve(Arc::new(RwLock::new(index)), &config, shutdown.clone()).await.expect("serve");
    let server = running.addrs[0];
    println!("cluster DNS benchmark: {CLIENTS} UDP clients, {seconds} s per case, {EXTRA_SERVICES} extra Services");
    let cases = [
        ("A (ClusterIP)", "svc-4711.bench.svc.cluster.local.", RecordType::A),
        ("A (headless)", "db.default.svc.cluster.local.", RecordType::A),
        ("SRV (headless)", "_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV),
        ("NXDOMAIN", "nope.default.svc.cluster.local.", RecordType::A),
        ("PTR", "20.0.43.10.in-addr.arpa.", RecordType::PTR),
        ("forwarded", "www.example.org.", RecordType::A),
    ];
    for (label, name, qtype) in cases {
        let until = Instant::now() + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..CLIENTS).map(|_| tokio::spawn(client(server, query(name, qtype), until))).collect();
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.expect("a client"));
        }
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        println!(
            "{label:<16} {:>8.0} queries/s   p50 {:>7.1} µs   p99 {:>7.1} µs",
            latencies.len() as f64 / seconds as f64,
            at(0.50).as_secs_f64() * 1e6,
            at(0.99).as_secs_f64() * 1e6
        );
    }
}
