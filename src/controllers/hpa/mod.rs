//! The horizontal pod autoscaler controller (autoscaling/v2): every 15 s
//! per autoscaler, read the target's `scale`, compute the replicas each
//! resource metric (CPU/memory utilisation or average value, from
//! `metrics.k8s.io`) asks for, take the highest, stabilize and rate-limit it
//! by `spec.behavior` (upstream's defaults when unset), clamp to
//! min/max, write the scale and report status and conditions like upstream.

mod behavior;
mod metrics;
mod replicas;

use super::Context;
use super::events::{self, NORMAL, WARNING};
use super::objects::{self, deleting, int_at, name, set_condition, str_at};
use super::queue::{self, Action, Key};
use crate::server::error::ApiError;
use behavior::{Memory, Rules};
use replicas::{Proposal, Target};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const HPAS: (&str, &str, &str) = ("autoscaling", "v2", "horizontalpodautoscalers");
const KIND: (&str, &str) = ("autoscaling/v2", "HorizontalPodAutoscaler");
const COMPONENT: &str = "horizontal-pod-autoscaler";
/// `--horizontal-pod-autoscaler-sync-period`.
const PERIOD: Duration = Duration::from_secs(15);

/// Per autoscaler: behavior memory, and when and at which generation it last ran.
#[derive(Default)]
struct State {
    memory: Memory,
    last_run: Option<(Instant, i64)>,
}

type Memories = Arc<Mutex<HashMap<Key, State>>>;

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let memories = Memories::default();
    queue::run(ctx, shutdown, COMPONENT, HPAS, PERIOD, move |ctx, key| reconcile(ctx, key, memories.clone())).await;
}

fn target_gvr(kind: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match kind {
        "Deployment" => Some(("apps", "v1", "deployments")),
        "ReplicaSet" => Some(("apps", "v1", "replicasets")),
        "StatefulSet" => Some(("apps", "v1", "statefulsets")),
        "ReplicationController" => Some(("", "v1", "replicationcontrollers")),
        _ => None,
    }
}

/// `250m`, or whole units when exact (`104857600`).
fn milli_quantity(milli: i64) -> String {
    if milli % 1000 == 0 { (milli / 1000).to_string() } else { format!("{milli}m") }
}

fn describe(resource: &str, target: Target) -> String {
    match target {
        Target::Utilization(_) => format!("{resource} resource utilization (percentage of request)"),
        Target::AverageMilli(_) => format!("{resource} resource"),
    }
}

/// One `spec.metrics` entry's proposal and its `status.currentMetrics` entry.
fn evaluate(
    metric: &Value,
    current: i64,
    pods: &[Value],
    usage: &std::collections::BTreeMap<String, metrics::PodUsage>,
    now: i64,
) -> Result<(Proposal, Value, String), String> {
    if str_at(metric, "/type") != "Resource" {
        return Err(format!("the {} metric source type is not supported", str_at(metric, "/type")));
    }
    let resource = str_at(metric, "/resource/name");
    let target = match str_at(metric, "/resource/target/type") {
        "Utilization" => Target::Utilization(int_at(metric, "/resource/target/averageUtilization").unwrap_or(80)),
        "AverageValue" => {
            let value = metric.pointer("/resource/target/averageValue");
            let milli = value.and_then(crate::controllers::scheduler::quantity::milli_of);
            Target::AverageMilli(milli.and_then(|m| i64::try_from(m).ok()).filter(|m| *m > 0).unwrap_or(1))
        }
        other => return Err(format!("the {other:?} target type is not supported for resource metrics")),
    };
    let values = usage.iter().filter_map(|(pod, u)| u.milli.get(resource).map(|m| (pod.clone(), *m))).collect();
    let views = metrics::views(pods, usage, resource, now);
    let proposal = replicas::replicas(current, &views, values, target)
        .map_err(|err| format!("failed to get {resource} utilization: {err}"))?;
    let mut current_value = json!({"averageValue": milli_quantity(proposal.average_milli)});
    if let Some(utilization) = proposal.utilization {
        current_value["averageUtilization"] = json!(utilization);
    }
    let status = json!({"type": "Resource", "resource": {"name": resource, "current": current_value}});
    Ok((proposal, status, describe(resource, target)))
}

async fn reconcile(ctx: Context, key: Key, memories: Memories) -> Result<Action, ApiError> {
    let (ns, hpa_name) = key.clone();
    let Some(hpa) = objects::get(&ctx, HPAS, &ns, &hpa_name).await? else {
        if let Ok(mut memories) = memories.lock() {
            memories.remove(&key);
        }
        return Ok(Action::Done);
    };
    if deleting(&hpa) {
        return Ok(Action::Done);
    }
    let generation = int_at(&hpa, "/metadata/generation").unwrap_or(0);
    // Status writes and pod churn wake this often; it acts once per period (or on a spec change).
    let last_run = memories.lock().ok().and_then(|m| m.get(&key).and_then(|s| s.last_run));
    if let Some((at, seen)) = last_run
        && seen == generation
        && at.elapsed() < PERIOD - Duration::from_secs(1)
    {
        return Ok(Action::RequeueAfter(PERIOD.saturating_sub(at.elapsed())));
    }
    let mut memory =
        memories.lock().ok().and_then(|mut m| m.get_mut(&key).map(|s| s.memory.clone())).unwrap_or_default();
    let result = autoscale(&ctx, &hpa, &mut memory).await;
    if let Ok(mut memories) = memories.lock() {
        memories.insert(key, State { memory, last_run: Some((Instant::now(), generation)) });
    }
    result?;
    Ok(Action::RequeueAfter(PERIOD))
}

