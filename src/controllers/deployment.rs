//! The Deployment controller: one ReplicaSet per pod template
//! (`<deploy>-<pod-template-hash>`), rolled over by RollingUpdate or
//! Recreate, revisions in `deployment.kubernetes.io/revision`, old sets
//! pruned beyond `revisionHistoryLimit`, and upstream's status conditions.

use super::Context;
use super::events::{self, NORMAL};
use super::objects::{self, PODS, deleting, int_at, name, set_condition, str_at};
use super::queue::{self, Action, Key, Secondary, Wake};
use super::replicaset::{REPLICASETS, write_status};
use super::rollout::{self, Set};
use crate::server::error::ApiError;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const DEPLOYMENTS: (&str, &str, &str) = ("apps", "v1", "deployments");
const COMPONENT: &str = "deployment-controller";
pub const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX: &str = "deployment.kubernetes.io/max-replicas";

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let sets = Secondary { gvr: REPLICASETS, wakes: |rs| queue::wake_owner(rs, "Deployment"), deletions_only: false };
    let pods = Secondary { gvr: PODS, wakes: wake_for_pod, deletions_only: false };
    queue::run_with(ctx, shutdown, "deployment", DEPLOYMENTS, &[sets, pods], Duration::from_secs(30), reconcile).await;
}

/// A terminating pod of a deployment's replica set (`<deploy>-<hash>`) wakes
/// the deployment: Recreate waits for old pods to be gone.
fn wake_for_pod(pod: &Value) -> Vec<Wake> {
    if !deleting(pod) {
        return Vec::new();
    }
    let hash = str_at(pod, &format!("/metadata/labels/{HASH_LABEL}"));
    queue::wake_owner(pod, "ReplicaSet")
        .into_iter()
        .filter_map(|wake| match wake {
            Wake::Key((ns, rs)) if !hash.is_empty() => {
                rs.strip_suffix(&format!("-{hash}")).map(|deploy| Wake::Key((ns, deploy.to_string())))
            }
            _ => None,
        })
        .collect()
}

fn revision(rs: &Value) -> i64 {
    str_at(rs, &format!("/metadata/annotations/{}", REVISION.replace('/', "~1"))).parse().unwrap_or(0)
}

/// A template without the `pod-template-hash` label, to compare a set's
/// template with the deployment's.
fn without_hash(template: Option<&Value>) -> Value {
    let mut template = template.cloned().unwrap_or(json!({}));
    if let Some(labels) = template.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(HASH_LABEL);
        if labels.is_empty()
            && let Some(meta) = template.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("labels");
        }
    }
    template
}

fn set_of(rs: &Value) -> Set {
    Set {
        replicas: int_at(rs, "/spec/replicas").unwrap_or(0),
        available: int_at(rs, "/status/availableReplicas").unwrap_or(0),
    }
}

/// The ReplicaSet a deployment's current template gets, with its hash label everywhere.
fn new_replica_set(deploy: &Value, hash: &str, replicas: i64, revision: i64, max_surge: i64) -> Value {
    let mut template = deploy.pointer("/spec/template").cloned().unwrap_or(json!({}));
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = deploy.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let desired = int_at(deploy, "/spec/replicas").unwrap_or(1);
    let mut annotations = deploy.pointer("/metadata/annotations").cloned().unwrap_or(json!({}));
    if let Some(map) = annotations.as_object_mut() {
        map.remove("kubectl.kubernetes.io/last-applied-configuration");
        map.insert(REVISION.into(), json!(revision.to_string()));
        map.insert(DESIRED.into(), json!(desired.to_string()));
        map.insert(MAX.into(), json!((desired + max_surge).to_string()));
    }
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("{}-{hash}", name(deploy)), "namespace": str_at(deploy, "/metadata/namespace"),
            "labels": template["metadata"]["labels"].clone(), "annotations": annotations,
            "ownerReferences": [objects::controller_ref(deploy, "apps/v1", "Deployment")]},
        "spec": {"replicas": replicas, "minReadySeconds": int_at(deploy, "/spec/minReadySeconds").unwrap_or(0),
            "selector": selector, "template": template},
    })
}

/// maxSurge and maxUnavailable resolved; Recreate is (0, all).
fn max_surge_unavailable(deploy: &Value, desired: i64) -> (i64, i64) {
    if str_at(deploy, "/spec/strategy/type") == "Recreate" {
        (0, desired)
    } else {
        rollout::surge_and_unavailable(deploy.pointer("/spec/strategy/rollingUpdate"), desired)
    }
}

