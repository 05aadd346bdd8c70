//! The downward API: a pod's own fields (`fieldRef`) and its containers'
//! resources (`resourceFieldRef`) as text, for environment variables and
//! downwardAPI volume files, with upstream's formats (labels and annotations
//! as sorted `key="value"` lines, resources rounded up in the divisor's unit,
//! node capacity where a limit is unset).

use super::node::MachineInfo;
use super::spec::parse_quantity;
use serde_json::Value;

/// A `fieldRef.fieldPath` of the pod; `None` for paths upstream does not support.
pub fn field(pod: &Value, path: &str) -> Option<String> {
    let text = |pointer: &str| pod.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
    let map_lines = |pointer: &str| {
        let mut lines: Vec<String> = pod
            .pointer(pointer)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", serde_json::to_string(v.as_str().unwrap_or_default()).unwrap_or_default()))
            .collect();
        lines.sort();
        lines.join("\n")
    };
    // `metadata.labels['app']` and `metadata.annotations['x']` pick one entry.
    for (prefix, pointer) in
        [("metadata.labels['", "/metadata/labels"), ("metadata.annotations['", "/metadata/annotations")]
    {
        if let Some(key) = path.strip_prefix(prefix).and_then(|k| k.strip_suffix("']")) {
            return Some(
                pod.pointer(pointer).and_then(|m| m.get(key)).and_then(Value::as_str).unwrap_or_default().into(),
            );
        }
    }
    Some(match path {
        "metadata.name" => text("/metadata/name"),
        "metadata.namespace" => text("/metadata/namespace"),
        "metadata.uid" => text("/metadata/uid"),
        "metadata.labels" => map_lines("/metadata/labels"),
        "metadata.annotations" => map_lines("/metadata/annotations"),
        "spec.nodeName" => text("/spec/nodeName"),
        "spec.serviceAccountName" => text("/spec/serviceAccountName"),
        "status.hostIP" => text("/status/hostIP"),
        "status.podIP" => text("/status/podIP"),
        "status.podIPs" => {
            let ips = pod.pointer("/status/podIPs").and_then(Value::as_array).cloned().unwrap_or_default();
            ips.iter().filter_map(|ip| ip.get("ip").and_then(Value::as_str)).collect::<Vec<_>>().join(",")
        }
        "status.hostIPs" => {
            let ips = pod.pointer("/status/hostIPs").and_then(Value::as_array).cloned().unwrap_or_default();
            ips.iter().filter_map(|ip| ip.get("ip").and_then(Value::as_str)).collect::<Vec<_>>().join(",")
        }
        _ => return None,
    })
}

/// A `resourceFieldRef` (`limits.cpu`, `requests.memory`, …) of `container`
/// (the named one, or `default_container` when the ref names none), in units
/// of `divisor` rounded up; unset limits read as the node's capacity.
pub fn resource(
    pod: &Value,
    default_container: Option<&str>,
    reference: &Value,
    machine: &MachineInfo,
) -> Option<String> {
    let wanted = reference.get("resource").and_then(Value::as_str)?;
    let name =
        reference.get("containerName").and_then(Value::as_str).filter(|n| !n.is_empty()).or(default_container)?;
    let containers = ["containers", "initContainers"]
        .iter()
        .flat_map(|list| pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).cloned().unwrap_or_default());
    let container = containers.into_iter().find(|c| c.get("name").and_then(Value::as_str) == Some(name))?;
    let (kind, resource) = wanted.split_once('.')?;
    let set =
        container.pointer(&format!("/resources/{kind}/{resource}")).and_then(Value::as_str).and_then(parse_quantity);
    let capacity = match resource {
        "cpu" => machine.cpus as f64,
        "memory" => machine.memory_kib as f64 * 1024.0,
        "ephemeral-storage" => 0.0,
        _ => return None,
    };
    // Requests default to limits, limits to the node's capacity (as the kubelet).
    let value = match (kind, set) {
        (_, Some(v)) => v,
        ("requests", None) => container
            .pointer(&format!("/resources/limits/{resource}"))
            .and_then(Value::as_str)
            .and_then(parse_quantity)
            .unwrap_or(if resource == "cpu" { 0.0 } else { capacity }),
        _ => capacity,
    };
    let divisor = reference.get("divisor").and_then(Value::as_str).and_then(parse_quantity).filter(|d| *d > 0.0);
    let divisor = divisor.unwrap_or(1.0);
    // Upstream rounds up; a CPU request of 0 still reads as at least 1 in whole cores.
    let units = (value / divisor - 1e-9).ceil().max(if resource == "cpu" && kind == "limits" { 1.0 } else { 0.0 });
    Some(format!("{}", units as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn machine() -> MachineInfo {
        MachineInfo { cpus: 2, memory_kib: 4 * 1024 * 1024, kernel: String::new(), os_image: String::new() }
    }

    fn pod() -> Value {
        json!({"metadata": {"name": "web", "namespace": "prod", "labels": {"tier": "front", "app": "web"},
                            "annotations": {"note": "say \"hi\""}},
               "spec": {"nodeName": "n1", "containers": [{"name": "app",
                   "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}, "requests": {"cpu": "250m"}}}]}})
    }

    #[test]
    fn fields_read_like_upstream() {
        let pod = pod();
        assert_eq!(field(&pod, "metadata.namespace").as_deref(), Some("prod"));
        assert_eq!(field(&pod, "metadata.labels").as_deref(), Some("app=\"web\"\ntier=\"front\""));
        assert_eq!(field(&pod, "metadata.annotations").as_deref(), Some("note=\"say \\\"hi\\\"\""));
        assert_eq!(field(&pod, "metadata.labels['tier']").as_deref(), Some("front"));
        assert_eq!(field(&pod, "spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(field(&pod, "spec.nothing"), None);
    }

    #[test]
    fn resources_round_up_in_the_divisor_and_default_to_capacity() {
        let (pod, m) = (pod(), machine());
        let r = |reference: Value| resource(&pod, Some("app"), &reference, &m);
        assert_eq!(r(json!({"resource": "limits.memory", "divisor": "1Mi"})).as_deref(), Some("64"));
        assert_eq!(r(json!({"resource": "limits.cpu"})).as_deref(), Some("1"));
        assert_eq!(r(json!({"resource": "limits.cpu", "divisor": "1m"})).as_deref(), Some("500"));
        assert_eq!(r(json!({"resource": "requests.cpu", "divisor": "1m"})).as_deref(), Some("250"));
        assert_eq!(r(json!({"resource": "requests.memory", "divisor": "1Mi"})).as_deref(), Some("64"));
        let no_limit = json!({"spec": {"containers": [{"name": "app"}]}});
        let memory = resource(&no_limit, Some("app"), &json!({"resource": "limits.memory", "divisor": "1Gi"}), &m);
        assert_eq!(memory.as_deref(), Some("4"));
    }
}
