//! Strategies of the `batch` API group: Job (upstream's defaults, the
//! generated selector and its `batch.kubernetes.io/*` labels, restart policy
//! rules) and CronJob (defaults and its job template).

use super::apps::{validate_non_negative, validate_selector, validate_selector_immutable};
use super::core::{split_status, validate_containers};
use super::defaults::{pod_template, set_default};
use super::{KindStrategy, Subresource};
use crate::server::error::FieldError;
use serde_json::{Value, json};

/// The strategy for `kind` of this group, if it has special behaviour.
pub fn strategy(kind: &str) -> Option<&'static dyn KindStrategy> {
    match kind {
        "Job" => Some(&JobStrategy),
        "CronJob" => Some(&CronJobStrategy),
        _ => None,
    }
}

pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";

/// Upstream's `SetDefaults_Job` on a job spec.
fn job_spec_defaults(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    if spec.get("completions").is_none() && spec.get("parallelism").is_none() {
        spec["completions"] = json!(1);
        spec["parallelism"] = json!(1);
    }
    set_default(spec, &["parallelism"], json!(1));
    let backoff = if spec.get("backoffLimitPerIndex").is_some() { json!(i32::MAX) } else { json!(6) };
    set_default(spec, &["backoffLimit"], backoff);
    set_default(spec, &["completionMode"], json!("NonIndexed"));
    set_default(spec, &["suspend"], json!(false));
    let replacement = if spec.get("podFailurePolicy").is_some() { "Failed" } else { "TerminatingOrFailed" };
    set_default(spec, &["podReplacementPolicy"], json!(replacement));
    set_default(spec, &["manualSelector"], json!(false));
    if let Some(spec) = spec.pointer_mut("/template/spec") {
        super::defaults::pod_spec(spec);
    }
}

/// Upstream's `generateSelector`: the job's uid selects its pods.
fn generate_selector(job: &mut Value) {
    if job.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let uid = job.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
    let name = job.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    if uid.is_empty() {
        return;
    }
    set_default(job, &["spec", "template", "metadata", "labels"], json!({}));
    if let Some(labels) = job.pointer_mut("/spec/template/metadata/labels").and_then(Value::as_object_mut) {
        for (key, value) in [(CONTROLLER_UID, &uid), (JOB_NAME, &name), ("controller-uid", &uid), ("job-name", &name)] {
            labels.entry(key).or_insert(json!(value));
        }
    }
    if job.pointer("/spec/selector").is_none_or(Value::is_null) {
        job["spec"]["selector"] = json!({"matchLabels": {CONTROLLER_UID: uid}});
    }
}

fn validate_job_spec(job: &Value) -> Vec<FieldError> {
    let mut errors = validate_selector(job, "/spec/template");
    errors.extend(validate_containers(job.pointer("/spec/template/spec"), "spec.template.spec"));
    for (pointer, field) in [
        ("/spec/parallelism", "spec.parallelism"),
        ("/spec/completions", "spec.completions"),
        ("/spec/backoffLimit", "spec.backoffLimit"),
        ("/spec/activeDeadlineSeconds", "spec.activeDeadlineSeconds"),
    ] {
        errors.extend(validate_non_negative(job, pointer, field));
    }
    let restart = job.pointer("/spec/template/spec/restartPolicy").and_then(Value::as_str).unwrap_or_default();
    if !["OnFailure", "Never"].contains(&restart) {
        errors.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            &json!(restart),
            &["OnFailure", "Never"],
        ));
    }
    errors
}

struct JobStrategy;

impl KindStrategy for JobStrategy {
    fn namespaced(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec") {
            job_spec_defaults(spec);
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        generate_selector(obj);
        if let Some(map) = obj.as_object_mut() {
            map.insert("status".into(), json!({}));
        }
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value, subresource: Subresource) {
        split_status(new, old, subresource);
    }

