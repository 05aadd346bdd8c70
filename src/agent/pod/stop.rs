//! Container exits (exit reason, OOM kills, back-off, runtime clean-up) and
//! stopping the pod's containers.

use super::{Worker, plan};
use crate::agent::backoff;
use crate::agent::node::now;
use crate::agent::reaper::Exit;
use crate::agent::sandbox;
use crate::agent::status::{State, Terminated};
use nix::sys::signal::Signal;
use std::time::Duration;
use tokio::time::Instant;

impl Worker {
    /// Records a container exit and releases its runtime state and rootfs.
    pub(super) async fn exited(&mut self, id: &str, exit: Exit) {
        let Some(record) = self.records.iter_mut().find(|r| r.id.as_deref() == Some(id) && r.running()) else { return };
        let started_at = match &record.state {
            State::Running { started_at } => started_at.clone(),
            _ => String::new(),
        };
        // Read before `delete` removes the cgroup (each run gets a fresh one).
        let oom_kills = self.ctx.host.oom_kills(&format!("kubepods/pod{}/{}", self.uid, record.name));
        let reason = crate::agent::status::exit_reason(exit.known, exit.code, oom_kills);
        tracing::info!(container = %record.name, exit_code = exit.code, reason, "container exited");
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

    /// Stops every running container: SIGTERM to the app (and regular init)
    /// containers, then to each sidecar in reverse spec order once the
    /// previous ones exited, all within `grace`; SIGKILL to what is left.
    pub(super) async fn terminate(&mut self, grace: Duration) {
        let sidecars: Vec<String> = super::containers(&self.pod)
            .into_iter()
            .filter(|(c, init)| *init && plan::is_sidecar(c))
            .filter_map(|(c, _)| c.get("name").and_then(serde_json::Value::as_str).map(str::to_string))
            .collect();
        let running = |w: &Worker, names: Option<&[String]>| {
            w.records
                .iter()
                .filter(|r| r.running())
                .filter(|r| match names {
                    Some(names) => names.contains(&r.name),
                    None => true,
                })
                .filter_map(|r| r.id.clone())
                .collect::<Vec<_>>()
        };
        let signal = |w: &Worker, ids: &[String], signal: Signal| {
            for id in ids {
                if let Err(err) = w.ctx.runtime.kill(id, signal) {
                    tracing::warn!(id = %id, error = %err, "cannot signal container");
                }
            }
        };
        let deadline = Instant::now() + grace;
        if grace > Duration::ZERO {
            let others: Vec<String> =
                self.records.iter().filter(|r| !sidecars.contains(&r.name)).map(|r| r.name.clone()).collect();
            let mut stages = vec![others];
            stages.extend(sidecars.iter().rev().map(|s| vec![s.clone()]));
            for stage in stages {
                let ids = running(self, Some(&stage));
                signal(self, &ids, Signal::SIGTERM);
                while !running(self, Some(&stage)).is_empty() {
                    tokio::select! {
                        Some((id, exit)) = self.exits.recv() => self.exited(&id, exit).await,
                        _ = tokio::time::sleep_until(deadline) => break,
                    }
                }
            }
        }
        if !running(self, None).is_empty() {
            signal(self, &running(self, None), Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !running(self, None).is_empty() {
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

    /// Stops a sidecar of a pod whose app containers are done: SIGTERM, then
    /// SIGKILL after the pod's grace period; once per run.
    pub(super) fn stop_sidecar(&mut self, name: &str) {
        let Some(id) = self.records.iter().find(|r| r.name == name && r.running()).and_then(|r| r.id.clone()) else {
            return;
        };
        if !self.stopping.insert(id.clone()) {
            return;
        }
        tracing::info!(container = %name, "the app containers are done; stopping the sidecar");
        if let Err(err) = self.ctx.runtime.kill(&id, Signal::SIGTERM) {
            tracing::warn!(error = %err, "cannot signal container");
        }
        let grace =
            self.pod.pointer("/spec/terminationGracePeriodSeconds").and_then(serde_json::Value::as_u64).unwrap_or(30);
        let runtime = self.ctx.runtime.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(grace)).await;
            let _ = runtime.kill(&id, Signal::SIGKILL);
        });
    }

    pub(super) fn cleanup(&self, remove_logs: bool) {
        if let Err(err) = sandbox::teardown(&self.ctx, &self.paths, &self.uid, remove_logs) {
            tracing::warn!(error = %err, "pod cleanup incomplete");
        }
    }
}
