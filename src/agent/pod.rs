//! One worker task per pod bound to this node: sets up the sandbox, runs
//! init containers in order and then the app containers, restarts them by
//! policy with back-off, reports `pods/status`, and on deletion stops the
//! containers (SIGTERM, SIGKILL after the grace period), cleans up and
//! removes the pod object.

use super::AgentCtx;
use super::backoff;
use super::error::{AgentError, Result};
use super::node::now;
use super::probe;
use super::reaper::Exit;
use super::sandbox::{self, PodPaths};
use super::spec::{self, SpecInput};
use super::status::{self, ContainerRecord, PodFacts, State, Terminated};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

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
        let adopted: Vec<(String, String, bool, bool)> = self
            .records
            .iter()
            .filter(|r| r.running() && !r.init)
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
        let policy = self.pod.pointer("/spec/restartPolicy").and_then(Value::as_str).unwrap_or("Always").to_string();
        let mut wake: Option<Instant> = None;
        let mut soonest = |at: Instant| wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
        if self.volumes_refreshed.is_none_or(|at| at.elapsed() >= VOLUME_REFRESH) {
            if let Err(err) = super::volumes::populate(&self.ctx, &self.pod, &self.paths).await {
                tracing::warn!(error = %err, "cannot refresh the pod's volumes");
            }
            self.volumes_refreshed = Some(Instant::now());
        }
        soonest(self.volumes_refreshed.map_or_else(Instant::now, |at| at + VOLUME_REFRESH));
        for (container, init) in containers(&self.pod) {
            let name = container.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            let record = self.records.iter().find(|r| r.name == name).cloned();
            let start = match &record {
                None => true,
                Some(r) if r.running() => false,
                Some(r) => match (&r.state, &r.last) {
                    (State::Terminated(t), _) => {
                        // Init containers restart on failure unless the policy is Never.
                        if init {
                            t.exit_code != 0 && policy != "Never"
                        } else {
                            backoff::should_restart(&policy, t.exit_code)
                        }
                    }
                    (State::Waiting { .. }, _) => true,
                    _ => false,
                },
            };
            if start {
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
                }
            }
            // Init containers run one at a time, each to success, before the next.
            if init && !self.records.iter().any(|r| r.name == name && r.succeeded()) {
                break;
            }
        }
        wake
    }

    /// Pulls the image and starts one run of a container.
    async fn start(&mut self, container: &Value, init: bool) -> Result<()> {
        let name = container.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let image_name = container.get("image").and_then(Value::as_str).unwrap_or_default().to_string();
        if !self.records.iter().any(|r| r.name == name) {
            self.records.push(ContainerRecord::new(&name, init, &image_name));
            self.report().await;
        }
        let restart = match self.records.iter().find(|r| r.name == name) {
            Some(r) if r.id.is_some() => r.restart_count + 1,
            _ => 0,
        };
        let policy = container.get("imagePullPolicy").and_then(Value::as_str).unwrap_or_default();
        let keyring = super::pull_secrets::keyring(&self.ctx.client, &self.pod).await;
        // `_in_use` keeps image garbage collection away until the rootfs is mounted.
        let (image, _in_use) = self.ctx.images.ensure(&image_name, policy, &keyring).await?;
        self.pull_failures.remove(&name);
        let env = super::env::resolve(&self.ctx, &self.pod, container).await?;
        let id = format!("{}-{name}-{restart}", self.uid);
        let run_dir = self.run_dir(&name, restart);
        let rootfs = run_dir.join("rootfs");
        for dir in [run_dir.join("upper"), run_dir.join("work"), rootfs.clone()] {
            std::fs::create_dir_all(&dir).map_err(AgentError::io("create container folder", &dir))?;
        }
        self.ctx.host.mount_overlay(&image.rootfs, &run_dir.join("upper"), &run_dir.join("work"), &rootfs)?;
        let netns = (!sandbox::host_network(&self.pod)).then_some(self.paths.netns.as_path());
        let config = spec::render(&SpecInput {
            pod: &self.pod,
            container,
            image: &image,
            env: &env,
            netns,
            cgroups_path: format!("/kubepods/pod{}/{name}", self.uid),
            mounts: sandbox::container_mounts(&self.pod, container, &self.paths),
        });
        let config_path = run_dir.join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap_or_default())
            .map_err(AgentError::io("write runtime spec", &config_path))?;
        let log_dir = self.paths.logs.join(&name);
        std::fs::create_dir_all(&log_dir).map_err(AgentError::io("create log folder", &log_dir))?;
        let (log, done) = super::logs::container_log(&self.paths.logs, &name, restart);
        let _ = std::fs::remove_file(&done);
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(AgentError::sys("create a pipe"));
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let shim = super::logs::spawn_shim(out_r, err_r, &log, &done)?;
        drop(self.ctx.reaper.watch_child(shim));
        let runtime = self.ctx.runtime.clone();
        let (run_id, bundle) = (id.clone(), run_dir.clone());
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || runtime.run(&run_id, &bundle, out_w, err_w))
            .await
            .map_err(|err| AgentError::Runtime { id: id.clone(), message: format!("runtime task: {err}") })?;
        let pid = match result {
            Ok(pid) => pid,
            Err(err) => {
                let _ = self.ctx.host.unmount(&rootfs);
                return Err(err);
            }
        };
        tracing::info!(container = %name, id = %id, pid, restart, elapsed_ms = started.elapsed().as_millis() as u64, "container started");
        let rx = self.ctx.reaper.watch_child(pid);
        let tx = self.exits_tx.clone();
        let exit_id = id.clone();
        tokio::spawn(async move {
            if let Ok(exit) = rx.await {
                let _ = tx.send((exit_id, exit));
            }
        });
        self.run_started.insert(name.clone(), Instant::now());
        if let Some(r) = self.record_mut(&name) {
            if let State::Terminated(t) = r.state.clone() {
                r.last = Some(t);
            }
            if r.id.is_some() {
                r.restart_count += 1;
            }
            r.state = State::Running { started_at: now() };
            r.id = Some(id);
            r.pid = Some(pid);
            r.image_id = image.image_id.clone();
        }
        let probing =
            if init { None } else { record_id(&self.records, &name).map(|id| self.start_probes(&name, &id, None)) };
        if let Some(r) = self.record_mut(&name) {
            r.ready = probing.is_none_or(|(_, ready)| ready);
            r.startup_pending = probing.is_some_and(|(started, _)| !started);
        }
        self.save(&name);
        Ok(())
    }

    /// Starts the probes of container run `id`; returns its (started, ready) state.
    fn start_probes(&mut self, name: &str, id: &str, resume: Option<(bool, bool)>) -> (bool, bool) {
        if let Some(task) = self.probes.remove(name) {
            task.abort();
        }
        let Some((container, _)) =
            containers(&self.pod).into_iter().find(|(c, _)| c.get("name").and_then(Value::as_str) == Some(name))
        else {
            return (true, true);
        };
        let netns = (!sandbox::host_network(&self.pod)).then(|| self.paths.netns.clone());
        let probing = probe::spawn(&self.ctx, &self.pod, &container, id, netns, resume, self.probe_tx.clone());
        if let Some(task) = probing.task {
            self.probes.insert(name.to_string(), task);
        }
        (probing.started, probing.ready)
    }

    /// Applies what a probe found to the container run it probed.
    async fn probed(&mut self, update: probe::Update) {
        let probe::Update { container: name, run_id, effect } = update;
        let Some(record) = self.records.iter_mut().find(|r| r.id.as_deref() == Some(run_id.as_str()) && r.running())
        else {
            return;
        };
        match effect {
            probe::Effect::Started => record.startup_pending = false,
            probe::Effect::Ready(ready) => record.ready = ready,
            probe::Effect::Kill(kind) => {
                record.ready = false;
                let policy = self.pod.pointer("/spec/restartPolicy").and_then(Value::as_str).unwrap_or("Always");
                let message = probe::kill_message(&name, kind, policy != "Never");
                tracing::info!(container = %name, %message, "killing the container");
                probe::Events::new(self.ctx.clone(), self.pod.clone(), &name)
                    .record("Normal", "Killing", &message)
                    .await;
                if let Err(err) = self.ctx.runtime.kill(&run_id, Signal::SIGTERM) {
                    tracing::warn!(error = %err, "cannot signal container");
                }
                let grace =
                    self.pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_u64).unwrap_or(30);
                let runtime = self.ctx.runtime.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(grace)).await;
                    let _ = runtime.kill(&run_id, Signal::SIGKILL);
                });
            }
        }
        self.save(&name);
    }

    /// Records a container exit and releases its runtime state and rootfs.
    async fn exited(&mut self, id: &str, exit: Exit) {
        let Some(record) = self.records.iter_mut().find(|r| r.id.as_deref() == Some(id) && r.running()) else { return };
        let started_at = match &record.state {
            State::Running { started_at } => started_at.clone(),
            _ => String::new(),
        };
        let reason = if !exit.known {
            "Unknown"
        } else if exit.code == 0 {
            "Completed"
        } else {
            "Error"
        };
        tracing::info!(container = %record.name, exit_code = exit.code, "container exited");
        record.state = State::Terminated(Terminated {
            exit_code: exit.code,
            signal: exit.signal,
            reason: reason.into(),
            message: None,
            started_at,
            finished_at: now(),
        });
        record.pid = None;
        record.ready = false;
        let (name, restart) = (record.name.clone(), record.restart_count);
        if let Some(task) = self.probes.remove(&name) {
            task.abort();
        }
        let ran = self.run_started.get(&name).map(|s| s.elapsed()).unwrap_or_default();
        self.next_start.insert(name.clone(), Instant::now() + backoff::delay(restart, ran));
        self.save(&name);
        let runtime = self.ctx.runtime.clone();
        let delete_id = id.to_string();
        match tokio::task::spawn_blocking(move || runtime.delete(&delete_id)).await {
            Ok(Err(err)) => tracing::warn!(error = %err, "cannot delete container"),
            Err(err) => tracing::warn!(error = %err, "delete task failed"),
            Ok(Ok(())) => {}
        }
        let run_dir = self.run_dir(&name, restart);
        let _ = self.ctx.host.unmount(&run_dir.join("rootfs"));
        let _ = std::fs::remove_dir_all(&run_dir);
    }

    /// Stops every running container: SIGTERM, then SIGKILL after `grace`.
    async fn terminate(&mut self, grace: Duration) {
        let running =
            |w: &Worker| w.records.iter().filter(|r| r.running()).filter_map(|r| r.id.clone()).collect::<Vec<_>>();
        let signal = |w: &Worker, signal: Signal| {
            for id in running(w) {
                if let Err(err) = w.ctx.runtime.kill(&id, signal) {
                    tracing::warn!(id = %id, error = %err, "cannot signal container");
                }
            }
        };
        if grace > Duration::ZERO {
            signal(self, Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while !running(self).is_empty() {
                tokio::select! {
                    Some((id, exit)) = self.exits.recv() => self.exited(&id, exit).await,
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        if !running(self).is_empty() {
            signal(self, Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !running(self).is_empty() {
                tokio::select! {
                    Some((id, exit)) = self.exits.recv() => self.exited(&id, exit).await,
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        for record in &self.records {
            if let Some(id) = &record.id {
                let _ = self.ctx.runtime.delete(id);
                let _ = self.ctx.host.unmount(&self.run_dir(&record.name, record.restart_count).join("rootfs"));
            }
        }
    }

    fn cleanup(&self, remove_logs: bool) {
        if let Err(err) = sandbox::teardown(&self.ctx, &self.paths, &self.uid, remove_logs) {
            tracing::warn!(error = %err, "pod cleanup incomplete");
        }
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
