//! What the scheduler writes: the binding (`POST pods/<name>/binding`) and
//! its `Scheduled` event, `PodScheduled=False` with the FailedScheduling
//! event, and preemption's evictions (`Preempted` events, DisruptionTarget
//! condition, `status.nominatedNodeName`).

use super::preemption::Plan;
use crate::controllers::Context;
use crate::controllers::events::{self, NORMAL, WARNING};
use crate::controllers::objects::{self, PODS, condition, name, str_at};
use crate::server::error::ApiError;
use serde_json::{Value, json};

pub const COMPONENT: &str = "default-scheduler";

/// Binds the pod; `Ok(false)` when it is gone or bound meanwhile.
pub async fn bind(ctx: &Context, pod: &Value, node: &str) -> Result<bool, ApiError> {
    let ns = str_at(pod, "/metadata/namespace");
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name(pod), "namespace": ns, "uid": objects::uid(pod)},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    let path = objects::path(ctx, PODS, Some(ns), Some(name(pod)), Some("binding"))?;
    match ctx.client.create(&path, binding).await {
        Ok(_) => {}
        Err(err) if err.code == 409 || err.code == 404 => return Ok(false),
        Err(err) => return Err(err),
    }
    tracing::debug!(pod = %name(pod), namespace = %ns, node, "bound a pod");
    let message = format!("Successfully assigned {ns}/{} to {node}", name(pod));
    events::record(ctx, COMPONENT, pod, ("v1", "Pod"), NORMAL, "Scheduled", &message).await;
    Ok(true)
}

/// Marks the pod `PodScheduled=False/Unschedulable` and records FailedScheduling.
pub async fn unschedulable(ctx: &Context, pod: &Value, message: &str) -> Result<(), ApiError> {
    let previous = condition(pod, "PodScheduled").and_then(|c| c.get("message")).and_then(Value::as_str);
    if previous != Some(message) {
        tracing::info!(pod = %name(pod), namespace = %str_at(pod, "/metadata/namespace"), message, "pod is unschedulable");
        let scheduled = json!({"type": "PodScheduled", "status": "False", "lastProbeTime": null,
            "lastTransitionTime": objects::now(), "reason": "Unschedulable", "message": message});
        set_condition(ctx, pod, scheduled, None).await?;
    }
    events::record(ctx, COMPONENT, pod, ("v1", "Pod"), WARNING, "FailedScheduling", message).await;
    Ok(())
}

/// Replaces one condition of the pod (by type), keeping the others; optionally sets nominatedNodeName.
async fn set_condition(ctx: &Context, pod: &Value, new: Value, nominated: Option<&str>) -> Result<(), ApiError> {
    let ns = str_at(pod, "/metadata/namespace");
    let kind = new.get("type").cloned().unwrap_or(Value::Null);
    let path = objects::path(ctx, PODS, Some(ns), Some(name(pod)), Some("status"))?;
    let Some(current) = objects::get(ctx, PODS, ns, name(pod)).await? else { return Ok(()) };
    if objects::uid(&current) != objects::uid(pod) {
        return Ok(());
    }
    let mut conditions: Vec<Value> = current
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|c| c.iter().filter(|c| c.get("type") != Some(&kind)).cloned().collect())
        .unwrap_or_default();
    conditions.insert(0, new);
    let mut status = json!({"conditions": conditions});
    if let Some(node) = nominated {
        status["nominatedNodeName"] = json!(node);
    }
    let patch =
        json!({"metadata": {"resourceVersion": str_at(&current, "/metadata/resourceVersion")}, "status": status});
    match ctx.client.merge_patch(&path, patch).await {
        Ok(_) => Ok(()),
        Err(err) if err.code == 404 || err.code == 409 => Ok(()),
        Err(err) => Err(err),
    }
}

/// Carries out a preemption plan: evicts the victims, then nominates the node.
pub async fn preempt(ctx: &Context, preemptor: &Value, plan: &Plan, message: &str) -> Result<(), ApiError> {
    for victim in &plan.victims {
        let pod = &victim.pod;
        let target = json!({"type": "DisruptionTarget", "status": "True", "lastProbeTime": null,
            "lastTransitionTime": objects::now(), "reason": "PreemptionByScheduler",
            "message": format!("{COMPONENT}: preempting to accommodate a higher priority pod")});
        set_condition(ctx, pod, target, None).await?;
        let ns = str_at(pod, "/metadata/namespace");
        let path = objects::path(ctx, PODS, Some(ns), Some(name(pod)), None)?;
        let options = json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": victim.uid}});
        objects::ignore_gone(ctx.client.delete(&path, Some(options)).await)?;
        tracing::info!(victim = %name(pod), namespace = %ns, preemptor = %name(preemptor), node = %plan.node, "preempted a pod");
        let text = format!("Preempted by pod {} on node {}", objects::uid(preemptor), plan.node);
        events::record(ctx, COMPONENT, pod, ("v1", "Pod"), NORMAL, "Preempted", &text).await;
    }
    let scheduled = json!({"type": "PodScheduled", "status": "False", "lastProbeTime": null,
        "lastTransitionTime": objects::now(), "reason": "Unschedulable", "message": message});
    set_condition(ctx, preemptor, scheduled, Some(&plan.node)).await?;
    events::record(ctx, COMPONENT, preemptor, ("v1", "Pod"), WARNING, "FailedScheduling", message).await;
    Ok(())
}
