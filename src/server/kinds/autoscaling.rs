//! Strategies of the `autoscaling` API group's kinds: the v2
//! HorizontalPodAutoscaler's defaults (`SetDefaults_HorizontalPodAutoscaler`)
//! and the usual status split. v1 objects are converted to v2 before they
//! get here (`server::conversion`).

use super::core::split_status;
use super::defaults::set_default;
use super::{KindStrategy, Subresource};
use serde_json::{Value, json};

/// The strategy for `kind` of this group, if it has special behaviour.
pub fn strategy(kind: &str) -> Option<&'static dyn KindStrategy> {
    match kind {
        "HorizontalPodAutoscaler" => Some(&HorizontalPodAutoscalerStrategy),
        _ => None,
    }
}

struct HorizontalPodAutoscalerStrategy;

impl KindStrategy for HorizontalPodAutoscalerStrategy {
    fn namespaced(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        set_default(obj, &["spec", "minReplicas"], json!(1));
        // Upstream's default metric: 80 % CPU utilisation.
        let no_metrics = obj.pointer("/spec/metrics").and_then(Value::as_array).is_none_or(|m| m.is_empty());
        if no_metrics && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}}}]),
            );
        }
        // A given behavior gets upstream's rules where it leaves them out
        // (`SetDefaults_HorizontalPodAutoscalerBehavior`).
        if let Some(behavior) = obj.pointer_mut("/spec/behavior").and_then(Value::as_object_mut) {
            let up = json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
                {"type": "Pods", "value": 4, "periodSeconds": 15},
                {"type": "Percent", "value": 100, "periodSeconds": 15}]});
            let down = json!({"stabilizationWindowSeconds": 300, "selectPolicy": "Max", "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 15}]});
            for (key, defaults) in [("scaleUp", up), ("scaleDown", down)] {
                let rules = behavior.entry(key).or_insert_with(|| json!({}));
                if rules.is_null() {
                    *rules = json!({});
                }
                let (Some(rules), Some(defaults)) = (rules.as_object_mut(), defaults.as_object()) else { continue };
                for (field, value) in defaults {
                    if rules.get(field).is_none_or(Value::is_null) {
                        rules.insert(field.clone(), value.clone());
                    }
                }
            }
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"currentReplicas": 0, "desiredReplicas": 0});
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value, subresource: Subresource) {
        split_status(new, old, subresource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_metrics_and_a_given_behavior() {
        let mut hpa = json!({"spec": {"maxReplicas": 3, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}});
        HorizontalPodAutoscalerStrategy.default(&mut hpa);
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 80);
        let down = &hpa["spec"]["behavior"]["scaleDown"];
        assert_eq!(down["stabilizationWindowSeconds"], 0);
        assert_eq!(down["policies"][0], json!({"type": "Percent", "value": 100, "periodSeconds": 15}));
        assert_eq!(hpa["spec"]["behavior"]["scaleUp"]["policies"].as_array().map(Vec::len), Some(2));
        // Without a behavior none is added, as upstream.
        let mut plain = json!({"spec": {"maxReplicas": 3}});
        HorizontalPodAutoscalerStrategy.default(&mut plain);
        assert!(plain["spec"].get("behavior").is_none());
    }
}
