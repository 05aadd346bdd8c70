//! openraft's `RaftNetworkFactory` over TCP with mutual TLS: one persistent
//! connection per peer, requests in order, reconnecting after any error.
//! Without TLS configured there is no peer network (a one-member store).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::command::{NodeId, TypeConfig};
use super::rpc::{RpcRequest, RpcResponse, read_frame, write_frame};

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

/// A factory for clients to peers.
#[derive(Clone, Default)]
pub struct Network {
    pub tls: Option<TlsConnector>,
    /// The peers the last call to failed, shared by every client so that a
    /// lost peer is logged once, not on every retry.
    lost: Arc<Mutex<BTreeSet<NodeId>>>,
}

impl Network {
    pub fn client(&self, target: NodeId, addr: &str) -> PeerClient {
        PeerClient { target, addr: addr.to_string(), tls: self.tls.clone(), conn: None, lost: self.lost.clone() }
    }
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    tls: Option<TlsConnector>,
    conn: Option<TlsStream<TcpStream>>,
    lost: Arc<Mutex<BTreeSet<NodeId>>>,
}

/// A peer call that did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("peer {target} at {addr} is unreachable: {source}")]
    Unreachable {
        target: NodeId,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("peer {target}: {source}")]
    Io {
        target: NodeId,
        #[source]
        source: std::io::Error,
    },
    #[error("peer {0} answered with the wrong message")]
    Mismatch(NodeId),
}

impl PeerClient {
    async fn connect(&mut self) -> Result<&mut TlsStream<TcpStream>, CallError> {
        if self.conn.is_none() {
            let unreachable = |source| CallError::Unreachable { target: self.target, addr: self.addr.clone(), source };
            let Some(tls) = &self.tls else {
                return Err(unreachable(std::io::Error::other("no peer TLS configured")));
            };
            let host = self.addr.rsplit_once(':').map_or(self.addr.as_str(), |(h, _)| h).trim_matches(['[', ']']);
            let name = ServerName::try_from(host.to_string()).map_err(|e| unreachable(std::io::Error::other(e)))?;
            let tcp = TcpStream::connect(&self.addr).await.map_err(unreachable)?;
            let _ = tcp.set_nodelay(true);
            let stream = tls.connect(name, tcp).await.map_err(unreachable)?;
            self.conn = Some(stream);
        }
        self.conn.as_mut().ok_or(CallError::Mismatch(self.target))
    }

    /// Sends one request and waits for its answer (at most `timeout`).
    pub async fn call(&mut self, req: &RpcRequest, timeout: Duration) -> Result<RpcResponse, CallError> {
        let target = self.target;
        let res = tokio::time::timeout(timeout, async {
            let conn = self.connect().await?;
            write_frame(conn, req).await.map_err(|source| CallError::Io { target, source })?;
            read_frame(conn).await.map_err(|source| CallError::Io { target, source })
        })
        .await
        .unwrap_or_else(|_| {
            Err(CallError::Io {
                target,
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "peer call timed out"),
            })
        });
        if res.is_err() {
            self.conn = None;
        }
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        match &res {
            Err(err) if lost.insert(target) => {
                tracing::warn!(peer = target, addr = %self.addr, error = %err, "lost contact with a store peer");
            }
            Ok(_) if lost.remove(&target) => {
                tracing::info!(peer = target, addr = %self.addr, "a store peer answers again");
            }
            _ => {}
        }
        drop(lost);
        res
    }
}

fn rpc_err<E: std::error::Error>(e: CallError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        other => RPCError::Network(NetworkError::new(&other)),
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        self.client(target, &node.addr)
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        match self.call(&RpcRequest::AppendEntries(rpc), option.hard_ttl()).await {
            Ok(RpcResponse::AppendEntries(r)) => {
                r.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(rpc_err(CallError::Mismatch(self.target))),
            Err(e) => Err(rpc_err(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        match self.call(&RpcRequest::InstallSnapshot(rpc), option.hard_ttl()).await {
            Ok(RpcResponse::InstallSnapshot(r)) => {
                r.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(rpc_err(CallError::Mismatch(self.target))),
            Err(e) => Err(rpc_err(e)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self.call(&RpcRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(RpcResponse::Vote(r)) => {
                r.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(rpc_err(CallError::Mismatch(self.target))),
            Err(e) => Err(rpc_err(e)),
        }
    }
}
