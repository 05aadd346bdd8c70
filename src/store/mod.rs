//! The cluster's store: a Raft-replicated (openraft) MVCC key-value store
//! persisted in sled, with etcd's semantics. It replaces etcd; the API server
//! is its only user and nothing else touches sled.
//!
//! Layout, following openraft's examples: `types` (public data), `command`
//! (what goes through the log), `log_store` and `state_machine` (openraft's
//! storage traits), `data` + `mvcc` + `codec` (the MVCC state in sled),
//! `watch`, `compaction`, `ttl` (leader tasks), `network` (peers) and
//! `snapshot` (snapshot files: `kube snapshot save/restore`).

mod codec;
mod command;
mod compaction;
mod data;
mod error;
mod log_store;
mod membership;
mod mvcc;
mod network;
mod proposer;
mod read_index;
mod rpc;
pub mod snapshot;
mod state_machine;
mod tls;
mod ttl;
mod types;
mod watch;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod fault_cluster;
#[cfg(test)]
mod linearizability;
#[cfg(test)]
mod linearizability_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod storage_suite;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod watch_fault_tests;

pub use command::NodeId;
pub use error::StoreError;
pub use snapshot::{Restored, SnapshotError, SnapshotInfo};
pub use tls::PeerTls;
pub use types::*;
pub use watch::Watcher;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};
use tokio_util::sync::CancellationToken;

use command::{Command, CommandResponse, LogTxn, Raft};
use data::SmData;
use log_store::{Health, LogStore};
pub use membership::MembershipChange;
use proposer::Propose;
use state_machine::StateMachineStore;

/// How to open a store member.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Directory holding this member's sled database.
    pub data_dir: PathBuf,
    /// How long compacted-away history is kept: revisions older than this are
    /// compacted automatically (default 5 minutes, like the API server's).
    pub history_window: std::time::Duration,
    /// This member's Raft id (default 1).
    pub node_id: NodeId,
    /// How often an idle watch yields a progress batch (`None`: never).
    pub watch_progress_interval: Option<Duration>,
    /// How often the leader looks for expired TTL keys (default 1 s).
    pub ttl_check_interval: Duration,
    /// Peer networking for a multi-member group; `None` for a lone member.
    pub peer: Option<PeerConfig>,
}

/// How this member talks to the other members.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Where the peer RPC server listens.
    pub listen_addr: std::net::SocketAddr,
    /// `host:port` the other members use to reach this one (the host must
    /// be in this member's certificate).
    pub advertise_addr: String,
    pub tls: PeerTls,
    /// Start uninitialized and wait to be added by the leader
    /// (`add_learner` + `change_membership`) instead of founding a group.
    pub join: bool,
}

impl StoreConfig {
    /// A one-member store in `data_dir` with the defaults.
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            history_window: Duration::from_secs(300),
            node_id: 1,
            watch_progress_interval: Some(Duration::from_secs(5)),
            ttl_check_interval: Duration::from_secs(1),
            peer: None,
        }
    }
}

/// A connection to the current leader, for forwarded writes and read indexes.
/// This member's connections to the leader, one for read indexes and one for
/// everything else, so that reads never queue behind a forwarded write's fsync.
struct Peers {
    network: network::Network,
    writes: tokio::sync::Mutex<Option<(NodeId, network::PeerClient)>>,
    reads: tokio::sync::Mutex<Option<(NodeId, network::PeerClient)>>,
}

impl Peers {
    fn new(network: network::Network) -> Peers {
        Peers { network, writes: tokio::sync::Mutex::default(), reads: tokio::sync::Mutex::default() }
    }

    async fn call(&self, leader: NodeId, addr: &str, req: rpc::RpcRequest) -> Result<rpc::RpcResponse, StoreError> {
        let lane = if matches!(req, rpc::RpcRequest::ReadIndex) { &self.reads } else { &self.writes };
        let mut client = lane.lock().await;
        if client.as_ref().is_none_or(|(id, _)| *id != leader) {
            *client = Some((leader, self.network.client(leader, addr)));
        }
        let Some((_, c)) = client.as_mut() else {
            return Err(StoreError::NoLeader("no connection to the leader".into()));
        };
        c.call(&req, Duration::from_secs(10))
            .await
            .map_err(|e| StoreError::NoLeader(format!("forwarding to the leader: {e}")))
    }
}

