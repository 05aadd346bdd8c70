//! One worker task per pod bound to this node: sets up the sandbox, runs
//! init containers in order and then the app containers, restarts them by
//! policy with back-off, reports `pods/status`, and on deletion stops the
//! containers (SIGTERM, SIGKILL after the grace period), cleans up and
//! removes the pod object.

use super::AgentCtx;
use super::error::AgentError;
use super::node::now;
use super::probe;
use super::reaper::Exit;
use super::sandbox::{self, PodPaths};
use super::status::{self, ContainerRecord, PodFacts, State, Terminated};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

mod plan;
mod start;
mod stop;

/// What the manager tells a worker: the pod as the API has it, or `None` when it is gone.
pub type PodUpdates = watch::Receiver<Option<Value>>;

/// How often running pods' volumes are rewritten from their sources, as the kubelet's sync period.
const VOLUME_REFRESH: Duration = Duration::from_secs(60);

struct Worker {
    ctx: Arc<AgentCtx>,
    uid: String,
    key: String,
    pod: Value,
    paths: PodPaths,
    records: Vec<ContainerRecord>,
    exits_tx: mpsc::UnboundedSender<(String, Exit)>,
    exits: mpsc::UnboundedReceiver<(String, Exit)>,
    /// When a container may be (re)started next, and when its last run began.
    next_start: HashMap<String, Instant>,
    /// Failed image pulls in a row, per container (the pull back-off).
    pull_failures: HashMap<String, u32>,
    run_started: HashMap<String, Instant>,
    sandbox_ready: bool,
    /// When the volumes were last refreshed (configMaps, Secrets, tokens).
    volumes_refreshed: Option<Instant>,
    /// Runs of sidecars already told to stop because the pod is done.
    stopping: std::collections::HashSet<String>,
    reported: Option<Value>,
    start_time: String,
    /// Probe tasks by container name, and what they found.
    probes: HashMap<String, tokio::task::JoinHandle<()>>,
    probe_tx: mpsc::UnboundedSender<probe::Update>,
    probe_rx: mpsc::UnboundedReceiver<probe::Update>,
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// The containers of a pod, init containers first: (spec, is init).
fn containers(pod: &Value) -> Vec<(Value, bool)> {
    let list = |key: &str, init: bool| {
        pod.pointer(key).and_then(Value::as_array).cloned().unwrap_or_default().into_iter().map(move |c| (c, init))
    };
    list("/spec/initContainers", true).chain(list("/spec/containers", false)).collect()
}

/// Runs the worker of pod `uid` until the pod is deleted and cleaned up.
pub async fn run(ctx: Arc<AgentCtx>, uid: String, mut updates: PodUpdates) {
    let Some(pod) = updates.borrow().clone().or_else(|| load_pod(&ctx, &uid)) else { return };
    let key = format!("{}/{}", text(&pod, "/metadata/namespace"), text(&pod, "/metadata/name"));
    let paths = PodPaths::new(&ctx, text(&pod, "/metadata/namespace"), text(&pod, "/metadata/name"), &uid);
    let (exits_tx, exits) = mpsc::unbounded_channel();
    let (probe_tx, probe_rx) = mpsc::unbounded_channel();
    let start_time = pod.pointer("/status/startTime").and_then(Value::as_str).map(str::to_string).unwrap_or_else(now);
    let mut worker = Worker {
        ctx,
        uid,
        key,
        pod,
        paths,
        records: Vec::new(),
        exits_tx,
        exits,
        next_start: HashMap::new(),
        pull_failures: HashMap::new(),
        run_started: HashMap::new(),
        sandbox_ready: false,
        volumes_refreshed: None,
        stopping: Default::default(),
        reported: None,
        start_time,
        probes: HashMap::new(),
        probe_tx,
        probe_rx,
    };
    worker.adopt();
    let span = tracing::info_span!("pod", pod = %worker.key, uid = %worker.uid);
    let _ = tracing::Instrument::instrument(worker.main(&mut updates), span).await;
}

fn record_id(records: &[ContainerRecord], name: &str) -> Option<String> {
    records.iter().find(|r| r.name == name).and_then(|r| r.id.clone())
}

fn load_pod(ctx: &AgentCtx, uid: &str) -> Option<Value> {
    let path = ctx.config.data_dir.join("pods").join(uid).join("pod.json");
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

impl Worker {
    async fn main(&mut self, updates: &mut PodUpdates) {
        loop {
            let latest = updates.borrow_and_update().clone();
            let Some(pod) = latest else {
                // The object is gone from the API: stop at once and clean up.
                tracing::info!("pod removed from the API; stopping its containers");
                self.terminate(Duration::ZERO).await;
                self.cleanup(true);
                return;
            };
            // A static pod is handed over again when its mirror pod was
            // recreated: post the status to the new one.
            if super::static_pods::is_static(&pod) {
                self.reported = None;
            }
            self.pod = pod;
            if self.pod.pointer("/metadata/deletionTimestamp").is_some() {
                let grace = self
                    .pod
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .or_else(|| self.pod.pointer("/spec/terminationGracePeriodSeconds"))
                    .and_then(Value::as_u64)
                    .unwrap_or(30);
                tracing::info!(grace_seconds = grace, "pod deleted; stopping its containers");
                self.terminate(Duration::from_secs(grace)).await;
                self.report().await;
                self.cleanup(false);
                let path = format!(
                    "/api/v1/namespaces/{}/pods/{}",
                    text(&self.pod, "/metadata/namespace"),
                    text(&self.pod, "/metadata/name")
                );
                let options = json!({"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}});
                match self.ctx.client.delete(&path, Some(options)).await {
                    Ok(_) => tracing::info!("pod object removed"),
                    Err(err) if err.code == 404 || err.code == 409 => {}
                    Err(err) => tracing::warn!(error = %err.message, "cannot remove the pod object"),
                }
                self.cleanup(true);
                return;
            }
            let wake = self.sync().await;
            self.report().await;
            let sleep = wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
            tokio::select! {
                changed = updates.changed() => if changed.is_err() { return },
                Some((id, exit)) = self.exits.recv() => self.exited(&id, exit).await,
                Some(update) = self.probe_rx.recv() => self.probed(update).await,
                _ = tokio::time::sleep_until(sleep) => {}
            }
        }
    }

    fn record_mut(&mut self, name: &str) -> Option<&mut ContainerRecord> {
        self.records.iter_mut().find(|r| r.name == name)
    }

    fn save(&self, name: &str) {
        let Some(record) = self.records.iter().find(|r| r.name == name) else { return };
        let path = self.paths.records().join(format!("{name}.json"));
        match serde_json::to_vec(record) {
            Ok(bytes) => {
                // Written whole then renamed: exec and probes read records concurrently.
                let partial = path.with_extension("json.partial");
                if let Err(err) = std::fs::write(&partial, bytes).and_then(|()| std::fs::rename(&partial, &path)) {
                    tracing::warn!(path = %path.display(), error = %err, "cannot save container record");
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot encode container record"),
        }
    }

    /// Loads the records a previous agent left and adopts containers still running.
    fn adopt(&mut self) {
        let dir = self.paths.records();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Ok(bytes) = std::fs::read(entry.path()) else { continue };
            let Ok(mut record) = serde_json::from_slice::<ContainerRecord>(&bytes) else { continue };
            if let (State::Running { started_at }, Some(id)) = (record.state.clone(), record.id.clone()) {
                match self.ctx.runtime.running_pid(&id) {
                    Some(pid) => {
                        tracing::info!(container = %record.name, pid, "adopted a running container");
                        record.pid = Some(pid);
                        let rx = self.ctx.reaper.watch_foreign(pid);
                        let tx = self.exits_tx.clone();
                        tokio::spawn(async move {
                            if let Ok(exit) = rx.await {
                                let _ = tx.send((id, exit));
                            }
                        });
                    }
                    None => {
                        record.state = State::Terminated(Terminated {
                            exit_code: 255,
                            signal: None,
                            reason: "Unknown".into(),
                            message: Some("the container exited while the agent was down".into()),
                            started_at,
                            finished_at: now(),
                        });
                        record.pid = None;
                        let _ = self.ctx.runtime.delete(&id);
                        let _ = self.ctx.host.unmount(&self.run_dir(&record.name, record.restart_count).join("rootfs"));
                    }
                }
            }
            self.records.push(record);
        }
        self.sandbox_ready = !self.records.is_empty();
        let sidecars: Vec<String> = containers(&self.pod)
            .into_iter()
            .filter(|(c, init)| *init && plan::is_sidecar(c))
            .filter_map(|(c, _)| c.get("name").and_then(Value::as_str).map(str::to_string))
            .collect();
        let adopted: Vec<(String, String, bool, bool)> = self
            .records
            .iter()
            .filter(|r| r.running() && (!r.init || sidecars.contains(&r.name)))
            .filter_map(|r| Some((r.name.clone(), r.id.clone()?, !r.startup_pending, r.ready)))
            .collect();
        for (name, id, started, ready) in adopted {
            self.start_probes(&name, &id, Some((started, ready)));
        }
    }

    fn run_dir(&self, name: &str, restart: u32) -> PathBuf {
        self.paths.root.join("run").join(name).join(restart.to_string())
    }

    /// Moves the pod toward its spec; returns when to look again.
    async fn sync(&mut self) -> Option<Instant> {
        if !self.sandbox_ready {
            match sandbox::prepare(&self.ctx, &self.pod, &self.paths).await {
                Ok(()) => {
                    self.sandbox_ready = true;
                    self.volumes_refreshed = Some(Instant::now());
                    let _ = std::fs::write(
                        self.paths.root.join("pod.json"),
                        serde_json::to_vec(&self.pod).unwrap_or_default(),
                    );
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot create the pod sandbox");
                    return Some(Instant::now() + Duration::from_secs(5));
                }
            }
        }
        let mut wake: Option<Instant> = None;
        let mut soonest = |at: Instant| wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
        if self.volumes_refreshed.is_none_or(|at| at.elapsed() >= VOLUME_REFRESH) {
            if let Err(err) = super::volumes::populate(&self.ctx, &self.pod, &self.paths).await {
                tracing::warn!(error = %err, "cannot refresh the pod's volumes");
            }
            self.volumes_refreshed = Some(Instant::now());
        }
        soonest(self.volumes_refreshed.map_or_else(Instant::now, |at| at + VOLUME_REFRESH));
        if let Some(sidecar) = plan::sidecar_to_stop(&self.pod, &self.records) {
            self.stop_sidecar(&sidecar);
        }
        for (container, init) in plan::to_start(&self.pod, &self.records) {
            let name = container.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            {
                let due = self.next_start.get(&name).copied().unwrap_or_else(Instant::now);
                if due > Instant::now() {
                    let key = self.key.clone();
                    let image = container.get("image").and_then(Value::as_str).unwrap_or_default().to_string();
                    if let Some(r) = self.record_mut(&name)
                        && let State::Waiting { reason, message } = r.state.clone()
                        && reason == "ErrImagePull"
                    {
                        let message = super::pull_secrets::backoff_message(&image, &message.unwrap_or_default());
                        r.state = State::Waiting { reason: "ImagePullBackOff".into(), message: Some(message) };
                        self.save(&name);
                    } else if let Some(r) = self.record_mut(&name)
                        && let State::Terminated(t) = r.state.clone()
                    {
                        let wait = due.saturating_duration_since(Instant::now()).as_secs().max(1);
                        r.last = Some(t);
                        r.state = State::Waiting {
                            reason: "CrashLoopBackOff".into(),
                            message: Some(format!("back-off {wait}s restarting failed container={name} pod={key}")),
                        };
                        self.save(&name);
                    }
                    soonest(due);
                } else if let Err(err) = self.start(&container, init).await {
                    tracing::warn!(container = %name, error = %err, "cannot start container");
                    let (reason, message, retry) = match &err {
                        AgentError::Pull { message, .. } => {
                            let failures = self.pull_failures.entry(name.clone()).or_default();
                            *failures += 1;
                            ("ErrImagePull", message.clone(), super::pull_secrets::pull_backoff(*failures))
                        }
                        AgentError::Reference { .. } | AgentError::Layer { .. } => {
                            ("ErrImagePull", err.to_string(), Duration::from_secs(5))
                        }
                        AgentError::NeverPull { .. } => ("ErrImageNeverPull", err.to_string(), Duration::from_secs(5)),
                        AgentError::ContainerConfig { .. } => {
                            ("CreateContainerConfigError", err.to_string(), Duration::from_secs(5))
                        }
                        _ => ("CreateContainerError", err.to_string(), Duration::from_secs(5)),
                    };
                    if let Some(r) = self.record_mut(&name) {
                        if let State::Terminated(t) = r.state.clone() {
                            r.last = Some(t);
                        }
                        r.state = State::Waiting { reason: reason.into(), message: Some(message) };
                    }
                    self.save(&name);
                    let retry = Instant::now() + retry;
                    self.next_start.insert(name.clone(), retry);
                    // A second later the kubelet shows the back-off instead.
                    soonest((Instant::now() + Duration::from_secs(1)).min(retry));
                } else {
                    // Look again at once: a started sidecar lets the next container start.
                    soonest(Instant::now());
                }
            }
        }
        wake
    }

    /// Posts the pod's status when it changed.
    async fn report(&mut self) {
        let host_ip = self.ctx.config.node_ip.to_string();
        let pod_ip = sandbox::pod_ip(&self.ctx, &self.pod, &self.uid);
        let now = now();
        let facts = PodFacts {
            host_ip: &host_ip,
            pod_ip: pod_ip.as_deref(),
            start_time: &self.start_time,
            now: &now,
            sandbox_ready: self.sandbox_ready,
        };
        let status = status::pod_status(&self.pod, &self.records, &facts);
        if self.reported.as_ref() == Some(&status) {
            return;
        }
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}/status",
            text(&self.pod, "/metadata/namespace"),
            text(&self.pod, "/metadata/name")
        );
        match self.ctx.client.merge_patch(&path, json!({"status": status})).await {
            Ok(_) => self.reported = Some(status),
            Err(err) if err.code == 404 => {}
            Err(err) => tracing::warn!(error = %err.message, "cannot update pod status"),
        }
    }
}
