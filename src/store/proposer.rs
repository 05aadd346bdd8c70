//! Group commit. openraft 0.9 appends and flushes each `client_write` on its
//! own and waits for the flush before taking the next one, so concurrent
//! writers would each pay a full fsync. The proposer queues transactions and
//! proposes everything queued while the previous entry was being committed
//! as one `Command::Batch` entry: one fsync for the whole group, each
//! transaction still getting its own revision.

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::command::{Command, CommandResponse, LogTxn};
use super::error::StoreError;
use super::types::TxnResponse;

/// At most this many transactions go into one entry.
const MAX_BATCH: usize = 256;

pub type Reply = oneshot::Sender<Result<TxnResponse, StoreError>>;

/// Proposes one command and returns what applying it answered.
pub trait Propose: Send + Sync + 'static {
    fn propose(&self, cmd: Command) -> impl std::future::Future<Output = Result<CommandResponse, StoreError>> + Send;
}

/// Runs until the queue closes or `cancel`; answers every queued transaction.
pub async fn run<P: Propose>(proposer: P, mut rx: mpsc::Receiver<(LogTxn, Reply)>, cancel: CancellationToken) {
    let mut queued = Vec::with_capacity(MAX_BATCH);
    loop {
        let n = tokio::select! {
            _ = cancel.cancelled() => 0,
            n = rx.recv_many(&mut queued, MAX_BATCH) => n,
        };
        if n == 0 {
            break;
        }
        let (txns, replies): (Vec<_>, Vec<_>) = queued.drain(..).unzip();
        let cmd = if txns.len() == 1 {
            Command::Txn(txns.into_iter().next().expect("one transaction"))
        } else {
            Command::Batch(txns)
        };
        tracing::trace!(txns = replies.len(), "proposing");
        let answers: Vec<Result<TxnResponse, StoreError>> = match proposer.propose(cmd).await {
            Ok(CommandResponse::Txn(r)) => vec![Ok(r)],
            Ok(CommandResponse::Batch(rs)) => rs.into_iter().map(Ok).collect(),
            Ok(other) => vec![Err(StoreError::Raft(format!("unexpected answer to a transaction: {other:?}")))],
            Err(e) => replies.iter().map(|_| Err(clone_error(&e))).collect(),
        };
        if answers.len() != replies.len() {
            for reply in replies {
                let _ = reply.send(Err(StoreError::Raft("answer count mismatch".into())));
            }
            continue;
        }
        for (reply, answer) in replies.into_iter().zip(answers) {
            // The caller may have given up waiting; that is fine.
            let _ = reply.send(answer);
        }
    }
    // Answer whatever is still queued.
    rx.close();
    while let Some((_, reply)) = rx.recv().await {
        let _ = reply.send(Err(StoreError::ShuttingDown));
    }
}

/// One failure reported to every transaction of the batch.
pub(super) fn clone_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Compacted { requested, compacted } => {
            StoreError::Compacted { requested: *requested, compacted: *compacted }
        }
        StoreError::FutureRevision { requested, current } => {
            StoreError::FutureRevision { requested: *requested, current: *current }
        }
        StoreError::WritesStopped { reason } => StoreError::WritesStopped { reason: reason.clone() },
        StoreError::NoLeader(s) => StoreError::NoLeader(s.clone()),
        StoreError::ShuttingDown => StoreError::ShuttingDown,
        StoreError::Storage { context, source } => {
            StoreError::Storage { context: context.clone(), source: source.to_string().into() }
        }
        StoreError::Raft(s) => StoreError::Raft(s.clone()),
        StoreError::Snapshot(e) => StoreError::Raft(e.to_string()),
    }
}
