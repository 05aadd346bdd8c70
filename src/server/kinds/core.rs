//! Strategies of the core group's kinds with special behaviour: Pod
//! (defaults, required containers, phase Pending), Namespace (the
//! `kubernetes` finalizer, phase Active, immutable name label) and Service
//! (defaults and port validation; IPs are allocated by the REST layer).

use super::defaults::{pod_spec, set_default};
use super::{KindStrategy, NameRule, Subresource};
use crate::server::error::FieldError;
use serde_json::{Value, json};

/// The strategy for `kind` of this group, if it has special behaviour.
pub fn strategy(kind: &str) -> Option<&'static dyn KindStrategy> {
    match kind {
        "Pod" => Some(&PodStrategy),
        "Namespace" => Some(&NamespaceStrategy),
        "Service" => Some(&ServiceStrategy),
        "ReplicationController" => Some(&ReplicationControllerStrategy),
        _ => None,
    }
}

/// Keeps status on main writes and spec on status writes (the usual split).
pub fn split_status(new: &mut Value, old: &Value, subresource: Subresource) {
    let Some(map) = new.as_object_mut() else { return };
    match subresource {
        Subresource::Main => match old.get("status") {
            Some(status) => {
                map.insert("status".into(), status.clone());
            }
            None => {
                map.remove("status");
            }
        },
        Subresource::Status => {
            let status = map.remove("status");
            let metadata = map.remove("metadata");
            *map = old.as_object().cloned().unwrap_or_default();
            if let Some(status) = status {
                map.insert("status".into(), status);
            }
            if let Some(metadata) = metadata {
                map.insert("metadata".into(), metadata);
            }
        }
    }
}

pub fn validate_containers(spec: Option<&Value>, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let containers = spec.and_then(|s| s.get("containers")).and_then(Value::as_array);
    match containers {
        None => errors.push(FieldError::required(format!("{path}.containers"), "")),
        Some(list) if list.is_empty() => errors.push(FieldError::required(format!("{path}.containers"), "")),
        Some(list) => {
            let mut names = Vec::new();
            for (i, container) in list.iter().enumerate() {
                let name = container.get("name").and_then(Value::as_str).unwrap_or_default();
                if name.is_empty() {
                    errors.push(FieldError::required(format!("{path}.containers[{i}].name"), ""));
                } else if names.contains(&name) {
                    errors.push(FieldError::duplicate(format!("{path}.containers[{i}].name"), &json!(name)));
                } else {
                    for message in super::meta::dns1123_label_errors(name) {
                        errors.push(FieldError::invalid(
                            format!("{path}.containers[{i}].name"),
                            &json!(name),
                            &message,
                        ));
                    }
                }
                names.push(name);
                if container.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
                    errors.push(FieldError::required(format!("{path}.containers[{i}].image"), ""));
                }
            }
        }
    }
    errors
}

/// ReplicationControllers: upstream's `SetDefaults_ReplicationController`
/// takes an empty selector and empty labels from the pod template's labels.
struct ReplicationControllerStrategy;

impl KindStrategy for ReplicationControllerStrategy {
    fn namespaced(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        super::defaults::pod_template(obj, &["spec", "template"]);
        set_default(obj, &["spec", "replicas"], json!(1));
        let template_labels = obj
            .pointer("/spec/template/metadata/labels")
            .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
            .cloned();
        if let Some(labels) = template_labels {
            if obj.pointer("/spec/selector").and_then(Value::as_object).is_none_or(|m| m.is_empty()) {
                obj["spec"]["selector"] = labels.clone();
            }
            if obj.pointer("/metadata/labels").and_then(Value::as_object).is_none_or(|m| m.is_empty()) {
                obj["metadata"]["labels"] = labels;
            }
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"replicas": 0});
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value, subresource: Subresource) {
        split_status(new, old, subresource);
    }
}

struct PodStrategy;

impl KindStrategy for PodStrategy {
    fn namespaced(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec") {
            pod_spec(spec);
            super::pod_admission::default_requests_from_limits(spec);
        }
        // ServiceAccount admission leaves mirror pods alone (upstream); the
        // deprecated `serviceAccount` field mirrors `serviceAccountName`.
        if obj.pointer("/metadata/annotations/kubernetes.io~1config.mirror").is_none() {
            if let Some(legacy) = obj.pointer("/spec/serviceAccount").cloned() {
                set_default(obj, &["spec", "serviceAccountName"], legacy);
            }
            set_default(obj, &["spec", "serviceAccountName"], json!("default"));
            if let Some(account) = obj.pointer("/spec/serviceAccountName").cloned()
                && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
            {
                spec.insert("serviceAccount".into(), account);
            }
        }
        set_default(obj, &["spec", "priority"], json!(0));
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        let qos_class = obj.get("spec").map_or("BestEffort", super::pod_admission::qos_class);
        obj["status"] = json!({"phase": "Pending", "qosClass": qos_class});
        if let Some(spec) = obj.get_mut("spec") {
            super::pod_admission::add_default_tolerations(spec);
        }
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("generation");
        }
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value, subresource: Subresource) {
        split_status(new, old, subresource);
    }

    fn validate_create(&self, obj: &Value) -> Vec<FieldError> {
        validate_containers(obj.get("spec"), "spec")
    }

    fn validate_update(&self, new: &Value, old: &Value, subresource: Subresource) -> Vec<FieldError> {
        if subresource == Subresource::Status {
            return Vec::new();
        }
        let mut errors = validate_containers(new.get("spec"), "spec");
        // A pod's spec is immutable but for images, activeDeadlineSeconds and tolerations.
        let strip = |spec: Option<&Value>| {
            let mut spec = spec.cloned().unwrap_or(json!({}));
            for container in spec.get_mut("containers").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(c) = container.as_object_mut() {
                    c.remove("image");
                }
            }
            if let Some(map) = spec.as_object_mut() {
                map.remove("activeDeadlineSeconds");
                map.remove("tolerations");
                let node = map.get("nodeName").and_then(Value::as_str).unwrap_or_default().to_string();
                if node.is_empty() {
                    map.remove("nodeName");
                }
            }
            spec
        };
        let old_node = old.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
        let mut new_spec = strip(new.get("spec"));
        if old_node.is_empty()
            && let Some(map) = new_spec.as_object_mut()
        {
            map.remove("nodeName");
        }
        if new_spec != strip(old.get("spec")) {
            errors.push(FieldError::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
        errors
    }
}

