//! The CronJob controller: creates a Job named `<cronjob>-<minutes since
//! epoch>` at each scheduled time (honouring suspend, startingDeadlineSeconds
//! and the concurrency policy), tracks active jobs and lastScheduleTime, and
//! prunes finished jobs beyond the history limits.

use super::Context;
use super::cron::Schedule;
use super::events::{self, NORMAL, WARNING};
use super::job::{JOBS, finished};
use super::objects::{self, deleting, int_at, name, str_at, uid};
use super::queue::{self, Action, Key, Secondary};
use super::replicaset::write_status;
use crate::server::error::ApiError;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CRONJOBS: (&str, &str, &str) = ("batch", "v1", "cronjobs");
const COMPONENT: &str = "cronjob-controller";
const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let jobs = Secondary { gvr: JOBS, wakes: |job| queue::wake_owner(job, "CronJob"), deletions_only: false };
    queue::run_with(ctx, shutdown, "cronjob", CRONJOBS, &[jobs], Duration::from_secs(60), reconcile).await;
}

fn timestamp(obj: &Value, pointer: &str) -> Option<Timestamp> {
    str_at(obj, pointer).parse().ok()
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The latest scheduled time in `(since, now]`, if any.
pub fn most_recent(schedule: &Schedule, since: Timestamp, now: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
    let mut latest = None;
    let mut t = since;
    // After a long outage only the most recent missed time matters; skip ahead.
    if now.as_second() - since.as_second() > 7 * 24 * 3600 {
        t = Timestamp::from_second(now.as_second() - 7 * 24 * 3600).unwrap_or(since);
    }
    while let Some(next) = schedule.next_after(t, tz) {
        if next > now {
            break;
        }
        latest = Some(next);
        t = next;
    }
    latest
}

/// The job a cronjob runs at `scheduled`.
pub fn job_for(cronjob: &Value, scheduled: Timestamp) -> Value {
    let template = cronjob.pointer("/spec/jobTemplate").cloned().unwrap_or(json!({}));
    let mut annotations = template.pointer("/metadata/annotations").cloned().unwrap_or(json!({}));
    annotations[SCHEDULED_AT] = json!(rfc3339(scheduled));
    let mut metadata = json!({"name": format!("{}-{}", name(cronjob), scheduled.as_second() / 60),
        "namespace": str_at(cronjob, "/metadata/namespace"), "annotations": annotations,
        "ownerReferences": [objects::controller_ref(cronjob, "batch/v1", "CronJob")]});
    if let Some(labels) = template.pointer("/metadata/labels") {
        metadata["labels"] = labels.clone();
    }
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or(json!({}))})
}

fn job_ref(job: &Value) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "namespace": str_at(job, "/metadata/namespace"),
        "name": name(job), "uid": uid(job), "resourceVersion": str_at(job, "/metadata/resourceVersion")})
}

async fn delete_job(ctx: &Context, cronjob: &Value, job: &Value) -> Result<(), ApiError> {
    let path = objects::path(ctx, JOBS, Some(str_at(job, "/metadata/namespace")), Some(name(job)), None)?;
    objects::ignore_gone(ctx.client.delete(&path, Some(json!({"propagationPolicy": "Background"}))).await)?;
    let message = format!("Deleted job {}", name(job));
    events::record(ctx, COMPONENT, cronjob, ("batch/v1", "CronJob"), NORMAL, "SuccessfulDelete", &message).await;
    Ok(())
}

/// Deletes the oldest finished jobs of `kind` beyond `limit`.
async fn prune(ctx: &Context, cronjob: &Value, jobs: &[Value], kind: &str, limit: i64) -> Result<(), ApiError> {
    let mut done: Vec<&Value> = jobs.iter().filter(|j| finished(j) == Some(kind)).collect();
    done.sort_by_key(|j| str_at(j, "/status/startTime").to_string());
    let excess = done.len().saturating_sub(limit.max(0) as usize);
    for job in done.into_iter().take(excess) {
        delete_job(ctx, cronjob, job).await?;
    }
    Ok(())
}