fn remote_error(e: rpc::RemoteError) -> StoreError {
    match e {
        rpc::RemoteError::NotLeader(s) => StoreError::NoLeader(s),
        rpc::RemoteError::WritesStopped(reason) => StoreError::WritesStopped { reason },
        rpc::RemoteError::ShuttingDown => StoreError::NoLeader("the leader is shutting down".into()),
        rpc::RemoteError::Other(s) => StoreError::Raft(s),
    }
}

fn admin_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> StoreError {
    match e {
        RaftError::Fatal(f) => StoreError::from_fatal(&f),
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            StoreError::NoLeader(format!("membership changes run on the leader ({f})"))
        }
        RaftError::APIError(e) => StoreError::Raft(e.to_string()),
    }
}

/// Proposes commands to the local Raft, or forwards them to the leader.
#[derive(Clone)]
struct RaftProposer {
    raft: Raft,
    health: Health,
    peers: Arc<Peers>,
}

impl Propose for RaftProposer {
    async fn propose(&self, cmd: Command) -> Result<CommandResponse, StoreError> {
        if let Some(reason) = self.health.failure() {
            return Err(StoreError::WritesStopped { reason });
        }
        let e = match self.raft.client_write(cmd.clone()).await {
            Ok(resp) => return Ok(resp.data),
            Err(e) => e,
        };
        if let Some(reason) = self.health.failure() {
            return Err(StoreError::WritesStopped { reason });
        }
        match e {
            RaftError::Fatal(f) => Err(StoreError::from_fatal(&f)),
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                let (Some(leader), Some(node)) = (f.leader_id, f.leader_node) else {
                    return Err(StoreError::NoLeader("no leader is known".into()));
                };
                tracing::trace!(leader, "forwarding a write");
                match self.peers.call(leader, &node.addr, rpc::RpcRequest::Write(cmd)).await? {
                    rpc::RpcResponse::Write(r) => r.map_err(remote_error),
                    _ => Err(StoreError::Raft("leader answered with the wrong message".into())),
                }
            }
            RaftError::APIError(e) => Err(StoreError::Raft(e.to_string())),
        }
    }
}

/// A handle to the local store member; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    raft: Raft,
    data: Arc<SmData>,
    health: Health,
    config: StoreConfig,
    cancel: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    proposer: RaftProposer,
    /// Queue of the group-commit proposer.
    proposals: tokio::sync::mpsc::Sender<(LogTxn, proposer::Reply)>,
    /// Shares read-index rounds among concurrent linearizable reads.
    reads: Arc<read_index::Coalescer>,
    /// The log's flusher; it ends after Raft dropped the log store.
    flusher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn storage_err(context: &str, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Storage { context: context.to_string(), source: Box::new(e) }
}

