//! The agent's side of the pod network: waits for its Node's podCIDR (the
//! nodeipam controller sets it), sets up the node network, publishes the
//! flannel annotations that make this node a peer, and keeps the overlay in
//! step with the Node objects (list + watch; each relist, at least every
//! minute, is a full resync that repairs drift).

use super::peers::{self, Peer};
use super::subnet::Subnet;
use super::{NodeSetup, PodNetwork};
use crate::server::client::Client;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const RETRY: Duration = Duration::from_secs(2);
/// Watches end after this long; the relist that follows is the periodic full resync.
const RESYNC_SECONDS: u64 = 60;

/// Sleeps `d`; false when shut down first.
async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! { _ = shutdown.cancelled() => false, _ = tokio::time::sleep(d) => true }
}

/// Polls the Node until it has a valid `spec.podCIDR`; `None` on shutdown.
pub async fn wait_for_pod_cidr(client: &Client, node: &str, shutdown: &CancellationToken) -> Option<Subnet> {
    tracing::info!(node, "waiting for the node's podCIDR");
    loop {
        match client.get(&format!("/api/v1/nodes/{node}")).await {
            Ok(obj) => match obj.pointer("/spec/podCIDR").and_then(Value::as_str).map(Subnet::parse) {
                Some(Ok(subnet)) => return Some(subnet),
                Some(Err(err)) => tracing::warn!(node, error = %err, "the node's podCIDR is unusable"),
                None => {}
            },
            Err(err) => tracing::warn!(node, error = %err.message, "cannot read the node"),
        }
        if !pause(shutdown, Duration::from_millis(250)).await {
            return None;
        }
    }
}

/// Sets up the node network and publishes the annotations, retrying until
/// it works; then starts the peer sync. `None` on shutdown.
pub async fn start(
    client: &Client,
    node: &str,
    network: Arc<dyn PodNetwork>,
    shutdown: &CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let pod_cidr = wait_for_pod_cidr(client, node, shutdown).await?;
    let setup = loop {
        let net = network.clone();
        match tokio::task::spawn_blocking(move || net.setup_node(pod_cidr)).await {
            Ok(Ok(setup)) => break setup,
            Ok(Err(err)) => {
                tracing::warn!(node, pod_cidr = %pod_cidr, error = %err, "node network setup failed; retrying")
            }
            Err(err) => tracing::warn!(node, error = %err, "node network setup task failed; retrying"),
        }
        if !pause(shutdown, RETRY).await {
            return None;
        }
    };
    while let Err(err) = publish(client, node, &setup).await {
        tracing::warn!(node, error = %err.message, "cannot annotate the node with its VTEP; retrying");
        if !pause(shutdown, RETRY).await {
            return None;
        }
    }
    let (client, node, shutdown) = (client.clone(), node.to_string(), shutdown.clone());
    Some(tokio::spawn(async move { keep_peers(client, node, network, shutdown).await }))
}

async fn publish(client: &Client, node: &str, setup: &NodeSetup) -> Result<Value, crate::server::error::ApiError> {
    let patch = json!({"metadata": {"annotations": peers::annotations(&setup.vtep_mac, setup.public_ip)}});
    client.merge_patch(&format!("/api/v1/nodes/{node}"), patch).await
}

fn name_of(node: &Value) -> String {
    node.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Programs `peers` unless they are what was programmed last (`force`: always).
async fn apply(network: &Arc<dyn PodNetwork>, peers: Vec<Peer>, last: &mut Option<Vec<Peer>>, force: bool) {
    if !force && last.as_ref() == Some(&peers) {
        return;
    }
    let net = network.clone();
    let wanted = peers.clone();
    match tokio::task::spawn_blocking(move || net.sync_peers(&wanted)).await {
        Ok(Ok(())) => *last = Some(peers),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "cannot program the overlay peers; the next resync retries");
            *last = None;
        }
        Err(err) => tracing::warn!(error = %err, "overlay sync task failed"),
    }
}

/// List + watch Nodes and keep the overlay's peers in step until shutdown.
pub async fn keep_peers(client: Client, node: String, network: Arc<dyn PodNetwork>, shutdown: CancellationToken) {
    let mut last: Option<Vec<Peer>> = None;
    loop {
        let list = match client.get("/api/v1/nodes").await {
            Ok(list) => list,
            Err(err) => {
                tracing::warn!(error = %err.message, "cannot list nodes for the overlay; retrying");
                if !pause(&shutdown, RETRY).await {
                    return;
                }
                continue;
            }
        };
        let mut nodes: BTreeMap<String, Value> = list
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|n| (name_of(n), n.clone()))
            .collect();
        apply(&network, peers::peers(nodes.values(), &node), &mut last, true).await;
        let rv = list.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default();
        let uri = format!("/api/v1/nodes?watch=true&resourceVersion={rv}&timeoutSeconds={RESYNC_SECONDS}");
        let mut events = match client.watch(&uri).await {
            Ok(events) => Box::pin(events),
            Err(err) => {
                tracing::warn!(error = %err.message, "cannot watch nodes for the overlay; relisting");
                if !pause(&shutdown, RETRY).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = futures::StreamExt::next(&mut events) => event,
            };
            match event {
                Some((kind, obj)) if kind == "ADDED" || kind == "MODIFIED" => {
                    nodes.insert(name_of(&obj), obj);
                }
                Some((kind, obj)) if kind == "DELETED" => {
                    nodes.remove(&name_of(&obj));
                }
                Some((kind, _)) if kind == "BOOKMARK" => continue,
                Some(_) | None => break,
            }
            apply(&network, peers::peers(nodes.values(), &node), &mut last, false).await;
        }
    }
}
