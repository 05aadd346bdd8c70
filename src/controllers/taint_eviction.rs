//! The taint eviction controller: pods on a node with a NoExecute taint
//! they do not tolerate are deleted, at once or after their toleration's
//! `tolerationSeconds` (counted from the taint's `timeAdded`). Pods without
//! tolerations of the not-ready / unreachable taints get upstream's default
//! 300 s ones (what the DefaultTolerationSeconds admission plugin adds).

use super::Context;
use super::events::{self, NORMAL};
use super::nodelifecycle::{NOT_READY, UNREACHABLE};
use super::objects::{self, PODS, deleting, name, str_at};
use super::queue::{self, Action, Key, Secondary, Wake};
use super::scheduler::framework::tolerates;
use crate::server::error::ApiError;
use jiff::Timestamp;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NODES: (&str, &str, &str) = ("", "v1", "nodes");
const COMPONENT: &str = "taint-eviction-controller";
const DEFAULT_TOLERATION_SECONDS: i64 = 300;

fn wake_node(pod: &Value) -> Vec<Wake> {
    match str_at(pod, "/spec/nodeName") {
        "" => Vec::new(),
        node => vec![Wake::Key((String::new(), node.to_string()))],
    }
}

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let pods = Secondary { gvr: PODS, wakes: wake_node, deletions_only: false };
    queue::run_with(ctx, shutdown, "taint-eviction", NODES, &[pods], Duration::from_secs(30), reconcile).await;
}

/// The pod's tolerations, with the default ones for not-ready / unreachable added.
fn tolerations(pod: &Value) -> Vec<Value> {
    let mut tolerations = pod.pointer("/spec/tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    for key in [NOT_READY, UNREACHABLE] {
        let taint = json!({"key": key, "effect": "NoExecute"});
        if !tolerations.iter().any(|t| tolerates(t, &taint)) {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS}));
        }
    }
    tolerations
}

/// When the pod must go because of the node's NoExecute taints: `None` if
/// never, otherwise the time (in the past when it is due already).
pub fn eviction_time(pod: &Value, taints: &[Value], now: Timestamp) -> Option<Timestamp> {
    let tolerations = tolerations(pod);
    let mut due: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.get("effect").and_then(Value::as_str) == Some("NoExecute")) {
        let matching: Vec<&Value> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        let at = if matching.is_empty() {
            now
        } else if matching.iter().any(|t| t.get("tolerationSeconds").is_none_or(Value::is_null)) {
            continue;
        } else {
            // The shortest toleration wins, counted from when the taint was added.
            let seconds =
                matching.iter().filter_map(|t| t.get("tolerationSeconds")?.as_i64()).min().unwrap_or(0).max(0);
            let added = str_at(taint, "/timeAdded").parse::<Timestamp>().unwrap_or(now);
            Timestamp::from_second(added.as_second() + seconds).unwrap_or(now)
        };
        due = Some(due.map_or(at, |d| d.min(at)));
    }
    due
}

async fn reconcile(ctx: Context, (_, node_name): Key) -> Result<Action, ApiError> {
    let Some(node) = objects::get(&ctx, NODES, "", &node_name).await? else { return Ok(Action::Done) };
    let taints = node.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
    if !taints.iter().any(|t| t.get("effect").and_then(Value::as_str) == Some("NoExecute")) {
        return Ok(Action::Done);
    }
    let now = Timestamp::now();
    let mut next: Option<Timestamp> = None;
    let pods = objects::list(&ctx, PODS, None).await?;
    for pod in pods.iter().filter(|p| str_at(p, "/spec/nodeName") == node_name && !deleting(p)) {
        let Some(at) = eviction_time(pod, &taints, now) else { continue };
        if at > now {
            next = Some(next.map_or(at, |n| n.min(at)));
            continue;
        }
        let ns = str_at(pod, "/metadata/namespace");
        tracing::info!(pod = %name(pod), namespace = %ns, node = %node_name, "evicting a pod from a tainted node");
        let path = objects::path(&ctx, PODS, Some(ns), Some(name(pod)), None)?;
        objects::ignore_gone(ctx.client.delete(&path, None).await)?;
        let message = format!("Marking for deletion Pod {ns}/{}", name(pod));
        events::record(&ctx, COMPONENT, pod, ("v1", "Pod"), NORMAL, "TaintManagerEviction", &message).await;
    }
    Ok(match next {
        Some(at) => Action::RequeueAfter(Duration::from_secs((at.as_second() - now.as_second()).max(0) as u64 + 1)),
        None => Action::Done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations_delay_or_prevent_eviction() {
        let now: Timestamp = "2024-01-01T00:10:00Z".parse().unwrap_or_else(|e| panic!("{e}"));
        let taints = [json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2024-01-01T00:09:00Z"})];
        // Default toleration: 300 s after the taint.
        let plain = json!({"spec": {}});
        assert_eq!(eviction_time(&plain, &taints, now), "2024-01-01T00:14:00Z".parse().ok());
        let quick = json!({"spec": {"tolerations": [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}});
        assert_eq!(eviction_time(&quick, &taints, now), "2024-01-01T00:09:05Z".parse().ok());
        let forever = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        assert_eq!(eviction_time(&forever, &taints, now), None);
        let custom = [json!({"key": "maintenance", "effect": "NoExecute"})];
        assert_eq!(eviction_time(&plain, &custom, now), Some(now));
        let no_execute_free = [json!({"key": "maintenance", "effect": "NoSchedule"})];
        assert_eq!(eviction_time(&plain, &no_execute_free, now), None);
    }
}
