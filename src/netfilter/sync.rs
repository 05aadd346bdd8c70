//! The sync loop the agent spawns: list+watch Services, EndpointSlices and
//! this agent's Node, collect a burst of changes, apply one transaction,
//! and rebuild the whole table periodically to repair drift. Rules stay
//! in place when the agent stops (as kube-proxy and k3s leave them).

use super::ProxyConfig;
use super::nft::{Nft, NftCommand};
use super::state::ProxyState;
use crate::server::client::Client;
use futures::StreamExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The resources the proxy watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Services,
    EndpointSlices,
    Node,
    /// For NetworkPolicy: peers, selected pods and namespaces.
    Pods,
    Namespaces,
    NetworkPolicies,
}

/// What a watch reports.
#[derive(Debug)]
pub enum Event {
    /// A complete list (start, or after the watch broke).
    Listed(Resource, Vec<Value>),
    Upserted(Resource, Value),
    Deleted(Resource, Value),
}

/// Feeds one event into the state; returns which resource got its first list.
pub fn apply_event(state: &mut ProxyState, event: Event) -> Option<Resource> {
    match event {
        Event::Listed(Resource::Services, items) => {
            state.replace_services(items);
            return Some(Resource::Services);
        }
        Event::Listed(Resource::EndpointSlices, items) => {
            state.replace_slices(items);
            return Some(Resource::EndpointSlices);
        }
        Event::Listed(Resource::Node, items) => {
            if let Some(node) = items.first() {
                state.set_node(node);
            }
            return Some(Resource::Node);
        }
        Event::Upserted(Resource::Services, service) => state.upsert_service(service),
        Event::Deleted(Resource::Services, service) => state.delete_service(&service),
        Event::Upserted(Resource::EndpointSlices, slice) => state.upsert_slice(slice),
        Event::Deleted(Resource::EndpointSlices, slice) => state.delete_slice(&slice),
        Event::Upserted(Resource::Node, node) => state.set_node(&node),
        Event::Deleted(Resource::Node, _) => {}
        Event::Listed(resource, items) => {
            let policies = state.policies_mut();
            match resource {
                Resource::Pods => policies.replace_pods(&items),
                Resource::Namespaces => policies.replace_namespaces(&items),
                _ => policies.replace_policies(&items),
            }
            return Some(resource);
        }
        Event::Upserted(Resource::Pods, pod) => state.policies_mut().upsert_pod(&pod),
        Event::Deleted(Resource::Pods, pod) => state.policies_mut().delete_pod(&pod),
        Event::Upserted(Resource::Namespaces, ns) => state.policies_mut().upsert_namespace(&ns),
        Event::Deleted(Resource::Namespaces, ns) => state.policies_mut().delete_namespace(&ns),
        Event::Upserted(Resource::NetworkPolicies, policy) => state.policies_mut().upsert_policy(&policy),
        Event::Deleted(Resource::NetworkPolicies, policy) => state.policies_mut().delete_policy(&policy),
    }
    None
}

/// Runs the proxy with the real `nft` until `shutdown`.
pub async fn run(client: Client, config: ProxyConfig, shutdown: CancellationToken) {
    run_with(client, config, Arc::new(NftCommand::default()), shutdown).await
}

