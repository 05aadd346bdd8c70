//! Leader election over a coordination/v1 Lease (`kube-system/kube-controller-manager`),
//! as upstream's: with several servers only the holder runs the controllers;
//! it renews every 2 s, others take over once the lease is 15 s stale, and a
//! graceful stop releases the lease so a restarted server leads at once.

use super::Context;
use super::objects::{self, int_at, str_at};
use crate::server::error::ApiError;
use jiff::Timestamp;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const LEASES: (&str, &str, &str) = ("coordination.k8s.io", "v1", "leases");
const NAMESPACE: &str = "kube-system";
pub const LEASE: &str = "kube-controller-manager";
const DURATION: i64 = 15;
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_secs(2);

/// What to do with the lease as it is now.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it (or the holder went quiet): take it.
    Acquire,
    /// It is ours: renew it.
    Renew,
    /// Someone else holds it.
    Follow,
}

/// The pure decision over the current lease.
pub fn decide(lease: Option<&Value>, me: &str, now: Timestamp) -> Decision {
    let Some(lease) = lease else { return Decision::Acquire };
    let holder = str_at(lease, "/spec/holderIdentity");
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let renewed = str_at(lease, "/spec/renewTime").parse::<Timestamp>().ok();
    let duration = int_at(lease, "/spec/leaseDurationSeconds").unwrap_or(DURATION);
    match renewed {
        Some(at) if now.as_second() - at.as_second() <= duration => Decision::Follow,
        _ => Decision::Acquire,
    }
}

fn micro_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

/// One attempt to take or keep the lease; `Ok(true)` while we hold it.
async fn try_lead(ctx: &Context, me: &str) -> Result<bool, ApiError> {
    let now = Timestamp::now();
    let lease = objects::get(ctx, LEASES, NAMESPACE, LEASE).await?;
    let decision = decide(lease.as_ref(), me, now);
    if decision == Decision::Follow {
        return Ok(false);
    }
    let transitions = lease.as_ref().and_then(|l| int_at(l, "/spec/leaseTransitions")).unwrap_or(0);
    let mut spec = json!({"holderIdentity": me, "leaseDurationSeconds": DURATION, "renewTime": micro_time(now),
        "leaseTransitions": if decision == Decision::Acquire && lease.is_some() { transitions + 1 } else { transitions }});
    spec["acquireTime"] = match (&decision, &lease) {
        (Decision::Renew, Some(l)) => l.pointer("/spec/acquireTime").cloned().unwrap_or(json!(micro_time(now))),
        _ => json!(micro_time(now)),
    };
    let result = match lease {
        None => {
            let obj = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": LEASE, "namespace": NAMESPACE}, "spec": spec});
            ctx.client.create(&objects::path(ctx, LEASES, Some(NAMESPACE), None, None)?, obj).await
        }
        Some(mut current) => {
            current["spec"] = spec;
            ctx.client.update(&objects::path(ctx, LEASES, Some(NAMESPACE), Some(LEASE), None)?, current).await
        }
    };
    match result {
        Ok(_) => Ok(true),
        // Someone else wrote it first.
        Err(err) if err.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// Gives the lease up (graceful stop), so the next leader need not wait.
async fn release(ctx: &Context, me: &str) {
    let Ok(Some(mut lease)) = objects::get(ctx, LEASES, NAMESPACE, LEASE).await else { return };
    if str_at(&lease, "/spec/holderIdentity") != me {
        return;
    }
    lease["spec"]["holderIdentity"] = json!("");
    lease["spec"]["leaseDurationSeconds"] = json!(1);
    let Ok(path) = objects::path(ctx, LEASES, Some(NAMESPACE), Some(LEASE), None) else { return };
    match ctx.client.update(&path, lease).await {
        Ok(_) => tracing::info!(identity = me, "released the controller lease"),
        Err(err) => tracing::warn!(identity = me, error = %err.message, "could not release the controller lease"),
    }
}

/// Runs `start` while this process holds the lease; stops what it started
/// when the lease is lost or `shutdown` is cancelled.
pub async fn run<F>(ctx: Context, shutdown: CancellationToken, start: F)
where
    F: Fn(Context, CancellationToken) -> JoinSet<()>,
{
    let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "kube".into());
    let me = format!("{host}_{}", uuid::Uuid::new_v4());
    let mut leading: Option<(CancellationToken, JoinSet<()>, Instant)> = None;
    loop {
        match try_lead(&ctx, &me).await {
            Ok(true) => match leading.as_mut() {
                Some((_, _, renewed)) => *renewed = Instant::now(),
                None => {
                    tracing::info!(identity = %me, lease = LEASE, "became the leader; starting controllers");
                    let token = shutdown.child_token();
                    leading = Some((token.clone(), start(ctx.clone(), token), Instant::now()));
                }
            },
            Ok(false) if leading.is_some() => {
                tracing::warn!(identity = %me, "another server took the controller lease");
                if let Some((token, tasks, _)) = leading.take() {
                    token.cancel();
                    tasks.join_all().await;
                }
            }
            Ok(false) => tracing::debug!(identity = %me, "following the controller lease holder"),
            Err(err) => {
                tracing::warn!(identity = %me, error = %err.message, "could not reach the controller lease");
                if leading.as_ref().is_some_and(|(_, _, renewed)| renewed.elapsed() > RENEW_DEADLINE) {
                    tracing::warn!(identity = %me, "lease not renewed in time; stopping controllers");
                    if let Some((token, tasks, _)) = leading.take() {
                        token.cancel();
                        tasks.join_all().await;
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
    if let Some((token, tasks, _)) = leading.take() {
        token.cancel();
        tasks.join_all().await;
        release(&ctx, &me).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: &str) -> Value {
        json!({"spec": {"holderIdentity": holder, "renewTime": renewed, "leaseDurationSeconds": 15}})
    }

    #[test]
    fn decisions_over_the_lease() {
        let now: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decide(None, "me", now), Decision::Acquire);
        assert_eq!(decide(Some(&lease("me", "2024-01-01T00:00:00.000000Z")), "me", now), Decision::Renew);
        assert_eq!(decide(Some(&lease("other", "2024-01-01T00:00:50.000000Z")), "me", now), Decision::Follow);
        assert_eq!(decide(Some(&lease("other", "2024-01-01T00:00:30.000000Z")), "me", now), Decision::Acquire);
        assert_eq!(decide(Some(&lease("", "2024-01-01T00:00:59.000000Z")), "me", now), Decision::Acquire);
    }
}
