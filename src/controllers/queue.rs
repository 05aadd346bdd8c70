//! The loop every simple controller shares: list+watch one resource (and,
//! optionally, secondary resources whose changes wake primary keys), queue
//! the keys that changed (deduplicated), reconcile them one at a time, retry
//! failures with backoff and requeue everything on a periodic resync.

use super::Context;
use crate::server::client;
use crate::server::error::ApiError;
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

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

/// Which primary keys a change of a secondary object wakes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    Key(Key),
    /// Every known primary object of a namespace.
    Namespace(String),
    /// Every known primary object.
    All,
}

/// A secondary resource to watch and how its objects map to primary keys.
pub struct Secondary {
    pub gvr: (&'static str, &'static str, &'static str),
    pub wakes: fn(&Value) -> Vec<Wake>,
    /// Only deletions of secondary objects wake (e.g. a node going away).
    pub deletions_only: bool,
}

/// The primary key of the object's controller owner of `kind`, if any.
pub fn wake_owner(obj: &Value, kind: &str) -> Vec<Wake> {
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .filter(|r| r.get("kind").and_then(Value::as_str) == Some(kind))
        .filter_map(|r| r.get("name").and_then(Value::as_str))
        .map(|name| Wake::Key((ns.to_string(), name.to_string())))
        .collect()
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
    run_with(ctx, shutdown, name, gvr, &[], resync, reconcile).await;
}

/// How a secondary resource's objects map to primary keys (`None` for the primary).
type Mapper = Option<(fn(&Value) -> Vec<Wake>, bool)>;
type Events = BoxStream<'static, (Mapper, String, Value)>;

/// Opens the watches: the primary one (no mapper) and every secondary one.
async fn watch_all(ctx: &Context, collections: &[(String, Mapper)]) -> Result<SelectAll<Events>, ApiError> {
    let mut all = SelectAll::new();
    for (collection, wakes) in collections {
        let wakes = *wakes;
        let stream = ctx.client.watch(&format!("{collection}?watch=true&allowWatchBookmarks=true")).await?;
        let events: Events = Box::pin(stream.map(move |(kind, obj)| (wakes, kind, obj)));
        all.push(events);
    }
    Ok(all)
}

/// [`run`] with secondary resources whose changes wake primary keys.
pub async fn run_with<F, Fut>(
    ctx: Context,
    shutdown: CancellationToken,
    name: &'static str,
    gvr: (&str, &str, &str),
    secondaries: &[Secondary],
    resync: Duration,
    reconcile: F,
) where
    F: Fn(Context, Key) -> Fut,
    Fut: Future<Output = Result<Action, ApiError>>,
{
    run_filtered(ctx, shutdown, name, gvr, |_| true, secondaries, resync, reconcile).await;
}

/// [`run_with`] for the primary objects `interested` accepts only (e.g. the
/// scheduler's pending pods): others are neither queued nor woken.
#[allow(clippy::too_many_arguments)]
pub async fn run_filtered<F, Fut>(
    ctx: Context,
    shutdown: CancellationToken,
    name: &'static str,
    gvr: (&str, &str, &str),
    interested: fn(&Value) -> bool,
    secondaries: &[Secondary],
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
    let mut collections = vec![(collection.clone(), None)];
    for secondary in secondaries {
        let (g, v, p) = secondary.gvr;
        let Some(res) = ctx.catalog.lookup(g, v, p) else {
            tracing::error!(controller = name, "resource {g}/{v}/{p} is not served");
            return;
        };
        collections.push((client::path(&res, None, None, None), Some((secondary.wakes, secondary.deletions_only))));
    }
    let mut due: BTreeMap<Key, Instant> = BTreeMap::new();
    let mut failures: BTreeMap<Key, u32> = BTreeMap::new();
    let mut known: BTreeSet<Key> = BTreeSet::new();
    // The first pass lists everything, so objects that exist before the watch are reconciled.
    let mut next_resync = Instant::now();
    'watch: loop {
        let mut watch = match watch_all(&ctx, &collections).await {
            Ok(watch) => watch,
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
                    Some((_, kind, _)) if kind == "BOOKMARK" || kind == "ERROR" => {}
                    Some((None, kind, obj)) => {
                        let key = key_of(&obj);
                        if kind == "DELETED" {
                            known.remove(&key);
                            due.insert(key, Instant::now());
                        } else if interested(&obj) {
                            known.insert(key.clone());
                            due.insert(key, Instant::now());
                        } else {
                            known.remove(&key);
                        }
                    }
                    Some((Some((_, true)), kind, _)) if kind != "DELETED" => {}
                    Some((Some((wakes, _)), _, obj)) => {
                        let now = Instant::now();
                        for wake in wakes(&obj) {
                            match wake {
                                Wake::Key(key) => { due.insert(key, now); }
                                Wake::Namespace(ns) => known.iter().filter(|k| k.0 == ns).for_each(|k| { due.insert(k.clone(), now); }),
                                Wake::All => known.iter().for_each(|k| { due.insert(k.clone(), now); }),
                            }
                        }
                    }
                    None => {
                        // Events may have been missed until the next watch starts: relist at once.
                        next_resync = Instant::now();
                        continue 'watch;
                    }
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            if now >= next_resync {
                next_resync = now + resync;
                match ctx.client.list(&collection).await {
                    Ok(items) => {
                        known = items.iter().filter(|obj| interested(obj)).map(key_of).collect();
                        known.iter().for_each(|key| {
                            due.entry(key.clone()).or_insert(now);
                        });
                    }
                    Err(err) => tracing::warn!(controller = name, error = %err.message, "resync list failed"),
                }
            }
            let ready: BTreeSet<Key> = due.iter().filter(|(_, at)| **at <= now).map(|(k, _)| k.clone()).collect();
            for key in ready {
                due.remove(&key);
                let span = tracing::debug_span!("reconcile", controller = name, namespace = %key.0, name = %key.1);
                match reconcile(ctx.clone(), key.clone()).instrument(span).await {
                    Ok(Action::Done) => {
                        failures.remove(&key);
                    }
                    Ok(Action::RequeueAfter(after)) => {
                        failures.remove(&key);
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
