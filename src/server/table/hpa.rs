//! The `kubectl get hpa` cells: REFERENCE, TARGETS (upstream's
//! `formatHPAMetrics`: at most two metrics, then "+ N more..."), MINPODS,
//! MAXPODS, REPLICAS.

use serde_json::{Value, json};

fn text(obj: &Value, pointer: &str) -> String {
    match obj.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn resource_target(spec: &Value, status: Option<&Value>) -> String {
    let name = text(spec, "/resource/name");
    if spec.pointer("/resource/target/averageValue").is_some() {
        let current = status
            .map(|s| text(s, "/resource/current/averageValue"))
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "<unknown>".into());
        return format!("{name}: {current}/{}", text(spec, "/resource/target/averageValue"));
    }
    let current = status
        .and_then(|s| s.pointer("/resource/current/averageUtilization"))
        .and_then(Value::as_i64)
        .map_or_else(|| "<unknown>".to_string(), |u| format!("{u}%"));
    let target = spec
        .pointer("/resource/target/averageUtilization")
        .and_then(Value::as_i64)
        .map_or_else(|| "<auto>".to_string(), |u| format!("{u}%"));
    format!("{name}: {current}/{target}")
}

/// The TARGETS cell.
pub fn targets(hpa: &Value) -> String {
    let specs = hpa.pointer("/spec/metrics").and_then(Value::as_array).cloned().unwrap_or_default();
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = hpa.pointer("/status/currentMetrics").and_then(Value::as_array).cloned().unwrap_or_default();
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| match spec.get("type").and_then(Value::as_str) {
            Some("Resource") => resource_target(spec, statuses.get(i)),
            _ => "<unknown type>".into(),
        })
        .collect();
    if list.len() > 2 { format!("{} + {} more...", list[..2].join(", "), list.len() - 2) } else { list.join(", ") }
}

/// NAME, REFERENCE, TARGETS, MINPODS, MAXPODS, REPLICAS, AGE.
pub fn cells(o: &Value) -> Vec<Value> {
    let reference = format!("{}/{}", text(o, "/spec/scaleTargetRef/kind"), text(o, "/spec/scaleTargetRef/name"));
    let min = o.pointer("/spec/minReplicas").and_then(Value::as_i64).map_or_else(|| json!("<unset>"), |m| json!(m));
    vec![
        json!(text(o, "/metadata/name")),
        json!(reference),
        json!(targets(o)),
        min,
        json!(o.pointer("/spec/maxReplicas").and_then(Value::as_i64).unwrap_or(0)),
        json!(o.pointer("/status/currentReplicas").and_then(Value::as_i64).unwrap_or(0)),
        super::age(o, "/metadata/creationTimestamp"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_like_kubectl() {
        let hpa = json!({"spec": {"metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
            {"type": "Pods"}]},
            "status": {"currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12}}}]}});
        assert_eq!(targets(&hpa), "cpu: 12%/60%, memory: <unknown>/100Mi + 1 more...");
        assert_eq!(targets(&json!({"spec": {}})), "<none>");
    }
}
