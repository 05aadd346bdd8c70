//! The server on a real socket: 127.0.0.1:<free port> serving the fixture
//! index, asked by a real DNS client (hickory's, over UDP and TCP, and
//! busybox `nslookup` when the host has it), forwarding to a fake upstream.

use super::fixture;
use super::*;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use std::sync::RwLock;

struct Served {
    running: Option<Running>,
    shutdown: CancellationToken,
    _upstream: fixture::FakeUpstream,
}

impl Served {
    fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Served {
    let upstream = fixture::fake_upstream().await;
    let config = DnsConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        domain: "cluster.local".into(),
        upstreams: vec![upstream.addr],
    };
    let shutdown = CancellationToken::new();
    let running = serve(Arc::new(RwLock::new(fixture::index())), &config, shutdown.clone()).await.unwrap();
    Served { running: Some(running), shutdown, _upstream: upstream }
}

async fn udp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let stream = UdpClientStream::builder(addr, TokioRuntimeProvider::default()).build();
    let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(background);
    client
}

async fn tcp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (stream, sender) = TcpClientStream::new(addr, None, None, TokioRuntimeProvider::default());
    let (client, background) = Client::<TokioRuntimeProvider>::new(stream.await.unwrap(), sender);
    tokio::spawn(background);
    client
}

async fn ask(client: &mut Client<TokioRuntimeProvider>, name: &str, qtype: RecordType) -> Message {
    let response = client.query(Name::from_ascii(name).unwrap(), DNSClass::IN, qtype).await.unwrap();
    response.into_message()
}

fn data(message: &Message) -> Vec<String> {
    message.answers.iter().map(|r| r.data.to_string()).collect()
}

#[tokio::test]
async fn a_real_client_gets_every_kind_of_answer_over_udp() {
    let served = start().await;
    let mut client = udp_client(served.running().addrs[0]).await;
    let a = ask(&mut client, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(data(&a), ["10.43.0.20"]);
    let srv = ask(&mut client, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(data(&srv), ["0 100 80 web.default.svc.cluster.local."]);
    let ptr = ask(&mut client, "20.0.43.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(data(&ptr), ["web.default.svc.cluster.local."]);
    let cname = ask(&mut client, "ext.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(data(&cname), ["example.com.", "192.0.2.1"]);
    let missing = ask(&mut client, "nope.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    let forwarded = ask(&mut client, "www.example.org.", RecordType::A).await;
    assert_eq!(data(&forwarded), ["192.0.2.1"]);
    assert_eq!(served.running().metrics.get(metrics::Outcome::Forwarded), 1);
}

#[tokio::test]
async fn a_real_client_gets_answers_over_tcp() {
    let served = start().await;
    let mut client = tcp_client(served.running().addrs[0]).await;
    let a = ask(&mut client, "db.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(data(&a), ["10.42.0.7", "10.42.0.8"]);
    let forwarded = ask(&mut client, "www.example.org.", RecordType::A).await;
    assert_eq!(data(&forwarded), ["192.0.2.1"]);
}

#[tokio::test]
async fn the_server_stops_on_shutdown() {
    let mut served = start().await;
    served.shutdown.cancel();
    let running = served.running.take().expect("running");
    tokio::time::timeout(Duration::from_secs(5), running.wait()).await.expect("stopped in time").unwrap();
}

/// busybox `nslookup` (its own resolver code) as a second client; it takes
/// the server as `address:port`.
#[tokio::test]
async fn busybox_nslookup_resolves_services() {
    let Some(busybox) = ["/usr/bin/busybox", "/bin/busybox"].into_iter().find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("SKIPPED busybox_nslookup_resolves_services: no busybox on this host");
        return;
    };
    let served = start().await;
    let server = served.running().addrs[0].to_string();
    let lookup = |name: &'static str, qtype: &'static str| {
        tokio::process::Command::new(busybox).args(["nslookup", &format!("-type={qtype}"), name, &server]).output()
    };
    let out = lookup("web.default.svc.cluster.local", "a").await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Address: 10.43.0.20"), "{text}");
    let out = lookup("_pg._tcp.db.default.svc.cluster.local", "srv").await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("5432 db-0.db.default.svc.cluster.local"), "{text}");
    let out = lookup("nope.default.svc.cluster.local", "a").await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("NXDOMAIN"), "{text}");
}
