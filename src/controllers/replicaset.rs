//! The ReplicaSet controller: keeps `spec.replicas` active pods that match
//! the selector (creating from the template, deleting the least useful
//! first, adopting orphans) and reports the counts in status.

use super::Context;
use super::events::{self, NORMAL, WARNING};
use super::objects::{self, PODS, deleting, int_at, name, pod_active, pod_available, pod_ready, str_at};
use super::queue::{self, Action, Key, Secondary};
use crate::server::error::ApiError;
use serde_json::{Value, json};
use std::cmp::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const REPLICASETS: (&str, &str, &str) = ("apps", "v1", "replicasets");
const COMPONENT: &str = "replicaset-controller";
/// At most this many pods are created or deleted per reconcile (upstream's burst).
const BURST: usize = 500;

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let pods = Secondary { gvr: PODS, wakes: |pod| queue::wake_owner(pod, "ReplicaSet"), deletions_only: false };
    queue::run_with(ctx, shutdown, "replicaset", REPLICASETS, &[pods], Duration::from_secs(30), reconcile).await;
}

/// A new pod of a workload: the template's metadata and spec, owned by `owner_ref`.
pub fn pod_from_template(template: &Value, generate_name: &str, owner_ref: &Value) -> Value {
    let mut metadata = json!({"generateName": generate_name, "ownerReferences": [owner_ref]});
    for field in ["labels", "annotations"] {
        if let Some(value) = template.pointer(&format!("/metadata/{field}")) {
            metadata[field] = value.clone();
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or(json!({}))})
}

/// Upstream's `ActivePods` order: the pods to delete first sort first
/// (unassigned < assigned, Pending < Unknown < Running, not ready < ready,
/// more recently ready / created first).
pub fn deletion_order(a: &Value, b: &Value) -> Ordering {
    let assigned = |p: &Value| !str_at(p, "/spec/nodeName").is_empty();
    let phase_rank = |p: &Value| match objects::phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    };
    let restarts = |p: &Value| -> i64 {
        p.pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(|c| c.get("restartCount").and_then(Value::as_i64)).max().unwrap_or(0))
            .unwrap_or(0)
    };
    let created = |p: &Value| str_at(p, "/metadata/creationTimestamp").to_string();
    assigned(a)
        .cmp(&assigned(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(pod_ready(a).cmp(&pod_ready(b)))
        .then(restarts(b).cmp(&restarts(a)))
        .then(created(b).cmp(&created(a)))
}

/// The status of a replica set owning `pods` (its active pods).
pub fn status_of(rs: &Value, pods: &[Value], now: jiff::Timestamp) -> Value {
    let min_ready = int_at(rs, "/spec/minReadySeconds").unwrap_or(0);
    let template_labels = rs.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
    let fully_labeled = pods
        .iter()
        .filter(|p| {
            template_labels.is_none_or(|labels| {
                labels.iter().all(|(k, v)| p.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v))
            })
        })
        .count();
    json!({
        "replicas": pods.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": pods.iter().filter(|p| pod_ready(p)).count(),
        "availableReplicas": pods.iter().filter(|p| pod_available(p, min_ready, now)).count(),
        "observedGeneration": int_at(rs, "/metadata/generation").unwrap_or(0),
    })
}

