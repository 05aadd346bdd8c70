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
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"currentReplicas": 0, "desiredReplicas": 0});
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value, subresource: Subresource) {
        split_status(new, old, subresource);
    }
}
