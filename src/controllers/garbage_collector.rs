//! The garbage collector: objects whose owners (ownerReferences) are gone
//! are deleted; an owner deleted with `propagationPolicy=Orphan` first has
//! its dependents' references to it removed, one deleted with `Foreground`
//! waits for its dependents to go. Both then lose their finalizer.

use super::Context;
use super::objects::ignore_gone;
use crate::server::catalog::ResourceInfo;
use crate::server::client;
use crate::server::error::ApiError;
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One object the collector knows of.
#[derive(Clone, Debug)]
struct Node {
    res: Arc<ResourceInfo>,
    namespace: Option<String>,
    name: String,
    owners: Vec<String>,
    deleting: bool,
    finalizers: Vec<String>,
}

impl Node {
    fn from(res: &Arc<ResourceInfo>, obj: &Value) -> Option<(String, Node)> {
        let uid = obj.pointer("/metadata/uid")?.as_str()?.to_string();
        let strings = |p: &str| -> Vec<String> {
            obj.pointer(p)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        let owners = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .map(|refs| refs.iter().filter_map(|r| r.get("uid")?.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        Some((
            uid,
            Node {
                res: res.clone(),
                namespace: obj.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_string),
                name: obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string(),
                owners,
                deleting: obj.pointer("/metadata/deletionTimestamp").is_some(),
                finalizers: strings("/metadata/finalizers"),
            },
        ))
    }

    fn path(&self) -> String {
        client::path(&self.res, self.namespace.as_deref(), Some(&self.name), None)
    }
}

/// The graph of every object and its owners.
#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
}

impl Graph {
    fn dependents(&self, owner: &str) -> Vec<(String, Node)> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.owners.iter().any(|o| o == owner))
            .map(|(u, n)| (u.clone(), n.clone()))
            .collect()
    }
}

enum Change {
    Upsert(Arc<ResourceInfo>, Value),
    Delete(Arc<ResourceInfo>, Value),
    Synced,
}

async fn watch_resource(ctx: Context, res: Arc<ResourceInfo>, tx: mpsc::Sender<Change>, shutdown: CancellationToken) {
    let uri = format!(
        "{}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersion=0&resourceVersionMatch=NotOlderThan",
        client::path(&res, None, None, None)
    );
    let mut reported = false;
    loop {
        match ctx.client.watch(&uri).await {
            Ok(stream) => {
                let mut stream = Box::pin(stream);
                loop {
                    let event = tokio::select! { _ = shutdown.cancelled() => return, e = stream.next() => e };
                    let Some((kind, obj)) = event else { break };
                    let change = match kind.as_str() {
                        "ADDED" | "MODIFIED" => Change::Upsert(res.clone(), obj),
                        "DELETED" => Change::Delete(res.clone(), obj),
                        "BOOKMARK"
                            if !reported
                                && obj.pointer("/metadata/annotations/k8s.io~1initial-events-end").is_some() =>
                        {
                            reported = true;
                            Change::Synced
                        }
                        _ => continue,
                    };
                    if tx.send(change).await.is_err() {
                        return;
                    }
                }
            }
            Err(err) => tracing::warn!(resource = %res.plural, error = %err.message, "garbage collector watch failed"),
        }
        tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
    }
}

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let (tx, mut rx) = mpsc::channel(1024);
    let resources: Vec<Arc<ResourceInfo>> = ctx.catalog.all().into_iter().filter(|r| r.holds_objects()).collect();
    for res in &resources {
        tokio::spawn(watch_resource(ctx.clone(), res.clone(), tx.clone(), shutdown.clone()));
    }
    drop(tx);
    // Orphans are only judged once every resource's initial state is in the graph.
    let mut unsynced = resources.len();
    let mut graph = Graph::default();
    let mut synced = false;
    let mut dirty: HashSet<String> = HashSet::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            change = rx.recv() => match change {
                None => return,
                Some(Change::Upsert(res, obj)) => if let Some((uid, node)) = Node::from(&res, &obj) {
                    if node.deleting || !node.owners.is_empty() { dirty.insert(uid.clone()); }
                    graph.nodes.insert(uid, node);
                },
                Some(Change::Delete(res, obj)) => if let Some((uid, _)) = Node::from(&res, &obj) {
                    graph.nodes.remove(&uid);
                    dirty.extend(graph.dependents(&uid).into_iter().map(|(u, _)| u));
                },
                Some(Change::Synced) => {
                    unsynced = unsynced.saturating_sub(1);
                    if unsynced == 0 && !synced {
                        synced = true;
                        dirty.extend(graph.nodes.keys().cloned());
                    }
                }
            },
            _ = ticker.tick() => dirty.extend(graph.nodes.keys().cloned()),
        }
        if !synced || !rx.is_empty() {
            continue;
        }
        for uid in std::mem::take(&mut dirty) {
            if let Err(err) = process(&ctx, &graph, &uid).await {
                tracing::warn!(uid = %uid, error = %err.message, "garbage collection failed; will retry");
                dirty.insert(uid);
            }
        }
    }
}

/// Acts on one object: deletes it if all its owners are gone, and runs the
/// orphan / foreground finalizers when it is an owner being deleted.
async fn process(ctx: &Context, graph: &Graph, uid: &str) -> Result<(), ApiError> {
    let Some(node) = graph.nodes.get(uid) else { return Ok(()) };
    if !node.owners.is_empty() && !node.deleting && node.owners.iter().all(|o| !graph.nodes.contains_key(o)) {
        tracing::info!(resource = %node.res.plural, name = %node.name, "deleting object whose owners are gone");
        return ignore_gone(ctx.client.delete(&node.path(), Some(json!({"propagationPolicy": "Background"}))).await);
    }
    if !node.deleting {
        return Ok(());
    }
    let dependents = graph.dependents(uid);
    if node.finalizers.iter().any(|f| f == "orphan") {
        for (_, dependent) in &dependents {
            let current = match ctx.client.get(&dependent.path()).await {
                Ok(current) => current,
                Err(err) if err.code == 404 => continue,
                Err(err) => return Err(err),
            };
            let refs: Vec<Value> = current
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter(|o| o.get("uid").and_then(Value::as_str) != Some(uid)).cloned().collect())
                .unwrap_or_default();
            let refs = if refs.is_empty() { Value::Null } else { Value::Array(refs) };
            let patch = json!({"metadata": {"ownerReferences": refs}});
            ignore_gone(ctx.client.merge_patch(&dependent.path(), patch).await)?;
        }
        return remove_finalizer(ctx, node, "orphan").await;
    }
    if node.finalizers.iter().any(|f| f == "foregroundDeletion") {
        if dependents.is_empty() {
            return remove_finalizer(ctx, node, "foregroundDeletion").await;
        }
        for (_, dependent) in dependents.iter().filter(|(_, d)| !d.deleting) {
            ignore_gone(ctx.client.delete(&dependent.path(), Some(json!({"propagationPolicy": "Foreground"}))).await)?;
        }
    }
    Ok(())
}

async fn remove_finalizer(ctx: &Context, node: &Node, finalizer: &str) -> Result<(), ApiError> {
    let current = match ctx.client.get(&node.path()).await {
        Ok(current) => current,
        Err(err) if err.code == 404 => return Ok(()),
        Err(err) => return Err(err),
    };
    let finalizers: Vec<Value> = current
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter(|x| x.as_str() != Some(finalizer)).cloned().collect())
        .unwrap_or_default();
    let rv = current.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": rv}});
    ignore_gone(ctx.client.merge_patch(&node.path(), patch).await)
}
