//! The Job controller: runs pods from the template until `completions`
//! succeed (at most `parallelism` at a time), fails the job past
//! `backoffLimit` or `activeDeadlineSeconds`, and reports counts, start and
//! completion times and the Complete / Failed conditions.

use super::Context;
use super::events::{self, NORMAL, WARNING};
use super::jobindex::{self, format_indexes, index_of, indexed_pod, parse_indexes};
use super::objects::{self, PODS, condition, deleting, int_at, name, pod_active, pod_ready, str_at};
use super::podfailurepolicy::{self, Verdict};
use super::queue::{self, Action, Key, Secondary};
use super::replicaset::{pod_from_template, write_status};
use crate::server::error::ApiError;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const JOBS: (&str, &str, &str) = ("batch", "v1", "jobs");
const COMPONENT: &str = "job-controller";

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let pods = Secondary { gvr: PODS, wakes: |pod| queue::wake_owner(pod, "Job"), deletions_only: false };
    queue::run_with(ctx, shutdown, "job", JOBS, &[pods], Duration::from_secs(30), reconcile).await;
}

/// Whether a job has finished: a Complete or Failed condition that is True.
pub fn finished(job: &Value) -> Option<&'static str> {
    ["Complete", "Failed"]
        .into_iter()
        .find(|kind| condition(job, kind).and_then(|c| c.get("status")).and_then(Value::as_str) == Some("True"))
}

/// What the job should do next, from its spec and its pods' counts.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Keep this many pods active.
    Run(i64),
    Complete,
    /// Complete, for a reason other than reaching completions.
    Succeed {
        reason: &'static str,
        message: String,
    },
    Fail {
        reason: &'static str,
        message: String,
    },
}

/// The pure decision of one sync.
pub fn next(job: &Value, active: i64, succeeded: i64, failed: i64, elapsed: Option<i64>) -> Next {
    let backoff = int_at(job, "/spec/backoffLimit").unwrap_or(6);
    if failed > backoff {
        return Next::Fail {
            reason: "BackoffLimitExceeded",
            message: "Job has reached the specified backoff limit".into(),
        };
    }
    if let (Some(deadline), Some(elapsed)) = (int_at(job, "/spec/activeDeadlineSeconds"), elapsed)
        && elapsed >= deadline
    {
        return Next::Fail {
            reason: "DeadlineExceeded",
            message: "Job was active longer than specified deadline".into(),
        };
    }
    let parallelism = int_at(job, "/spec/parallelism").unwrap_or(1).max(0);
    match int_at(job, "/spec/completions") {
        Some(completions) if succeeded >= completions => Next::Complete,
        Some(completions) => Next::Run(parallelism.min(completions - succeeded)),
        // Without completions, the first success completes the job once nothing runs.
        None if succeeded > 0 && active == 0 => Next::Complete,
        None if succeeded > 0 => Next::Run(0),
        None => Next::Run(parallelism),
    }
}

fn job_condition(kind: &str, reason: &str, message: &str) -> Value {
    let now = objects::now();
    json!({"type": kind, "status": "True", "reason": reason, "message": message,
        "lastProbeTime": now, "lastTransitionTime": now})
}

async fn delete_pods(ctx: &Context, ns: &str, pods: &[Value]) -> Result<(), ApiError> {
    for pod in pods {
        let path = objects::path(ctx, PODS, Some(ns), Some(name(pod)), None)?;
        objects::ignore_gone(ctx.client.delete(&path, None).await)?;
    }
    Ok(())
}