struct NamespaceStrategy;

impl KindStrategy for NamespaceStrategy {
    fn namespaced(&self) -> bool {
        false
    }

    fn name_rule(&self) -> NameRule {
        NameRule::Dns1123Label
    }

    fn default(&self, obj: &mut Value) {
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        if !name.is_empty() {
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
        obj["status"] = json!({"phase": "Active"});
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("generation");
        }
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value, subresource: Subresource) {
        match subresource {
            Subresource::Status => split_status(new, old, subresource),
            Subresource::Main => {
                // spec.finalizers change only through /finalize (handled by the REST layer).
                let finalize =
                    new.get("spec") != old.get("spec") && old.pointer("/metadata/deletionTimestamp").is_some();
                let status = old.get("status").cloned().unwrap_or(json!({"phase": "Active"}));
                new["status"] = status;
                if !finalize {
                    new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
                }
            }
        }
    }
}

struct ServiceStrategy;

impl KindStrategy for ServiceStrategy {
    fn namespaced(&self) -> bool {
        true
    }

    fn name_rule(&self) -> NameRule {
        NameRule::Dns1035Label
    }

    fn default(&self, obj: &mut Value) {
        set_default(obj, &["spec", "type"], json!("ClusterIP"));
        set_default(obj, &["spec", "sessionAffinity"], json!("None"));
        let kind = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
        if kind != "ExternalName" {
            set_default(obj, &["spec", "internalTrafficPolicy"], json!("Cluster"));
            set_default(obj, &["spec", "ipFamilies"], json!(["IPv4"]));
            set_default(obj, &["spec", "ipFamilyPolicy"], json!("SingleStack"));
        }
        if kind == "NodePort" || kind == "LoadBalancer" {
            set_default(obj, &["spec", "externalTrafficPolicy"], json!("Cluster"));
        }
        for port in obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut).into_iter().flatten() {
            set_default(port, &["protocol"], json!("TCP"));
            let number = port.get("port").cloned().unwrap_or(Value::Null);
            set_default(port, &["targetPort"], number);
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"loadBalancer": {}});
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("generation");
        }
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value, subresource: Subresource) {
        split_status(new, old, subresource);
        if subresource == Subresource::Main {
            // Allocated addresses stay unless the client changes them explicitly.
            for field in ["clusterIP", "clusterIPs"] {
                if new.pointer(&format!("/spec/{field}")).is_none()
                    && let Some(old_value) = old.pointer(&format!("/spec/{field}"))
                {
                    new["spec"][field] = old_value.clone();
                }
            }
        }
    }

    fn validate_create(&self, obj: &Value) -> Vec<FieldError> {
        validate_service(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value, _subresource: Subresource) -> Vec<FieldError> {
        let mut errors = validate_service(new);
        let (new_ip, old_ip) = (new.pointer("/spec/clusterIP"), old.pointer("/spec/clusterIP"));
        if old_ip.is_some() && new_ip != old_ip && old.pointer("/spec/type") == new.pointer("/spec/type") {
            errors.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                new_ip.unwrap_or(&Value::Null),
                "may not change once set",
            ));
        }
        errors
    }
}

fn validate_service(obj: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let kind = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&kind) {
        errors.push(FieldError::not_supported(
            "spec.type",
            &json!(kind),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let ports = obj.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    if ports.is_empty() && kind != "ExternalName" && !headless {
        errors.push(FieldError::required("spec.ports", ""));
    }
    for (i, port) in ports.iter().enumerate() {
        match port.get("port").and_then(Value::as_i64) {
            Some(1..=65535) => {}
            Some(n) => errors.push(FieldError::invalid(
                format!("spec.ports[{i}].port"),
                &json!(n),
                "must be between 1 and 65535, inclusive",
            )),
            None => errors.push(FieldError::required(format!("spec.ports[{i}].port"), "")),
        }
        if ports.len() > 1 && port.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
            errors.push(FieldError::required(format!("spec.ports[{i}].name"), ""));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_need_containers_with_images() {
        let errors =
            PodStrategy.validate_create(&json!({"spec": {"containers": [{"name": "a"}, {"name": "a", "image": "x"}]}}));
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.containers[0].image", "spec.containers[1].name"]);
        assert_eq!(PodStrategy.validate_create(&json!({"spec": {}}))[0].field, "spec.containers");
    }

    #[test]
    fn pod_spec_is_immutable_but_images() {
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}]}});
        let image = json!({"spec": {"containers": [{"name": "a", "image": "x:2"}]}});
        assert!(PodStrategy.validate_update(&image, &old, Subresource::Main).is_empty());
        let command = json!({"spec": {"containers": [{"name": "a", "image": "x:1", "command": ["sh"]}]}});
        assert_eq!(PodStrategy.validate_update(&command, &old, Subresource::Main)[0].field, "spec");
    }

    #[test]
    fn services_default_target_port_and_check_ports() {
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        ServiceStrategy.default(&mut svc);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        let bad = json!({"spec": {"ports": [{"port": 0}, {"port": 80}]}});
        assert_eq!(validate_service(&bad).len(), 3);
    }
}
