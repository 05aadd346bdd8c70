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
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"currentReplicas": 0, "desiredReplicas": 0});
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value, subresource: Subresource) {
        split_status(new, old, subresource);
    }
}
