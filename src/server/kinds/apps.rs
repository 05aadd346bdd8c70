//! Strategies of the `apps` API group's workloads (Deployment, ReplicaSet,
//! StatefulSet, DaemonSet): upstream's defaults, the spec/status split, and
//! validation of the selector against the pod template.

use super::core::{split_status, validate_containers};
use super::defaults::{pod_template, set_default};
use super::{KindStrategy, Subresource};
use crate::server::error::FieldError;
use crate::server::selectors::LabelSelector;
use serde_json::{Value, json};

/// The strategy for `kind` of this group, if it has special behaviour.
pub fn strategy(kind: &str) -> Option<&'static dyn KindStrategy> {
    match kind {
        "Deployment" => Some(&Workload::Deployment),
        "ReplicaSet" => Some(&Workload::ReplicaSet),
        "StatefulSet" => Some(&Workload::StatefulSet),
        "DaemonSet" => Some(&Workload::DaemonSet),
        _ => None,
    }
}

enum Workload {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
}

/// Go's `%#v` of a `map[string]string`, the way upstream prints label maps in errors.
pub fn go_map(labels: Option<&Value>) -> String {
    let entries: Vec<String> = labels
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or_default())).collect())
        .unwrap_or_default();
    format!("map[string]string{{{}}}", entries.join(", "))
}

/// A workload's selector: required, non-empty, and selecting its own template.
pub fn validate_selector(obj: &Value, template: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(selector) = obj.pointer("/spec/selector").filter(|s| !s.is_null()) else {
        errors.push(FieldError::required("spec.selector", ""));
        return errors;
    };
    let parsed = match LabelSelector::from_label_selector_json(selector) {
        Ok(parsed) => parsed,
        Err(err) => {
            errors.push(FieldError::invalid("spec.selector", selector, &err.0));
            return errors;
        }
    };
    if parsed.is_empty() {
        errors.push(FieldError::invalid("spec.selector", selector, "empty selector is invalid for deployment"));
        return errors;
    }
    let labels = obj.pointer(&format!("{template}/metadata/labels"));
    let probe = json!({"metadata": {"labels": labels.cloned().unwrap_or(json!({}))}});
    if !parsed.matches(&probe) {
        let field = format!("{}.metadata.labels", template.trim_start_matches('/').replace('/', "."));
        errors.push(FieldError {
            reason: "FieldValueInvalid".into(),
            field,
            message: format!("Invalid value: {}: `selector` does not match template `labels`", go_map(labels)),
        });
    }
    errors
}

/// `spec.selector` may not change after creation.
pub fn validate_selector_immutable(new: &Value, old: &Value) -> Vec<FieldError> {
    let (new_selector, old_selector) = (new.pointer("/spec/selector"), old.pointer("/spec/selector"));
    if new_selector != old_selector {
        return vec![FieldError::invalid("spec.selector", new_selector.unwrap_or(&Value::Null), "field is immutable")];
    }
    Vec::new()
}

/// A non-negative integer field, when set.
pub fn validate_non_negative(obj: &Value, pointer: &str, field: &str) -> Vec<FieldError> {
    match obj.pointer(pointer).and_then(Value::as_i64) {
        Some(n) if n < 0 => vec![FieldError::invalid(field, &json!(n), "must be greater than or equal to 0")],
        _ => Vec::new(),
    }
}

