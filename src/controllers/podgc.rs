//! Pod garbage collection: pods bound to a node that no longer exists are
//! force-deleted (terminating ones at once, others after a 40 s quarantine
//! so a node that is just registering is not mistaken for a deleted one),
//! since no kubelet is left to finish them.

use super::Context;
use super::objects::{self, PODS, deleting, name, str_at};
use super::queue::{self, Action, Key, Secondary, Wake};
use crate::server::error::ApiError;
use jiff::Timestamp;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NODES: (&str, &str, &str) = ("", "v1", "nodes");
const QUARANTINE: i64 = 40;

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    // A node going away wakes every bound pod; the reconcile is cheap for pods on live nodes.
    let nodes = Secondary { gvr: NODES, wakes: |_| vec![Wake::All], deletions_only: true };
    let bound = |pod: &Value| !str_at(pod, "/spec/nodeName").is_empty();
    queue::run_filtered(ctx, shutdown, "podgc", PODS, bound, &[nodes], Duration::from_secs(60), reconcile).await;
}

/// Whether an orphaned pod (its node is gone) is due, or how long to wait.
pub fn orphan_due(pod: &Value, now: Timestamp) -> Result<(), Duration> {
    if deleting(pod) {
        return Ok(());
    }
    let created = str_at(pod, "/metadata/creationTimestamp").parse::<Timestamp>().unwrap_or(now);
    let age = now.as_second() - created.as_second();
    if age >= QUARANTINE { Ok(()) } else { Err(Duration::from_secs((QUARANTINE - age) as u64 + 1)) }
}

async fn reconcile(ctx: Context, (ns, pod_name): Key) -> Result<Action, ApiError> {
    let Some(pod) = objects::get(&ctx, PODS, &ns, &pod_name).await? else { return Ok(Action::Done) };
    let node = str_at(&pod, "/spec/nodeName");
    if node.is_empty() || objects::get(&ctx, NODES, "", node).await?.is_some() {
        return Ok(Action::Done);
    }
    if let Err(wait) = orphan_due(&pod, Timestamp::now()) {
        return Ok(Action::RequeueAfter(wait));
    }
    tracing::info!(pod = %name(&pod), namespace = %ns, node, "force-deleting a pod whose node is gone");
    let path = objects::path(&ctx, PODS, Some(&ns), Some(&pod_name), None)?;
    objects::ignore_gone(ctx.client.delete(&path, Some(json!({"gracePeriodSeconds": 0}))).await)?;
    Ok(Action::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_wait_out_the_quarantine_unless_terminating() {
        let now: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap_or_else(|e| panic!("{e}"));
        let young = json!({"metadata": {"creationTimestamp": "2024-01-01T00:00:50Z"}});
        assert_eq!(orphan_due(&young, now), Err(Duration::from_secs(31)));
        let old = json!({"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"}});
        assert_eq!(orphan_due(&old, now), Ok(()));
        let terminating = json!({"metadata": {"creationTimestamp": "2024-01-01T00:00:50Z", "deletionTimestamp": "2024-01-01T00:00:55Z"}});
        assert_eq!(orphan_due(&terminating, now), Ok(()));
    }
}
