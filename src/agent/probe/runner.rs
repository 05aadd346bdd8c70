//! The probe task of one container run: drives its [`Prober`] on the real
//! clock, runs the checks, records `Unhealthy` events (repeats counted on
//! one event, as upstream's correlator does) and hands the effects to the
//! pod worker.

use super::check::{self, Target};
use super::{Effect, Kind, Prober, specs};
use crate::agent::AgentCtx;
use crate::agent::node::now;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A probe effect for the container run `run_id` (the runtime id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub container: String,
    pub run_id: String,
    pub effect: Effect,
}

/// The probes of a container run that just started (or was adopted).
pub struct Probing {
    /// Whether the container counts as started (no startup probe) and ready (no probe says otherwise yet).
    pub started: bool,
    pub ready: bool,
    /// `None` when the container has no probes.
    pub task: Option<JoinHandle<()>>,
}

/// Starts probing `container` of `pod` (run `run_id`). `resume` carries the
/// (started, ready) state of an adopted container; `None` for a new run.
pub fn spawn(
    ctx: &Arc<AgentCtx>,
    pod: &Value,
    container: &Value,
    run_id: &str,
    netns: Option<PathBuf>,
    resume: Option<(bool, bool)>,
    updates: mpsc::UnboundedSender<Update>,
) -> Probing {
    let specs = specs(container);
    let prober = match resume {
        Some((started, ready)) => Prober::resume(specs, started, ready),
        None => Prober::new(specs),
    };
    let (started, ready) = (prober.started(), prober.ready());
    if prober.next().is_none() {
        return Probing { started, ready, task: None };
    }
    let name = container.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let target = Target {
        streams: ctx.config.streams(),
        pod: pod.clone(),
        container: name.clone(),
        netns,
        pod_ip: pod.pointer("/status/podIP").and_then(Value::as_str).and_then(|ip| ip.parse().ok()),
    };
    let events = Events::new(ctx.clone(), pod.clone(), &name);
    let run = Run { prober, target, events, updates, container: name, run_id: run_id.to_string() };
    Probing { started, ready, task: Some(tokio::spawn(run.run())) }
}

struct Run {
    prober: Prober,
    target: Target,
    events: Events,
    updates: mpsc::UnboundedSender<Update>,
    container: String,
    run_id: String,
}

impl Run {
    async fn run(mut self) {
        let start = Instant::now();
        while let Some((kind, at)) = self.prober.next() {
            tokio::time::sleep_until(start + at).await;
            if self.updates.is_closed() {
                return;
            }
            let Some(spec) = self.prober.spec(kind).cloned() else { return };
            let outcome = check::run(&spec.action, spec.timeout, &self.target).await;
            if !outcome.success {
                tracing::debug!(container = %self.container, probe = kind.title(), message = %outcome.message, "probe failed");
                self.events.warn("Unhealthy", &format!("{} probe failed: {}", kind.title(), outcome.message)).await;
            }
            for effect in self.prober.observe(kind, outcome.success, start.elapsed()) {
                let update = Update { container: self.container.clone(), run_id: self.run_id.clone(), effect };
                if self.updates.send(update).is_err() {
                    return;
                }
            }
        }
    }
}

/// Records events about one container of a pod, like the kubelet does.
pub struct Events {
    pub ctx: Arc<AgentCtx>,
    pub pod: Value,
    pub container: String,
    /// The last event: its name, message and count, for repeats.
    last: Option<(String, String, u32)>,
}

impl Events {
    pub fn new(ctx: Arc<AgentCtx>, pod: Value, container: &str) -> Events {
        Events { ctx, pod, container: container.to_string(), last: None }
    }

    pub async fn warn(&mut self, reason: &str, message: &str) {
        self.record("Warning", reason, message).await;
    }

    pub async fn record(&mut self, event_type: &str, reason: &str, message: &str) {
        let text = |p: &str| self.pod.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
        let (namespace, name) = (text("/metadata/namespace"), text("/metadata/name"));
        let stamp = now();
        if let Some((event, last_message, count)) = &mut self.last
            && last_message == message
        {
            *count += 1;
            let path = format!("/api/v1/namespaces/{namespace}/events/{event}");
            let patch = json!({"count": *count, "lastTimestamp": stamp});
            if self.ctx.client.merge_patch(&path, patch).await.is_ok() {
                return;
            }
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let event_name = format!("{name}.{nanos:x}");
        let init =
            self.pod.pointer("/spec/initContainers").and_then(Value::as_array).is_some_and(|list| {
                list.iter().any(|c| c.get("name").and_then(Value::as_str) == Some(&self.container))
            });
        let field_path = format!("spec.{}{{{}}}", if init { "initContainers" } else { "containers" }, self.container);
        let node = &self.ctx.config.node_name;
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": event_name, "namespace": namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": name,
                "uid": text("/metadata/uid"), "fieldPath": field_path},
            "reason": reason, "message": message, "type": event_type,
            "source": {"component": "kubelet", "host": node},
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
            "reportingComponent": "kubelet", "reportingInstance": node,
        });
        match self.ctx.client.create(&format!("/api/v1/namespaces/{namespace}/events"), event).await {
            Ok(_) => self.last = Some((event_name, message.to_string(), 1)),
            Err(err) => tracing::warn!(reason, error = %err.message, "could not record an event"),
        }
    }
}

/// The `Killing` event of a container that failed its `kind` probe.
pub fn kill_message(container: &str, kind: Kind, restarts: bool) -> String {
    let title = kind.title().to_lowercase();
    if restarts {
        format!("Container {container} failed {title} probe, will be restarted")
    } else {
        format!("Container {container} failed {title} probe")
    }
}