impl Workload {
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errors = validate_selector(obj, "/spec/template");
        errors.extend(validate_containers(obj.pointer("/spec/template/spec"), "spec.template.spec"));
        errors.extend(validate_non_negative(obj, "/spec/replicas", "spec.replicas"));
        if let Workload::Deployment = self {
            let strategy = obj.pointer("/spec/strategy/type").and_then(Value::as_str).unwrap_or("RollingUpdate");
            if !["RollingUpdate", "Recreate"].contains(&strategy) {
                errors.push(FieldError::not_supported(
                    "spec.strategy.type",
                    &json!(strategy),
                    &["Recreate", "RollingUpdate"],
                ));
            }
            if strategy == "Recreate" && obj.pointer("/spec/strategy/rollingUpdate").is_some_and(|r| !r.is_null()) {
                errors.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        let restart = obj.pointer("/spec/template/spec/restartPolicy").and_then(Value::as_str).unwrap_or("Always");
        if restart != "Always" {
            errors.push(FieldError::not_supported("spec.template.spec.restartPolicy", &json!(restart), &["Always"]));
        }
        errors
    }
}

impl KindStrategy for Workload {
    fn namespaced(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        pod_template(obj, &["spec", "template"]);
        match self {
            Workload::Deployment => {
                set_default(obj, &["spec", "replicas"], json!(1));
                set_default(obj, &["spec", "strategy", "type"], json!("RollingUpdate"));
                if obj.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
                    set_default(obj, &["spec", "strategy", "rollingUpdate", "maxUnavailable"], json!("25%"));
                    set_default(obj, &["spec", "strategy", "rollingUpdate", "maxSurge"], json!("25%"));
                }
                set_default(obj, &["spec", "revisionHistoryLimit"], json!(10));
                set_default(obj, &["spec", "progressDeadlineSeconds"], json!(600));
            }
            Workload::ReplicaSet => set_default(obj, &["spec", "replicas"], json!(1)),
            Workload::StatefulSet => {
                set_default(obj, &["spec", "replicas"], json!(1));
                set_default(obj, &["spec", "podManagementPolicy"], json!("OrderedReady"));
                set_default(obj, &["spec", "updateStrategy", "type"], json!("RollingUpdate"));
                if obj.pointer("/spec/updateStrategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
                    set_default(obj, &["spec", "updateStrategy", "rollingUpdate", "partition"], json!(0));
                }
                set_default(obj, &["spec", "revisionHistoryLimit"], json!(10));
                set_default(obj, &["spec", "persistentVolumeClaimRetentionPolicy", "whenDeleted"], json!("Retain"));
                set_default(obj, &["spec", "persistentVolumeClaimRetentionPolicy", "whenScaled"], json!("Retain"));
            }
            Workload::DaemonSet => {
                set_default(obj, &["spec", "updateStrategy", "type"], json!("RollingUpdate"));
                if obj.pointer("/spec/updateStrategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
                    set_default(obj, &["spec", "updateStrategy", "rollingUpdate", "maxUnavailable"], json!(1));
                    set_default(obj, &["spec", "updateStrategy", "rollingUpdate", "maxSurge"], json!(0));
                }
                set_default(obj, &["spec", "revisionHistoryLimit"], json!(10));
            }
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        if let Some(map) = obj.as_object_mut() {
            map.insert("status".into(), json!({}));
        }
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value, subresource: Subresource) {
        split_status(new, old, subresource);
    }

    fn validate_create(&self, obj: &Value) -> Vec<FieldError> {
        self.validate(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value, subresource: Subresource) -> Vec<FieldError> {
        if subresource == Subresource::Status {
            return Vec::new();
        }
        let mut errors = self.validate(new);
        errors.extend(validate_selector_immutable(new, old));
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(selector: Value, labels: Value) -> Value {
        json!({"metadata": {"name": "web"}, "spec": {"selector": selector,
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "a", "image": "x"}]}}}})
    }

    #[test]
    fn deployments_get_upstream_defaults() {
        let mut obj = deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "web"}));
        Workload::Deployment.default(&mut obj);
        assert_eq!(obj["spec"]["replicas"], 1);
        assert_eq!(
            obj["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(obj["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(obj["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(obj["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert!(Workload::Deployment.validate_create(&obj).is_empty());
    }

    #[test]
    fn selector_must_match_template_labels() {
        let mut obj = deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "api"}));
        Workload::Deployment.default(&mut obj);
        let errors = Workload::Deployment.validate_create(&obj);
        assert_eq!(
            errors[0].to_text(),
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"api\"}: `selector` does not match template `labels`"
        );
        let mut missing = deployment(Value::Null, json!({"app": "web"}));
        Workload::ReplicaSet.default(&mut missing);
        assert_eq!(Workload::ReplicaSet.validate_create(&missing)[0].to_text(), "spec.selector: Required value");
    }

    #[test]
    fn selector_is_immutable() {
        let old = deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "web", "v": "2"}));
        let new = deployment(json!({"matchLabels": {"v": "2"}}), json!({"app": "web", "v": "2"}));
        let errors = Workload::ReplicaSet.validate_update(&new, &old, Subresource::Main);
        assert!(
            errors.iter().any(|e| e.field == "spec.selector" && e.message.ends_with("field is immutable")),
            "{errors:?}"
        );
    }

    #[test]
    fn statefulsets_and_daemonsets_default_their_strategies() {
        let mut sts = deployment(json!({"matchLabels": {"app": "db"}}), json!({"app": "db"}));
        Workload::StatefulSet.default(&mut sts);
        assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 0);
        assert_eq!(sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"], "Retain");
        let mut ds = deployment(json!({"matchLabels": {"app": "agent"}}), json!({"app": "agent"}));
        Workload::DaemonSet.default(&mut ds);
        assert_eq!(ds["spec"]["updateStrategy"]["rollingUpdate"], json!({"maxUnavailable": 1, "maxSurge": 0}));
    }
}