fn annotation(rs: &Value, key: &str) -> Option<i64> {
    str_at(rs, &format!("/metadata/annotations/{}", key.replace('/', "~1"))).parse().ok()
}

async fn scale(ctx: &Context, deploy: &Value, rs: &Value, to: i64, revision_to: Option<i64>) -> Result<(), ApiError> {
    let from = int_at(rs, "/spec/replicas").unwrap_or(0);
    let desired = int_at(deploy, "/spec/replicas").unwrap_or(1);
    let (surge, _) = max_surge_unavailable(deploy, desired);
    let mut annotations = json!({DESIRED: desired.to_string(), MAX: (desired + surge).to_string()});
    if let Some(rev) = revision_to {
        annotations[REVISION] = json!(rev.to_string());
    }
    let unchanged_annotations = annotations
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| rs.pointer(&format!("/metadata/annotations/{}", k.replace('/', "~1"))) == Some(v));
    if from == to && unchanged_annotations {
        return Ok(());
    }
    let ns = str_at(rs, "/metadata/namespace");
    let path = objects::path(ctx, REPLICASETS, Some(ns), Some(name(rs)), None)?;
    let patch = json!({"metadata": {"annotations": annotations, "resourceVersion": str_at(rs, "/metadata/resourceVersion")},
        "spec": {"replicas": to}});
    ctx.client.merge_patch(&path, patch).await?;
    if from != to {
        let direction = if to > from { "up" } else { "down" };
        let message = format!("Scaled {direction} replica set {} from {from} to {to}", name(rs));
        events::record(ctx, COMPONENT, deploy, ("apps/v1", "Deployment"), NORMAL, "ScalingReplicaSet", &message).await;
    }
    Ok(())
}

