//! TTL expiry on the leader: deletes due keys through Raft, each guarded by a
//! compare on the mod revision that set the TTL so a rewritten key survives.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Store;
use super::command::now_ms;
use super::types::{Compare, Op, Txn};

/// Runs until `cancel`: while this member leads, deletes expired keys.
pub async fn run(store: Store, every: Duration, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if !store.is_leader() {
            continue;
        }
        let due = match store.data().expired(now_ms(), 512) {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "reading the ttl index failed");
                continue;
            }
        };
        for (key, revision) in due {
            let txn = Txn {
                compare: vec![Compare::ModRevision { key: key.clone(), revision }],
                success: vec![Op::Delete { key: key.clone() }],
                failure: vec![],
            };
            match store.txn(txn).await {
                Ok(r) => tracing::debug!(%key, deleted = r.succeeded, "ttl expiry"),
                Err(e) => {
                    tracing::warn!(%key, error = %e, "ttl expiry failed");
                    break;
                }
            }
        }
    }
}