async fn reconcile(ctx: Context, (ns, cj_name): Key) -> Result<Action, ApiError> {
    let Some(cronjob) = objects::get(&ctx, CRONJOBS, &ns, &cj_name).await? else { return Ok(Action::Done) };
    if deleting(&cronjob) {
        return Ok(Action::Done);
    }
    let jobs: Vec<Value> = objects::list(&ctx, JOBS, Some(&ns))
        .await?
        .into_iter()
        .filter(|j| objects::controller_uid(j) == Some(uid(&cronjob)) && !deleting(j))
        .collect();
    let previously_active: Vec<String> = cronjob
        .pointer("/status/active")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    for job in jobs.iter().filter(|j| finished(j).is_some() && previously_active.iter().any(|n| n == name(j))) {
        let message = format!("Saw completed job: {}, status: {}", name(job), finished(job).unwrap_or_default());
        events::record(&ctx, COMPONENT, &cronjob, ("batch/v1", "CronJob"), NORMAL, "SawCompletedJob", &message).await;
    }
    let mut active: Vec<Value> = jobs.iter().filter(|j| finished(j).is_none()).cloned().collect();
    let mut status = json!({});
    if let Some(last) = jobs
        .iter()
        .filter(|j| finished(j) == Some("Complete"))
        .filter_map(|j| timestamp(j, "/status/completionTime"))
        .max()
    {
        status["lastSuccessfulTime"] = json!(rfc3339(last));
    }
    prune(&ctx, &cronjob, &jobs, "Complete", int_at(&cronjob, "/spec/successfulJobsHistoryLimit").unwrap_or(3)).await?;
    prune(&ctx, &cronjob, &jobs, "Failed", int_at(&cronjob, "/spec/failedJobsHistoryLimit").unwrap_or(1)).await?;

    let schedule = match Schedule::parse(str_at(&cronjob, "/spec/schedule")) {
        Ok(schedule) => schedule,
        Err(err) => {
            let message = format!("unparseable schedule: {:?} : {err}", str_at(&cronjob, "/spec/schedule"));
            events::record(
                &ctx,
                COMPONENT,
                &cronjob,
                ("batch/v1", "CronJob"),
                WARNING,
                "UnparseableSchedule",
                &message,
            )
            .await;
            return Ok(Action::Done);
        }
    };
    let tz = match str_at(&cronjob, "/spec/timeZone") {
        "" => TimeZone::UTC,
        zone => TimeZone::get(zone).unwrap_or(TimeZone::UTC),
    };
    let now = Timestamp::now();
    let suspended = cronjob.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    let since = timestamp(&cronjob, "/status/lastScheduleTime")
        .or_else(|| timestamp(&cronjob, "/metadata/creationTimestamp"))
        .unwrap_or(now);
    if let Some(scheduled) = most_recent(&schedule, since, now, &tz).filter(|_| !suspended) {
        let late = now.as_second() - scheduled.as_second();
        let too_late = int_at(&cronjob, "/spec/startingDeadlineSeconds").is_some_and(|deadline| late > deadline);
        let policy = str_at(&cronjob, "/spec/concurrencyPolicy");
        if too_late {
            let message = format!("Missed scheduled time to start a job: {}", rfc3339(scheduled));
            events::record(&ctx, COMPONENT, &cronjob, ("batch/v1", "CronJob"), WARNING, "MissSchedule", &message).await;
        } else if policy == "Forbid" && !active.is_empty() {
            tracing::info!(cronjob = %cj_name, namespace = %ns, "skipping a run: a job is still active");
        } else {
            if policy == "Replace" {
                for job in std::mem::take(&mut active) {
                    delete_job(&ctx, &cronjob, &job).await?;
                }
            }
            let path = objects::path(&ctx, JOBS, Some(&ns), None, None)?;
            match ctx.client.create(&path, job_for(&cronjob, scheduled)).await {
                Ok(job) => {
                    tracing::info!(cronjob = %cj_name, namespace = %ns, job = %name(&job), "created a job");
                    let message = format!("Created job {}", name(&job));
                    events::record(
                        &ctx,
                        COMPONENT,
                        &cronjob,
                        ("batch/v1", "CronJob"),
                        NORMAL,
                        "SuccessfulCreate",
                        &message,
                    )
                    .await;
                    active.push(job);
                }
                Err(err) if err.code == 409 => {}
                Err(err) => return Err(err),
            }
        }
        status["lastScheduleTime"] = json!(rfc3339(scheduled));
    }
    status["active"] = json!(active.iter().map(job_ref).collect::<Vec<_>>());
    write_status(&ctx, CRONJOBS, &cronjob, status).await?;
    match schedule.next_after(now, &tz) {
        Some(next) => {
            let wait = (next.as_millisecond() - now.as_millisecond()).max(0) as u64 + 100;
            Ok(Action::RequeueAfter(Duration::from_millis(wait)))
        }
        None => Ok(Action::Done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_recent_time_and_job_names() {
        let schedule = Schedule::parse("*/5 * * * *").unwrap_or_else(|e| panic!("{e}"));
        let at = |s: &str| s.parse::<Timestamp>().unwrap_or_else(|e| panic!("{e}"));
        let since = at("2024-03-01T10:02:00Z");
        assert_eq!(most_recent(&schedule, since, at("2024-03-01T10:04:59Z"), &TimeZone::UTC), None);
        assert_eq!(
            most_recent(&schedule, since, at("2024-03-01T10:17:00Z"), &TimeZone::UTC),
            Some(at("2024-03-01T10:15:00Z"))
        );
        let cronjob = json!({"metadata": {"name": "report", "namespace": "default", "uid": "u"},
            "spec": {"jobTemplate": {"metadata": {"labels": {"team": "a"}}, "spec": {"backoffLimit": 2}}}});
        let job = job_for(&cronjob, at("2024-03-01T10:15:00Z"));
        assert_eq!(job["metadata"]["name"], format!("report-{}", at("2024-03-01T10:15:00Z").as_second() / 60));
        assert_eq!(job["metadata"]["annotations"][SCHEDULED_AT], "2024-03-01T10:15:00Z");
        assert_eq!(job["metadata"]["labels"]["team"], "a");
        assert_eq!(job["spec"]["backoffLimit"], 2);
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    }
}