async fn reconcile(ctx: Context, (ns, deploy_name): Key) -> Result<Action, ApiError> {
    let Some(deploy) = objects::get(&ctx, DEPLOYMENTS, &ns, &deploy_name).await? else { return Ok(Action::Done) };
    if deleting(&deploy) {
        return Ok(Action::Done);
    }
    let owner_ref = objects::controller_ref(&deploy, "apps/v1", "Deployment");
    let candidates = objects::list(&ctx, REPLICASETS, Some(&ns)).await?;
    let mut sets = objects::claim(&ctx, REPLICASETS, &deploy, &owner_ref, candidates).await?;
    sets.retain(|rs| !deleting(rs));
    sets.sort_by_key(|rs| (revision(rs), str_at(rs, "/metadata/creationTimestamp").to_string()));

    let desired = int_at(&deploy, "/spec/replicas").unwrap_or(1).max(0);
    let template = deploy.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let strategy = str_at(&deploy, "/spec/strategy/type").to_string();
    let (surge, unavailable) = max_surge_unavailable(&deploy, desired);
    let new_index =
        sets.iter().position(|rs| without_hash(rs.pointer("/spec/template")) == without_hash(Some(&template)));
    let max_revision = sets.iter().map(revision).max().unwrap_or(0);
    let paused = deploy.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    let mut created_new = None;

    if !paused {
        let new = new_index.map(|i| sets.remove(i));
        let olds = sets.clone();
        let old_sets: Vec<Set> = olds.iter().map(set_of).collect();
        // Recreate waits for every old pod to be gone, terminating ones included (as upstream).
        let old_running = strategy == "Recreate" && !olds.is_empty() && {
            let uids: Vec<&str> = olds.iter().map(objects::uid).collect();
            objects::list(&ctx, PODS, Some(&ns)).await?.iter().any(|p| {
                objects::controller_uid(p).is_some_and(|u| uids.contains(&u))
                    && !matches!(objects::phase(p), "Succeeded" | "Failed")
            })
        };
        let new_set = new.as_ref().map(set_of).unwrap_or(Set { replicas: 0, available: 0 });
        // A scaling event mid-rollout (upstream `isScalingEvent`): spread the change, roll on next time.
        let mut all: Vec<&Value> = olds.iter().chain(new.as_ref()).collect();
        all.retain(|rs| int_at(rs, "/spec/replicas").unwrap_or(0) > 0);
        let scaling = strategy != "Recreate"
            && new.is_some()
            && all.len() > 1
            && all.iter().any(|rs| annotation(rs, DESIRED) != Some(desired));
        if scaling {
            let sized: Vec<rollout::Sized> = all
                .iter()
                .map(|rs| rollout::Sized {
                    replicas: int_at(rs, "/spec/replicas").unwrap_or(0),
                    max_replicas: annotation(rs, MAX),
                })
                .collect();
            let current = int_at(&deploy, "/status/replicas").unwrap_or(0);
            let sizes = rollout::proportional(desired, surge, &sized, current);
            tracing::info!(deployment = %deploy_name, namespace = %ns, ?sizes, "scaling proportionally mid-rollout");
            for (rs, size) in all.iter().zip(sizes) {
                scale(&ctx, &deploy, rs, size, None).await?;
            }
            return Ok(Action::RequeueAfter(Duration::from_millis(100)));
        }
        // Recreate: the old pods must all be gone before the new set grows.
        let target_new = if strategy == "Recreate" {
            if old_sets.iter().any(|s| s.replicas > 0) || old_running { 0 } else { desired }
        } else {
            rollout::new_replicas(desired, surge, new_set, &old_sets)
        };
        let new_rs = match new {
            Some(rs) => {
                // A set that became current again (a rollback) gets the next revision.
                let bump = (revision(&rs) < max_revision).then_some(max_revision + 1);
                scale(&ctx, &deploy, &rs, target_new, bump).await?;
                rs
            }
            None => {
                let collisions = int_at(&deploy, "/status/collisionCount").filter(|c| *c > 0);
                let hash = rollout::template_hash(&template, collisions);
                let rs = new_replica_set(&deploy, &hash, target_new, max_revision + 1, surge);
                let path = objects::path(&ctx, REPLICASETS, Some(&ns), None, None)?;
                match ctx.client.create(&path, rs).await {
                    Ok(created) => {
                        tracing::info!(deployment = %deploy_name, namespace = %ns, replicaset = %name(&created), "created a new replica set");
                        if target_new > 0 {
                            let message = format!("Scaled up replica set {} from 0 to {target_new}", name(&created));
                            events::record(
                                &ctx,
                                COMPONENT,
                                &deploy,
                                ("apps/v1", "Deployment"),
                                NORMAL,
                                "ScalingReplicaSet",
                                &message,
                            )
                            .await;
                        }
                        created_new = Some(name(&created).to_string());
                        created
                    }
                    Err(err) if err.code == 409 => {
                        // A set of that name with another template: count the collision and retry.
                        let count = collisions.unwrap_or(0) + 1;
                        let status_path =
                            objects::path(&ctx, DEPLOYMENTS, Some(&ns), Some(&deploy_name), Some("status"))?;
                        ctx.client.merge_patch(&status_path, json!({"status": {"collisionCount": count}})).await?;
                        return Ok(Action::RequeueAfter(Duration::from_millis(100)));
                    }
                    Err(err) => return Err(err),
                }
            }
        };
        let new_set =
            Set { replicas: target_new, available: int_at(&new_rs, "/status/availableReplicas").unwrap_or(0) };
        let old_targets = if strategy == "Recreate" {
            vec![0; olds.len()]
        } else {
            rollout::old_replicas(desired, unavailable, new_set, &old_sets)
        };
        for (rs, to) in olds.iter().zip(old_targets) {
            scale(&ctx, &deploy, rs, to, None).await?;
        }
        cleanup(&ctx, &deploy, &olds).await?;
        sets = olds;
        sets.push(new_rs);
    } else {
        // Paused: no rollout, but a single active set still follows spec.replicas.
        let active: Vec<&Value> = sets.iter().filter(|rs| int_at(rs, "/spec/replicas").unwrap_or(0) > 0).collect();
        let target = match (active.as_slice(), new_index) {
            ([only], _) => Some(*only),
            ([], Some(i)) => sets.get(i),
            _ => None,
        };
        if let Some(rs) = target {
            scale(&ctx, &deploy, rs, desired, None).await?;
        }
    }
    // Status over the sets as they are now.
    let current = objects::list(&ctx, REPLICASETS, Some(&ns)).await?;
    let owned: Vec<Value> = current
        .into_iter()
        .filter(|rs| objects::controller_uid(rs) == Some(objects::uid(&deploy)) && !deleting(rs))
        .collect();
    let new_name = format!(
        "{}-{}",
        deploy_name,
        owned
            .iter()
            .find(|rs| without_hash(rs.pointer("/spec/template")) == without_hash(Some(&template)))
            .map(|rs| str_at(rs, &format!("/metadata/labels/{HASH_LABEL}")).to_string())
            .unwrap_or_default()
    );
    let (status, recheck) = deployment_status(
        &deploy,
        &owned,
        &new_name,
        desired,
        unavailable,
        created_new.is_some(),
        jiff::Timestamp::now(),
    );
    if let Some(rev) = owned.iter().find(|rs| name(rs) == new_name).map(revision) {
        let key = format!("/metadata/annotations/{}", REVISION.replace('/', "~1"));
        if str_at(&deploy, &key) != rev.to_string() {
            let path = objects::path(&ctx, DEPLOYMENTS, Some(&ns), Some(&deploy_name), None)?;
            let patch = json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
            objects::ignore_gone(ctx.client.merge_patch(&path, patch).await)?;
        }
    }
    write_status(&ctx, DEPLOYMENTS, &deploy, status).await?;
    Ok(recheck.map_or(Action::Done, Action::RequeueAfter))
}

