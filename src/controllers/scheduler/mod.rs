//! The scheduler: binds each pending pod of `default-scheduler` to the best
//! node the [`framework`] finds (`POST pods/<name>/binding`), or marks it
//! `PodScheduled=False` / `Unschedulable` with upstream's message and event.

pub mod framework;
pub mod quantity;

use super::Context;
use super::events::{self, NORMAL, WARNING};
use super::objects::{self, PODS, condition, deleting, name, str_at};
use super::queue::{self, Action, Key, Secondary, Wake};
use crate::server::error::ApiError;
use framework::NodeInfo;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NODES: (&str, &str, &str) = ("", "v1", "nodes");
const COMPONENT: &str = "default-scheduler";
/// Unschedulable pods are retried this often (and whenever a node changes).
const RETRY: Duration = Duration::from_secs(5);

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let nodes = Secondary { gvr: NODES, wakes: |_| vec![Wake::All], deletions_only: false };
    queue::run_filtered(ctx, shutdown, "scheduler", PODS, pending, &[nodes], Duration::from_secs(30), reconcile).await;
}

/// Whether the pod waits for this scheduler.
fn pending(pod: &Value) -> bool {
    let scheduler = match str_at(pod, "/spec/schedulerName") {
        "" => "default-scheduler",
        s => s,
    };
    scheduler == "default-scheduler"
        && str_at(pod, "/spec/nodeName").is_empty()
        && !deleting(pod)
        && !matches!(objects::phase(pod), "Succeeded" | "Failed")
}

async fn reconcile(ctx: Context, (ns, pod_name): Key) -> Result<Action, ApiError> {
    let Some(pod) = objects::get(&ctx, PODS, &ns, &pod_name).await? else { return Ok(Action::Done) };
    if !pending(&pod) {
        return Ok(Action::Done);
    }
    let nodes = objects::list(&ctx, NODES, None).await?;
    let pods = objects::list(&ctx, PODS, None).await?;
    let infos: Vec<NodeInfo> = nodes
        .into_iter()
        .map(|node| {
            let assigned = pods
                .iter()
                .filter(|p| {
                    str_at(p, "/spec/nodeName") == name(&node) && !matches!(objects::phase(p), "Succeeded" | "Failed")
                })
                .cloned()
                .collect();
            NodeInfo { node, pods: assigned }
        })
        .collect();
    match framework::schedule(&pod, &infos) {
        Ok(node) => bind(&ctx, &pod, &node).await.map(|()| Action::Done),
        Err(message) => {
            unschedulable(&ctx, &pod, &message).await?;
            Ok(Action::RequeueAfter(RETRY))
        }
    }
}

async fn bind(ctx: &Context, pod: &Value, node: &str) -> Result<(), ApiError> {
    let ns = str_at(pod, "/metadata/namespace");
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name(pod), "namespace": ns},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    let path = objects::path(ctx, PODS, Some(ns), Some(name(pod)), Some("binding"))?;
    match ctx.client.create(&path, binding).await {
        Ok(_) => {}
        // Bound meanwhile, or gone.
        Err(err) if err.code == 409 || err.code == 404 => return Ok(()),
        Err(err) => return Err(err),
    }
    tracing::info!(pod = %name(pod), namespace = %ns, node, "bound a pod");
    let message = format!("Successfully assigned {ns}/{} to {node}", name(pod));
    // The binding itself set PodScheduled=True.
    events::record(ctx, COMPONENT, pod, ("v1", "Pod"), NORMAL, "Scheduled", &message).await;
    Ok(())
}

async fn unschedulable(ctx: &Context, pod: &Value, message: &str) -> Result<(), ApiError> {
    let previous = condition(pod, "PodScheduled").and_then(|c| c.get("message")).and_then(Value::as_str);
    if previous == Some(message) {
        return Ok(());
    }
    tracing::info!(pod = %name(pod), namespace = %str_at(pod, "/metadata/namespace"), message, "pod is unschedulable");
    set_scheduled(
        ctx,
        pod,
        json!({"type": "PodScheduled", "status": "False", "lastProbeTime": null,
        "lastTransitionTime": objects::now(), "reason": "Unschedulable", "message": message}),
    )
    .await?;
    events::record(ctx, COMPONENT, pod, ("v1", "Pod"), WARNING, "FailedScheduling", message).await;
    Ok(())
}

/// Replaces the pod's PodScheduled condition, keeping the others.
async fn set_scheduled(ctx: &Context, pod: &Value, scheduled: Value) -> Result<(), ApiError> {
    let ns = str_at(pod, "/metadata/namespace");
    let path = objects::path(ctx, PODS, Some(ns), Some(name(pod)), Some("status"))?;
    let current = objects::get(ctx, PODS, ns, name(pod)).await?.unwrap_or_else(|| pod.clone());
    let mut conditions: Vec<Value> = current
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|c| c.iter().filter(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled")).cloned().collect())
        .unwrap_or_default();
    conditions.insert(0, scheduled);
    let patch = json!({"metadata": {"resourceVersion": str_at(&current, "/metadata/resourceVersion")},
        "status": {"conditions": conditions}});
    objects::ignore_gone(ctx.client.merge_patch(&path, patch).await)
}
