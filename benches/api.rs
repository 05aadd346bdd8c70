//! API server benchmark (`cargo bench --bench api`): starts the real
//! `kube server` (release build) and measures, over HTTPS/HTTP2 with client
//! certificates, p50/p99 latency of create, get, update and list (1k
//! objects) with 1 and 50 concurrent clients, watch delivery latency, and the
//! server's RSS idle and holding 10k ConfigMaps. Prints figures; asserts nothing.

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    tls: Arc<rustls::ClientConfig>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn yaml_field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines().find_map(|l| l.trim().strip_prefix(&format!("{key}: "))).unwrap_or_default()
}

fn start() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let child = Command::new(env!("CARGO_BIN_EXE_kube"))
        .args(["server", "--disable-agent", "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1"])
        .args(["--https-listen-port", &port.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kube server");
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kubeconfig.exists() {
        assert!(Instant::now() < deadline, "no kubeconfig");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let text = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    let b64 = |k| base64::engine::general_purpose::STANDARD.decode(yaml_field(&text, k)).expect("base64");
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&b64("certificate-authority-data")) {
        roots.add(ca.expect("ca")).expect("add ca");
    }
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&b64("client-certificate-data")).collect::<Result<_, _>>().expect("cert");
    let key = PrivateKeyDer::from_pem_slice(&b64("client-key-data")).expect("key");
    let mut tls =
        rustls::ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(certs, key).expect("tls");
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Server { child, port, _dir: dir, tls: Arc::new(tls) }
}

async fn connect(server: &Server) -> Sender {
    loop {
        if let Ok(tcp) = TcpStream::connect(("127.0.0.1", server.port)).await {
            tcp.set_nodelay(true).expect("nodelay");
            let connector = tokio_rustls::TlsConnector::from(server.tls.clone());
            let name = ServerName::try_from("localhost").expect("name");
            let tls = connector.connect(name, tcp).await.expect("tls handshake");
            let (sender, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tls),
            )
            .await
            .expect("h2 handshake");
            tokio::spawn(conn);
            return sender;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call(sender: &mut Sender, method: &str, path: &str, body: Option<String>) -> (u16, Bytes) {
    let request = http::Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("request");
    sender.ready().await.expect("ready");
    let response = sender.send_request(request).await.expect("send");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, bytes)
}

fn configmap(name: &str, value: &str) -> String {
    let data = "x".repeat(100);
    format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"k":"{value}","pad":"{data}"}}}}"#
    )
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99))
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// Runs `per_client` operations on each of `clients` connections; returns latencies.
async fn run(server: &Server, ns: &str, clients: usize, per_client: usize, op: &'static str) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut sender = connect(server).await;
        let ns = ns.to_string();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let name = format!("c{c}-{i}");
                let base = format!("/api/v1/namespaces/{ns}/configmaps");
                let started = Instant::now();
                let (status, _) = match op {
                    "create" => call(&mut sender, "POST", &base, Some(configmap(&name, "1"))).await,
                    "get" => call(&mut sender, "GET", &format!("{base}/{name}"), None).await,
                    "update" => call(&mut sender, "PUT", &format!("{base}/{name}"), Some(configmap(&name, "2"))).await,
                    _ => call(&mut sender, "GET", &format!("/api/v1/namespaces/list-{ns}/configmaps"), None).await,
                };
                samples.push(started.elapsed());
                assert!(status < 300, "{op} failed with {status}");
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    all
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = start();
    let mut admin = connect(&server).await;
    while call(&mut admin, "GET", "/readyz", None).await.0 != 200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_mib(server.child.id());
    println!("kube API benchmark (HTTPS, HTTP/2, client certificates, durable single-member store)");
    println!("idle RSS: {idle:.1} MiB");
    for clients in [1usize, 50] {
        for ns in [format!("b{clients}"), format!("list-b{clients}")] {
            call(&mut admin, "POST", "/api/v1/namespaces", Some(format!(r#"{{"metadata":{{"name":"{ns}"}}}}"#))).await;
        }
        // 1k objects for the list benchmark.
        let list_ns = format!("list-b{clients}");
        let fill = run(&server, &list_ns, 10, 100, "create").await;
        drop(fill);
        let per_client = if clients == 1 { 500 } else { 40 };
        for op in ["create", "get", "update", "list"] {
            let per = if op == "list" { per_client.min(20) } else { per_client };
            let samples = run(&server, &format!("b{clients}"), clients, per, op).await;
            let (p50, p99) = percentiles(samples);
            let label = if op == "list" { "list (1k objects)" } else { op };
            println!("{clients:>2} clients  {label:<18} p50 {p50:>7.2} ms   p99 {p99:>7.2} ms");
        }
    }
    // Watch delivery: time from sending a write to the watch event arriving.
    let mut watcher = connect(&server).await;
    let request = http::Request::builder()
        .uri("https://localhost/api/v1/namespaces/b1/configmaps?watch=true&resourceVersion=0&fieldSelector=metadata.name%3Dwatched")
        .body(Full::new(Bytes::new()))
        .expect("watch request");
    watcher.ready().await.expect("ready");
    let mut stream = watcher.send_request(request).await.expect("watch").into_body();
    let mut samples = Vec::new();
    let mut writer = connect(&server).await;
    call(&mut writer, "POST", "/api/v1/namespaces/b1/configmaps", Some(configmap("watched", "0"))).await;
    let _ = stream.frame().await;
    for i in 1..=200 {
        let started = Instant::now();
        call(
            &mut writer,
            "PUT",
            "/api/v1/namespaces/b1/configmaps/watched",
            Some(configmap("watched", &i.to_string())),
        )
        .await;
        loop {
            let frame = stream.frame().await.expect("watch open").expect("watch frame");
            if frame.data_ref().is_some_and(|d| d.windows(8).any(|w| w == b"MODIFIED")) {
                break;
            }
        }
        samples.push(started.elapsed());
    }
    let (p50, p99) = percentiles(samples);
    println!("watch delivery (write sent → event received)  p50 {p50:.2} ms   p99 {p99:.2} ms");
    // Memory holding 10k ConfigMaps (about 10k more than now).
    call(&mut admin, "POST", "/api/v1/namespaces", Some(r#"{"metadata":{"name":"mem"}}"#.into())).await;
    run(&server, "mem", 20, 500, "create").await;
    println!("RSS holding ~12k ConfigMaps: {:.1} MiB", rss_mib(server.child.id()));
}
