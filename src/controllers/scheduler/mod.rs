//! The scheduler (upstream's kube-scheduler in small): informers keep the
//! [`cache`] of nodes and pods and feed pending pods of `default-scheduler`
//! into the [`squeue`]; each decision runs the [`framework`] over the cached
//! node infos (O(nodes), no listing), assumes the pod on the chosen node and
//! binds it in the background; a pod that fits nowhere may [`preemption`]
//! lower-priority pods, else waits (backoff, cluster events) with upstream's
//! FailedScheduling message.

pub mod actions;
pub mod cache;
pub mod filters;
pub mod framework;
pub mod info;
pub mod interpod;
pub mod preemption;
pub mod quantity;
pub mod scores;
pub mod spread;
pub mod squeue;

use super::Context;
use super::objects::{self, PODS, deleting, str_at};
use crate::server::client;
use crate::server::error::ApiError;
use cache::Cache;
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use info::{NodeInfo, PodInfo};
use serde_json::Value;
use squeue::SchedulingQueue;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const NODES: (&str, &str, &str) = ("", "v1", "nodes");
const NAMESPACES: (&str, &str, &str) = ("", "v1", "namespaces");
const BUDGETS: (&str, &str, &str) = ("policy", "v1", "poddisruptionbudgets");
/// Bindings in flight at once.
const PARALLEL_BINDS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Pods,
    Nodes,
    Namespaces,
}

type Events = BoxStream<'static, (Source, String, Value)>;

/// Whether the pod waits for this scheduler.
pub fn pending(pod: &Value) -> bool {
    let scheduler = match str_at(pod, "/spec/schedulerName") {
        "" => "default-scheduler",
        s => s,
    };
    let gated = pod.pointer("/spec/schedulingGates").and_then(Value::as_array).is_some_and(|g| !g.is_empty());
    scheduler == "default-scheduler"
        && str_at(pod, "/spec/nodeName").is_empty()
        && !gated
        && !deleting(pod)
        && !matches!(objects::phase(pod), "Succeeded" | "Failed")
}

/// A bind finished: (pod uid, whether the pod is now bound, error).
type BindResult = (String, Result<bool, ApiError>);

struct Scheduler {
    ctx: Context,
    cache: Cache,
    queue: SchedulingQueue<Value>,
    /// Where the next search starts (upstream's nextStartNodeIndex).
    start: usize,
    binds: mpsc::UnboundedSender<BindResult>,
    permits: Arc<Semaphore>,
}

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let (binds, mut results) = mpsc::unbounded_channel();
    let mut scheduler = Scheduler {
        ctx,
        cache: Cache::default(),
        queue: SchedulingQueue::default(),
        start: 0,
        binds,
        permits: Arc::new(Semaphore::new(PARALLEL_BINDS)),
    };
    loop {
        let mut watch = match scheduler.sync().await {
            Ok(watch) => watch,
            Err(err) => {
                tracing::warn!(error = %err.message, "scheduler: list/watch failed; retrying");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => continue }
            }
        };
        tracing::info!(nodes = scheduler.cache.node_count(), pending = scheduler.queue.len(), "scheduler synced");
        loop {
            // Take in what already happened, then schedule one pod.
            while let Some(Some((source, kind, obj))) = futures::FutureExt::now_or_never(watch.next()) {
                scheduler.on_event(source, &kind, obj);
            }
            while let Ok(result) = results.try_recv() {
                scheduler.on_bound(result);
            }
            scheduler.queue.flush(Instant::now());
            if scheduler.queue.has_active() {
                scheduler.schedule_one().await;
                tokio::task::yield_now().await;
                continue;
            }
            let wake = scheduler.queue.next_wake().unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                event = watch.next() => match event {
                    Some((source, kind, obj)) => scheduler.on_event(source, &kind, obj),
                    None => break,
                },
                Some(result) = results.recv() => scheduler.on_bound(result),
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        tracing::info!("scheduler: a watch ended; relisting");
    }
}

impl Scheduler {
    fn collection(&self, gvr: (&str, &str, &str)) -> Result<String, ApiError> {
        let res = self.ctx.catalog.lookup(gvr.0, gvr.1, gvr.2).ok_or_else(ApiError::not_found_path)?;
        Ok(client::path(&res, None, None, None))
    }

    /// Lists nodes, namespaces and pods into the cache and queue, then watches from there.
    async fn sync(&mut self) -> Result<SelectAll<Events>, ApiError> {
        self.cache.clear_observed();
        let mut all = SelectAll::new();
        for source in [Source::Nodes, Source::Namespaces, Source::Pods] {
            let gvr = match source {
                Source::Pods => PODS,
                Source::Nodes => NODES,
                Source::Namespaces => NAMESPACES,
            };
            let collection = self.collection(gvr)?;
            let list = self.ctx.client.get(&collection).await?;
            let version = str_at(&list, "/metadata/resourceVersion").to_string();
            for item in list.get("items").and_then(Value::as_array).cloned().unwrap_or_default() {
                self.on_event(source, "ADDED", item);
            }
            let uri = format!("{collection}?watch=true&allowWatchBookmarks=true&resourceVersion={version}");
            let stream = self.ctx.client.watch(&uri).await?;
            let events: Events = Box::pin(stream.map(move |(kind, obj)| (source, kind, obj)));
            all.push(events);
        }
        Ok(all)
    }

