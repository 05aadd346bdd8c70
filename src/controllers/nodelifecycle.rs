//! The node lifecycle controller: a node whose kubelet missed its heartbeat
//! (Lease renewal or Ready condition) for 40 s gets its conditions set to
//! Unknown, its pods marked not Ready and the `node.kubernetes.io/unreachable`
//! taints; a NotReady node gets the `not-ready` taints; both go when it recovers.

use super::Context;
use super::events::{self, NORMAL};
use super::objects::{self, PODS, condition, int_at, name, str_at};
use super::queue::{self, Action, Key, Secondary, Wake};
use crate::server::error::ApiError;
use jiff::Timestamp;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NODES: (&str, &str, &str) = ("", "v1", "nodes");
const LEASES: (&str, &str, &str) = ("coordination.k8s.io", "v1", "leases");
const LEASE_NAMESPACE: &str = "kube-node-lease";
const COMPONENT: &str = "node-controller";
/// Upstream's `--node-monitor-grace-period`.
pub const GRACE: i64 = 40;
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

fn wake_lease(lease: &Value) -> Vec<Wake> {
    if str_at(lease, "/metadata/namespace") == LEASE_NAMESPACE {
        vec![Wake::Key((String::new(), name(lease).to_string()))]
    } else {
        Vec::new()
    }
}

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let leases = Secondary { gvr: LEASES, wakes: wake_lease, deletions_only: false };
    queue::run_with(ctx, shutdown, "nodelifecycle", NODES, &[leases], Duration::from_secs(10), reconcile).await;
}

/// The last sign of life: lease renewal, Ready heartbeat or (never seen) creation.
pub fn last_heartbeat(node: &Value, lease: Option<&Value>) -> Option<Timestamp> {
    let parse = |text: &str| text.parse::<Timestamp>().ok();
    [
        lease.and_then(|l| parse(str_at(l, "/spec/renewTime"))),
        condition(node, "Ready").and_then(|c| c.get("lastHeartbeatTime")).and_then(Value::as_str).and_then(parse),
        parse(str_at(node, "/metadata/creationTimestamp")),
    ]
    .into_iter()
    .flatten()
    .max()
}

/// The taints a node should carry for its Ready status, replacing any of ours.
pub fn desired_taints(node: &Value, ready: &str, now: &str) -> Vec<Value> {
    let mut taints: Vec<Value> = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| !matches!(t.get("key").and_then(Value::as_str), Some(UNREACHABLE | NOT_READY)))
        .cloned()
        .collect();
    let key = match ready {
        "True" => None,
        "Unknown" => Some(UNREACHABLE),
        _ => Some(NOT_READY),
    };
    if let Some(key) = key {
        let existing = |effect: &str| {
            node.pointer("/spec/taints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|t| {
                    t.get("key").and_then(Value::as_str) == Some(key)
                        && t.get("effect").and_then(Value::as_str) == Some(effect)
                })
                .cloned()
        };
        taints.push(existing("NoSchedule").unwrap_or(json!({"key": key, "effect": "NoSchedule"})));
        taints.push(existing("NoExecute").unwrap_or(json!({"key": key, "effect": "NoExecute", "timeAdded": now})));
    }
    taints
}

async fn mark_pods_not_ready(ctx: &Context, node: &str) -> Result<(), ApiError> {
    for pod in objects::list(ctx, PODS, None).await?.iter().filter(|p| str_at(p, "/spec/nodeName") == node) {
        let Some(conditions) = pod.pointer("/status/conditions").and_then(Value::as_array) else { continue };
        if !objects::pod_ready(pod) {
            continue;
        }
        let now = objects::now();
        let updated: Vec<Value> = conditions
            .iter()
            .map(|c| match c.get("type").and_then(Value::as_str) {
                Some("Ready") => {
                    json!({"type": "Ready", "status": "False", "lastProbeTime": null, "lastTransitionTime": now})
                }
                _ => c.clone(),
            })
            .collect();
        let ns = str_at(pod, "/metadata/namespace");
        let path = objects::path(ctx, PODS, Some(ns), Some(name(pod)), Some("status"))?;
        let patch = json!({"metadata": {"resourceVersion": str_at(pod, "/metadata/resourceVersion")},
            "status": {"conditions": updated}});
        objects::ignore_gone(ctx.client.merge_patch(&path, patch).await)?;
    }
    Ok(())
}