async fn reconcile(ctx: Context, (ns, rs_name): Key) -> Result<Action, ApiError> {
    let Some(rs) = objects::get(&ctx, REPLICASETS, &ns, &rs_name).await? else { return Ok(Action::Done) };
    if deleting(&rs) {
        return Ok(Action::Done);
    }
    let owner_ref = objects::controller_ref(&rs, "apps/v1", "ReplicaSet");
    let candidates = objects::list(&ctx, PODS, Some(&ns)).await?;
    let owned = objects::claim(&ctx, PODS, &rs, &owner_ref, candidates).await?;
    let mut active: Vec<Value> = owned.into_iter().filter(pod_active).collect();
    let wanted = int_at(&rs, "/spec/replicas").unwrap_or(1).max(0) as usize;
    let pods_path = objects::path(&ctx, PODS, Some(&ns), None, None)?;
    let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
    if active.len() < wanted {
        let missing = (wanted - active.len()).min(BURST);
        tracing::info!(replicaset = %rs_name, namespace = %ns, missing, "creating pods");
        for _ in 0..missing {
            let pod = pod_from_template(&template, &format!("{rs_name}-"), &owner_ref);
            match ctx.client.create(&pods_path, pod).await {
                Ok(created) => {
                    let message = format!("Created pod: {}", name(&created));
                    events::record(
                        &ctx,
                        COMPONENT,
                        &rs,
                        ("apps/v1", "ReplicaSet"),
                        NORMAL,
                        "SuccessfulCreate",
                        &message,
                    )
                    .await;
                }
                Err(err) => {
                    let message = format!("Error creating: {}", err.message);
                    events::record(&ctx, COMPONENT, &rs, ("apps/v1", "ReplicaSet"), WARNING, "FailedCreate", &message)
                        .await;
                    return Err(err);
                }
            }
        }
    } else if active.len() > wanted {
        active.sort_by(deletion_order);
        let surplus = (active.len() - wanted).min(BURST);
        tracing::info!(replicaset = %rs_name, namespace = %ns, surplus, "deleting pods");
        for pod in active.drain(..surplus) {
            let path = objects::path(&ctx, PODS, Some(&ns), Some(name(&pod)), None)?;
            objects::ignore_gone(ctx.client.delete(&path, None).await)?;
            let message = format!("Deleted pod: {}", name(&pod));
            events::record(&ctx, COMPONENT, &rs, ("apps/v1", "ReplicaSet"), NORMAL, "SuccessfulDelete", &message).await;
        }
    }
    let now = jiff::Timestamp::now();
    let status = status_of(&rs, &active, now);
    write_status(&ctx, REPLICASETS, &rs, status).await?;
    // Pods ready but not yet available for minReadySeconds need another look.
    let min_ready = int_at(&rs, "/spec/minReadySeconds").unwrap_or(0);
    if min_ready > 0 && active.iter().any(|p| pod_ready(p) && !pod_available(p, min_ready, now)) {
        return Ok(Action::RequeueAfter(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::Done)
}

/// Merges `status` into the object's status when any of its fields differ.
pub async fn write_status(ctx: &Context, gvr: (&str, &str, &str), obj: &Value, status: Value) -> Result<(), ApiError> {
    let current = obj.get("status").cloned().unwrap_or(json!({}));
    let changed = status.as_object().into_iter().flatten().any(|(k, v)| current.get(k) != Some(v));
    if !changed {
        return Ok(());
    }
    let ns = str_at(obj, "/metadata/namespace");
    let path = objects::path(ctx, gvr, Some(ns), Some(name(obj)), Some("status"))?;
    objects::ignore_gone(ctx.client.merge_patch(&path, json!({"status": status})).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, phase: &str, ready: bool, created: &str) -> Value {
        json!({"metadata": {"name": name, "creationTimestamp": created, "labels": {"app": "web"}},
            "spec": {"nodeName": node},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    #[test]
    fn unscheduled_pending_and_unready_pods_go_first() {
        let mut pods = [
            pod("ready-old", "n1", "Running", true, "2024-01-01T00:00:00Z"),
            pod("ready-new", "n1", "Running", true, "2024-01-02T00:00:00Z"),
            pod("unready", "n1", "Running", false, "2024-01-01T00:00:00Z"),
            pod("pending", "n1", "Pending", false, "2024-01-01T00:00:00Z"),
            pod("unscheduled", "", "Pending", false, "2024-01-01T00:00:00Z"),
        ];
        pods.sort_by(deletion_order);
        let names: Vec<&str> = pods.iter().map(name).collect();
        assert_eq!(names, ["unscheduled", "pending", "unready", "ready-new", "ready-old"]);
    }

    #[test]
    fn status_counts_ready_and_labeled_pods() {
        let rs = json!({"metadata": {"generation": 3}, "spec": {"template": {"metadata": {"labels": {"app": "web", "tier": "a"}}}}});
        let mut labeled = pod("a", "n1", "Running", true, "2024-01-01T00:00:00Z");
        labeled["metadata"]["labels"]["tier"] = json!("a");
        let pods = vec![labeled, pod("b", "n1", "Running", false, "2024-01-01T00:00:00Z")];
        let status = status_of(&rs, &pods, jiff::Timestamp::now());
        assert_eq!(
            status,
            json!({"replicas": 2, "fullyLabeledReplicas": 1, "readyReplicas": 1, "availableReplicas": 1, "observedGeneration": 3})
        );
    }

    #[test]
    fn pods_from_templates_are_owned() {
        let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}});
        let owner = json!({"name": "web-1", "uid": "u"});
        let pod = pod_from_template(&template, "web-1-", &owner);
        assert_eq!(pod["metadata"]["generateName"], "web-1-");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "u");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
    }
}