/// Deletes old, empty sets beyond `revisionHistoryLimit` (oldest first).
async fn cleanup(ctx: &Context, deploy: &Value, olds: &[Value]) -> Result<(), ApiError> {
    let limit = int_at(deploy, "/spec/revisionHistoryLimit").unwrap_or(10).max(0) as usize;
    let empty: Vec<&Value> = olds
        .iter()
        .filter(|rs| int_at(rs, "/spec/replicas") == Some(0) && int_at(rs, "/status/replicas").unwrap_or(0) == 0)
        .collect();
    let excess = empty.len().saturating_sub(limit);
    for rs in empty.into_iter().take(excess) {
        tracing::info!(deployment = %name(deploy), replicaset = %name(rs), "deleting an old replica set");
        let path = objects::path(ctx, REPLICASETS, Some(str_at(rs, "/metadata/namespace")), Some(name(rs)), None)?;
        objects::ignore_gone(ctx.client.delete(&path, None).await)?;
    }
    Ok(())
}

/// Upstream's deployment status: counts summed over the sets, and the
/// Available / Progressing conditions.
fn deployment_status(
    deploy: &Value,
    sets: &[Value],
    new_name: &str,
    desired: i64,
    max_unavailable: i64,
    created_new: bool,
    now: jiff::Timestamp,
) -> (Value, Option<Duration>) {
    let mut recheck = None;
    let sum = |pointer: &str| -> i64 { sets.iter().map(|rs| int_at(rs, pointer).unwrap_or(0)).sum() };
    let new = sets.iter().find(|rs| name(rs) == new_name);
    let updated = new.and_then(|rs| int_at(rs, "/status/replicas")).unwrap_or(0);
    let (replicas, ready, available) =
        (sum("/status/replicas"), sum("/status/readyReplicas"), sum("/status/availableReplicas"));
    let mut conditions: Vec<Value> =
        deploy.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    if available >= desired - max_unavailable {
        set_condition(
            &mut conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        );
    } else {
        set_condition(
            &mut conditions,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        );
    }
    let paused = deploy.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    let complete = updated == desired
        && replicas == desired
        && available >= desired
        && new.and_then(|rs| int_at(rs, "/status/observedGeneration"))
            >= new.and_then(|rs| int_at(rs, "/metadata/generation"));
    if paused {
        set_condition(&mut conditions, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused");
    } else if objects::condition(deploy, "Progressing").and_then(|c| c.get("reason")).and_then(Value::as_str)
        == Some("DeploymentPaused")
        && !complete
    {
        set_condition(&mut conditions, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed");
    } else if complete {
        set_condition(
            &mut conditions,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        );
    } else if created_new {
        set_condition(
            &mut conditions,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            &format!("Created new replica set \"{new_name}\""),
        );
    } else {
        let moved = ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas"]
            .iter()
            .zip([replicas, updated, ready, available])
            .any(|(field, value)| int_at(deploy, &format!("/status/{field}")).unwrap_or(0) != value);
        let progressing = objects::condition(deploy, "Progressing").cloned();
        let last_update = progressing
            .as_ref()
            .and_then(|c| c.get("lastUpdateTime"))
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let deadline = int_at(deploy, "/spec/progressDeadlineSeconds");
        let waited = last_update.map(|t| now.as_second() - t.as_second());
        if !moved && matches!((deadline, waited), (Some(d), Some(w)) if w > d) {
            set_condition(
                &mut conditions,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
            );
        } else {
            set_condition(
                &mut conditions,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet \"{new_name}\" is progressing."),
            );
            if moved {
                touch(&mut conditions, "Progressing", now);
            }
            let since = if moved { 0 } else { waited.unwrap_or(0) };
            recheck = deadline.map(|d| Duration::from_secs((d - since).max(0) as u64 + 1));
        }
    }
    conditions.sort_by_key(|c| c.get("type").and_then(Value::as_str) != Some("Available"));
    let mut status = json!({
        "observedGeneration": int_at(deploy, "/metadata/generation").unwrap_or(0),
        "replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready,
        "availableReplicas": available, "unavailableReplicas": (desired - available).max(0),
        "conditions": conditions,
    });
    if let Some(count) = int_at(deploy, "/status/collisionCount") {
        status["collisionCount"] = json!(count);
    }
    (status, recheck)
}

/// Marks progress: the condition's lastUpdateTime becomes `now`.
fn touch(conditions: &mut [Value], kind: &str, now: jiff::Timestamp) {
    if let Some(c) = conditions.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some(kind)) {
        c["lastUpdateTime"] = json!(now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_sets_carry_the_hash_and_revision() {
        let deploy = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        let rs = new_replica_set(&deploy, "abc", 1, 2, 1);
        assert_eq!(rs["metadata"]["name"], "web-abc");
        assert_eq!(rs["spec"]["selector"]["matchLabels"][HASH_LABEL], "abc");
        assert_eq!(rs["spec"]["template"]["metadata"]["labels"][HASH_LABEL], "abc");
        assert_eq!(rs["metadata"]["annotations"][REVISION], "2");
        assert_eq!(rs["metadata"]["annotations"][MAX], "4");
        assert_eq!(without_hash(rs.pointer("/spec/template")), deploy["spec"]["template"]);
    }

    #[test]
    fn terminating_pods_wake_their_deployment() {
        let pod = json!({"metadata": {"namespace": "ns", "deletionTimestamp": "2024-01-01T00:00:00Z",
            "labels": {HASH_LABEL: "abc"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "my-web-abc", "controller": true}]}});
        assert_eq!(wake_for_pod(&pod), [Wake::Key(("ns".into(), "my-web".into()))]);
        let mut live = pod.clone();
        live["metadata"].as_object_mut().map(|m| m.remove("deletionTimestamp"));
        assert!(wake_for_pod(&live).is_empty());
    }

    #[test]
    fn status_reports_a_complete_rollout() {
        let deploy = json!({"metadata": {"generation": 2}, "spec": {"replicas": 2}});
        let rs = json!({"metadata": {"name": "web-abc", "generation": 1}, "status": {"replicas": 2, "readyReplicas": 2, "availableReplicas": 2, "observedGeneration": 1}});
        let (status, recheck) = deployment_status(&deploy, &[rs], "web-abc", 2, 0, false, jiff::Timestamp::now());
        assert_eq!(recheck, None);
        assert_eq!(status["updatedReplicas"], 2);
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(status["conditions"][0]["type"], "Available");
        assert_eq!(status["conditions"][1]["reason"], "NewReplicaSetAvailable");
        assert_eq!(status["conditions"][1]["message"], "ReplicaSet \"web-abc\" has successfully progressed.");
    }

    #[test]
    fn a_stuck_rollout_exceeds_its_progress_deadline() {
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap_or_else(|e| panic!("{e}"));
        let rs = json!({"metadata": {"name": "web-abc"}, "status": {"replicas": 1, "availableReplicas": 0}});
        let deploy = json!({"metadata": {"generation": 1}, "spec": {"replicas": 1, "progressDeadlineSeconds": 600},
            "status": {"replicas": 1, "updatedReplicas": 1, "conditions": [{"type": "Progressing", "status": "True",
                "reason": "ReplicaSetUpdated", "lastUpdateTime": "2024-01-01T00:00:00Z", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}});
        let sets = [rs];
        let (status, recheck) = deployment_status(&deploy, &sets, "web-abc", 1, 0, false, at("2024-01-01T00:05:00Z"));
        assert_eq!(status["conditions"][1]["reason"], "ReplicaSetUpdated");
        assert_eq!(recheck, Some(Duration::from_secs(301)));
        let (status, _) = deployment_status(&deploy, &sets, "web-abc", 1, 0, false, at("2024-01-01T00:10:01Z"));
        assert_eq!(status["conditions"][1]["reason"], "ProgressDeadlineExceeded");
        assert_eq!(status["conditions"][1]["status"], "False");
    }
}
