//! A Job's `podFailurePolicy`: the first rule that matches a failed pod
//! (by container exit codes or pod conditions) decides whether the job
//! fails at once, the failure is ignored, or it counts towards backoffLimit.

use super::objects::{name, str_at};
use serde_json::Value;

/// What a failed pod means for its job.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Fail the job now, with upstream's message.
    FailJob(String),
    /// Not counted towards backoffLimit.
    Ignore,
    /// Counted (also FailIndex, which needs backoffLimitPerIndex).
    Count,
}

fn exit_code_match(rule: &Value, pod: &Value) -> Option<(String, i64)> {
    let requirement = rule.get("onExitCodes")?;
    let only = requirement.get("containerName").and_then(Value::as_str);
    let operator = requirement.get("operator").and_then(Value::as_str).unwrap_or("In");
    let values: Vec<i64> =
        requirement.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_i64).collect();
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .flat_map(|list| pod.pointer(&format!("/status/{list}")).and_then(Value::as_array).cloned().unwrap_or_default())
        .filter(|c| only.is_none_or(|n| c.get("name").and_then(Value::as_str) == Some(n)))
        .filter_map(|c| {
            let code = c.pointer("/state/terminated/exitCode")?.as_i64()?;
            Some((c.get("name").and_then(Value::as_str).unwrap_or_default().to_string(), code))
        })
        // Exit code 0 is a success and never matches.
        .filter(|(_, code)| *code != 0)
        .find(|(_, code)| if operator == "NotIn" { !values.contains(code) } else { values.contains(code) })
}

fn condition_match(rule: &Value, pod: &Value) -> Option<String> {
    let patterns = rule.get("onPodConditions")?.as_array()?;
    let conditions = pod.pointer("/status/conditions").and_then(Value::as_array)?;
    patterns.iter().find_map(|pattern| {
        let kind = pattern.get("type").and_then(Value::as_str)?;
        let status = pattern.get("status").and_then(Value::as_str).unwrap_or("True");
        conditions
            .iter()
            .any(|c| {
                c.get("type").and_then(Value::as_str) == Some(kind)
                    && c.get("status").and_then(Value::as_str) == Some(status)
            })
            .then(|| kind.to_string())
    })
}

/// The verdict of the job's policy on one failed pod (`Count` without a policy).
pub fn verdict(job: &Value, pod: &Value) -> Verdict {
    let rules = job.pointer("/spec/podFailurePolicy/rules").and_then(Value::as_array).cloned().unwrap_or_default();
    let target = format!("{}/{}", str_at(pod, "/metadata/namespace"), name(pod));
    for (i, rule) in rules.iter().enumerate() {
        let action = rule.get("action").and_then(Value::as_str).unwrap_or_default();
        let message = if let Some((container, code)) = exit_code_match(rule, pod) {
            format!(
                "Container {container} for pod {target} failed with exit code {code} matching {action} rule at index {i}"
            )
        } else if let Some(kind) = condition_match(rule, pod) {
            format!("Pod {target} has condition {kind} matching {action} rule at index {i}")
        } else {
            continue;
        };
        return match action {
            "FailJob" => Verdict::FailJob(message),
            "Ignore" => Verdict::Ignore,
            _ => Verdict::Count,
        };
    }
    Verdict::Count
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failed(code: i64, conditions: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns"}, "status": {"phase": "Failed", "conditions": conditions,
            "containerStatuses": [{"name": "main", "state": {"terminated": {"exitCode": code}}}]}})
    }

    #[test]
    fn first_matching_rule_decides() {
        let job = json!({"spec": {"podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1]}}]}}});
        assert_eq!(
            verdict(&job, &failed(42, json!([]))),
            Verdict::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1".into()
            )
        );
        assert_eq!(
            verdict(&job, &failed(42, json!([{"type": "DisruptionTarget", "status": "True"}]))),
            Verdict::Ignore
        );
        assert_eq!(verdict(&job, &failed(1, json!([]))), Verdict::Count);
        assert_eq!(verdict(&json!({}), &failed(42, json!([]))), Verdict::Count);
    }
}
