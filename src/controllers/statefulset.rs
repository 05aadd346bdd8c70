//! The StatefulSet controller: pods `<name>-0..n-1` with stable names,
//! hostnames and claims from `volumeClaimTemplates`; OrderedReady creates
//! in order and waits for each pod to be Ready (Parallel does not); rolling
//! updates replace pods from the highest ordinal down to the partition;
//! revisions are ControllerRevisions.

use super::Context;
use super::events::{self, NORMAL};
use super::objects::{self, PODS, deleting, int_at, name, pod_active, pod_available, pod_ready, str_at};
use super::queue::{self, Action, Key, Secondary};
use super::replicaset::write_status;
use super::revisions::{self, REVISION_LABEL};
use crate::server::error::ApiError;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const STATEFULSETS: (&str, &str, &str) = ("apps", "v1", "statefulsets");
const CLAIMS: (&str, &str, &str) = ("", "v1", "persistentvolumeclaims");
const COMPONENT: &str = "statefulset-controller";
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let pods = Secondary { gvr: PODS, wakes: |pod| queue::wake_owner(pod, "StatefulSet"), deletions_only: false };
    queue::run_with(ctx, shutdown, "statefulset", STATEFULSETS, &[pods], Duration::from_secs(30), reconcile).await;
}

/// The ordinal of a pod named `<set>-<n>`.
pub fn ordinal(set: &str, pod: &str) -> Option<i64> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

