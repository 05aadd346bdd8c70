//! What upstream does to a new Pod besides plain field defaults: requests
//! default to limits (`SetDefaults_Pod`), the QoS class is computed
//! (`GetPodQOS`), and the DefaultTolerationSeconds admission plugin adds the
//! 300 s `not-ready` / `unreachable` NoExecute tolerations.

use crate::controllers::scheduler::quantity::parse_milli;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Upstream's `--default-not-ready-toleration-seconds` and `--default-unreachable-toleration-seconds`.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;
const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn containers_mut(spec: &mut Value) -> impl Iterator<Item = &mut Value> {
    let mut all = Vec::new();
    if let Some(map) = spec.as_object_mut() {
        for (key, list) in map.iter_mut() {
            if key == "containers" || key == "initContainers" {
                all.extend(list.as_array_mut().into_iter().flatten());
            }
        }
    }
    all.into_iter()
}

/// A container's limits become its requests where it names no request.
pub fn default_requests_from_limits(spec: &mut Value) {
    for container in containers_mut(spec) {
        let Some(limits) = container.pointer("/resources/limits").and_then(Value::as_object).cloned() else {
            continue;
        };
        let resources = &mut container["resources"];
        if !resources.get("requests").is_some_and(Value::is_object) {
            resources["requests"] = json!({});
        }
        if let Some(requests) = resources.get_mut("requests").and_then(Value::as_object_mut) {
            for (name, quantity) in limits {
                requests.entry(name).or_insert(quantity);
            }
        }
    }
}

/// The cpu and memory entries of a resource list that are not zero, in milli-units.
fn compute_resources(list: Option<&Value>) -> BTreeMap<String, i128> {
    list.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(name, _)| *name == "cpu" || *name == "memory")
        .filter_map(|(name, value)| {
            let milli = match value {
                Value::String(text) => parse_milli(text).ok()?,
                Value::Number(number) => i128::from(number.as_i64()?) * 1000,
                _ => return None,
            };
            (milli != 0).then(|| (name.clone(), milli))
        })
        .collect()
}

/// `Guaranteed`, `Burstable` or `BestEffort`, as upstream's `GetPodQOS`.
pub fn qos_class(spec: &Value) -> &'static str {
    let mut requests: BTreeMap<String, i128> = BTreeMap::new();
    let mut limits: BTreeMap<String, i128> = BTreeMap::new();
    let mut guaranteed = true;
    for list in ["containers", "initContainers"] {
        for container in spec.get(list).and_then(Value::as_array).into_iter().flatten() {
            for (name, milli) in compute_resources(container.pointer("/resources/requests")) {
                *requests.entry(name).or_default() += milli;
            }
            let container_limits = compute_resources(container.pointer("/resources/limits"));
            if !(container_limits.contains_key("cpu") && container_limits.contains_key("memory")) {
                guaranteed = false;
            }
            for (name, milli) in container_limits {
                *limits.entry(name).or_default() += milli;
            }
        }
    }
    if requests.is_empty() && limits.is_empty() {
        "BestEffort"
    } else if guaranteed && requests == limits {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Adds the default NoExecute tolerations for not-ready and unreachable nodes
/// unless the pod already tolerates those taints (DefaultTolerationSeconds).
pub fn add_default_tolerations(spec: &mut Value) {
    let Some(spec) = spec.as_object_mut() else { return };
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if !tolerations.is_array() {
        *tolerations = json!([]);
    }
    let Some(list) = tolerations.as_array_mut() else { return };
    for key in [NOT_READY, UNREACHABLE] {
        let tolerated = list.iter().any(|t| {
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or_default();
            let t_key = t.get("key").and_then(Value::as_str).unwrap_or_default();
            (t_key == key || t_key.is_empty()) && (effect.is_empty() || effect == "NoExecute")
        });
        if !tolerated {
            let mut toleration = Map::new();
            toleration.insert("key".into(), json!(key));
            toleration.insert("operator".into(), json!("Exists"));
            toleration.insert("effect".into(), json!("NoExecute"));
            toleration.insert("tolerationSeconds".into(), json!(DEFAULT_TOLERATION_SECONDS));
            list.push(Value::Object(toleration));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(resources: Value) -> Value {
        json!({"containers": [{"name": "a", "image": "x", "resources": resources}]})
    }

    #[test]
    fn qos_classes_follow_upstream() {
        assert_eq!(qos_class(&spec(json!({}))), "BestEffort");
        assert_eq!(qos_class(&spec(json!({"requests": {"cpu": "100m"}}))), "Burstable");
        let mut equal = spec(json!({"limits": {"cpu": "1", "memory": "64Mi"}}));
        default_requests_from_limits(&mut equal);
        assert_eq!(equal["containers"][0]["resources"]["requests"]["memory"], "64Mi");
        assert_eq!(qos_class(&equal), "Guaranteed");
        let unequal = spec(json!({"limits": {"cpu": "1", "memory": "64Mi"}, "requests": {"cpu": "500m"}}));
        let mut unequal = unequal;
        default_requests_from_limits(&mut unequal);
        assert_eq!(qos_class(&unequal), "Burstable");
        // Requests of other resources alone do not count.
        assert_eq!(qos_class(&spec(json!({"requests": {"ephemeral-storage": "1Gi"}}))), "BestEffort");
        // 1000m equals 1.
        assert_eq!(
            qos_class(&spec(
                json!({"limits": {"cpu": "1", "memory": "1Ki"}, "requests": {"cpu": "1000m", "memory": "1024"}})
            )),
            "Guaranteed"
        );
    }

    #[test]
    fn default_tolerations_are_added_once() {
        let mut pod_spec = json!({"tolerations": [{"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]});
        add_default_tolerations(&mut pod_spec);
        let list = pod_spec["tolerations"].as_array().cloned().unwrap_or_default();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["tolerationSeconds"], 5);
        assert_eq!(list[1]["key"], UNREACHABLE);
        assert_eq!(list[1]["tolerationSeconds"], 300);
        add_default_tolerations(&mut pod_spec);
        assert_eq!(pod_spec["tolerations"].as_array().map(Vec::len), Some(2));
        // An Exists toleration with no key tolerates everything.
        let mut all = json!({"tolerations": [{"operator": "Exists"}]});
        add_default_tolerations(&mut all);
        assert_eq!(all["tolerations"].as_array().map(Vec::len), Some(1));
    }
}
