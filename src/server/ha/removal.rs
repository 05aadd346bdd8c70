//! Shrinking the store's group. Deleting the Node of a server removes that
//! server's store member (as k3s removes the etcd member of a deleted server
//! node): the Raft leader follows Node deletions in the store and removes the
//! member whose peer address is the deleted Node's InternalIP. `kube server
//! --remove` ([`leave`]) takes a stopped server out through another server's
//! `DELETE /v1-kube/server-members/<id>` and sets its store aside. Removing a
//! member needs a quorum of the voters that remain; the last voter stays.

use super::handoff::MEMBERS_PATH;
use crate::server::config::ServerConfig;
use crate::store::{EventKind, MembershipChange, Store, StoreError};
use anyhow::{Context, bail};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NODES: &str = "/registry/core/nodes/";

/// The member whose peer address (`ip:port`) is on one of `hosts`.
pub fn member_on(members: &BTreeMap<u64, String>, hosts: &[IpAddr]) -> Option<u64> {
    members.iter().find_map(|(id, addr)| {
        let ip = addr.parse::<SocketAddr>().ok()?.ip();
        hosts.contains(&ip).then_some(*id)
    })
}

/// The InternalIP addresses a Node object reports.
pub fn internal_ips(node: &Value) -> Vec<IpAddr> {
    let addresses = node.pointer("/status/addresses").and_then(Value::as_array);
    addresses
        .into_iter()
        .flatten()
        .filter(|a| a["type"] == "InternalIP")
        .filter_map(|a| a["address"].as_str()?.parse().ok())
        .collect()
}

/// Removes member `id` unless it is the last voter.
pub async fn remove_member(store: &Store, id: u64) -> Result<(), StoreError> {
    let voters = store.voters();
    if voters.len() == 1 && voters.contains(&id) {
        return Err(StoreError::NoLeader(format!("member {id} is the last voter; it cannot be removed")));
    }
    store.change_members(MembershipChange::Remove { id }).await
}

/// On the Raft leader: removes the store member of every deleted Node that
/// was a server. Runs on every server until `shutdown`.
pub async fn follow_node_deletions(store: Store, shutdown: CancellationToken) {
    let mut after = store.compacted_revision().max(0);
    loop {
        if let Ok(now) = store.current_revision().await {
            after = after.max(now);
        }
        let mut watcher = match store.watch(NODES, after) {
            Ok(watcher) => watcher,
            Err(err) => {
                tracing::debug!(error = %err, "cannot watch Nodes for removed servers");
                after = 0;
                if tokio::time::timeout(Duration::from_secs(5), shutdown.cancelled()).await.is_ok() {
                    return;
                }
                continue;
            }
        };
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return,
                batch = watcher.next() => batch,
            };
            let Some(Ok(batch)) = batch else { break };
            after = batch.revision;
            for event in batch.events.iter().filter(|e| e.kind == EventKind::Delete) {
                let Some(prev) = &event.prev else { continue };
                let Ok(node) = serde_json::from_slice::<Value>(&prev.value) else { continue };
                node_deleted(&store, &node).await;
            }
        }
    }
}

async fn node_deleted(store: &Store, node: &Value) {
    let name = node.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let Some(id) = member_on(&store.members(), &internal_ips(node)) else { return };
    if !store.is_leader() {
        return;
    }
    match remove_member(store, id).await {
        Ok(()) => {
            tracing::info!(node = %name, member = id, "the Node of a server was deleted: removed its store member")
        }
        Err(err) => {
            tracing::warn!(node = %name, member = id, error = %err, "cannot remove the deleted server's store member")
        }
    }
}

/// `kube server --remove`: with this server stopped, asks another server of
/// the cluster (`--join URL --token K10…`) to remove this one's member, then
/// moves its store and peer marker aside so it cannot rejoin by accident.
pub async fn leave(config: &ServerConfig, url: &str, token: &str) -> anyhow::Result<()> {
    let id_text = std::fs::read_to_string(super::id_path(&config.data_dir))
        .with_context(|| format!("{} is not a member of a replicated store", config.data_dir.display()))?;
    let id: u64 = id_text.trim().parse().with_context(|| format!("bad member id {:?}", id_text.trim()))?;
    let db = config.data_dir.join("db");
    if db.exists() && crate::store::in_use(&db) {
        bail!("the server using {} is still running: stop it first, then run kube server --remove", db.display());
    }
    let token = crate::server::token::JoinToken::parse(token)?;
    let shutdown = CancellationToken::new();
    let Some(client) = super::joiner::verified_client(url, &token, &shutdown).await? else { return Ok(()) };
    let path = format!("{MEMBERS_PATH}/{id}");
    client
        .delete(&path, None)
        .await
        .map_err(|err| anyhow::anyhow!("{url} did not remove member {id}: {}", err.message))?;
    let aside = config.data_dir.join(format!("db.removed-{}", jiff::Timestamp::now().as_second()));
    if db.exists() {
        std::fs::rename(&db, &aside).with_context(|| format!("cannot move {} aside", db.display()))?;
    }
    for marker in [super::peer_marker(&config.data_dir), super::id_path(&config.data_dir)] {
        match std::fs::remove_file(&marker) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("cannot remove {}", marker.display())),
        }
    }
    println!(
        "removed {} (store member {id}) from the cluster at {url}; its old store is in {}",
        config.node_name,
        aside.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_deleted_node_maps_to_the_member_on_its_internal_ip() {
        let members = BTreeMap::from([(1, "10.0.0.2:2380".to_string()), (7, "10.0.0.3:2380".to_string())]);
        let node = json!({"status": {"addresses": [
            {"type": "Hostname", "address": "s2"},
            {"type": "InternalIP", "address": "10.0.0.3"},
        ]}});
        assert_eq!(member_on(&members, &internal_ips(&node)), Some(7));
        let agent = json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.9"}]}});
        assert_eq!(member_on(&members, &internal_ips(&agent)), None);
        assert_eq!(member_on(&members, &internal_ips(&json!({}))), None);
    }
}
