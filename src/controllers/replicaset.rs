//! The ReplicaSet (and ReplicationController) controller: keeps
//! `spec.replicas` active pods that match the selector (creating from the
//! template, deleting the least useful first, adopting orphans) and reports
//! the counts in status, with a ReplicaFailure condition when creating fails.

use super::Context;
use super::events::{self, NORMAL, WARNING};
use super::objects::{self, PODS, deleting, int_at, name, pod_active, pod_available, pod_ready, str_at};
use super::queue::{self, Action, Key, Secondary};
use crate::server::error::ApiError;
use crate::server::selectors::LabelSelector;
use serde_json::{Value, json};
use std::cmp::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const REPLICASETS: (&str, &str, &str) = ("apps", "v1", "replicasets");
/// At most this many pods are created or deleted per reconcile (upstream's burst).
const BURST: usize = 500;

const REPLICATIONCONTROLLERS: (&str, &str, &str) = ("", "v1", "replicationcontrollers");

/// What differs between ReplicaSets and ReplicationControllers.
#[derive(Clone, Copy)]
struct Flavor {
    gvr: (&'static str, &'static str, &'static str),
    api_version: &'static str,
    kind: &'static str,
    component: &'static str,
    /// `spec.selector`: a LabelSelector, or (RC) a plain label map.
    selector: fn(&Value) -> Option<LabelSelector>,
}

const REPLICASET: Flavor = Flavor {
    gvr: REPLICASETS,
    api_version: "apps/v1",
    kind: "ReplicaSet",
    component: "replicaset-controller",
    selector: objects::selector,
};

/// An RC selects by a label map, which defaults to its template's labels.
fn rc_selector(rc: &Value) -> Option<LabelSelector> {
    let map = rc
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
        .or_else(|| rc.pointer("/spec/template/metadata/labels").and_then(Value::as_object))?;
    LabelSelector::from_label_selector_json(&json!({"matchLabels": map})).ok().filter(|s| !s.is_empty())
}

const REPLICATIONCONTROLLER: Flavor = Flavor {
    gvr: REPLICATIONCONTROLLERS,
    api_version: "v1",
    kind: "ReplicationController",
    component: "replication-controller",
    selector: rc_selector,
};

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let pods = Secondary { gvr: PODS, wakes: |pod| queue::wake_owner(pod, "ReplicaSet"), deletions_only: false };
    let reconcile = |ctx, key| reconcile(ctx, key, REPLICASET);
    queue::run_with(ctx, shutdown, "replicaset", REPLICASETS, &[pods], Duration::from_secs(30), reconcile).await;
}

pub async fn run_replication_controllers(ctx: Context, shutdown: CancellationToken) {
    let pods =
        Secondary { gvr: PODS, wakes: |pod| queue::wake_owner(pod, "ReplicationController"), deletions_only: false };
    let reconcile = |ctx, key| reconcile(ctx, key, REPLICATIONCONTROLLER);
    queue::run_with(
        ctx,
        shutdown,
        "replicationcontroller",
        REPLICATIONCONTROLLERS,
        &[pods],
        Duration::from_secs(30),
        reconcile,
    )
    .await;
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

async fn reconcile(ctx: Context, (ns, rs_name): Key, flavor: Flavor) -> Result<Action, ApiError> {
    let Some(rs) = objects::get(&ctx, flavor.gvr, &ns, &rs_name).await? else { return Ok(Action::Done) };
    if deleting(&rs) {
        return Ok(Action::Done);
    }
    let kind = (flavor.api_version, flavor.kind);
    let owner_ref = objects::controller_ref(&rs, flavor.api_version, flavor.kind);
    let candidates = objects::list(&ctx, PODS, Some(&ns)).await?;
    let selector = (flavor.selector)(&rs);
    let owned = objects::claim_with(&ctx, PODS, &rs, &owner_ref, selector, candidates).await?;
    let mut active: Vec<Value> = owned.into_iter().filter(pod_active).collect();
    let wanted = int_at(&rs, "/spec/replicas").unwrap_or(1).max(0) as usize;
    let pods_path = objects::path(&ctx, PODS, Some(&ns), None, None)?;
    let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut failure = None;
    if active.len() < wanted {
        let missing = (wanted - active.len()).min(BURST);
        tracing::info!(owner = %rs_name, kind = flavor.kind, namespace = %ns, missing, "creating pods");
        for _ in 0..missing {
            let pod = pod_from_template(&template, &format!("{rs_name}-"), &owner_ref);
            match ctx.client.create(&pods_path, pod).await {
                Ok(created) => {
                    let message = format!("Created pod: {}", name(&created));
                    events::record(&ctx, flavor.component, &rs, kind, NORMAL, "SuccessfulCreate", &message).await;
                }
                Err(err) => {
                    let message = format!("Error creating: {}", err.message);
                    events::record(&ctx, flavor.component, &rs, kind, WARNING, "FailedCreate", &message).await;
                    failure = Some((err, message));
                    break;
                }
            }
        }
    } else if active.len() > wanted {
        active.sort_by(deletion_order);
        let surplus = (active.len() - wanted).min(BURST);
        tracing::info!(owner = %rs_name, kind = flavor.kind, namespace = %ns, surplus, "deleting pods");
        for pod in active.drain(..surplus) {
            let path = objects::path(&ctx, PODS, Some(&ns), Some(name(&pod)), None)?;
            objects::ignore_gone(ctx.client.delete(&path, None).await)?;
            let message = format!("Deleted pod: {}", name(&pod));
            events::record(&ctx, flavor.component, &rs, kind, NORMAL, "SuccessfulDelete", &message).await;
        }
    }
    let now = jiff::Timestamp::now();
    let mut status = status_of(&rs, &active, now);
    // Upstream's ReplicaFailure condition: set while creating fails, gone once it works.
    let mut conditions: Vec<Value> = rs
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter().filter(|c| c.get("type").and_then(Value::as_str) != Some("ReplicaFailure")).cloned().collect()
        })
        .unwrap_or_default();
    if let Some((_, message)) = &failure {
        conditions.push(json!({"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
            "message": message, "lastTransitionTime": objects::now()}));
    }
    match (conditions.is_empty(), rs.pointer("/status/conditions").is_some()) {
        (false, _) => status["conditions"] = json!(conditions),
        (true, true) => status["conditions"] = Value::Null,
        (true, false) => {}
    }
    write_status(&ctx, flavor.gvr, &rs, status).await?;
    if let Some((err, _)) = failure {
        return Err(err);
    }
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
    fn replication_controllers_select_by_label_map_or_template() {
        let rc = json!({"spec": {"selector": {"app": "web"}, "template": {"metadata": {"labels": {"app": "web", "x": "y"}}}}});
        let selector = rc_selector(&rc).unwrap_or_default();
        assert!(selector.matches(&json!({"metadata": {"labels": {"app": "web"}}})));
        let defaulted = json!({"spec": {"template": {"metadata": {"labels": {"app": "api"}}}}});
        assert!(rc_selector(&defaulted).is_some_and(|s| s.matches(&json!({"metadata": {"labels": {"app": "api"}}}))));
        assert!(rc_selector(&json!({"spec": {}})).is_none());
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
