//! Indexed Jobs: completion indexes on pods (annotation, label, hostname,
//! `JOB_COMPLETION_INDEX`), the `0-2,5` index lists of status, per-index
//! backoff (`backoffLimitPerIndex`) and `successPolicy` rules.

use super::objects::{self, name, str_at};
use super::replicaset::pod_from_template;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// The completion index of a pod of an Indexed job.
pub fn index_of(pod: &Value) -> Option<i64> {
    str_at(pod, &format!("/metadata/annotations/{}", COMPLETION_INDEX.replace('/', "~1"))).parse().ok()
}

/// Upstream's `completedIndexes` text: sorted indexes with runs as ranges (`0-2,5`).
pub fn format_indexes(indexes: &BTreeSet<i64>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
    }
    parts.join(",")
}

/// The indexes of a `completedIndexes` text.
pub fn parse_indexes(text: &str) -> BTreeSet<i64> {
    let mut indexes = BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (start, end) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(start), Ok(end)) = (start.parse::<i64>(), end.parse::<i64>()) {
            indexes.extend(start..=end.min(start + 100_000));
        }
    }
    indexes
}

/// The pod of completion index `index`: its annotation and label, hostname
/// `<job>-<index>` and the `JOB_COMPLETION_INDEX` variable in every container.
pub fn indexed_pod(job: &Value, template: &Value, owner_ref: &Value, index: i64) -> Value {
    let job_name = name(job);
    let mut pod = pod_from_template(template, &format!("{job_name}-{index}-"), owner_ref);
    pod["metadata"]["annotations"][COMPLETION_INDEX] = json!(index.to_string());
    pod["metadata"]["labels"][COMPLETION_INDEX] = json!(index.to_string());
    pod["spec"]["hostname"] = json!(format!("{job_name}-{index}"));
    let env = json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {"apiVersion": "v1",
        "fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']")}}});
    for list in ["containers", "initContainers"] {
        for container in pod["spec"].get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            match container.get_mut("env").and_then(Value::as_array_mut) {
                Some(vars) => vars.insert(0, env.clone()),
                None => container["env"] = json!([env]),
            }
        }
    }
    pod
}

/// Indexes whose failed pods exceed `limit` (upstream `backoffLimitPerIndex`).
pub fn failed_indexes(pods: &[Value], limit: i64, completions: i64) -> BTreeSet<i64> {
    let mut failures: BTreeMap<i64, i64> = BTreeMap::new();
    for index in pods.iter().filter(|p| objects::phase(p) == "Failed").filter_map(index_of) {
        *failures.entry(index).or_default() += 1;
    }
    failures.into_iter().filter(|(i, n)| *n > limit && (0..completions).contains(i)).map(|(i, _)| i).collect()
}

/// The first `successPolicy` rule the succeeded indexes satisfy, if any.
pub fn success_rule(job: &Value, succeeded: &BTreeSet<i64>) -> Option<usize> {
    let rules = job.pointer("/spec/successPolicy/rules")?.as_array()?;
    rules.iter().position(|rule| {
        let count = rule.get("succeededCount").and_then(Value::as_i64);
        match rule.get("succeededIndexes").and_then(Value::as_str) {
            Some(text) => {
                let wanted = parse_indexes(text);
                let done = wanted.intersection(succeeded).count() as i64;
                match count {
                    Some(count) => done >= count,
                    None => done == wanted.len() as i64,
                }
            }
            None => count.is_some_and(|count| succeeded.len() as i64 >= count),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_jobs_name_and_number_their_pods() {
        let job = json!({"metadata": {"name": "sim", "uid": "u"}});
        let template = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "env": [{"name": "X", "value": "1"}]}]}});
        let pod = indexed_pod(&job, &template, &json!({"uid": "u"}), 3);
        assert_eq!(pod["metadata"]["generateName"], "sim-3-");
        assert_eq!(index_of(&pod), Some(3));
        assert_eq!(pod["spec"]["hostname"], "sim-3");
        assert_eq!(pod["spec"]["containers"][0]["env"][0]["name"], "JOB_COMPLETION_INDEX");
        assert_eq!(pod["spec"]["containers"][0]["env"][1]["name"], "X");
        let done: BTreeSet<i64> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(format_indexes(&done), "0-2,4,6-7");
        assert_eq!(parse_indexes("0-2,4,6-7"), done);
        assert!(parse_indexes("").is_empty());
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn per_index_backoff_and_success_policies() {
        let failed = |i: i64| json!({"metadata": {"annotations": {COMPLETION_INDEX: i.to_string()}}, "status": {"phase": "Failed"}});
        let pods = [failed(0), failed(0), failed(1), failed(7)];
        assert_eq!(failed_indexes(&pods, 1, 5), [0].into_iter().collect());
        let succeeded: BTreeSet<i64> = [0, 2].into_iter().collect();
        let job = |rules: Value| json!({"spec": {"successPolicy": {"rules": rules}}});
        assert_eq!(success_rule(&job(json!([{"succeededIndexes": "0-2"}])), &succeeded), None);
        assert_eq!(success_rule(&job(json!([{"succeededIndexes": "0-2", "succeededCount": 2}])), &succeeded), Some(0));
        assert_eq!(success_rule(&job(json!([{"succeededIndexes": "5"}, {"succeededCount": 2}])), &succeeded), Some(1));
        assert_eq!(success_rule(&json!({}), &succeeded), None);
    }
}