async fn reconcile(ctx: Context, (_, node_name): Key) -> Result<Action, ApiError> {
    let Some(node) = objects::get(&ctx, NODES, "", &node_name).await? else { return Ok(Action::Done) };
    let lease = objects::get(&ctx, LEASES, LEASE_NAMESPACE, &node_name).await?;
    let now = Timestamp::now();
    let now_text = objects::now();
    let lease_seconds =
        lease.as_ref().and_then(|l| int_at(l, "/spec/leaseDurationSeconds")).unwrap_or(GRACE).max(GRACE);
    let silent = last_heartbeat(&node, lease.as_ref()).map(|t| now.as_second() - t.as_second()).unwrap_or(0);
    let reported = condition(&node, "Ready").and_then(|c| c.get("status")).and_then(Value::as_str);
    let mut ready = reported.unwrap_or("Unknown").to_string();
    let recheck = Duration::from_secs((lease_seconds - silent).max(0) as u64 + 1);
    // A node that has not reported yet gets the grace period before it counts as unknown.
    if reported.is_none() && silent <= lease_seconds {
        return Ok(Action::RequeueAfter(recheck));
    }
    let path = objects::path(&ctx, NODES, None, Some(&node_name), None)?;
    if silent > lease_seconds && (ready != "Unknown" || reported.is_none()) {
        tracing::info!(node = %node_name, silent, "node stopped posting status; marking it unknown");
        let conditions: Vec<Value> = node
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_else(|| vec![json!({"type": "Ready"})])
            .into_iter()
            .map(|mut c| {
                c["status"] = json!("Unknown");
                c["reason"] = json!("NodeStatusUnknown");
                c["message"] = json!("Kubelet stopped posting node status.");
                c["lastTransitionTime"] = json!(now_text);
                c
            })
            .collect();
        let status_path = objects::path(&ctx, NODES, None, Some(&node_name), Some("status"))?;
        let patch = json!({"metadata": {"resourceVersion": str_at(&node, "/metadata/resourceVersion")},
            "status": {"conditions": conditions}});
        objects::ignore_gone(ctx.client.merge_patch(&status_path, patch).await)?;
        let message = format!("Node {node_name} status is now: NodeNotReady");
        events::record(&ctx, COMPONENT, &node, ("v1", "Node"), NORMAL, "NodeNotReady", &message).await;
        mark_pods_not_ready(&ctx, &node_name).await?;
        ready = "Unknown".into();
    }
    let taints = desired_taints(&node, &ready, &now_text);
    let current = node.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
    if taints != current {
        tracing::info!(node = %node_name, ready = %ready, "updating node taints");
        let node = objects::get(&ctx, NODES, "", &node_name).await?.unwrap_or(node);
        let patch = json!({"metadata": {"resourceVersion": str_at(&node, "/metadata/resourceVersion")}, "spec": {"taints": taints}});
        objects::ignore_gone(ctx.client.merge_patch(&path, patch).await)?;
    }
    if ready == "Unknown" {
        return Ok(Action::Done);
    }
    // Look again just after the grace period would run out.
    Ok(Action::RequeueAfter(recheck))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_is_the_latest_sign_of_life() {
        let node = json!({"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2024-01-01T00:01:00Z"}]}});
        let lease = json!({"spec": {"renewTime": "2024-01-01T00:02:00.123456Z"}});
        let at = |s: &str| s.parse::<Timestamp>().ok();
        assert_eq!(last_heartbeat(&node, Some(&lease)), at("2024-01-01T00:02:00.123456Z"));
        assert_eq!(last_heartbeat(&node, None), at("2024-01-01T00:01:00Z"));
    }

    #[test]
    fn taints_follow_readiness() {
        let node = json!({"spec": {"taints": [{"key": "dedicated", "effect": "NoSchedule"}]}});
        let unreachable = desired_taints(&node, "Unknown", "t");
        assert_eq!(unreachable.len(), 3);
        assert_eq!(unreachable[1], json!({"key": UNREACHABLE, "effect": "NoSchedule"}));
        assert_eq!(unreachable[2]["effect"], "NoExecute");
        let tainted = json!({"spec": {"taints": unreachable}});
        assert_eq!(desired_taints(&tainted, "True", "t"), [json!({"key": "dedicated", "effect": "NoSchedule"})]);
        assert_eq!(desired_taints(&tainted, "False", "t")[1]["key"], NOT_READY);
        // Unchanged taints keep their timeAdded.
        assert_eq!(
            desired_taints(&tainted, "Unknown", "later"),
            tainted["spec"]["taints"].as_array().cloned().unwrap_or_default()
        );
    }
}