/// One run over `hpa`: scale the target if needed, then write the status.
async fn autoscale(ctx: &Context, hpa: &Value, memory: &mut Memory) -> Result<(), ApiError> {
    let ns = str_at(hpa, "/metadata/namespace").to_string();
    let now = jiff::Timestamp::now().as_second();
    let mut conditions: Vec<Value> =
        hpa.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut status = json!({
        "observedGeneration": int_at(hpa, "/metadata/generation").unwrap_or(0),
        "currentReplicas": int_at(hpa, "/status/currentReplicas").unwrap_or(0),
        "desiredReplicas": int_at(hpa, "/status/desiredReplicas").unwrap_or(0),
    });
    if let Some(at) = hpa.pointer("/status/lastScaleTime").filter(|v| !v.is_null()) {
        status["lastScaleTime"] = at.clone();
    }
    let (kind, target) = (str_at(hpa, "/spec/scaleTargetRef/kind"), str_at(hpa, "/spec/scaleTargetRef/name"));
    let scale_path = match target_gvr(kind) {
        Some(gvr) => objects::path(ctx, gvr, Some(&ns), Some(target), Some("scale"))?,
        None => {
            let message =
                format!("the HPA controller was unable to get the target's current scale: {kind} is not scalable");
            set_condition(&mut conditions, "AbleToScale", "False", "FailedGetScale", &message);
            return write_status(ctx, hpa, status, conditions).await;
        }
    };
    let scale = match ctx.client.get(&scale_path).await {
        Ok(scale) => scale,
        Err(err) => {
            let message = format!("the HPA controller was unable to get the target's current scale: {}", err.message);
            set_condition(&mut conditions, "AbleToScale", "False", "FailedGetScale", &message);
            events::record(ctx, COMPONENT, hpa, KIND, WARNING, "FailedGetScale", &message).await;
            return write_status(ctx, hpa, status, conditions).await;
        }
    };
    set_condition(
        &mut conditions,
        "AbleToScale",
        "True",
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
    );
    let current = int_at(&scale, "/spec/replicas").unwrap_or(0);
    let min = int_at(hpa, "/spec/minReplicas").unwrap_or(1);
    let max = int_at(hpa, "/spec/maxReplicas").unwrap_or(min);
    status["currentReplicas"] = json!(int_at(&scale, "/status/replicas").unwrap_or(current));
    let (desired, reason) = if current == 0 && min != 0 {
        set_condition(
            &mut conditions,
            "ScalingActive",
            "False",
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        );
        (0, String::new())
    } else if current > max {
        (max, "Current number of replicas above Spec.MaxReplicas".to_string())
    } else if current < min {
        (min, "Current number of replicas below Spec.MinReplicas".to_string())
    } else {
        let selector = str_at(&scale, "/status/selector");
        let evaluated =
            match (metrics::pod_usage(ctx, &ns, selector).await, metrics::selected_pods(ctx, &ns, selector).await) {
                (Ok(usage), Ok(pods)) => {
                    let specs = hpa.pointer("/spec/metrics").and_then(Value::as_array).cloned().unwrap_or_default();
                    specs.iter().map(|m| evaluate(m, current, &pods, &usage, now)).collect::<Vec<_>>()
                }
                (Err(err), _) | (_, Err(err)) => {
                    vec![Err(format!("unable to get metrics for resource: {}", err.message))]
                }
            };
        let (valid, errors): (Vec<_>, Vec<_>) = evaluated.into_iter().partition(Result::is_ok);
        let valid: Vec<(Proposal, Value, String)> = valid.into_iter().flatten().collect();
        let errors: Vec<String> = errors.into_iter().filter_map(Result::err).collect();
        let best = valid.iter().max_by_key(|(p, _, _)| p.replicas);
        let proposal = best.map(|(p, _, _)| p.replicas).unwrap_or(current);
        if best.is_none() || (!errors.is_empty() && proposal < current) {
            let message = errors.first().cloned().unwrap_or_else(|| "no metrics are configured".into());
            set_condition(&mut conditions, "ScalingActive", "False", "FailedGetResourceMetric", &message);
            events::record(ctx, COMPONENT, hpa, KIND, WARNING, "FailedGetResourceMetric", &message).await;
            status["currentMetrics"] = json!(valid.iter().map(|(_, s, _)| s.clone()).collect::<Vec<_>>());
            return write_status(ctx, hpa, status, conditions).await;
        }
        let (_, _, label) = best.cloned().unwrap_or_else(|| {
            (Proposal { replicas: current, utilization: None, average_milli: 0 }, json!({}), String::new())
        });
        set_condition(
            &mut conditions,
            "ScalingActive",
            "True",
            "ValidMetricFound",
            &format!("the HPA was able to successfully calculate a replica count from {label}"),
        );
        status["currentMetrics"] = json!(valid.iter().map(|(_, s, _)| s.clone()).collect::<Vec<_>>());
        let up = Rules::from_spec(hpa.pointer("/spec/behavior/scaleUp"), Rules::default_up());
        let down = Rules::from_spec(hpa.pointer("/spec/behavior/scaleDown"), Rules::default_down());
        let (stabilized, stabilized_reason) = behavior::stabilize(memory, now, current, proposal, &up, &down);
        if stabilized != proposal {
            let message = if stabilized_reason == "ScaleUpStabilized" {
                "recent recommendations were lower than current one, applying the lowest recent recommendation"
            } else {
                "recent recommendations were higher than current one, applying the highest recent recommendation"
            };
            set_condition(&mut conditions, "AbleToScale", "True", stabilized_reason, message);
        } else {
            set_condition(
                &mut conditions,
                "AbleToScale",
                "True",
                "ReadyForNewScale",
                "recommended size matches current size",
            );
        }
        let (limited, limit_reason, limit_message) =
            behavior::limit(memory, now, (current, stabilized, min, max), &up, &down);
        let limited_status = if limited == stabilized { "False" } else { "True" };
        set_condition(&mut conditions, "ScalingLimited", limited_status, limit_reason, limit_message);
        let direction = if limited > current { "above" } else { "below" };
        let reason = if valid.len() > 1 && limited < current {
            "All metrics below target".to_string()
        } else {
            format!("{label} {direction} target")
        };
        if limited != current {
            behavior::record_scale(memory, now, current, limited, &up, &down);
        }
        (limited, reason)
    };
    status["desiredReplicas"] = json!(desired);
    if desired != current {
        match ctx.client.merge_patch(&scale_path, json!({"spec": {"replicas": desired}})).await {
            Ok(_) => {
                let message = format!("the HPA controller was able to update the target scale to {desired}");
                set_condition(&mut conditions, "AbleToScale", "True", "SucceededRescale", &message);
                status["lastScaleTime"] = json!(objects::now());
                let event = format!("New size: {desired}; reason: {reason}");
                events::record(ctx, COMPONENT, hpa, KIND, NORMAL, "SuccessfulRescale", &event).await;
                tracing::info!(hpa = %name(hpa), namespace = %ns, from = current, to = desired, %reason, "rescaled");
            }
            Err(err) => {
                let message = format!("the HPA controller was unable to update the target scale: {}", err.message);
                set_condition(&mut conditions, "AbleToScale", "False", "FailedUpdateScale", &message);
                events::record(ctx, COMPONENT, hpa, KIND, WARNING, "FailedRescale", &message).await;
            }
        }
    }
    write_status(ctx, hpa, status, conditions).await
}

