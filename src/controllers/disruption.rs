//! The disruption controller: each PodDisruptionBudget's status — how many
//! selected pods are healthy (Ready), how many must stay healthy (from
//! minAvailable / maxUnavailable against the owning controllers' scale) and
//! so how many voluntary disruptions are allowed now.

use super::Context;
use super::objects::{self, PODS, deleting, int_at, name, pod_active, pod_ready, set_condition, str_at};
use super::queue::{self, Action, Key, Secondary, Wake};
use super::rollout::resolve;
use crate::server::error::ApiError;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BUDGETS: (&str, &str, &str) = ("policy", "v1", "poddisruptionbudgets");

fn wake_namespace(pod: &Value) -> Vec<Wake> {
    vec![Wake::Namespace(str_at(pod, "/metadata/namespace").to_string())]
}

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let pods = Secondary { gvr: PODS, wakes: wake_namespace, deletions_only: false };
    queue::run_with(ctx, shutdown, "disruption", BUDGETS, &[pods], Duration::from_secs(30), reconcile).await;
}

/// (expected pods, desired healthy) for a budget over `expected` pods.
pub fn desired_healthy(pdb: &Value, expected: i64) -> i64 {
    if let Some(min) = pdb.pointer("/spec/minAvailable") {
        return resolve(Some(min), expected, true, 0);
    }
    if let Some(max) = pdb.pointer("/spec/maxUnavailable") {
        return (expected - resolve(Some(max), expected, true, 0)).max(0);
    }
    0
}

/// The scale of the pods' controllers (ReplicaSets, StatefulSets, …), or
/// the pod count for pods without a scalable controller.
async fn expected_pods(ctx: &Context, ns: &str, pods: &[&Value]) -> Result<i64, ApiError> {
    let mut scales: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut loose = 0;
    for pod in pods {
        let owner = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| refs.iter().find(|r| r.get("controller").and_then(Value::as_bool) == Some(true)));
        let gvr = match owner.and_then(|o| o.get("kind")).and_then(Value::as_str) {
            Some("ReplicaSet") => ("apps", "v1", "replicasets"),
            Some("StatefulSet") => ("apps", "v1", "statefulsets"),
            Some("ReplicationController") => ("", "v1", "replicationcontrollers"),
            _ => {
                loose += 1;
                continue;
            }
        };
        let owner_name = owner.and_then(|o| o.get("name")).and_then(Value::as_str).unwrap_or_default().to_string();
        let key = (gvr.2.to_string(), owner_name.clone());
        if scales.contains_key(&key) {
            continue;
        }
        let replicas = match objects::get(ctx, gvr, ns, &owner_name).await? {
            Some(controller) => int_at(&controller, "/spec/replicas").unwrap_or(1),
            None => 1,
        };
        scales.insert(key, replicas);
    }
    Ok(loose + scales.values().sum::<i64>())
}

async fn reconcile(ctx: Context, (ns, pdb_name): Key) -> Result<Action, ApiError> {
    let Some(pdb) = objects::get(&ctx, BUDGETS, &ns, &pdb_name).await? else { return Ok(Action::Done) };
    if deleting(&pdb) {
        return Ok(Action::Done);
    }
    let all = objects::list(&ctx, PODS, Some(&ns)).await?;
    let selector = objects::selector(&pdb);
    let pods: Vec<&Value> =
        all.iter().filter(|p| pod_active(p) && selector.as_ref().is_some_and(|s| s.matches(p))).collect();
    let expected = expected_pods(&ctx, &ns, &pods).await?;
    let desired = desired_healthy(&pdb, expected);
    let disrupted = still_disrupted(&pdb, &pods, jiff::Timestamp::now());
    let healthy = pods.iter().filter(|p| pod_ready(p) && !disrupted.contains_key(name(p))).count() as i64;
    let allowed = (healthy - desired).max(0);
    let mut conditions: Vec<Value> =
        pdb.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    if allowed > 0 {
        set_condition(&mut conditions, "DisruptionAllowed", "True", "SufficientPods", "");
    } else {
        set_condition(&mut conditions, "DisruptionAllowed", "False", "InsufficientPods", "");
    }
    for c in &mut conditions {
        if let Some(map) = c.as_object_mut() {
            map.remove("lastUpdateTime");
            map.insert("observedGeneration".into(), json!(int_at(&pdb, "/metadata/generation").unwrap_or(0)));
        }
    }
    let mut status = json!({
        "observedGeneration": int_at(&pdb, "/metadata/generation").unwrap_or(0),
        "currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected,
        "disruptionsAllowed": allowed, "conditions": conditions,
    });
    if !disrupted.is_empty() {
        status["disruptedPods"] = Value::Object(disrupted.into_iter().map(|(k, v)| (k, json!(v))).collect());
    }
    tracing::debug!(budget = %name(&pdb), namespace = %ns, healthy, desired, "budget status");
    if pdb.get("status") == Some(&status) {
        return Ok(Action::Done);
    }
    // A full update with the read resourceVersion: an eviction that spent a
    // disruption meanwhile makes this a conflict (and a retry), never a lost update.
    let mut updated = pdb.clone();
    updated["status"] = status;
    let path = objects::path(&ctx, BUDGETS, Some(&ns), Some(&pdb_name), Some("status"))?;
    objects::ignore_gone(ctx.client.update(&path, updated).await)?;
    Ok(Action::Done)
}

/// How long an eviction's entry in `status.disruptedPods` holds a pod as
/// disrupted if it does not go away (upstream's `DeletionTimeout`).
const DISRUPTION_TIMEOUT_SECONDS: i64 = 120;

/// The entries of `status.disruptedPods` still in force: the pod is still
/// active (not yet being deleted) and the eviction is recent.
fn still_disrupted(pdb: &Value, pods: &[&Value], now: jiff::Timestamp) -> BTreeMap<String, String> {
    pdb.pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(pod, at)| {
            let at = at.as_str()?;
            let since: jiff::Timestamp = at.parse().ok()?;
            let fresh = now.as_second() - since.as_second() < DISRUPTION_TIMEOUT_SECONDS;
            let active = pods.iter().any(|p| name(p) == pod);
            (fresh && active).then(|| (pod.clone(), at.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disrupted_pods_expire_or_leave() {
        let now: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().expect("time");
        let pdb = json!({"status": {"disruptedPods": {
            "a": "2026-01-01T00:09:30Z", "b": "2026-01-01T00:01:00Z", "gone": "2026-01-01T00:09:59Z"}}});
        let (a, b) = (json!({"metadata": {"name": "a"}}), json!({"metadata": {"name": "b"}}));
        let kept = still_disrupted(&pdb, &[&a, &b], now);
        assert_eq!(kept.keys().collect::<Vec<_>>(), vec!["a"]);
    }

    #[test]
    fn desired_healthy_from_min_available_or_max_unavailable() {
        assert_eq!(desired_healthy(&json!({"spec": {"minAvailable": 2}}), 3), 2);
        assert_eq!(desired_healthy(&json!({"spec": {"minAvailable": "50%"}}), 3), 2);
        assert_eq!(desired_healthy(&json!({"spec": {"maxUnavailable": 1}}), 3), 2);
        assert_eq!(desired_healthy(&json!({"spec": {"maxUnavailable": "50%"}}), 3), 1);
        assert_eq!(desired_healthy(&json!({"spec": {}}), 3), 0);
    }
}
