//! The `kubectl get quota` cells: REQUEST and LIMIT as upstream prints them,
//! `resource: used/hard` for each limited resource, `limits.*` under LIMIT.

use crate::server::quota::usage;
use serde_json::{Value, json};

/// One status entry as a canonical quantity (`0` when absent).
fn quantity(status: &Value, field: &str, resource: &str) -> String {
    let map = status.get(field);
    let parsed =
        usage::parse_hard(map.map(|m| json!({resource: m.get(resource).cloned().unwrap_or(json!("0"))})).as_ref());
    usage::format(resource, parsed.get(resource).copied().unwrap_or(0))
}

/// The REQUEST and LIMIT cells.
pub fn request_limit(quota: &Value) -> (String, String) {
    let status = quota.get("status").cloned().unwrap_or(json!({}));
    let mut resources: Vec<&String> =
        status.get("hard").and_then(Value::as_object).map(|h| h.keys().collect()).unwrap_or_default();
    resources.sort();
    let (mut requests, mut limits) = (Vec::new(), Vec::new());
    for resource in resources {
        let cell =
            format!("{resource}: {}/{}", quantity(&status, "used", resource), quantity(&status, "hard", resource));
        if resource.split_once('.').is_some_and(|(prefix, _)| prefix == "limits") {
            limits.push(cell)
        } else {
            requests.push(cell)
        }
    }
    (requests.join(", "), limits.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_limits_from_requests_sorted() {
        let quota = json!({"status": {
            "hard": {"pods": "2", "limits.cpu": "2", "requests.memory": "1Gi", "configmaps": "3"},
            "used": {"pods": "1", "limits.cpu": "500m", "requests.memory": "0"},
        }});
        assert_eq!(
            request_limit(&quota),
            ("configmaps: 0/3, pods: 1/2, requests.memory: 0/1Gi".to_string(), "limits.cpu: 500m/2".to_string())
        );
        assert_eq!(request_limit(&json!({})), (String::new(), String::new()));
    }
}
