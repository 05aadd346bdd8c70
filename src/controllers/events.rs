//! The event recorder: controllers report what they did as core/v1 Events,
//! named and shaped like upstream's (`<object>.<hex nanoseconds>`), so that
//! `kubectl get events` and `kubectl describe` read like Kubernetes.

use super::Context;
use super::objects::{self, name, str_at, uid};
use serde_json::{Value, json};

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

/// Records one event about `obj` (of `api_version`/`kind`) by `component`.
/// Failures are logged, never returned: an event is best-effort.
pub async fn record(
    ctx: &Context,
    component: &str,
    obj: &Value,
    (api_version, kind): (&str, &str),
    event_type: &str,
    reason: &str,
    message: &str,
) {
    let ns = match str_at(obj, "/metadata/namespace") {
        "" => "default",
        ns => ns,
    };
    let nanos = jiff::Timestamp::now().as_nanosecond();
    let now = objects::now();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{}.{:x}", name(obj), nanos), "namespace": ns},
        "involvedObject": {"apiVersion": api_version, "kind": kind, "namespace": str_at(obj, "/metadata/namespace"),
            "name": name(obj), "uid": uid(obj), "resourceVersion": str_at(obj, "/metadata/resourceVersion")},
        "reason": reason, "message": message, "type": event_type,
        "source": {"component": component},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "reportingComponent": component, "reportingInstance": "",
    });
    let result = match objects::path(ctx, ("", "v1", "events"), Some(ns), None, None) {
        Ok(path) => ctx.client.create(&path, event).await.map(|_| ()),
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => tracing::debug!(object = %name(obj), reason, "recorded an event"),
        Err(err) => tracing::warn!(object = %name(obj), reason, error = %err.message, "could not record an event"),
    }
}