/// Writes `status` with `conditions` (without `lastUpdateTime`, which HPA conditions lack).
async fn write_status(
    ctx: &Context,
    hpa: &Value,
    mut status: Value,
    mut conditions: Vec<Value>,
) -> Result<(), ApiError> {
    for condition in &mut conditions {
        if let Some(map) = condition.as_object_mut() {
            map.remove("lastUpdateTime");
        }
    }
    status["conditions"] = json!(conditions);
    if status.get("currentMetrics").is_none()
        && let Some(previous) = hpa.pointer("/status/currentMetrics")
    {
        status["currentMetrics"] = previous.clone();
    }
    if hpa.get("status") == Some(&status) {
        return Ok(());
    }
    let mut updated = hpa.clone();
    updated["status"] = status;
    let ns = str_at(hpa, "/metadata/namespace");
    let path = objects::path(ctx, HPAS, Some(ns), Some(name(hpa)), Some("status"))?;
    objects::ignore_gone(ctx.client.update(&path, updated).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_cpu_utilization_metric_proposes_replicas_and_reports_current() {
        let now = metrics::seconds("2026-01-01T00:10:00Z").unwrap();
        let pod = json!({"metadata": {"name": "web-1"}, "status": {"phase": "Running",
            "startTime": "2026-01-01T00:00:00Z",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"}]},
            "spec": {"containers": [{"name": "main", "resources": {"requests": {"cpu": "100m"}}}]}});
        let usage: BTreeMap<String, metrics::PodUsage> = [(
            "web-1".to_string(),
            metrics::PodUsage { milli: [("cpu".to_string(), 150)].into(), timestamp: now, window: 10.0 },
        )]
        .into();
        let metric = json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}});
        let (proposal, status, label) =
            evaluate(&metric, 1, std::slice::from_ref(&pod), &usage, now).expect("proposal");
        assert_eq!(proposal.replicas, 3);
        assert_eq!(status["resource"]["current"], json!({"averageValue": "150m", "averageUtilization": 150}));
        assert_eq!(label, "cpu resource utilization (percentage of request)");
        let external = json!({"type": "External"});
        assert!(evaluate(&external, 1, &[pod], &usage, now).unwrap_err().contains("not supported"));
        assert_eq!(milli_quantity(104_857_600_000), "104857600");
    }
}
