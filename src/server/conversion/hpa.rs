//! `autoscaling/v1` HorizontalPodAutoscaler ⇄ `autoscaling/v2`: v1 knows
//! one target, CPU utilisation; what v1 cannot say (other metrics, behavior,
//! conditions) rides in upstream's `autoscaling.alpha.kubernetes.io/*`
//! annotations so a v1 round trip loses nothing.

use serde_json::{Map, Value, json};

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";

fn is_cpu_resource(metric: &Value) -> bool {
    metric.get("type").and_then(Value::as_str) == Some("Resource")
        && metric.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
}

fn annotate(annotations: &mut Map<String, Value>, key: &str, value: Option<&Value>) {
    match value {
        Some(value) if value.as_array().is_none_or(|list| !list.is_empty()) && !value.is_null() => {
            annotations.insert(key.into(), Value::String(value.to_string()));
        }
        _ => {}
    }
}

pub fn to_v1(v2: &Value) -> Value {
    let mut v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": v2.get("metadata").cloned().unwrap_or(json!({}))});
    let spec = v2.get("spec").cloned().unwrap_or(json!({}));
    let metrics = spec.get("metrics").and_then(Value::as_array).cloned().unwrap_or_default();
    let (cpu, others): (Vec<Value>, Vec<Value>) = metrics.into_iter().partition(|m| {
        is_cpu_resource(m) && m.pointer("/resource/target/type").and_then(Value::as_str) == Some("Utilization")
    });
    let mut v1_spec = json!({});
    for key in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if let Some(value) = spec.get(key) {
            v1_spec[key] = value.clone();
        }
    }
    if let Some(target) = cpu.first().and_then(|m| m.pointer("/resource/target/averageUtilization")) {
        v1_spec["targetCPUUtilizationPercentage"] = target.clone();
    }
    v1["spec"] = v1_spec;
    let status = v2.get("status").cloned().unwrap_or(json!({}));
    let mut v1_status = json!({});
    for key in ["observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"] {
        if let Some(value) = status.get(key) {
            v1_status[key] = value.clone();
        }
    }
    let current = status.get("currentMetrics").and_then(Value::as_array).cloned().unwrap_or_default();
    let (current_cpu, current_others): (Vec<Value>, Vec<Value>) = current.into_iter().partition(is_cpu_resource);
    if let Some(now) = current_cpu.first().and_then(|m| m.pointer("/resource/current/averageUtilization")) {
        v1_status["currentCPUUtilizationPercentage"] = now.clone();
    }
    v1["status"] = v1_status;
    let mut annotations = v1.pointer("/metadata/annotations").and_then(Value::as_object).cloned().unwrap_or_default();
    annotate(&mut annotations, METRICS, Some(&Value::Array(others)));
    annotate(&mut annotations, CURRENT_METRICS, Some(&Value::Array(current_others)));
    annotate(&mut annotations, BEHAVIOR, spec.get("behavior"));
    annotate(&mut annotations, CONDITIONS, status.get("conditions"));
    if !annotations.is_empty() {
        v1["metadata"]["annotations"] = Value::Object(annotations);
    }
    v1
}

/// The JSON a round-trip annotation holds, removing it from `annotations`.
fn take(annotations: &mut Map<String, Value>, key: &str) -> Option<Value> {
    let text = annotations.remove(key)?;
    serde_json::from_str(text.as_str()?).ok()
}

pub fn to_v2(v1: &Value) -> Value {
    let mut metadata = v1.get("metadata").cloned().unwrap_or(json!({}));
    let mut annotations = metadata.get("annotations").and_then(Value::as_object).cloned().unwrap_or_default();
    let spec = v1.get("spec").cloned().unwrap_or(json!({}));
    let mut v2_spec = json!({});
    for key in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if let Some(value) = spec.get(key) {
            v2_spec[key] = value.clone();
        }
    }
    let mut metrics = Vec::new();
    if let Some(target) = spec.get("targetCPUUtilizationPercentage").filter(|t| !t.is_null()) {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": target}}}));
    }
    if let Some(Value::Array(others)) = take(&mut annotations, METRICS) {
        metrics.extend(others);
    }
    if !metrics.is_empty() {
        v2_spec["metrics"] = Value::Array(metrics);
    }
    if let Some(behavior) = take(&mut annotations, BEHAVIOR) {
        v2_spec["behavior"] = behavior;
    }
    let status = v1.get("status").cloned().unwrap_or(json!({}));
    let mut v2_status = json!({});
    for key in ["observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"] {
        if let Some(value) = status.get(key) {
            v2_status[key] = value.clone();
        }
    }
    let mut current = Vec::new();
    if let Some(now) = status.get("currentCPUUtilizationPercentage").filter(|t| !t.is_null()) {
        current.push(json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": now}}}));
    }
    if let Some(Value::Array(others)) = take(&mut annotations, CURRENT_METRICS) {
        current.extend(others);
    }
    if !current.is_empty() {
        v2_status["currentMetrics"] = Value::Array(current);
    }
    if let Some(conditions) = take(&mut annotations, CONDITIONS) {
        v2_status["conditions"] = conditions;
    }
    if let Some(map) = metadata.as_object_mut() {
        if annotations.is_empty() {
            map.remove("annotations");
        } else {
            map.insert("annotations".into(), Value::Object(annotations));
        }
    }
    json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": metadata,
        "spec": v2_spec, "status": v2_status})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_target_maps_both_ways_and_the_rest_round_trips() {
        let v2 = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 70}}}]},
            "status": {"currentReplicas": 2, "desiredReplicas": 2,
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 40}}}],
                "conditions": [{"type": "AbleToScale", "status": "True"}]}});
        let v1 = to_v1(&v2);
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 40);
        assert!(v1["metadata"]["annotations"][METRICS].as_str().is_some_and(|m| m.contains("memory")));
        assert_eq!(to_v2(&v1), v2);
    }

    #[test]
    fn a_v1_object_without_target_has_no_metrics() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "a"},
            "spec": {"maxReplicas": 3, "scaleTargetRef": {"kind": "Deployment", "name": "a"}}});
        let v2 = to_v2(&v1);
        assert!(v2["spec"].get("metrics").is_none());
        assert_eq!(v2["spec"]["maxReplicas"], 3);
    }
}
