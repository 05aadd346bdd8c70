//! ResourceQuota status: keeps `status.hard` (a copy of `spec.hard`) and
//! `status.used` (what the namespace's objects charge, terminal pods not
//! counted) current, as upstream's resourcequota controller does. Changes
//! of the commonly limited kinds wake their namespace's quotas; everything
//! else is caught by the resync.

use super::Context;
use super::objects::{self, str_at};
use super::queue::{self, Action, Key, Secondary, Wake};
use crate::server::client;
use crate::server::error::ApiError;
use crate::server::quota::{self, usage};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const QUOTAS: (&str, &str, &str) = ("", "v1", "resourcequotas");

fn wake_namespace(obj: &Value) -> Vec<Wake> {
    vec![Wake::Namespace(str_at(obj, "/metadata/namespace").to_string())]
}

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let watched = ["pods", "services", "configmaps", "secrets", "persistentvolumeclaims", "replicationcontrollers"];
    let secondaries: Vec<Secondary> = watched
        .iter()
        .map(|plural| Secondary { gvr: ("", "v1", plural), wakes: wake_namespace, deletions_only: false })
        .collect();
    queue::run_with(ctx, shutdown, "resourcequota", QUOTAS, &secondaries, Duration::from_secs(30), reconcile).await;
}

async fn reconcile(ctx: Context, (ns, name): Key) -> Result<Action, ApiError> {
    let Some(mut quota) = objects::get(&ctx, QUOTAS, &ns, &name).await? else { return Ok(Action::Done) };
    let hard = usage::parse_hard(quota.pointer("/spec/hard"));
    let sources: BTreeSet<(String, String)> = hard.keys().filter_map(|r| usage::source(r)).collect();
    let mut used = usage::Usage::new();
    for (group, plural) in sources {
        let Some(res) = quota::stored(&ctx.catalog, &group, &plural) else { continue };
        let objects = ctx.client.list(&client::path(&res, Some(&ns), None, None)).await?;
        for (resource, amount) in quota::charged(&quota, &hard, &group, &plural, &objects) {
            *used.entry(resource).or_insert(0) += amount;
        }
    }
    let status = json!({
        "hard": quota.pointer("/spec/hard").cloned().unwrap_or(json!({})),
        "used": Value::Object(usage::to_status(&hard, &used)),
    });
    if quota.get("status") == Some(&status) {
        return Ok(Action::Done);
    }
    tracing::debug!(quota = %name, namespace = %ns, used = %status["used"], "updating quota usage");
    quota["status"] = status;
    let path = objects::path(&ctx, QUOTAS, Some(&ns), Some(&name), Some("status"))?;
    match ctx.client.update(&path, quota).await {
        Ok(_) => Ok(Action::Done),
        Err(err) if err.code == 404 => Ok(Action::Done),
        // A newer quota: the watch brings it back.
        Err(err) if err.code == 409 => Ok(Action::RequeueAfter(Duration::from_millis(100))),
        Err(err) => Err(err),
    }
}
