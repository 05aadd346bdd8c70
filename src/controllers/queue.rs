//! The loop every simple controller shares: list+watch one resource, queue
//! the keys that changed (deduplicated), reconcile them one at a time, retry
//! failures with backoff and requeue everything on a periodic resync.

use super::Context;
use crate::server::client;
use crate::server::error::ApiError;
use futures::StreamExt;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What to do after a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Done,
    RequeueAfter(Duration),
}

/// An object key: (namespace, name); the namespace is empty for cluster objects.
pub type Key = (String, String);

pub fn key_of(obj: &Value) -> Key {
    let text = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
    (text("/metadata/namespace"), text("/metadata/name"))
}

/// Runs `reconcile` for every object of `group/version/plural` that changes.
pub async fn run<F, Fut>(
    ctx: Context,
    shutdown: CancellationToken,
    name: &'static str,
    gvr: (&str, &str, &str),
    resync: Duration,
    reconcile: F,
) where
    F: Fn(Context, Key) -> Fut,
    Fut: Future<Output = Result<Action, ApiError>>,
{
    let Some(res) = ctx.catalog.lookup(gvr.0, gvr.1, gvr.2) else {
        tracing::error!(controller = name, "resource {}/{}/{} is not served", gvr.0, gvr.1, gvr.2);
        return;
    };
    let collection = client::path(&res, None, None, None);
    let mut due: BTreeMap<Key, Instant> = BTreeMap::new();
    let mut failures: BTreeMap<Key, u32> = BTreeMap::new();
    let mut next_resync = Instant::now() + resync;
    'watch: loop {
        let mut watch = match ctx.client.watch(&format!("{collection}?watch=true&allowWatchBookmarks=true")).await {
            Ok(watch) => Box::pin(watch),
            Err(err) => {
                tracing::warn!(controller = name, error = %err.message, "watch failed; retrying");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => continue }
            }
        };
        loop {
            let wake = due.values().min().copied().unwrap_or(next_resync).min(next_resync);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                event = watch.next() => match event {
                    Some((kind, obj)) if kind != "BOOKMARK" && kind != "ERROR" => {
                        due.insert(key_of(&obj), Instant::now());
                    }
                    Some(_) => {}
                    None => continue 'watch,
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            if now >= next_resync {
                next_resync = now + resync;
                match ctx.client.list(&collection).await {
                    Ok(items) => items.iter().for_each(|obj| {
                        due.entry(key_of(obj)).or_insert(now);
                    }),
                    Err(err) => tracing::warn!(controller = name, error = %err.message, "resync list failed"),
                }
            }
            let ready: BTreeSet<Key> = due.iter().filter(|(_, at)| **at <= now).map(|(k, _)| k.clone()).collect();
            for key in ready {
                due.remove(&key);
                match reconcile(ctx.clone(), key.clone()).await {
                    Ok(Action::Done) => {
                        failures.remove(&key);
                    }
                    Ok(Action::RequeueAfter(after)) => {
                        due.insert(key, Instant::now() + after);
                    }
                    Err(err) => {
                        let count = failures.entry(key.clone()).or_insert(0);
                        *count += 1;
                        let backoff = Duration::from_millis(100u64 << (*count).min(8));
                        tracing::warn!(controller = name, namespace = %key.0, name = %key.1, error = %err.message, "reconcile failed");
                        due.insert(key, Instant::now() + backoff);
                    }
                }
            }
        }
    }
}