/// Runs the proxy with the given `nft` until `shutdown`.
pub async fn run_with(client: Client, config: ProxyConfig, nft: Arc<dyn Nft>, shutdown: CancellationToken) {
    let (events, mut received) = mpsc::channel(1024);
    let node_selector = format!("fieldSelector=metadata.name%3D{}", config.node_name);
    let watches = [
        (Resource::Services, "/api/v1/services".to_string()),
        (Resource::EndpointSlices, "/apis/discovery.k8s.io/v1/endpointslices".to_string()),
        (Resource::Node, format!("/api/v1/nodes?{node_selector}")),
        (Resource::Pods, "/api/v1/pods".to_string()),
        (Resource::Namespaces, "/api/v1/namespaces".to_string()),
        (Resource::NetworkPolicies, "/apis/networking.k8s.io/v1/networkpolicies".to_string()),
    ];
    for (resource, uri) in watches {
        tokio::spawn(watch_loop(client.clone(), resource, uri, events.clone(), shutdown.clone()));
    }
    drop(events);
    let mut state = ProxyState::new(config);
    let (mut services_listed, mut slices_listed) = (false, false);
    // Pods, Namespaces and NetworkPolicies listed (no sync before: pods would be open).
    let mut policy_inputs_listed = [false; 3];
    let mut next_full = tokio::time::Instant::now() + state.config().full_resync;
    let mut retry_delay = Duration::from_millis(500);
    let mut retry_at: Option<tokio::time::Instant> = None;
    tracing::info!(node = %state.config().node_name, "service proxy waiting for Services, EndpointSlices, Pods, Namespaces and NetworkPolicies");
    loop {
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = received.recv() => match event {
                Some(event) => match apply_event(&mut state, event) {
                    Some(Resource::Services) => services_listed = true,
                    Some(Resource::EndpointSlices) => slices_listed = true,
                    Some(Resource::Pods) => policy_inputs_listed[0] = true,
                    Some(Resource::Namespaces) => policy_inputs_listed[1] = true,
                    Some(Resource::NetworkPolicies) => policy_inputs_listed[2] = true,
                    _ => {}
                },
                None => return,
            },
            _ = tokio::time::sleep_until(next_full) => {
                state.request_full();
                next_full = tokio::time::Instant::now() + state.config().full_resync;
            }
            _ = retry => retry_at = None,
        }
        let listed = services_listed && slices_listed && policy_inputs_listed.iter().all(|l| *l);
        let ready = listed && state.pending() && retry_at.is_none();
        if !ready {
            continue;
        }
        // Collect the rest of the burst before syncing once.
        let deadline = tokio::time::Instant::now() + state.config().debounce;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, received.recv()).await {
            apply_event(&mut state, event);
        }
        match sync_once(&mut state, nft.clone()).await {
            Ok(()) => retry_delay = Duration::from_millis(500),
            Err(()) => {
                retry_at = Some(tokio::time::Instant::now() + retry_delay);
                retry_delay = (retry_delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Plans and applies one transaction; a failure is logged with nft's own
/// message and makes the next attempt a full rebuild.
pub async fn sync_once(state: &mut ProxyState, nft: Arc<dyn Nft>) -> Result<(), ()> {
    let Some(tx) = state.plan() else { return Ok(()) };
    let started = Instant::now();
    let (full, commands) = (tx.full, tx.len());
    let result = tokio::task::spawn_blocking(move || nft.apply(&tx)).await;
    let outcome = match result {
        Ok(outcome) => outcome.map_err(|err| err.to_string()),
        Err(join) => Err(format!("the nft task failed: {join}")),
    };
    match outcome {
        Ok(()) => {
            tracing::debug!(full, commands, services = state.service_count(), elapsed = ?started.elapsed(), "service proxy synced");
            Ok(())
        }
        Err(message) => {
            tracing::error!(error = %message, full, "service proxy: applying the nftables rules failed; retrying with a full rebuild");
            state.request_full();
            Err(())
        }
    }
}

/// List, then watch from the list's resourceVersion; relist when the watch
/// ends or fails.
async fn watch_loop(
    client: Client,
    resource: Resource,
    uri: String,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) {
    let separator = if uri.contains('?') { '&' } else { '?' };
    let pause = || tokio::time::sleep(Duration::from_secs(1));
    loop {
        let list = match client.get(&uri).await {
            Ok(list) => list,
            Err(err) => {
                tracing::warn!(?resource, error = %err.message, "service proxy cannot list; retrying");
                tokio::select! { _ = shutdown.cancelled() => return, _ = pause() => continue }
            }
        };
        let items = list.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
        if events.send(Event::Listed(resource, items)).await.is_err() {
            return;
        }
        let rv = list.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default();
        let watch_uri =
            format!("{uri}{separator}watch=true&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=300");
        let mut watch = match client.watch(&watch_uri).await {
            Ok(watch) => Box::pin(watch),
            Err(err) => {
                tracing::warn!(?resource, error = %err.message, "service proxy cannot watch; relisting");
                tokio::select! { _ = shutdown.cancelled() => return, _ = pause() => continue }
            }
        };
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = watch.next() => event,
            };
            let event = match event {
                Some((kind, object)) if kind == "ADDED" || kind == "MODIFIED" => Event::Upserted(resource, object),
                Some((kind, object)) if kind == "DELETED" => Event::Deleted(resource, object),
                Some((kind, _)) if kind == "BOOKMARK" => continue,
                Some(_) | None => break,
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
}
