//! The peer RPC protocol over mutual TLS: length-prefixed JSON frames
//! carrying openraft's append-entries / vote / install-snapshot messages plus
//! the store's own: forwarding a write to the leader and asking the leader
//! for a read index. `serve` answers them for the local Raft.

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::command::{Command, CommandResponse, NodeId, Raft, TypeConfig};

/// Frames above this size are refused (snapshots travel in one frame).
const MAX_FRAME: usize = 1 << 30;

#[derive(Debug, Serialize, Deserialize)]
pub enum RpcRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A write proposed on a follower, run by the leader.
    Write(Command),
    /// The leader's read index: the follower waits to apply up to it.
    ReadIndex,
    /// A membership change asked of a follower, run by the leader.
    Membership(super::membership::MembershipChange),
}

/// Why the leader could not run a forwarded request.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    #[error("not the leader: {0}")]
    NotLeader(String),
    #[error("writes stopped: {0}")]
    WritesStopped(String),
    #[error("shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RpcResponse {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Write(Result<CommandResponse, RemoteError>),
    ReadIndex(Result<u64, RemoteError>),
    Membership(Result<(), RemoteError>),
}

pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, msg: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(std::io::Error::other("frame too large"));
    }
    w.write_all(&(body.len() as u32).to_be_bytes()).await?;
    w.write_all(&body).await?;
    w.flush().await
}

pub async fn read_frame<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(r: &mut R) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>) -> RemoteError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => RemoteError::NotLeader(f.to_string()),
        RaftError::Fatal(openraft::error::Fatal::Stopped) => RemoteError::ShuttingDown,
        RaftError::Fatal(f) => RemoteError::WritesStopped(f.to_string()),
        RaftError::APIError(e) => RemoteError::Other(e.to_string()),
    }
}

async fn handle(raft: &Raft, req: RpcRequest) -> RpcResponse {
    match req {
        RpcRequest::AppendEntries(r) => RpcResponse::AppendEntries(raft.append_entries(r).await),
        RpcRequest::Vote(r) => RpcResponse::Vote(raft.vote(r).await),
        RpcRequest::InstallSnapshot(r) => RpcResponse::InstallSnapshot(raft.install_snapshot(r).await),
        RpcRequest::Write(cmd) => RpcResponse::Write(raft.client_write(cmd).await.map(|r| r.data).map_err(write_error)),
        RpcRequest::ReadIndex => RpcResponse::ReadIndex(match raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(RemoteError::NotLeader(f.to_string()))
            }
            Err(e) => Err(RemoteError::Other(e.to_string())),
        }),
        RpcRequest::Membership(change) => super::membership::answer(raft, change).await,
    }
}

/// Accepts peers on `listener` until `cancel`, answering each connection's
/// requests in order.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, raft: Raft, cancel: CancellationToken) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a peer failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let raft = raft.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "peer TLS handshake failed");
                    return;
                }
            };
            loop {
                let req: RpcRequest = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = read_frame(&mut tls) => match r {
                        Ok(req) => req,
                        Err(_) => return,
                    },
                };
                let resp = handle(&raft, req).await;
                if let Err(e) = write_frame(&mut tls, &resp).await {
                    tracing::debug!(%peer, error = %e, "peer connection closed");
                    return;
                }
            }
        });
    }
}
