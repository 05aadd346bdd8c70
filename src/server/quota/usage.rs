//! ResourceQuota arithmetic, pure: what one object charges against a quota
//! (object counts, pod compute, claim storage), sums in milli-units, the
//! admission decision with upstream's messages, and quantity formatting.

use crate::controllers::scheduler::quantity::{milli_of, parse_milli};
use serde_json::Value;
use std::collections::BTreeMap;

/// Resource name → amount in thousandths of a unit.
pub type Usage = BTreeMap<String, i128>;

/// The compute resources that oblige every container to declare them.
const VALIDATED: [&str; 6] = ["requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "cpu", "memory"];

/// Core kinds upstream also counts under their legacy names (`pods`, …).
const LEGACY_COUNTS: [&str; 7] =
    ["pods", "services", "configmaps", "secrets", "persistentvolumeclaims", "replicationcontrollers", "resourcequotas"];

/// The `count/<resource>.<group>` name of a resource (`count/pods` in core).
pub fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() { format!("count/{plural}") } else { format!("count/{plural}.{group}") }
}

/// The (group, plural) whose objects a limited resource counts.
pub fn source(resource: &str) -> Option<(String, String)> {
    let core = |plural: &str| Some((String::new(), plural.to_string()));
    if let Some(counted) = resource.strip_prefix("count/") {
        return match counted.split_once('.') {
            Some((plural, group)) => Some((group.to_string(), plural.to_string())),
            None => core(counted),
        };
    }
    match resource {
        r if LEGACY_COUNTS.contains(&r) => core(r),
        "services.loadbalancers" | "services.nodeports" => core("services"),
        "requests.storage" => core("persistentvolumeclaims"),
        r if VALIDATED.contains(&r) => core("pods"),
        _ => None,
    }
}

/// Whether a pod still holds its quota: terminal pods do not,
/// nor do pods being deleted past their grace period.
pub fn pod_counts(pod: &Value) -> bool {
    if matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")) {
        return false;
    }
    let deleted = pod.pointer("/metadata/deletionTimestamp").and_then(Value::as_str);
    let grace = pod.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0);
    match deleted.and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
        Some(at) => jiff::Timestamp::now().as_second() <= at.as_second() + grace,
        None => true,
    }
}

/// What `obj`, an object of `group`/`plural`, charges.
pub fn object_usage(group: &str, plural: &str, obj: &Value) -> Usage {
    let mut usage = Usage::new();
    let is_pod = group.is_empty() && plural == "pods";
    if is_pod && !pod_counts(obj) {
        return usage;
    }
    usage.insert(count_name(group, plural), 1000);
    if group.is_empty() && LEGACY_COUNTS.contains(&plural) {
        usage.insert(plural.to_string(), 1000);
    }
    if is_pod {
        usage.extend(pod_compute(obj));
    }
    if group.is_empty()
        && plural == "persistentvolumeclaims"
        && let Some(storage) = obj.pointer("/spec/resources/requests/storage").and_then(milli_of)
    {
        usage.insert("requests.storage".into(), storage);
    }
    if group.is_empty() && plural == "services" {
        match obj.pointer("/spec/type").and_then(Value::as_str) {
            Some("LoadBalancer") => {
                usage.insert("services.loadbalancers".into(), 1000);
            }
            Some("NodePort") => {
                usage.insert("services.nodeports".into(), 1000);
            }
            _ => {}
        }
    }
    usage
}

/// A container's request for `resource` (`cpu`/`memory`), defaulting to its limit.
fn request(container: &Value, resource: &str) -> Option<i128> {
    let resources = container.get("resources")?;
    resources
        .pointer(&format!("/requests/{resource}"))
        .or_else(|| resources.pointer(&format!("/limits/{resource}")))
        .and_then(milli_of)
}

fn limit(container: &Value, resource: &str) -> Option<i128> {
    container.get("resources")?.pointer(&format!("/limits/{resource}")).and_then(milli_of)
}

/// A pod's compute: the sum over its containers, at least the largest init
/// container (they run one at a time), plus the pod overhead.
fn pod_compute(pod: &Value) -> Usage {
    let list =
        |field: &str| pod.pointer(&format!("/spec/{field}")).and_then(Value::as_array).cloned().unwrap_or_default();
    let (containers, inits) = (list("containers"), list("initContainers"));
    let mut usage = Usage::new();
    for resource in ["cpu", "memory"] {
        let amount = |get: fn(&Value, &str) -> Option<i128>| {
            let sum: Option<i128> = containers.iter().filter_map(|c| get(c, resource)).reduce(|a, b| a + b);
            let init = inits.iter().filter_map(|c| get(c, resource)).max();
            let overhead = pod.pointer(&format!("/spec/overhead/{resource}")).and_then(milli_of).unwrap_or(0);
            match (sum, init) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0).max(b.unwrap_or(0)) + overhead),
            }
        };
        if let Some(requested) = amount(request) {
            usage.insert(format!("requests.{resource}"), requested);
            usage.insert(resource.to_string(), requested);
        }
        if let Some(limited) = amount(limit) {
            usage.insert(format!("limits.{resource}"), limited);
        }
    }
    usage
}