async fn reconcile(ctx: Context, (ns, job_name): Key) -> Result<Action, ApiError> {
    let Some(job) = objects::get(&ctx, JOBS, &ns, &job_name).await? else { return Ok(Action::Done) };
    if deleting(&job) {
        return Ok(Action::Done);
    }
    let owner_ref = objects::controller_ref(&job, "batch/v1", "Job");
    let candidates = objects::list(&ctx, PODS, Some(&ns)).await?;
    let pods = objects::claim(&ctx, PODS, &job, &owner_ref, candidates).await?;
    let active: Vec<Value> = pods.iter().filter(|p| pod_active(p)).cloned().collect();
    let indexed = str_at(&job, "/spec/completionMode") == "Indexed";
    let completions = int_at(&job, "/spec/completions").unwrap_or(1);
    // Counts never go down, also when finished pods are deleted (upstream tracks them with a finalizer).
    let mut succeeded_indexes = parse_indexes(str_at(&job, "/status/completedIndexes"));
    succeeded_indexes.extend(
        pods.iter()
            .filter(|p| objects::phase(p) == "Succeeded")
            .filter_map(index_of)
            .filter(|i| (0..completions).contains(i)),
    );
    let previous = |field: &str| int_at(&job, &format!("/status/{field}")).unwrap_or(0);
    let succeeded = if indexed {
        succeeded_indexes.len() as i64
    } else {
        (pods.iter().filter(|p| objects::phase(p) == "Succeeded").count() as i64).max(previous("succeeded"))
    };
    let mut fail_job = None;
    let mut failed = 0;
    for pod in pods.iter().filter(|p| objects::phase(p) == "Failed") {
        match podfailurepolicy::verdict(&job, pod) {
            Verdict::FailJob(message) => {
                fail_job.get_or_insert(message);
                failed += 1;
            }
            Verdict::Ignore => {}
            Verdict::Count => failed += 1,
        }
    }
    if str_at(&job, "/spec/template/spec/restartPolicy") == "OnFailure" {
        failed += active
            .iter()
            .flat_map(|p| p.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default())
            .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
            .sum::<i64>();
    }
    let failed = failed.max(previous("failed"));
    let mut status = json!({
        "active": active.len(), "succeeded": succeeded, "failed": failed,
        "ready": active.iter().filter(|p| pod_ready(p)).count(), "terminating": pods.iter().filter(|p| deleting(p)).count(),
    });
    let per_index = int_at(&job, "/spec/backoffLimitPerIndex");
    let mut failed_indexes = parse_indexes(str_at(&job, "/status/failedIndexes"));
    if let Some(limit) = per_index {
        failed_indexes.extend(jobindex::failed_indexes(&pods, limit, completions));
        failed_indexes.retain(|i| !succeeded_indexes.contains(i));
        status["failedIndexes"] = json!(format_indexes(&failed_indexes));
    }
    if indexed {
        status["completedIndexes"] = json!(format_indexes(&succeeded_indexes));
    }
    let mut conditions: Vec<Value> =
        job.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    if finished(&job).is_some() {
        // A finished job keeps its conditions; leftover pods stop.
        delete_pods(&ctx, &ns, &active).await?;
        status["active"] = json!(0);
        write_status(&ctx, JOBS, &job, status).await?;
        return Ok(Action::Done);
    }
    let suspended = job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    if suspended {
        delete_pods(&ctx, &ns, &active).await?;
        status["active"] = json!(0);
        write_status(&ctx, JOBS, &job, status).await?;
        return Ok(Action::Done);
    }
    let start = match str_at(&job, "/status/startTime") {
        "" => objects::now(),
        start => start.to_string(),
    };
    status["startTime"] = json!(start);
    let elapsed = start.parse::<jiff::Timestamp>().ok().map(|t| jiff::Timestamp::now().as_second() - t.as_second());
    let mut requeue = Action::Done;
    let all_done = (0..completions).all(|i| succeeded_indexes.contains(&i) || failed_indexes.contains(&i));
    let max_failed = int_at(&job, "/spec/maxFailedIndexes");
    let success_rule = if indexed { jobindex::success_rule(&job, &succeeded_indexes) } else { None };
    let decision = if let Some(message) = fail_job {
        Next::Fail { reason: "PodFailurePolicy", message }
    } else if let Some(rule) = success_rule {
        Next::Succeed { reason: "SuccessPolicy", message: format!("Matched rules at index {rule}") }
    } else if max_failed.is_some_and(|max| failed_indexes.len() as i64 > max) {
        Next::Fail {
            reason: "MaxFailedIndexesExceeded",
            message: "Job has exceeded the specified maximal number of failed indexes".into(),
        }
    } else if indexed && all_done && !failed_indexes.is_empty() && active.is_empty() {
        Next::Fail { reason: "FailedIndexes", message: "Job has failed indexes".into() }
    } else {
        let done = succeeded + if indexed { failed_indexes.len() as i64 } else { 0 };
        match next(&job, active.len() as i64, done, failed, elapsed) {
            Next::Complete => Next::Succeed {
                reason: "CompletionsReached",
                message: "Reached expected number of succeeded pods".into(),
            },
            other => other,
        }
    };
    match decision {
        Next::Complete | Next::Succeed { .. } => {
            let (reason, message) = match &decision {
                Next::Succeed { reason, message } => (*reason, message.as_str()),
                _ => ("CompletionsReached", "Reached expected number of succeeded pods"),
            };
            delete_pods(&ctx, &ns, &active).await?;
            conditions.push(job_condition("SuccessCriteriaMet", reason, message));
            conditions.push(job_condition("Complete", reason, message));
            status["completionTime"] = json!(objects::now());
            status["active"] = json!(0);
            tracing::info!(job = %job_name, namespace = %ns, succeeded, "job completed");
            events::record(&ctx, COMPONENT, &job, ("batch/v1", "Job"), NORMAL, "Completed", "Job completed").await;
        }
        Next::Fail { reason, message } => {
            delete_pods(&ctx, &ns, &active).await?;
            conditions.push(job_condition("FailureTarget", reason, &message));
            conditions.push(job_condition("Failed", reason, &message));
            status["active"] = json!(0);
            tracing::info!(job = %job_name, namespace = %ns, reason, "job failed");
            events::record(&ctx, COMPONENT, &job, ("batch/v1", "Job"), WARNING, reason, &message).await;
        }
        Next::Run(wanted) => {
            let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
            let path = objects::path(&ctx, PODS, Some(&ns), None, None)?;
            let missing = (wanted - active.len() as i64).max(0) as usize;
            let running: BTreeSet<i64> = active.iter().filter_map(index_of).collect();
            let new_pods: Vec<Value> = if indexed {
                (0..completions)
                    .filter(|i| !succeeded_indexes.contains(i) && !failed_indexes.contains(i) && !running.contains(i))
                    .take(missing)
                    .map(|i| indexed_pod(&job, &template, &owner_ref, i))
                    .collect()
            } else {
                (0..missing).map(|_| pod_from_template(&template, &format!("{job_name}-"), &owner_ref)).collect()
            };
            for pod in new_pods {
                let created = ctx.client.create(&path, pod).await?;
                let message = format!("Created pod: {}", name(&created));
                events::record(&ctx, COMPONENT, &job, ("batch/v1", "Job"), NORMAL, "SuccessfulCreate", &message).await;
            }
            let surplus = (active.len() as i64 - wanted).max(0) as usize;
            delete_pods(&ctx, &ns, &active[..surplus]).await?;
            if let (Some(deadline), Some(elapsed)) = (int_at(&job, "/spec/activeDeadlineSeconds"), elapsed) {
                requeue = Action::RequeueAfter(Duration::from_secs((deadline - elapsed).max(1) as u64));
            }
        }
    }
    status["conditions"] = json!(conditions);
    write_status(&ctx, JOBS, &job, status).await?;
    Ok(requeue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_until_completions_succeed() {
        let job = json!({"spec": {"completions": 3, "parallelism": 2, "backoffLimit": 1}});
        assert_eq!(next(&job, 0, 0, 0, Some(0)), Next::Run(2));
        assert_eq!(next(&job, 2, 2, 0, Some(0)), Next::Run(1));
        assert_eq!(next(&job, 0, 3, 0, Some(0)), Next::Complete);
        assert!(matches!(next(&job, 1, 0, 2, Some(0)), Next::Fail { reason: "BackoffLimitExceeded", .. }));
    }

    #[test]
    fn work_queue_jobs_and_deadlines() {
        let queue = json!({"spec": {"parallelism": 3, "activeDeadlineSeconds": 10}});
        assert_eq!(next(&queue, 0, 0, 0, Some(1)), Next::Run(3));
        assert_eq!(next(&queue, 2, 1, 0, Some(1)), Next::Run(0));
        assert_eq!(next(&queue, 0, 1, 0, Some(1)), Next::Complete);
        assert!(matches!(next(&queue, 3, 0, 0, Some(10)), Next::Fail { reason: "DeadlineExceeded", .. }));
    }
}
