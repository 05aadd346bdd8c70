//! The namespace controller: a namespace being deleted has its content
//! deleted, then its `kubernetes` finalizer removed, which lets it go.

use super::Context;
use super::objects;
use super::queue::{self, Action, Key};
use crate::server::client;
use crate::server::error::ApiError;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NAMESPACES: (&str, &str, &str) = ("", "v1", "namespaces");

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    queue::run(ctx, shutdown, "namespace", NAMESPACES, Duration::from_secs(60), reconcile).await;
}

async fn reconcile(ctx: Context, (_, name): Key) -> Result<Action, ApiError> {
    let Some(ns) = objects::get(&ctx, NAMESPACES, "", &name).await? else { return Ok(Action::Done) };
    if ns.pointer("/metadata/deletionTimestamp").is_none() {
        return Ok(Action::Done);
    }
    let mut remaining = 0;
    for res in ctx.catalog.all().iter().filter(|r| r.namespaced && r.holds_objects()) {
        let collection = client::path(res, Some(&name), None, None);
        match ctx.client.delete(&collection, None).await {
            Ok(_) => {}
            Err(err) if err.code == 404 || err.code == 405 => continue,
            Err(err) => return Err(err),
        }
        remaining += ctx.client.list(&collection).await?.len();
    }
    if remaining > 0 {
        tracing::info!(namespace = %name, remaining, "waiting for namespace content to go");
        return Ok(Action::RequeueAfter(Duration::from_secs(1)));
    }
    let finalizers: Vec<Value> = ns
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter(|x| x.as_str() != Some("kubernetes")).cloned().collect())
        .unwrap_or_default();
    let mut finalized = ns.clone();
    finalized["spec"] = json!({"finalizers": finalizers});
    let finalize = objects::path(&ctx, NAMESPACES, None, Some(&name), Some("finalize"))?;
    objects::ignore_gone(ctx.client.update(&finalize, finalized).await)?;
    Ok(Action::Done)
}