/// The pod of ordinal `i` at revision `revision`.
pub fn pod_for(sts: &Value, i: i64, revision: &str) -> Value {
    let set = name(sts);
    let pod_name = format!("{set}-{i}");
    let template = sts.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut labels = template.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
    labels[POD_NAME_LABEL] = json!(pod_name);
    labels[POD_INDEX_LABEL] = json!(i.to_string());
    labels[REVISION_LABEL] = json!(revision);
    let mut metadata = json!({"name": pod_name, "labels": labels,
        "ownerReferences": [objects::controller_ref(sts, "apps/v1", "StatefulSet")]});
    if let Some(annotations) = template.pointer("/metadata/annotations") {
        metadata["annotations"] = annotations.clone();
    }
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    spec["hostname"] = json!(pod_name);
    if let Some(service) = sts.pointer("/spec/serviceName").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        spec["subdomain"] = json!(service);
    }
    for claim in sts.pointer("/spec/volumeClaimTemplates").and_then(Value::as_array).into_iter().flatten() {
        let claim_name = str_at(claim, "/metadata/name");
        let volume =
            json!({"name": claim_name, "persistentVolumeClaim": {"claimName": format!("{claim_name}-{pod_name}")}});
        let volumes = spec.as_object_mut().map(|s| s.entry("volumes").or_insert(json!([])));
        if let Some(list) = volumes.and_then(Value::as_array_mut) {
            list.retain(|v| v.get("name").and_then(Value::as_str) != Some(claim_name));
            list.push(volume);
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

/// What one sync does to the pods (pure, so each policy is testable).
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Create(Vec<i64>),
    Delete(Vec<String>),
    /// Waiting for pods to become Ready.
    Wait,
    Nothing,
}

/// The next step for `pods` (ordinal → (ready, revision)).
pub fn step(
    replicas: i64,
    ordered: bool,
    partition: Option<i64>,
    update_revision: &str,
    set: &str,
    pods: &BTreeMap<i64, (bool, String)>,
) -> Step {
    let missing: Vec<i64> = (0..replicas).filter(|i| !pods.contains_key(i)).collect();
    let surplus: Vec<i64> = pods.keys().rev().copied().filter(|i| *i >= replicas).collect();
    let all_ready = |below: i64| pods.range(..below).all(|(_, (ready, _))| *ready);
    if ordered {
        if let Some(first) = missing.first() {
            return if all_ready(*first) { Step::Create(vec![*first]) } else { Step::Wait };
        }
        if let Some(highest) = surplus.first() {
            return if all_ready(replicas) { Step::Delete(vec![format!("{set}-{highest}")]) } else { Step::Wait };
        }
    } else {
        if !missing.is_empty() {
            return Step::Create(missing);
        }
        if !surplus.is_empty() {
            return Step::Delete(surplus.iter().map(|i| format!("{set}-{i}")).collect());
        }
    }
    // Rolling update: the highest outdated ordinal at or above the partition, once all are Ready.
    if let Some(partition) = partition {
        let outdated = pods.iter().rev().find(|(i, (_, rev))| **i >= partition && rev != update_revision);
        if let Some((i, _)) = outdated {
            return if all_ready(replicas) { Step::Delete(vec![format!("{set}-{i}")]) } else { Step::Wait };
        }
    }
    Step::Nothing
}

async fn ensure_claims(ctx: &Context, sts: &Value, pod_name: &str) -> Result<(), ApiError> {
    let ns = str_at(sts, "/metadata/namespace");
    for template in sts.pointer("/spec/volumeClaimTemplates").and_then(Value::as_array).into_iter().flatten() {
        let claim_name = format!("{}-{pod_name}", str_at(template, "/metadata/name"));
        if objects::get(ctx, CLAIMS, ns, &claim_name).await?.is_some() {
            continue;
        }
        let mut labels = sts.pointer("/spec/selector/matchLabels").cloned().unwrap_or(json!({}));
        if let Some(extra) = template.pointer("/metadata/labels").and_then(Value::as_object) {
            extra.iter().for_each(|(k, v)| labels[k] = v.clone());
        }
        let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim_name, "namespace": ns, "labels": labels},
            "spec": template.get("spec").cloned().unwrap_or(json!({}))});
        match ctx.client.create(&objects::path(ctx, CLAIMS, Some(ns), None, None)?, claim).await {
            Ok(_) | Err(ApiError { code: 409, .. }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

async fn reconcile(ctx: Context, (ns, set): Key) -> Result<Action, ApiError> {
    let Some(sts) = objects::get(&ctx, STATEFULSETS, &ns, &set).await? else { return Ok(Action::Done) };
    if deleting(&sts) {
        return Ok(Action::Done);
    }
    let owner_ref = objects::controller_ref(&sts, "apps/v1", "StatefulSet");
    let history = revisions::owned(&ctx, &sts).await?;
    let update_revision = revisions::ensure(&ctx, &sts, "StatefulSet", &history).await?;
    let candidates = objects::list(&ctx, PODS, Some(&ns)).await?;
    let owned = objects::claim(&ctx, PODS, &sts, &owner_ref, candidates).await?;
    let replicas = int_at(&sts, "/spec/replicas").unwrap_or(1).max(0);
    // Terminal pods are replaced: delete them first.
    for pod in owned.iter().filter(|p| matches!(objects::phase(p), "Succeeded" | "Failed") && !deleting(p)) {
        let path = objects::path(&ctx, PODS, Some(&ns), Some(name(pod)), None)?;
        objects::ignore_gone(ctx.client.delete(&path, None).await)?;
    }
    // Pods that exist (also those going away: a name is reused only once it is free).
    let present: BTreeMap<i64, &Value> = owned.iter().filter_map(|p| ordinal(&set, name(p)).map(|i| (i, p))).collect();
    let states: BTreeMap<i64, (bool, String)> = present
        .iter()
        .map(|(i, p)| {
            (*i, (pod_ready(p) && pod_active(p), str_at(p, &format!("/metadata/labels/{REVISION_LABEL}")).to_string()))
        })
        .collect();
    let ordered = str_at(&sts, "/spec/podManagementPolicy") != "Parallel";
    let partition = (str_at(&sts, "/spec/updateStrategy/type") != "OnDelete")
        .then(|| int_at(&sts, "/spec/updateStrategy/rollingUpdate/partition").unwrap_or(0));
    let kind = ("apps/v1", "StatefulSet");
    match step(replicas, ordered, partition, &update_revision, &set, &states) {
        Step::Create(ordinals) => {
            let path = objects::path(&ctx, PODS, Some(&ns), None, None)?;
            for i in ordinals {
                let pod = pod_for(&sts, i, &update_revision);
                ensure_claims(&ctx, &sts, name(&pod)).await?;
                match ctx.client.create(&path, pod).await {
                    Ok(created) => {
                        let message = format!("create Pod {} in StatefulSet {set} successful", name(&created));
                        events::record(&ctx, COMPONENT, &sts, kind, NORMAL, "SuccessfulCreate", &message).await;
                    }
                    // The old pod of that name is still terminating.
                    Err(err) if err.code == 409 => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Step::Delete(names) => {
            for pod_name in names {
                if present.values().any(|p| name(p) == pod_name && deleting(p)) {
                    continue;
                }
                let path = objects::path(&ctx, PODS, Some(&ns), Some(&pod_name), None)?;
                objects::ignore_gone(ctx.client.delete(&path, None).await)?;
                let message = format!("delete Pod {pod_name} in StatefulSet {set} successful");
                events::record(&ctx, COMPONENT, &sts, kind, NORMAL, "SuccessfulDelete", &message).await;
            }
        }
        Step::Wait | Step::Nothing => {}
    }
    let live: Vec<&Value> = present.values().copied().filter(|p| pod_active(p)).collect();
    let updated =
        live.iter().filter(|p| str_at(p, &format!("/metadata/labels/{REVISION_LABEL}")) == update_revision).count()
            as i64;
    let current_revision = match str_at(&sts, "/status/currentRevision") {
        "" => update_revision.clone(),
        _ if updated >= replicas && live.len() as i64 == replicas => update_revision.clone(),
        current => current.to_string(),
    };
    let current =
        live.iter().filter(|p| str_at(p, &format!("/metadata/labels/{REVISION_LABEL}")) == current_revision).count();
    let min_ready = int_at(&sts, "/spec/minReadySeconds").unwrap_or(0);
    let now = jiff::Timestamp::now();
    let status = json!({
        "observedGeneration": int_at(&sts, "/metadata/generation").unwrap_or(0),
        "replicas": live.len(), "readyReplicas": live.iter().filter(|p| pod_ready(p)).count(),
        "availableReplicas": live.iter().filter(|p| pod_available(p, min_ready, now)).count(),
        "currentReplicas": current, "updatedReplicas": updated,
        "currentRevision": current_revision, "updateRevision": update_revision,
        "collisionCount": int_at(&sts, "/status/collisionCount").unwrap_or(0),
    });
    write_status(&ctx, STATEFULSETS, &sts, status).await?;
    revisions::prune(&ctx, &sts, &history, &[&current_revision, &update_revision]).await?;
    Ok(Action::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(states: &[(i64, bool, &str)]) -> BTreeMap<i64, (bool, String)> {
        states.iter().map(|(i, ready, rev)| (*i, (*ready, rev.to_string()))).collect()
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time() {
        assert_eq!(step(3, true, Some(0), "r1", "db", &pods(&[])), Step::Create(vec![0]));
        assert_eq!(step(3, true, Some(0), "r1", "db", &pods(&[(0, false, "r1")])), Step::Wait);
        assert_eq!(step(3, true, Some(0), "r1", "db", &pods(&[(0, true, "r1")])), Step::Create(vec![1]));
        assert_eq!(step(3, false, Some(0), "r1", "db", &pods(&[])), Step::Create(vec![0, 1, 2]));
    }

    #[test]
    fn scale_down_and_updates_go_from_the_highest_ordinal() {
        let three = pods(&[(0, true, "r1"), (1, true, "r1"), (2, true, "r1")]);
        assert_eq!(step(1, true, Some(0), "r1", "db", &three), Step::Delete(vec!["db-2".into()]));
        assert_eq!(step(3, true, Some(0), "r2", "db", &three), Step::Delete(vec!["db-2".into()]));
        // The partition protects lower ordinals.
        let updated = pods(&[(0, true, "r1"), (1, true, "r1"), (2, true, "r2")]);
        assert_eq!(step(3, true, Some(2), "r2", "db", &updated), Step::Nothing);
        assert_eq!(step(3, true, Some(0), "r2", "db", &updated), Step::Delete(vec!["db-1".into()]));
        // OnDelete never replaces.
        assert_eq!(step(3, true, None, "r2", "db", &three), Step::Nothing);
    }

    #[test]
    fn pods_get_stable_identities_and_claims() {
        let sts = json!({"metadata": {"name": "db", "uid": "u"}, "spec": {"serviceName": "db",
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "x"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}]}});
        let pod = pod_for(&sts, 2, "db-abc");
        assert_eq!(pod["metadata"]["name"], "db-2");
        assert_eq!(pod["metadata"]["labels"][POD_NAME_LABEL], "db-2");
        assert_eq!(pod["metadata"]["labels"][REVISION_LABEL], "db-abc");
        assert_eq!((pod["spec"]["hostname"].as_str(), pod["spec"]["subdomain"].as_str()), (Some("db-2"), Some("db")));
        assert_eq!(pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "data-db-2");
        assert_eq!(ordinal("db", "db-12"), Some(12));
        assert_eq!(ordinal("db", "dbx-1"), None);
    }
}