fn raft_config() -> Result<Arc<Config>, StoreError> {
    let config = Config {
        cluster_name: "kube-store".to_string(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Default::default()
    };
    config.validate().map(Arc::new).map_err(|e| StoreError::Raft(e.to_string()))
}

/// Whether opening sled failed because another handle holds its lock.
pub(crate) fn is_lock_error(err: &sled::Error) -> bool {
    matches!(err, sled::Error::Io(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock"))
}

/// Whether a running process holds the store in `data_dir` (sled's lock).
pub fn in_use(data_dir: &std::path::Path) -> bool {
    sled::Config::new().path(data_dir.join("sled")).open().err().is_some_and(|err| is_lock_error(&err))
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir` as a one-voter group.
    #[tracing::instrument(level = "info", skip_all, fields(dir = %config.data_dir.display(), node = config.node_id))]
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| storage_err("creating the data directory", e))?;
        let db = sled::Config::new()
            .path(config.data_dir.join("sled"))
            .open()
            .map_err(|e| storage_err("opening sled", e))?;
        let health = Health::default();
        let (log_store, flusher) =
            LogStore::open(&db, health.clone()).map_err(|e| storage_err("opening the log", e))?;
        let data = Arc::new(SmData::open(&db, 8192)?);
        let sm = StateMachineStore::new(&db, data.clone())?;
        let mut network = network::Network::default();
        let mut listener = None;
        if let Some(peer) = &config.peer {
            let tls_err = |e: tls::TlsError| StoreError::Raft(format!("peer TLS: {e}"));
            let client = peer.tls.client_config().map_err(tls_err)?;
            network.tls = Some(tokio_rustls::TlsConnector::from(client));
            let server = peer.tls.server_config().map_err(tls_err)?;
            let l = tokio::net::TcpListener::bind(peer.listen_addr)
                .await
                .map_err(|e| storage_err("binding the peer listener", e))?;
            listener = Some((l, tokio_rustls::TlsAcceptor::from(server)));
        }
        let raft = Raft::new(config.node_id, raft_config()?, network.clone(), log_store, sm)
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))?;
        let id = config.node_id;
        let cancel = CancellationToken::new();
        let mut tasks = Vec::new();
        if let Some((l, acceptor)) = listener {
            tasks.push(tokio::spawn(rpc::serve(l, acceptor, raft.clone(), cancel.clone())));
        }
        let joining = config.peer.as_ref().is_some_and(|p| p.join);
        let advertise = config.peer.as_ref().map(|p| p.advertise_addr.clone()).unwrap_or_default();
        let initialized = raft.is_initialized().await.map_err(|e| StoreError::from_fatal(&e))?;
        if !initialized && !joining {
            tracing::info!("initializing a new one-member group");
            let members = BTreeMap::from([(id, BasicNode::new(advertise.clone()))]);
            raft.initialize(members).await.map_err(|e| StoreError::Raft(e.to_string()))?;
        }
        let (proposals, proposals_rx) = tokio::sync::mpsc::channel(4096);
        let store = Store {
            inner: Arc::new(Inner {
                proposals,
                id,
                raft: raft.clone(),
                data,
                health: health.clone(),
                config: config.clone(),
                cancel,
                tasks: Mutex::new(tasks),
                proposer: RaftProposer {
                    raft: raft.clone(),
                    health: health.clone(),
                    peers: Arc::new(Peers::new(network)),
                },
                flusher: Mutex::new(Some(flusher)),
                reads: Arc::default(),
            }),
        };
        if config.peer.is_none() {
            store.wait_for_leader(Duration::from_secs(10)).await?;
        } else if !joining || initialized {
            // A member of a group: its peers may still be starting, so wait for
            // a quorum as long as it takes, saying so.
            while let Err(err) = store.wait_for_leader(Duration::from_secs(10)).await {
                if matches!(err, StoreError::ShuttingDown) {
                    return Err(err);
                }
                tracing::warn!(error = %err, "waiting for a quorum of store members");
            }
            store.advertise_self(&advertise).await?;
        }
        store.spawn_tasks(proposals_rx);
        tracing::info!(revision = store.inner.data.revision(), "store open");
        Ok(store)
    }

    fn spawn_tasks(&self, proposals: tokio::sync::mpsc::Receiver<(LogTxn, proposer::Reply)>) {
        let cancel = self.inner.cancel.clone();
        let window = self.inner.config.history_window;
        let every = self.inner.config.ttl_check_interval;
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.push(tokio::spawn(compaction::run(self.clone(), window, cancel.clone())));
        tasks.push(tokio::spawn(ttl::run(self.clone(), every, cancel.clone())));
        tasks.push(tokio::spawn(proposer::run(self.inner.proposer.clone(), proposals, cancel)));
    }

    /// Waits until some member leads (the one voter elects itself quickly).
    async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, StoreError> {
        let mut metrics = self.inner.raft.metrics();
        let wait = async {
            loop {
                if let Some(leader) = metrics.borrow_and_update().current_leader {
                    return Ok(leader);
                }
                if metrics.changed().await.is_err() {
                    return Err(StoreError::ShuttingDown);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| StoreError::NoLeader(format!("no leader elected within {timeout:?}")))?
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().current_leader == Some(self.inner.id)
    }

    fn data(&self) -> &Arc<SmData> {
        &self.inner.data
    }

    /// Proposes `cmd` through Raft and returns what applying it answered.
    async fn write(&self, cmd: Command) -> Result<CommandResponse, StoreError> {
        self.inner.proposer.propose(cmd).await
    }

    /// Waits until this member's state machine reflects every write committed
    /// before the call (Raft read index).
    /// Concurrent callers share rounds ([`read_index::Coalescer`]).
    async fn read_barrier(&self) -> Result<(), StoreError> {
        let store = self.clone();
        self.inner
            .reads
            .wait(move || {
                let store = store.clone();
                async move { store.read_barrier_round().await }
            })
            .await
    }

    /// One read-index round.
    async fn read_barrier_round(&self) -> Result<(), StoreError> {
        use openraft::error::CheckIsLeaderError;
        match self.inner.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::Fatal(f)) => Err(StoreError::from_fatal(&f)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                let (Some(leader), Some(node)) = (f.leader_id, f.leader_node) else {
                    return Err(StoreError::NoLeader("no leader is known".into()));
                };
                let peers = &self.inner.proposer.peers;
                let index = match peers.call(leader, &node.addr, rpc::RpcRequest::ReadIndex).await? {
                    rpc::RpcResponse::ReadIndex(r) => r.map_err(remote_error)?,
                    _ => return Err(StoreError::Raft("leader answered with the wrong message".into())),
                };
                self.inner
                    .raft
                    .wait(Some(Duration::from_secs(10)))
                    .applied_index_at_least(Some(index), "read index")
                    .await
                    .map(|_| ())
                    .map_err(|e| StoreError::NoLeader(format!("catching up to the read index: {e}")))
            }
            Err(RaftError::APIError(e)) => Err(StoreError::NoLeader(e.to_string())),
        }
    }

    /// Linearizable read of one key or a prefix.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.read_barrier().await?;
        self.range_stale(req).await
    }

    /// A read of this member's applied state without the read-index round trip;
    /// it may lag the leader. Only the watch cache uses it.
    pub async fn range_stale(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        Ok(self.inner.data.range(&req)?)
    }

    /// Runs a transaction; acknowledged only once durable on a quorum.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        if let Some(reason) = self.inner.health.failure() {
            return Err(StoreError::WritesStopped { reason });
        }
        let txn = LogTxn::from_txn(txn, command::now_ms());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.proposals.send((txn, tx)).await.map_err(|_| StoreError::ShuttingDown)?;
        rx.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Every change under `prefix` with a revision greater than `after`, in order.
    pub fn watch(&self, prefix: &str, after: Revision) -> Result<Watcher, StoreError> {
        Ok(Watcher::new(self.inner.data.clone(), prefix, after, self.inner.config.watch_progress_interval))
    }

    /// Drops history older than `revision`.
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let current = self.inner.data.revision();
        if revision > current {
            return Err(StoreError::FutureRevision { requested: revision, current });
        }
        if revision <= self.inner.data.compacted() {
            return Ok(());
        }
        self.write(Command::Compact { revision }).await.map(|_| ())
    }

    /// Writes a snapshot file of the whole store to `path` (atomically): a
    /// linearizable point in time, since the dump follows a read index and
    /// holds every write acknowledged before the call.
    pub async fn save_snapshot(&self, path: &std::path::Path) -> Result<SnapshotInfo, StoreError> {
        self.read_barrier().await?;
        let data = self.inner.data.clone();
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || snapshot::write(&data, &path))
            .await
            .map_err(|e| StoreError::Raft(format!("the snapshot task failed: {e}")))?
            .map_err(StoreError::from)
    }

    /// The latest revision (linearizable).
    pub async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.read_barrier().await?;
        Ok(self.inner.data.revision())
    }

    /// This member's Raft id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The current leader, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// Every member (voters and learners) with its advertised address.
    pub fn members(&self) -> BTreeMap<NodeId, String> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        m.membership_config.nodes().map(|(id, node)| (*id, node.addr.clone())).collect()
    }

    /// The voting members.
    pub fn voters(&self) -> std::collections::BTreeSet<NodeId> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        m.membership_config.membership().voter_ids().collect()
    }

    /// Adds a non-voting member and waits until it has caught up (leader only).
    pub async fn add_learner(&self, id: NodeId, addr: &str) -> Result<(), StoreError> {
        self.inner.raft.add_learner(id, BasicNode::new(addr), true).await.map(|_| ()).map_err(admin_error)
    }

    /// Makes `voters` the voting members (leader only); others become learners.
    pub async fn change_membership(&self, voters: std::collections::BTreeSet<NodeId>) -> Result<(), StoreError> {
        self.inner.raft.change_membership(voters, true).await.map(|_| ()).map_err(admin_error)
    }

    /// Removes a member entirely (leader only).
    pub async fn remove_member(&self, id: NodeId) -> Result<(), StoreError> {
        let mut voters = self.voters();
        voters.remove(&id);
        self.inner.raft.change_membership(voters, false).await.map(|_| ()).map_err(admin_error)
    }

    /// The oldest revision still readable (history before it is compacted).
    pub fn compacted_revision(&self) -> Revision {
        self.inner.data.compacted()
    }

    /// Stops the background tasks and Raft; the data directory can be
    /// reopened once every handle is dropped.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        self.inner.cancel.cancel();
        let tasks: Vec<_> = std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
        let res = self.inner.raft.shutdown().await.map_err(|e| StoreError::Raft(format!("raft shutdown: {e}")));
        let flusher = self.inner.flusher.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(f) = flusher {
            let _ = f.await;
        }
        res
    }
}
