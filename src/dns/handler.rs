//! The hickory-server request handler: answers cluster names from the index
//! (authoritative, TTL 5 s, SOA in negative answers), follows ExternalName
//! CNAMEs, and forwards every other name to the upstream resolvers as the
//! client sent it, answering SERVFAIL when they fail.

use super::index::SharedIndex;
use super::lookup::{Lookup, Zone, lookup};
use super::metrics::{Metrics, Outcome};
use super::upstream::Upstreams;
use hickory_net::runtime::Time;
use hickory_net::xfer::Protocol;
use hickory_proto::op::{Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use std::sync::Arc;

/// How many CNAMEs an answer follows before it stops.
const MAX_CNAME_CHAIN: usize = 8;

pub struct Handler {
    pub index: SharedIndex,
    pub zone: Zone,
    pub upstreams: Upstreams,
    pub metrics: Arc<Metrics>,
}

/// A response before it is encoded.
#[derive(Debug)]
pub struct Reply {
    pub metadata: Metadata,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Reply {
    fn new(request: &Metadata, code: ResponseCode) -> Reply {
        let mut metadata = Metadata::response_from_request(request);
        metadata.recursion_available = true;
        metadata.response_code = code;
        Reply { metadata, answers: Vec::new(), authorities: Vec::new(), additionals: Vec::new() }
    }

    fn authoritative(mut self) -> Reply {
        self.metadata.authoritative = true;
        self
    }

    /// An upstream's answer, under the client's ID.
    fn from_upstream(request: &Metadata, answer: Message) -> Reply {
        let mut metadata = answer.metadata;
        metadata.id = request.id;
        metadata.recursion_available = true;
        Reply { metadata, answers: answer.answers, authorities: answer.authorities, additionals: answer.additionals }
    }
}

impl Handler {
    /// The reply to one query; `raw` is the client's message, forwarded
    /// unchanged (but for its ID) when the name is not the cluster's.
    pub async fn resolve(&self, request: &Metadata, query: &Query, raw: &[u8], tcp: bool) -> Reply {
        if request.message_type != MessageType::Query || request.op_code != OpCode::Query {
            return Reply::new(request, ResponseCode::NotImp);
        }
        let found = {
            let index = self.index.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            let found = lookup(&index, &self.zone, query.name(), query.query_type());
            (found, index.serial)
        };
        let (found, serial) = found;
        if query.query_class() != DNSClass::IN && found != Lookup::Forward {
            return Reply::new(request, ResponseCode::NotImp);
        }
        match found {
            Lookup::Forward => self.forward(request, raw, tcp).await,
            Lookup::NotSynced => {
                self.metrics.count(Outcome::NotSynced);
                Reply::new(request, ResponseCode::ServFail)
            }
            Lookup::Alias { cname, target } => self.follow(request, query.query_type(), cname, target, serial).await,
            other => {
                self.metrics.count(Outcome::Cluster);
                self.local_reply(request, other, serial)
            }
        }
    }

    /// A reply from a lookup in the cluster zone.
    fn local_reply(&self, request: &Metadata, found: Lookup, serial: u32) -> Reply {
        match found {
            Lookup::Answer { answers, additionals } => {
                let mut reply = Reply::new(request, ResponseCode::NoError).authoritative();
                reply.answers = answers;
                reply.additionals = additionals;
                reply
            }
            Lookup::NxDomain | Lookup::NoData => {
                let code = if found == Lookup::NxDomain { ResponseCode::NXDomain } else { ResponseCode::NoError };
                let mut reply = Reply::new(request, code).authoritative();
                reply.authorities.push(self.zone.soa(serial));
                reply
            }
            _ => Reply::new(request, ResponseCode::ServFail),
        }
    }

    async fn forward(&self, request: &Metadata, raw: &[u8], tcp: bool) -> Reply {
        match self.upstreams.exchange(raw, tcp).await.map(|bytes| Message::from_vec(&bytes)) {
            Ok(Ok(answer)) => {
                self.metrics.count(Outcome::Forwarded);
                Reply::from_upstream(request, answer)
            }
            Ok(Err(err)) => {
                self.metrics.count(Outcome::UpstreamFailed);
                tracing::debug!(error = %err, "cannot decode an upstream DNS answer");
                Reply::new(request, ResponseCode::ServFail)
            }
            Err(err) => {
                self.metrics.count(Outcome::UpstreamFailed);
                tracing::debug!(error = %err, "upstream DNS failed");
                Reply::new(request, ResponseCode::ServFail)
            }
        }
    }

    /// The CNAME of an ExternalName Service, followed to its target (in the
    /// zone from the index, else through the upstreams). The CNAME alone is
    /// answered when the target cannot be resolved now.
    async fn follow(
        &self,
        request: &Metadata,
        qtype: RecordType,
        cname: Box<Record>,
        target: Name,
        serial: u32,
    ) -> Reply {
        self.metrics.count(Outcome::Cluster);
        let mut reply = Reply::new(request, ResponseCode::NoError).authoritative();
        reply.answers.push(*cname);
        let mut target = target;
        for _ in 0..MAX_CNAME_CHAIN {
            let found = {
                let index = self.index.read().unwrap_or_else(|poisoned| poisoned.into_inner());
                lookup(&index, &self.zone, &target, qtype)
            };
            match found {
                Lookup::Answer { answers, .. } => {
                    reply.answers.extend(answers);
                    return reply;
                }
                Lookup::Alias { cname, target: next } => {
                    reply.answers.push(*cname);
                    target = next;
                }
                Lookup::NxDomain | Lookup::NoData => {
                    if found == Lookup::NxDomain {
                        reply.metadata.response_code = ResponseCode::NXDomain;
                    }
                    reply.authorities.push(self.zone.soa(serial));
                    return reply;
                }
                Lookup::NotSynced => return reply,
                Lookup::Forward => {
                    if let Some(answer) = self.ask_upstream(&target, qtype).await {
                        reply.answers.extend(answer.answers);
                        reply.metadata.response_code = answer.metadata.response_code;
                    }
                    return reply;
                }
            }
        }
        reply
    }

    /// A fresh recursive query to the upstreams (UDP, then TCP when truncated).
    async fn ask_upstream(&self, name: &Name, qtype: RecordType) -> Option<Message> {
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(name.clone(), qtype));
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        message.set_edns(edns);
        let bytes = message.to_vec().ok()?;
        let mut answer = Message::from_vec(&self.upstreams.exchange(&bytes, false).await.ok()?).ok()?;
        if answer.metadata.truncation {
            answer = Message::from_vec(&self.upstreams.exchange(&bytes, true).await.ok()?).ok()?;
        }
        Some(answer)
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let queries = request.queries.queries();
        let reply = match queries {
            [query] => {
                let tcp = request.protocol() != Protocol::Udp;
                self.resolve(&request.metadata, query.original(), request.as_slice(), tcp).await
            }
            _ => Reply::new(&request.metadata, ResponseCode::FormErr),
        };
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().max(512));
            edns.set_version(0);
            edns
        });
        let metadata = reply.metadata;
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let message = builder.build(metadata, &reply.answers, &reply.authorities, [], &reply.additionals);
        match response.send_response(message).await {
            Ok(info) => info,
            Err(err) => {
                tracing::debug!(error = %err, "cannot send a DNS answer");
                let mut failed = Metadata::response_from_request(&request.metadata);
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata: failed, counts: HeaderCounts::default() })
            }
        }
    }
}

#[cfg(test)]
#[path = "handler_tests.rs"]
mod tests;
