//! Handler tests: DNS messages in (encoded as a client would), messages out
//! (decoded from what the handler sends), over the fixture index and a fake
//! upstream resolver.

use super::*;
use crate::dns::fixture;
use crate::dns::index::Index;
use hickory_net::NetError;
use hickory_net::runtime::TokioTime;
use hickory_proto::op::Message;
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::zone_handler::MessageResponse;
use std::net::SocketAddr;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// A ResponseHandler that keeps the encoded answer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

#[async_trait::async_trait]
impl ResponseHandler for Captured {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::new();
        let mut encoder = BinEncoder::new(&mut bytes);
        let info = response.destructive_emit(&mut encoder)?;
        *self.0.lock().unwrap() = bytes;
        Ok(info)
    }
}

fn handler(index: Index, upstreams: Vec<SocketAddr>) -> Handler {
    let mut upstreams = Upstreams::new(upstreams);
    upstreams.timeout = Duration::from_millis(300);
    Handler {
        index: Arc::new(RwLock::new(index)),
        zone: Zone::new("cluster.local").unwrap(),
        upstreams,
        metrics: Arc::default(),
    }
}

fn query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 4242;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        message.set_edns(edns);
    }
    message.to_vec().unwrap()
}

async fn exchange_raw(handler: &Handler, bytes: Vec<u8>, protocol: Protocol) -> Message {
    let request = Request::from_bytes(bytes, "127.0.0.1:5353".parse().unwrap(), protocol).unwrap();
    let captured = Captured::default();
    handler.handle_request::<_, TokioTime>(&request, captured.clone()).await;
    let bytes = captured.0.lock().unwrap().clone();
    Message::from_vec(&bytes).unwrap()
}

async fn ask(handler: &Handler, name: &str, qtype: RecordType) -> Message {
    exchange_raw(handler, query(name, qtype, false), Protocol::Udp).await
}

fn answers(message: &Message) -> Vec<String> {
    message.answers.iter().map(|r| r.data.to_string()).collect()
}

#[tokio::test]
async fn cluster_answers_are_authoritative_with_the_ttl() {
    let handler = handler(fixture::index(), Vec::new());
    let answer = ask(&handler, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answer.metadata.id, 4242);
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative && answer.metadata.recursion_available);
    assert_eq!(answers(&answer), ["10.43.0.20"]);
    assert_eq!(answer.answers[0].ttl, 5);
    assert_eq!(answer.queries[0].name().to_ascii(), "web.default.svc.cluster.local.");
    assert_eq!(handler.metrics.get(Outcome::Cluster), 1);
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_the_soa() {
    let handler = handler(fixture::index(), Vec::new());
    let missing = ask(&handler, "nope.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert!(missing.answers.is_empty());
    assert_eq!(missing.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(missing.authorities[0].name.to_ascii(), "cluster.local.");
    let nodata = ask(&handler, "web.default.svc.cluster.local.", RecordType::AAAA).await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);
}

#[tokio::test]
async fn srv_answers_carry_addresses_in_the_additional_section() {
    let handler = handler(fixture::index(), Vec::new());
    let answer = ask(&handler, "_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(answer.answers.len(), 2);
    let extra: Vec<String> = answer.additionals.iter().map(|r| format!("{} {}", r.name, r.data)).collect();
    assert_eq!(extra, ["db-0.db.default.svc.cluster.local. 10.42.0.7", "db-1.db.default.svc.cluster.local. 10.42.0.8"]);
}

#[tokio::test]
async fn other_names_are_forwarded_as_asked() {
    let upstream = fixture::fake_upstream().await;
    let handler = handler(fixture::index(), vec![upstream.addr]);
    let answer = ask(&handler, "example.com.", RecordType::A).await;
    assert_eq!(answer.metadata.id, 4242, "the client's ID, not the upstream one");
    assert!(!answer.metadata.authoritative);
    assert_eq!(answers(&answer), ["192.0.2.1"]);
    assert_eq!(answer.answers[0].ttl, 300);
    let missing = ask(&handler, "missing.example.com.", RecordType::A).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    let over_tcp = exchange_raw(&handler, query("tcp.example.com.", RecordType::A, false), Protocol::Tcp).await;
    assert_eq!(answers(&over_tcp), ["192.0.2.1"]);
    // Reverse names the cluster does not know go upstream too.
    let reverse = ask(&handler, "1.2.0.192.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(reverse.metadata.response_code, ResponseCode::NoError);
    assert_eq!(upstream.questions.load(std::sync::atomic::Ordering::SeqCst), 4);
    assert_eq!(handler.metrics.get(Outcome::Forwarded), 4);
}

#[tokio::test]
async fn failing_upstreams_give_servfail_not_a_hang() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let handler = handler(fixture::index(), vec![silent.local_addr().unwrap()]);
    let started = std::time::Instant::now();
    let answer = ask(&handler, "example.com.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_secs(2));
    let none = self::handler(fixture::index(), Vec::new());
    assert_eq!(ask(&none, "example.com.", RecordType::A).await.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(none.metrics.get(Outcome::UpstreamFailed), 1);
}

#[tokio::test]
async fn external_names_follow_the_cname_upstream() {
    let upstream = fixture::fake_upstream().await;
    let handler = handler(fixture::index(), vec![upstream.addr]);
    let answer = ask(&handler, "ext.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answers(&answer), ["example.com.", "192.0.2.1"]);
    assert_eq!(answer.answers[1].name.to_ascii(), "example.com.");
}

#[tokio::test]
async fn external_names_inside_the_cluster_follow_the_index() {
    let handler = handler(fixture::index(), Vec::new());
    let answer = ask(&handler, "alias.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answers(&answer), ["web.default.svc.cluster.local.", "10.43.0.20"]);
}

#[tokio::test]
async fn external_names_answer_the_cname_when_upstreams_fail() {
    let handler = handler(fixture::index(), Vec::new());
    let answer = ask(&handler, "ext.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answers(&answer), ["example.com."]);
}

#[tokio::test]
async fn servfail_until_the_index_is_listed() {
    let handler = handler(Index::default(), Vec::new());
    let answer = ask(&handler, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(handler.metrics.get(Outcome::NotSynced), 1);
}

#[tokio::test]
async fn edns_is_answered_with_edns() {
    let handler = handler(fixture::index(), Vec::new());
    let answer =
        exchange_raw(&handler, query("web.default.svc.cluster.local.", RecordType::A, true), Protocol::Udp).await;
    assert_eq!(answer.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    let plain = ask(&handler, "web.default.svc.cluster.local.", RecordType::A).await;
    assert!(plain.edns.is_none());
}

#[tokio::test]
async fn other_opcodes_are_not_implemented() {
    let handler = handler(fixture::index(), Vec::new());
    let mut message = Message::new(7, MessageType::Query, OpCode::Update);
    message.add_query(Query::query(Name::from_ascii("cluster.local.").unwrap(), RecordType::SOA));
    let answer = exchange_raw(&handler, message.to_vec().unwrap(), Protocol::Udp).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NotImp);
}
