//! The DaemonSet controller: one pod per eligible node (node selector,
//! required node affinity and taints, with upstream's automatic
//! tolerations), pinned by a `metadata.name` node-affinity term that the
//! scheduler honours; rolling updates within maxUnavailable.

use super::Context;
use super::events::{self, NORMAL};
use super::objects::{self, PODS, deleting, int_at, name, pod_active, pod_available, pod_ready, str_at};
use super::queue::{self, Action, Key, Secondary, Wake};
use super::replicaset::write_status;
use super::revisions::{self, REVISION_LABEL};
use super::rollout::resolve;
use super::scheduler::framework::daemon_fits;
use crate::server::error::ApiError;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const DAEMONSETS: (&str, &str, &str) = ("apps", "v1", "daemonsets");
const NODES: (&str, &str, &str) = ("", "v1", "nodes");
const COMPONENT: &str = "daemonset-controller";

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let pods = Secondary { gvr: PODS, wakes: |pod| queue::wake_owner(pod, "DaemonSet"), deletions_only: false };
    let nodes = Secondary { gvr: NODES, wakes: |_| vec![Wake::All], deletions_only: false };
    queue::run_with(ctx, shutdown, "daemonset", DAEMONSETS, &[pods, nodes], Duration::from_secs(30), reconcile).await;
}

/// The tolerations upstream adds to every daemon pod.
fn daemon_tolerations() -> Vec<Value> {
    let mut tolerations: Vec<Value> = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]
        .iter()
        .map(|key| json!({"key": key, "operator": "Exists", "effect": "NoExecute"}))
        .collect();
    for key in [
        "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/memory-pressure",
        "node.kubernetes.io/pid-pressure",
        "node.kubernetes.io/unschedulable",
    ] {
        tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoSchedule"}));
    }
    tolerations
}

/// The daemon pod for `node`: the template plus the tolerations and a
/// required affinity to exactly that node.
pub fn pod_for(ds: &Value, node: &str, revision: &str) -> Value {
    let mut pod = unpinned(ds, revision);
    let term = json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]});
    pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] =
        json!({"nodeSelectorTerms": [term]});
    pod
}

