//! The TTL-after-finished controller: a finished Job with
//! `spec.ttlSecondsAfterFinished` is deleted (with its pods, in the
//! background) that many seconds after it completed or failed.

use super::Context;
use super::job::{JOBS, finished};
use super::objects::{self, condition, deleting, int_at, str_at};
use super::queue::{self, Action, Key};
use crate::server::error::ApiError;
use jiff::Timestamp;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    queue::run(ctx, shutdown, "ttl-after-finished", JOBS, Duration::from_secs(60), reconcile).await;
}

/// When a finished job expires: its finish time plus the TTL.
pub fn expiry(job: &Value) -> Option<Timestamp> {
    let ttl = int_at(job, "/spec/ttlSecondsAfterFinished")?;
    let kind = finished(job)?;
    let finished_at = condition(job, kind)
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .or_else(|| job.pointer("/status/completionTime").and_then(Value::as_str))?
        .parse::<Timestamp>()
        .ok()?;
    Timestamp::from_second(finished_at.as_second() + ttl).ok()
}

async fn reconcile(ctx: Context, (ns, name): Key) -> Result<Action, ApiError> {
    let Some(job) = objects::get(&ctx, JOBS, &ns, &name).await? else { return Ok(Action::Done) };
    if deleting(&job) {
        return Ok(Action::Done);
    }
    let Some(expires) = expiry(&job) else { return Ok(Action::Done) };
    let now = Timestamp::now();
    if expires > now {
        let wait = (expires.as_second() - now.as_second()).max(0) as u64 + 1;
        return Ok(Action::RequeueAfter(Duration::from_secs(wait)));
    }
    tracing::info!(job = %name, namespace = %ns, "deleting a finished job past its TTL");
    let path = objects::path(&ctx, JOBS, Some(&ns), Some(&name), None)?;
    let options = json!({"propagationPolicy": "Background",
        "preconditions": {"uid": str_at(&job, "/metadata/uid")}});
    objects::ignore_gone(ctx.client.delete(&path, Some(options)).await)?;
    Ok(Action::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_jobs_expire_after_their_ttl() {
        let mut job = json!({"spec": {"ttlSecondsAfterFinished": 30},
            "status": {"conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}});
        assert_eq!(expiry(&job), "2024-01-01T00:00:30Z".parse().ok());
        job["status"]["conditions"][0]["status"] = json!("False");
        assert_eq!(expiry(&job), None);
        assert_eq!(expiry(&json!({"status": {"conditions": [{"type": "Failed", "status": "True"}]}})), None);
    }
}