    fn on_event(&mut self, source: Source, kind: &str, obj: Value) {
        if kind == "BOOKMARK" || kind == "ERROR" {
            return;
        }
        let now = Instant::now();
        match source {
            Source::Nodes => {
                let name = str_at(&obj, "/metadata/name").to_string();
                if kind == "DELETED" {
                    self.cache.remove_node(&name);
                    return;
                }
                let before = self.cache.node(&name).map(node_fingerprint);
                self.cache.set_node(obj);
                let after = self.cache.node(&name).map(node_fingerprint);
                if before != after {
                    self.queue.move_unschedulable(|_| true, now);
                }
            }
            Source::Namespaces => {
                if kind == "DELETED" {
                    self.cache.remove_namespace(str_at(&obj, "/metadata/name"));
                } else {
                    self.cache.set_namespace(obj);
                    self.queue.move_unschedulable(|p| p == interpod::NAME, now);
                }
            }
            Source::Pods => self.on_pod(kind, obj, now),
        }
    }

    fn on_pod(&mut self, kind: &str, pod: Value, now: Instant) {
        let uid = objects::uid(&pod).to_string();
        if kind == "DELETED" {
            self.queue.delete(&uid);
            let counted = self.cache.contains(&uid);
            self.cache.remove_pod(&uid);
            if counted {
                self.queue.move_unschedulable(|_| true, now);
            }
            return;
        }
        if pending(&pod) {
            if self.cache.is_assumed(&uid) {
                return;
            }
            let changed = self.queue.get(&uid).is_some_and(|old| {
                old.get("spec") != pod.get("spec") || old.pointer("/metadata/labels") != pod.pointer("/metadata/labels")
            });
            let priority = pod.pointer("/spec/priority").and_then(Value::as_i64).unwrap_or(0);
            self.queue.add_or_update(&uid, priority, pod, changed, now);
            return;
        }
        self.queue.delete(&uid);
        let was = self.cache.contains(&uid) && !self.cache.is_assumed(&uid);
        let occupies = cache::occupies(&pod);
        self.cache.set_pod(pod);
        if occupies && !was {
            // A new pod on a node can satisfy affinity or spreading of others.
            self.queue.move_unschedulable(|p| p == interpod::NAME || p == spread::NAME, now);
        } else if !occupies && was {
            self.queue.move_unschedulable(|_| true, now);
        }
    }

    fn on_bound(&mut self, (uid, result): BindResult) {
        match result {
            Ok(true) => self.queue.done(&uid),
            Ok(false) => {
                self.cache.forget(&uid);
                self.queue.done(&uid);
            }
            Err(err) => {
                tracing::warn!(pod = %uid, error = %err.message, "binding failed; retrying after backoff");
                self.cache.forget(&uid);
                self.queue.error(&uid, Instant::now());
            }
        }
    }

    async fn schedule_one(&mut self) {
        let Some((uid, pod)) = self.queue.pop() else { return };
        let pod = pod.clone();
        let nodes: Vec<&NodeInfo> = self.cache.nodes().collect();
        let count = nodes.len();
        let outcome = framework::schedule(PodInfo::new(pod.clone()), &nodes, self.cache.namespaces(), self.start);
        match outcome {
            Ok(framework::Decision { node, cycle, evaluated }) => {
                self.start = (self.start + evaluated) % count.max(1);
                let mut info = cycle.pod;
                info.node_name = node.clone();
                self.cache.assume(info);
                self.spawn_bind(uid, pod, node);
            }
            Err(failed) => {
                let (cycle, fit) = *failed;
                let plugins = fit.plugins();
                let needs_budgets = count > 0 && !cycle.pod.preempt_never;
                let budgets = if needs_budgets { self.budgets().await } else { Vec::new() };
                let (message, plan) = if count == 0 {
                    ("no nodes available to schedule pods".to_string(), None)
                } else {
                    match preemption::preempt(&cycle, &fit, &nodes, &budgets) {
                        Ok(plan) => (fit.message(""), Some(plan)),
                        Err(post) => (fit.message(&post), None),
                    }
                };
                self.queue.unschedulable(&uid, plugins, Instant::now());
                let ctx = self.ctx.clone();
                tokio::spawn(async move {
                    let result = match &plan {
                        Some(plan) => actions::preempt(&ctx, &pod, plan, &message).await,
                        None => actions::unschedulable(&ctx, &pod, &message).await,
                    };
                    if let Err(err) = result {
                        tracing::warn!(pod = %objects::name(&pod), error = %err.message, "could not report a scheduling failure");
                    }
                });
            }
        }
    }

    /// The PodDisruptionBudgets (read only when preemption is considered).
    async fn budgets(&self) -> Vec<preemption::Budget> {
        match objects::list(&self.ctx, BUDGETS, None).await {
            Ok(items) => items.iter().filter_map(preemption::Budget::from_object).collect(),
            Err(err) => {
                tracing::debug!(error = %err.message, "could not list PodDisruptionBudgets");
                Vec::new()
            }
        }
    }

    fn spawn_bind(&self, uid: String, pod: Value, node: String) {
        let (ctx, binds, permits) = (self.ctx.clone(), self.binds.clone(), self.permits.clone());
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = actions::bind(&ctx, &pod, &node).await;
            let _ = binds.send((uid, result));
        });
    }
}

/// What of a node can change a scheduling outcome (not heartbeats).
fn node_fingerprint(node: &NodeInfo) -> String {
    format!("{:?}{:?}{}{:?}{}", node.labels, node.allocatable, node.max_pods, node.taints, node.unschedulable)
}
