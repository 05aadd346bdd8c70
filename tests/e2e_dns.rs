//! End-to-end test of the cluster DNS against the real binary: `kube server`
//! (no agent) is read through `kubectl proxy` by the DNS of this test
//! process (`kube::dns::feed_index` + `serve` on 127.0.0.1:<free port>), and
//! objects made with the real kubectl must resolve, change and disappear.
//! Needs no root and touches only loopback.

mod common;

use common::Cluster;
use futures::StreamExt;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use http_body_util::BodyExt;
use kube::dns::watch::EventStream;
use kube::dns::{ApiSource, DnsConfig, DnsError};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// `kubectl proxy` on a free loopback port, stopped by PID on drop.
struct Proxy {
    child: Child,
    addr: SocketAddr,
}

impl Proxy {
    fn start(cluster: &Cluster) -> Proxy {
        let mut child = Command::new(common::client("kubectl"))
            .args(["proxy", "--port=0", "--address=127.0.0.1"])
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("HOME", cluster.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kubectl proxy");
        let stdout = child.stdout.take().expect("proxy stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the proxy's first line");
        // "Starting to serve on 127.0.0.1:41235"
        let addr = line.trim().rsplit(' ').next().and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            panic!("unexpected kubectl proxy output: {line:?}");
        };
        Proxy { child, addr }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The API through `kubectl proxy` (plain HTTP on loopback).
#[derive(Clone)]
struct ProxySource {
    addr: SocketAddr,
}

impl ProxySource {
    async fn get(&self, uri: &str) -> Result<http::Response<hyper::body::Incoming>, DnsError> {
        let failed = |message: String| DnsError::Api { uri: uri.to_string(), code: 0, message };
        let stream = tokio::net::TcpStream::connect(self.addr).await.map_err(|e| failed(e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| failed(e.to_string()))?;
        tokio::spawn(connection);
        let request = http::Request::get(uri)
            .header(http::header::HOST, "127.0.0.1")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| failed(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            let code = response.status().as_u16();
            return Err(DnsError::Api { uri: uri.to_string(), code, message: "request failed".into() });
        }
        Ok(response)
    }
}

impl ApiSource for ProxySource {
    async fn list(&self, uri: &str) -> Result<Value, DnsError> {
        let body = self.get(uri).await?.into_body().collect().await;
        let bytes = body.map_err(|e| DnsError::Api { uri: uri.into(), code: 0, message: e.to_string() })?.to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| DnsError::Api { uri: uri.into(), code: 0, message: e.to_string() })
    }

    async fn watch(&self, uri: &str) -> Result<EventStream, DnsError> {
        let body = self.get(uri).await?.into_body().into_data_stream();
        let lines = futures::stream::unfold((body, Vec::<u8>::new()), |(mut body, mut buffer)| async move {
            loop {
                if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    return Some((line, (body, buffer)));
                }
                let chunk = body.next().await?.ok()?;
                buffer.extend_from_slice(&chunk);
            }
        });
        Ok(Box::pin(lines.filter_map(|line| async move {
            let event: Value = serde_json::from_slice(&line).ok()?;
            Some((event.get("type")?.as_str()?.to_string(), event.get("object")?.clone()))
        })))
    }
}

async fn ask(client: &mut Client<TokioRuntimeProvider>, name: &str, qtype: RecordType) -> Message {
    let name = Name::from_ascii(name).expect("a DNS name");
    client.query(name, DNSClass::IN, qtype).await.expect("a DNS answer").into_message()
}

fn data(message: &Message) -> Vec<String> {
    let mut data: Vec<String> = message.answers.iter().map(|r| r.data.to_string()).collect();
    data.sort();
    data
}

/// Asks until the answer's (rcode, sorted data) is `want`, or fails after 20 s.
async fn eventually(
    client: &mut Client<TokioRuntimeProvider>,
    name: &str,
    qtype: RecordType,
    want: (ResponseCode, &[&str]),
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = ask(client, name, qtype).await;
        let got = (answer.metadata.response_code, data(&answer));
        if got.0 == want.0 && got.1 == want.1 {
            return;
        }
        assert!(Instant::now() < deadline, "{name} {qtype}: still {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const HEADLESS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{name: pg, port: 5432, protocol: TCP}]
endpoints:
- addresses: ["10.42.0.7"]
  hostname: db-0
- addresses: ["10.42.0.8"]
  hostname: db-1
  conditions: {ready: READY}
"#;

/// The DNS of this test process fed from `cluster`, and a client of it.
struct Dns {
    client: Client<TokioRuntimeProvider>,
    running: kube::dns::Running,
    shutdown: CancellationToken,
    _cancel_on_drop: tokio_util::sync::DropGuard,
    _proxy: Proxy,
}

impl Dns {
    async fn start(cluster: &Cluster) -> Dns {
        let proxy = Proxy::start(cluster);
        let shutdown = CancellationToken::new();
        let index = kube::dns::feed_index(ProxySource { addr: proxy.addr }, shutdown.clone());
        let config = DnsConfig {
            listen: vec!["127.0.0.1:0".parse().expect("an address")],
            domain: "cluster.local".into(),
            upstreams: Vec::new(),
        };
        let running = kube::dns::serve(index, &config, shutdown.clone()).await.expect("serve DNS");
        let stream = UdpClientStream::builder(running.addrs[0], TokioRuntimeProvider::default()).build();
        let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(background);
        Dns { client, running, _cancel_on_drop: shutdown.clone().drop_guard(), shutdown, _proxy: proxy }
    }

    /// Stops the server and checks it stopped cleanly.
    async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(5), self.running.wait()).await;
        stopped.expect("DNS stopped in time").expect("DNS ran");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_follow_services_and_endpoints() {
    let cluster = Cluster::start();
    let mut server = Dns::start(&cluster).await;
    let dns = &mut server.client;
    let ok = ResponseCode::NoError;

    // The built-in `kubernetes` Service, from the first list.
    eventually(dns, "kubernetes.default.svc.cluster.local.", RecordType::A, (ok, &["10.43.0.1"])).await;

    // A ClusterIP Service: A, SRV for its named port, PTR.
    cluster.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let ip = cluster.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    eventually(dns, "web.default.svc.cluster.local.", RecordType::A, (ok, &[ip.as_str()])).await;
    let srv = "0 100 80 web.default.svc.cluster.local.";
    eventually(dns, "_80-8080._tcp.web.default.svc.cluster.local.", RecordType::SRV, (ok, &[srv])).await;
    let octets: Vec<&str> = ip.split('.').rev().collect();
    let reverse = format!("{}.in-addr.arpa.", octets.join("."));
    eventually(dns, &reverse, RecordType::PTR, (ok, &["web.default.svc.cluster.local."])).await;

    // A headless Service with a hand-made EndpointSlice: ready endpoints
    // only, hostnames, SRV per endpoint; then the second endpoint turns ready.
    let apply = |ready: &str| {
        let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &HEADLESS.replace("READY", ready));
        assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));
    };
    apply("false");
    eventually(dns, "db.default.svc.cluster.local.", RecordType::A, (ok, &["10.42.0.7"])).await;
    eventually(dns, "db-0.db.default.svc.cluster.local.", RecordType::A, (ok, &["10.42.0.7"])).await;
    let nx = ResponseCode::NXDomain;
    eventually(dns, "db-1.db.default.svc.cluster.local.", RecordType::A, (nx, &[])).await;
    apply("true");
    eventually(dns, "db.default.svc.cluster.local.", RecordType::A, (ok, &["10.42.0.7", "10.42.0.8"])).await;
    let targets = ["0 50 5432 db-0.db.default.svc.cluster.local.", "0 50 5432 db-1.db.default.svc.cluster.local."];
    eventually(dns, "_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV, (ok, &targets)).await;

    // ExternalName: a CNAME (no upstream here, so the CNAME alone).
    cluster.ok(&["create", "service", "externalname", "ext", "--external-name", "example.com"]);
    eventually(dns, "ext.default.svc.cluster.local.", RecordType::A, (ok, &["example.com."])).await;

    // Deleted objects: NXDOMAIN.
    cluster.ok(&["delete", "service", "web"]);
    eventually(dns, "web.default.svc.cluster.local.", RecordType::A, (nx, &[])).await;
    cluster.ok(&["delete", "endpointslice", "db-1"]);
    eventually(dns, "db.default.svc.cluster.local.", RecordType::A, (nx, &[])).await;
    eventually(dns, "nothing.default.svc.cluster.local.", RecordType::A, (nx, &[])).await;
    server.stop().await;
}

const STATEFUL_SET: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: sts}
spec:
  clusterIP: None
  selector: {app: sts}
  ports: [{name: web, port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: sts
  replicas: 2
  selector: {matchLabels: {app: sts}}
  template:
    metadata: {labels: {app: sts}}
    spec:
      containers: [{name: web, image: busybox:latest}]
"#;

/// StatefulSet pods (scheduled on fake nodes, made Ready by the test playing
/// the kubelet) get `<pod>.<serviceName>.<ns>.svc` names from their hostname
/// and subdomain, and pod names `a-b-c-d.<ns>.pod`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stateful_set_pods_get_stable_names() {
    let cluster = Cluster::start();
    let _nodes = common::kubelet::Heartbeats::start(&cluster, common::kubelet::NODES);
    let mut server = Dns::start(&cluster).await;
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], STATEFUL_SET);
    assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));
    let mut next_ip = 100;
    let deadline = Instant::now() + Duration::from_secs(60);
    let names = ["web-0.sts.default.svc.cluster.local.", "web-1.sts.default.svc.cluster.local."];
    let mut answers = Vec::new();
    loop {
        common::kubelet::kubelet_pass(&cluster, "app=sts", &mut next_ip);
        answers.clear();
        for name in names {
            answers.push(data(&ask(&mut server.client, name, RecordType::A).await));
        }
        if answers.iter().all(|a| a.len() == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "StatefulSet names not answered: {answers:?}\n{}", cluster.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pod_ip = |pod: &str| cluster.ok(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"]);
    assert_eq!(answers, [vec![pod_ip("web-0")], vec![pod_ip("web-1")]]);
    let ok = ResponseCode::NoError;
    let mut both = [pod_ip("web-0"), pod_ip("web-1")];
    both.sort();
    let both: Vec<&str> = both.iter().map(String::as_str).collect();
    eventually(&mut server.client, "sts.default.svc.cluster.local.", RecordType::A, (ok, &both)).await;
    let dashed = format!("{}.default.pod.cluster.local.", pod_ip("web-0").replace('.', "-"));
    let web0 = pod_ip("web-0");
    eventually(&mut server.client, &dashed, RecordType::A, (ok, &[web0.as_str()])).await;
    server.stop().await;
}
