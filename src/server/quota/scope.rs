//! ResourceQuota scopes (`spec.scopes`, `spec.scopeSelector`): which objects
//! a quota tracks. Scopes describe pods only, so a scoped quota tracks no
//! other kind, as upstream's object-count evaluators match no scope.

use serde_json::Value;

/// One scope requirement: scope name, operator, values.
type Requirement = (String, String, Vec<String>);

fn requirements(quota: &Value) -> Vec<Requirement> {
    let mut all: Vec<Requirement> = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        // A bare PriorityClass scope means "has one", as upstream reads it.
        .map(|s| (s.to_string(), if s == "PriorityClass" { "Exists" } else { "In" }.to_string(), Vec::new()))
        .collect();
    for expr in quota.pointer("/spec/scopeSelector/matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let text = |f: &str| expr.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
        let values = expr
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).map(String::from).collect())
            .unwrap_or_default();
        all.push((text("scopeName"), text("operator"), values));
    }
    all
}

/// BestEffort QoS: no container requests or limits anything.
fn best_effort(pod: &Value) -> bool {
    ["containers", "initContainers"].iter().all(|field| {
        pod.pointer(&format!("/spec/{field}")).and_then(Value::as_array).into_iter().flatten().all(|c| {
            ["requests", "limits"].iter().all(|kind| {
                c.pointer(&format!("/resources/{kind}")).and_then(Value::as_object).is_none_or(|m| m.is_empty())
            })
        })
    })
}

fn pod_matches(pod: &Value, (scope, operator, values): &Requirement) -> bool {
    let holds = match scope.as_str() {
        "Terminating" => pod.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64).is_some_and(|d| d >= 0),
        "NotTerminating" => pod.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64).is_none(),
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !best_effort(pod),
        "PriorityClass" => {
            let class = pod.pointer("/spec/priorityClassName").and_then(Value::as_str).unwrap_or_default();
            return match operator.as_str() {
                "In" => values.iter().any(|v| v == class),
                "NotIn" => !values.iter().any(|v| v == class),
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                _ => false,
            };
        }
        _ => return false,
    };
    // The boolean scopes in a selector take `Exists` (or `In`/`DoesNotExist` read as negation).
    if operator == "DoesNotExist" || operator == "NotIn" { !holds } else { holds }
}

/// Whether `quota` tracks `obj`, an object of `group`/`plural`.
pub fn tracks(quota: &Value, group: &str, plural: &str, obj: &Value) -> bool {
    let requirements = requirements(quota);
    if requirements.is_empty() {
        return true;
    }
    group.is_empty() && plural == "pods" && requirements.iter().all(|r| pod_matches(obj, r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scopes_select_pods_by_deadline_qos_and_priority_class() {
        let bare = json!({"spec": {"containers": [{"name": "a"}]}});
        let sized = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}],
            "activeDeadlineSeconds": 30, "priorityClassName": "high"}});
        let best_effort = json!({"spec": {"scopes": ["BestEffort"]}});
        assert!(tracks(&best_effort, "", "pods", &bare));
        assert!(!tracks(&best_effort, "", "pods", &sized));
        assert!(!tracks(&best_effort, "", "configmaps", &json!({})));
        let terminating = json!({"spec": {"scopes": ["Terminating", "NotBestEffort"]}});
        assert!(tracks(&terminating, "", "pods", &sized));
        assert!(!tracks(&terminating, "", "pods", &bare));
        let high = json!({"spec": {"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        assert!(tracks(&high, "", "pods", &sized));
        assert!(!tracks(&high, "", "pods", &bare));
        assert!(tracks(&json!({"spec": {"hard": {}}}), "", "configmaps", &json!({})));
    }
}