/// Upstream's pod constraint: with cpu or memory under quota every container
/// must declare it: `must specify requests.cpu for: app; limits.memory for: app`.
pub fn missing_compute(hard: &Usage, pod: &Value) -> Option<String> {
    let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for field in ["containers", "initContainers"] {
        for container in pod.pointer(&format!("/spec/{field}")).and_then(Value::as_array).into_iter().flatten() {
            let name = container.get("name").and_then(Value::as_str).unwrap_or_default();
            for resource in VALIDATED.iter().copied().filter(|r| hard.contains_key(*r)) {
                // Requests default to limits, as the API server's defaulting does.
                let declared = match resource.strip_prefix("limits.") {
                    Some(r) => limit(container, r).is_some(),
                    None => request(container, resource.strip_prefix("requests.").unwrap_or(resource)).is_some(),
                };
                if !declared {
                    missing.entry(resource).or_default().push(name.to_string());
                }
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .into_iter()
        .map(|(resource, mut names)| {
            names.sort();
            names.dedup();
            format!("{resource} for: {}", names.join(","))
        })
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

/// A quota's `spec.hard` parsed; unparsable entries are skipped (validation rejects them).
pub fn parse_hard(hard: Option<&Value>) -> Usage {
    hard.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| match value {
            Value::String(s) => parse_milli(s).ok().map(|m| (name.clone(), m)),
            other => milli_of(other).map(|m| (name.clone(), m)),
        })
        .collect()
}

/// Adds `usage` into `total`, for the resources `hard` limits only.
pub fn add_masked(total: &mut Usage, usage: &Usage, hard: &Usage) {
    for (name, amount) in usage.iter().filter(|(name, _)| hard.contains_key(*name)) {
        *total.entry(name.clone()).or_insert(0) += amount;
    }
}

/// The admission decision for one quota: `Err(message)` when `requested`
/// on top of `used` passes `hard`, in upstream's words.
pub fn check(quota: &str, hard: &Usage, used: &Usage, requested: &Usage) -> Result<(), String> {
    let exceeded: Vec<&String> = requested
        .iter()
        .filter(|(name, amount)| {
            hard.get(*name).is_some_and(|limit| used.get(*name).copied().unwrap_or(0) + **amount > *limit)
        })
        .map(|(name, _)| name)
        .collect();
    if exceeded.is_empty() {
        return Ok(());
    }
    let show = |map: &Usage| {
        exceeded
            .iter()
            .map(|name| format!("{name}={}", format(name, map.get(*name).copied().unwrap_or(0))))
            .collect::<Vec<_>>()
            .join(",")
    };
    Err(format!(
        "exceeded quota: {quota}, requested: {}, used: {}, limited: {}",
        show(requested),
        show(used),
        show(hard)
    ))
}

/// A milli-amount as a Kubernetes quantity: `500m`, `2`, `1Gi` for memory
/// and storage that divide evenly in binary units, `2k` otherwise.
pub fn format(resource: &str, milli: i128) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let mut units = milli / 1000;
    if units == 0 {
        return "0".into();
    }
    let bytes = resource.contains("memory") || resource.contains("storage");
    if bytes && units % 1024 == 0 {
        let mut suffix = 0;
        while units % 1024 == 0 && suffix < 6 {
            units /= 1024;
            suffix += 1;
        }
        return format!("{units}{}", ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][suffix]);
    }
    let mut suffix = 0;
    while units % 1000 == 0 && suffix < 6 {
        units /= 1000;
        suffix += 1;
    }
    format!("{units}{}", ["", "k", "M", "G", "T", "P", "E"][suffix])
}

/// `used` as the quota's `status.used`: every limited resource, zero when unused.
pub fn to_status(hard: &Usage, used: &Usage) -> serde_json::Map<String, Value> {
    hard.keys().map(|name| (name.clone(), Value::String(format(name, used.get(name).copied().unwrap_or(0))))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn usage(pairs: &[(&str, i128)]) -> Usage {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn pods_charge_counts_and_compute_terminal_ones_nothing() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
            {"name": "b", "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}},
        ], "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}]}});
        let got = object_usage("", "pods", &pod);
        assert_eq!(got["pods"], 1000);
        assert_eq!(got["count/pods"], 1000);
        // The init container's 2 CPUs outweigh the containers' 750m.
        assert_eq!(got["requests.cpu"], 2000);
        assert_eq!(got["cpu"], 2000);
        assert_eq!(got["requests.memory"], 192 * 1024 * 1024 * 1000);
        assert_eq!(got["limits.cpu"], 1500);
        assert_eq!(got["limits.memory"], 128 * 1024 * 1024 * 1000);
        let done = json!({"spec": {"containers": []}, "status": {"phase": "Succeeded"}});
        assert!(object_usage("", "pods", &done).is_empty());
        let gone = json!({"metadata": {"deletionTimestamp": "2020-01-01T00:00:00Z", "deletionGracePeriodSeconds": 30}});
        assert!(object_usage("", "pods", &gone).is_empty());
        let grace =
            json!({"metadata": {"deletionTimestamp": "2999-01-01T00:00:00Z", "deletionGracePeriodSeconds": 30}});
        assert_eq!(object_usage("", "pods", &grace)["pods"], 1000);
        let deploy = object_usage("apps", "deployments", &json!({}));
        assert_eq!(deploy, usage(&[("count/deployments.apps", 1000)]));
        let cm = object_usage("", "configmaps", &json!({}));
        assert_eq!(cm, usage(&[("configmaps", 1000), ("count/configmaps", 1000)]));
    }

    #[test]
    fn exceeding_reports_only_the_exceeded_resources_like_upstream() {
        let hard = parse_hard(Some(&json!({"pods": "2", "configmaps": "3", "requests.cpu": "1"})));
        let used = usage(&[("pods", 2000), ("requests.cpu", 500)]);
        let requested = usage(&[("pods", 1000), ("requests.cpu", 500), ("count/pods", 1000)]);
        assert_eq!(
            check("q", &hard, &used, &requested),
            Err("exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2".into())
        );
        let over_cpu = usage(&[("pods", 1000), ("requests.cpu", 600)]);
        let used = usage(&[("pods", 1000), ("requests.cpu", 500)]);
        assert_eq!(
            check("q", &hard, &used, &over_cpu),
            Err("exceeded quota: q, requested: requests.cpu=600m, used: requests.cpu=500m, limited: requests.cpu=1"
                .into())
        );
        assert_eq!(check("q", &hard, &used, &usage(&[("pods", 1000), ("requests.cpu", 500)])), Ok(()));
    }

    #[test]
    fn pods_without_requests_are_refused_when_compute_is_limited() {
        let hard = parse_hard(Some(&json!({"requests.cpu": "1", "limits.memory": "1Gi", "pods": "5"})));
        let pod = json!({"spec": {"containers": [
            {"name": "web", "resources": {"limits": {"memory": "1Mi"}}},
            {"name": "app"},
        ]}});
        assert_eq!(
            missing_compute(&hard, &pod).as_deref(),
            Some("must specify limits.memory for: app; requests.cpu for: app,web")
        );
        let counts_only = parse_hard(Some(&json!({"pods": "5"})));
        assert_eq!(missing_compute(&counts_only, &pod), None);
    }

    #[test]
    fn limited_resources_map_to_the_objects_they_count() {
        let of = |r: &str| source(r).map(|(g, p)| format!("{g}/{p}"));
        assert_eq!(of("pods").as_deref(), Some("/pods"));
        assert_eq!(of("limits.memory").as_deref(), Some("/pods"));
        assert_eq!(of("count/deployments.apps").as_deref(), Some("apps/deployments"));
        assert_eq!(of("count/secrets").as_deref(), Some("/secrets"));
        assert_eq!(of("requests.storage").as_deref(), Some("/persistentvolumeclaims"));
        assert_eq!(of("requests.nvidia.com/gpu"), None);
    }

    #[test]
    fn quantities_format_canonically() {
        assert_eq!(format("pods", 2000), "2");
        assert_eq!(format("requests.cpu", 500), "500m");
        assert_eq!(format("requests.memory", 64 * 1024 * 1024 * 1000), "64Mi");
        assert_eq!(format("requests.memory", 1_000_000_000_000), "1G");
        assert_eq!(format("cpu", 0), "0");
        let hard = parse_hard(Some(&json!({"pods": "2", "limits.cpu": "1500m"})));
        let status = to_status(&hard, &usage(&[("pods", 1000)]));
        assert_eq!(Value::Object(status), json!({"pods": "1", "limits.cpu": "0"}));
    }
}