    fn validate_create(&self, obj: &Value) -> Vec<FieldError> {
        validate_job_spec(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value, subresource: Subresource) -> Vec<FieldError> {
        if subresource == Subresource::Status {
            return Vec::new();
        }
        let mut errors = validate_job_spec(new);
        errors.extend(validate_selector_immutable(new, old));
        if new.pointer("/spec/template") != old.pointer("/spec/template") {
            errors.push(FieldError::invalid(
                "spec.template",
                new.pointer("/spec/template").unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
        errors
    }
}

struct CronJobStrategy;

impl KindStrategy for CronJobStrategy {
    fn namespaced(&self) -> bool {
        true
    }

    fn name_rule(&self) -> super::NameRule {
        super::NameRule::Dns1123Subdomain
    }

    fn default(&self, obj: &mut Value) {
        set_default(obj, &["spec", "concurrencyPolicy"], json!("Allow"));
        set_default(obj, &["spec", "suspend"], json!(false));
        set_default(obj, &["spec", "successfulJobsHistoryLimit"], json!(3));
        set_default(obj, &["spec", "failedJobsHistoryLimit"], json!(1));
        pod_template(obj, &["spec", "jobTemplate", "spec", "template"]);
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
        validate_cronjob(obj)
    }

    fn validate_update(&self, new: &Value, _old: &Value, subresource: Subresource) -> Vec<FieldError> {
        if subresource == Subresource::Status { Vec::new() } else { validate_cronjob(new) }
    }
}

fn validate_cronjob(obj: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if obj.pointer("/spec/schedule").and_then(Value::as_str).is_none_or(str::is_empty) {
        errors.push(FieldError::required("spec.schedule", ""));
    }
    let policy = obj.pointer("/spec/concurrencyPolicy").and_then(Value::as_str).unwrap_or("Allow");
    if !["Allow", "Forbid", "Replace"].contains(&policy) {
        errors.push(FieldError::not_supported(
            "spec.concurrencyPolicy",
            &json!(policy),
            &["Allow", "Forbid", "Replace"],
        ));
    }
    errors.extend(validate_containers(
        obj.pointer("/spec/jobTemplate/spec/template/spec"),
        "spec.jobTemplate.spec.template.spec",
    ));
    let restart =
        obj.pointer("/spec/jobTemplate/spec/template/spec/restartPolicy").and_then(Value::as_str).unwrap_or_default();
    if !["OnFailure", "Never"].contains(&restart) {
        errors.push(FieldError::not_supported(
            "spec.jobTemplate.spec.template.spec.restartPolicy",
            &json!(restart),
            &["OnFailure", "Never"],
        ));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(restart: &str) -> Value {
        json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"template": {"spec": {"restartPolicy": restart,
            "containers": [{"name": "pi", "image": "perl"}]}}}})
    }

    #[test]
    fn jobs_get_defaults_and_a_generated_selector() {
        let mut obj = job("Never");
        JobStrategy.default(&mut obj);
        JobStrategy.prepare_for_create(&mut obj);
        let spec = &obj["spec"];
        assert_eq!(
            (spec["completions"].clone(), spec["parallelism"].clone(), spec["backoffLimit"].clone()),
            (json!(1), json!(1), json!(6))
        );
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(spec["selector"], json!({"matchLabels": {CONTROLLER_UID: "u-1"}}));
        assert_eq!(spec["template"]["metadata"]["labels"][JOB_NAME], "pi");
        assert!(JobStrategy.validate_create(&obj).is_empty(), "{:?}", JobStrategy.validate_create(&obj));
    }

    #[test]
    fn job_restart_policy_must_be_on_failure_or_never() {
        let mut obj = job("");
        if let Some(spec) = obj.pointer_mut("/spec/template/spec").and_then(Value::as_object_mut) {
            spec.remove("restartPolicy");
        }
        JobStrategy.default(&mut obj);
        JobStrategy.prepare_for_create(&mut obj);
        let errors = JobStrategy.validate_create(&obj);
        assert_eq!(
            errors[0].to_text(),
            "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        );
    }

    #[test]
    fn cronjobs_get_defaults() {
        let mut obj = json!({"spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "a", "image": "x"}]}}}}}});
        CronJobStrategy.default(&mut obj);
        assert_eq!(obj["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(obj["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(obj["spec"]["failedJobsHistoryLimit"], 1);
        assert!(validate_cronjob(&obj).is_empty());
    }
}
