//! Starting one run of a container (image, rootfs, runtime spec, log shim,
//! runtime) and applying what its probes find.

use super::{Worker, containers, record_id};
use crate::agent::error::{AgentError, Result};
use crate::agent::node::now;
use crate::agent::probe;
use crate::agent::sandbox;
use crate::agent::spec::{self, SpecInput};
use crate::agent::status::{ContainerRecord, State};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

impl Worker {
    /// Pulls the image and starts one run of a container.
    pub(super) async fn start(&mut self, container: &Value, init: bool) -> Result<()> {
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
        let keyring = crate::agent::pull_secrets::keyring(&self.ctx.client, &self.pod).await;
        // `_in_use` keeps image garbage collection away until the rootfs is mounted.
        let (image, _in_use) = self.ctx.images.ensure(&image_name, policy, &keyring).await?;
        self.pull_failures.remove(&name);
        let env = crate::agent::env::resolve(&self.ctx, &self.pod, container).await?;
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
        let (log, done) = crate::agent::logs::container_log(&self.paths.logs, &name, restart);
        let _ = std::fs::remove_file(&done);
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(AgentError::sys("create a pipe"));
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let shim = crate::agent::logs::spawn_shim(out_r, err_r, &log, &done)?;
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
        let probing = if init && !super::plan::is_sidecar(container) {
            None
        } else {
            record_id(&self.records, &name).map(|id| self.start_probes(&name, &id, None))
        };
        if let Some(r) = self.record_mut(&name) {
            r.ready = probing.is_none_or(|(_, ready)| ready);
            r.startup_pending = probing.is_some_and(|(started, _)| !started);
        }
        self.save(&name);
        Ok(())
    }

    /// Starts the probes of container run `id`; returns its (started, ready) state.
    pub(super) fn start_probes(&mut self, name: &str, id: &str, resume: Option<(bool, bool)>) -> (bool, bool) {
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
    pub(super) async fn probed(&mut self, update: probe::Update) {
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
}
