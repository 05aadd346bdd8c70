//! Container exits (exit reason, OOM kills, back-off, runtime clean-up) and
//! stopping the pod's containers.

use super::Worker;
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

    /// Stops every running container: SIGTERM, then SIGKILL after `grace`.
    pub(super) async fn terminate(&mut self, grace: Duration) {
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

    pub(super) fn cleanup(&self, remove_logs: bool) {
        if let Err(err) = sandbox::teardown(&self.ctx, &self.paths, &self.uid, remove_logs) {
            tracing::warn!(error = %err, "pod cleanup incomplete");
        }
    }
}