/// The daemon pod before it is pinned to a node.
fn unpinned(ds: &Value, revision: &str) -> Value {
    let template = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut labels = template.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
    labels[REVISION_LABEL] = json!(revision);
    labels["pod-template-generation"] = json!(int_at(ds, "/metadata/generation").unwrap_or(1).to_string());
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    let mut tolerations = spec.get("tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    for toleration in daemon_tolerations() {
        if !tolerations
            .iter()
            .any(|t| t.get("key") == toleration.get("key") && t.get("effect") == toleration.get("effect"))
        {
            tolerations.push(toleration);
        }
    }
    spec["tolerations"] = json!(tolerations);
    let mut metadata = json!({"generateName": format!("{}-", name(ds)), "labels": labels,
        "ownerReferences": [objects::controller_ref(ds, "apps/v1", "DaemonSet")]});
    if let Some(annotations) = template.pointer("/metadata/annotations") {
        metadata["annotations"] = annotations.clone();
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

/// The node a daemon pod is for: its nodeName, or its affinity term.
fn node_of(pod: &Value) -> String {
    match str_at(pod, "/spec/nodeName") {
        "" => str_at(
            pod,
            "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0/values/0",
        )
        .to_string(),
        node => node.to_string(),
    }
}

/// Whether the daemon should run on `node` (every filter but resources).
pub fn should_run(ds: &Value, node: &Value) -> bool {
    let pod = unpinned(ds, "");
    daemon_fits(&pod, node)
}

async fn delete_pod(ctx: &Context, ds: &Value, pod: &Value) -> Result<(), ApiError> {
    let path = objects::path(ctx, PODS, Some(str_at(pod, "/metadata/namespace")), Some(name(pod)), None)?;
    objects::ignore_gone(ctx.client.delete(&path, None).await)?;
    let message = format!("Deleted pod: {}", name(pod));
    events::record(ctx, COMPONENT, ds, ("apps/v1", "DaemonSet"), NORMAL, "SuccessfulDelete", &message).await;
    Ok(())
}

async fn reconcile(ctx: Context, (ns, ds_name): Key) -> Result<Action, ApiError> {
    let Some(ds) = objects::get(&ctx, DAEMONSETS, &ns, &ds_name).await? else { return Ok(Action::Done) };
    if deleting(&ds) {
        return Ok(Action::Done);
    }
    let history = revisions::owned(&ctx, &ds).await?;
    let revision_name = revisions::ensure(&ctx, &ds, "DaemonSet", &history).await?;
    let revision = revisions::current_hash(&ds);
    let owner_ref = objects::controller_ref(&ds, "apps/v1", "DaemonSet");
    let nodes = objects::list(&ctx, NODES, None).await?;
    let candidates = objects::list(&ctx, PODS, Some(&ns)).await?;
    let owned = objects::claim(&ctx, PODS, &ds, &owner_ref, candidates).await?;
    let mut by_node: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for pod in owned.into_iter().filter(|p| !deleting(p)) {
        by_node.entry(node_of(&pod)).or_default().push(pod);
    }
    let wanted: Vec<&Value> = nodes.iter().filter(|n| should_run(&ds, n)).collect();
    let path = objects::path(&ctx, PODS, Some(&ns), None, None)?;
    let rolling = str_at(&ds, "/spec/updateStrategy/type") != "OnDelete";
    let max_unavailable =
        resolve(ds.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable"), wanted.len() as i64, true, 1).max(1);
    let now = jiff::Timestamp::now();
    let min_ready = int_at(&ds, "/spec/minReadySeconds").unwrap_or(0);
    let mut unavailable = 0i64;
    let mut outdated = Vec::new();
    let (mut scheduled, mut ready, mut available, mut updated) = (0, 0, 0, 0);
    for node in &wanted {
        let pods = by_node.remove(name(node)).unwrap_or_default();
        let mut pods: Vec<Value> = pods.into_iter().collect();
        // Failed daemon pods are replaced.
        for failed in pods.iter().filter(|p| !pod_active(p)) {
            delete_pod(&ctx, &ds, failed).await?;
        }
        pods.retain(pod_active);
        pods.sort_by_key(|p| str_at(p, "/metadata/creationTimestamp").to_string());
        if pods.is_empty() {
            let created = ctx.client.create(&path, pod_for(&ds, name(node), &revision)).await?;
            let message = format!("Created pod: {}", name(&created));
            events::record(&ctx, COMPONENT, &ds, ("apps/v1", "DaemonSet"), NORMAL, "SuccessfulCreate", &message).await;
            unavailable += 1;
            continue;
        }
        // One pod per node: the oldest stays.
        for extra in &pods[1..] {
            delete_pod(&ctx, &ds, extra).await?;
        }
        let pod = &pods[0];
        scheduled += 1;
        let is_available = pod_available(pod, min_ready, now);
        ready += i64::from(pod_ready(pod));
        available += i64::from(is_available);
        if !is_available {
            unavailable += 1;
        }
        if str_at(pod, &format!("/metadata/labels/{REVISION_LABEL}")) == revision {
            updated += 1;
        } else {
            outdated.push((is_available, pod.clone()));
        }
    }
    // Pods on nodes that should not run the daemon go.
    let misscheduled: Vec<Value> = by_node.into_values().flatten().filter(pod_active).collect();
    for pod in &misscheduled {
        delete_pod(&ctx, &ds, pod).await?;
    }
    // Rolling update: unavailable outdated pods first, then available ones within maxUnavailable.
    if rolling {
        outdated.sort_by_key(|(is_available, _)| *is_available);
        for (is_available, pod) in outdated {
            if is_available && unavailable >= max_unavailable {
                break;
            }
            delete_pod(&ctx, &ds, &pod).await?;
            if is_available {
                unavailable += 1;
            }
        }
    }
    let status = json!({
        "desiredNumberScheduled": wanted.len(), "currentNumberScheduled": scheduled,
        "numberMisscheduled": misscheduled.len(), "numberReady": ready, "numberAvailable": available,
        "numberUnavailable": (wanted.len() as i64 - available).max(0), "updatedNumberScheduled": updated,
        "observedGeneration": int_at(&ds, "/metadata/generation").unwrap_or(0),
    });
    write_status(&ctx, DAEMONSETS, &ds, status).await?;
    revisions::prune(&ctx, &ds, &history, &[&revision_name]).await?;
    Ok(Action::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: Value, taints: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    }

    #[test]
    fn daemon_pods_are_pinned_to_their_node() {
        let ds = json!({"metadata": {"name": "agent", "uid": "u", "generation": 2},
            "spec": {"template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        let pod = pod_for(&ds, "n1", "abc");
        assert_eq!(node_of(&pod), "n1");
        assert_eq!(pod["metadata"]["labels"]["pod-template-generation"], "2");
        assert!(pod["spec"]["tolerations"].as_array().is_some_and(|t| t.len() == 6));
        assert!(!daemon_fits(&pod, &node("n2", json!({}), json!([]))), "a daemon pod fits only its own node");
    }

    #[test]
    fn eligibility_follows_selectors_and_taints() {
        let ds =
            json!({"metadata": {"name": "agent"}, "spec": {"template": {"spec": {"nodeSelector": {"role": "edge"}}}}});
        assert!(should_run(&ds, &node("n1", json!({"role": "edge"}), json!([]))));
        assert!(!should_run(&ds, &node("n2", json!({"role": "core"}), json!([]))));
        let tainted = node("n3", json!({"role": "edge"}), json!([{"key": "gpu", "effect": "NoSchedule"}]));
        assert!(!should_run(&ds, &tainted));
        let unschedulable = node(
            "n4",
            json!({"role": "edge"}),
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
        );
        assert!(should_run(&ds, &unschedulable));
        let affinity = json!({"metadata": {"name": "agent"}, "spec": {"template": {"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "role", "operator": "In", "values": ["edge"]}]}]}}}}}}});
        assert!(!should_run(&affinity, &node("n2", json!({"role": "core"}), json!([]))));
    }
}
