//! Test fixture: an index filled from Service, EndpointSlice and Pod JSON
//! objects, shared by the lookup, handler and server tests.

use super::index::{Index, Kind};
use serde_json::{Value, json};

fn service(ns: &str, name: &str, spec: Value) -> Value {
    json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})
}

fn slice(name: &str, service: &str, endpoints: Value, ports: Value) -> Value {
    json!({"metadata": {"namespace": "default", "name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": ports})
}

/// default/web (ClusterIP 10.43.0.20, ports http/80, 9090, dns/53 UDP),
/// default/dual (10.43.0.21 + fd00:43::21), default/db (headless: db-0 at
/// 10.42.0.7 named by its pod, db-1 at 10.42.0.8 named by its endpoint, a
/// not-ready 10.42.0.9; port pg/5432), default/empty (headless, no
/// endpoints), default/ext (ExternalName example.com), default/alias
/// (ExternalName web.default.svc.cluster.local), other/api (10.43.0.30).
pub fn index() -> Index {
    let mut index = Index::default();
    index.replace(
        Kind::Services,
        &[
            service(
                "default",
                "web",
                json!({"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"], "ports": [
                    {"name": "http", "port": 80, "protocol": "TCP"},
                    {"port": 9090, "protocol": "TCP"},
                    {"name": "dns", "port": 53, "protocol": "UDP"}]}),
            ),
            service("default", "dual", json!({"clusterIP": "10.43.0.21", "clusterIPs": ["10.43.0.21", "fd00:43::21"]})),
            service("default", "db", json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]})),
            service("default", "empty", json!({"clusterIP": "None"})),
            service("default", "ext", json!({"type": "ExternalName", "externalName": "example.com"})),
            service(
                "default",
                "alias",
                json!({"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}),
            ),
            service("other", "api", json!({"clusterIP": "10.43.0.30"})),
        ],
    );
    let pg = json!([{"name": "pg", "port": 5432, "protocol": "TCP"}]);
    index.replace(
        Kind::EndpointSlices,
        &[
            slice(
                "db-a",
                "db",
                json!([{"addresses": ["10.42.0.7"], "targetRef": {"kind": "Pod", "name": "db-0"}},
                       {"addresses": ["10.42.0.8"], "hostname": "db-1"},
                       {"addresses": ["10.42.0.9"], "conditions": {"ready": false}}]),
                pg.clone(),
            ),
            slice("empty-a", "empty", json!([]), pg),
        ],
    );
    index.replace(
        Kind::Pods,
        &[json!({"metadata": {"namespace": "default", "name": "db-0"},
            "spec": {"hostname": "db-0", "subdomain": "db"}, "status": {"podIP": "10.42.0.7"}})],
    );
    index
}

/// A fake upstream resolver on 127.0.0.1 (UDP and TCP, one port): answers
/// `A` for any name with 192.0.2.1, except NXDOMAIN for names starting with
/// `missing.`; counts the questions it got.
pub struct FakeUpstream {
    pub addr: std::net::SocketAddr,
    pub questions: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn fake_answer(query: &[u8]) -> Option<Vec<u8>> {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::{RData, Record, rdata::A};
    let request = Message::from_vec(query).ok()?;
    let mut answer = Message::response(request.metadata.id, request.metadata.op_code);
    answer.metadata.recursion_desired = request.metadata.recursion_desired;
    answer.metadata.recursion_available = true;
    let question = request.queries.first()?.clone();
    if question.name().to_ascii().starts_with("missing.") {
        answer.metadata.response_code = ResponseCode::NXDomain;
    } else if question.query_type() == hickory_proto::rr::RecordType::A {
        answer.add_answer(Record::from_rdata(question.name().clone(), 300, RData::A(A::new(192, 0, 2, 1))));
    }
    answer.add_query(question);
    answer.to_vec().ok()
}

pub async fn fake_upstream() -> FakeUpstream {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind the fake upstream");
    let addr = udp.local_addr().expect("fake upstream address");
    let tcp = tokio::net::TcpListener::bind(addr).await.expect("bind the fake upstream over TCP");
    let questions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = questions.clone();
    let udp_task = tokio::spawn(async move {
        let mut buffer = vec![0u8; 65535];
        while let Ok((n, from)) = udp.recv_from(&mut buffer).await {
            counted.fetch_add(1, Ordering::SeqCst);
            if let Some(answer) = fake_answer(&buffer[..n]) {
                let _ = udp.send_to(&answer, from).await;
            }
        }
    });
    let counted = questions.clone();
    let tcp_task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let Ok(length) = stream.read_u16().await else { continue };
            let mut query = vec![0u8; usize::from(length)];
            if stream.read_exact(&mut query).await.is_err() {
                continue;
            }
            if let Some(answer) = fake_answer(&query) {
                let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                framed.extend(answer);
                let _ = stream.write_all(&framed).await;
            }
        }
    });
    FakeUpstream { addr, questions, tasks: vec![udp_task, tcp_task] }
}
