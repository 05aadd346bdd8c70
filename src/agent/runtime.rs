//! The container runtime behind a narrow trait: `Libcontainer` runs OCI
//! bundles with youki's libcontainer (state under `<data>/run`; containers
//! start in a helper process, see `runtime_start`);
//! `FakeRuntime` records calls for unit tests.

use super::error::{AgentError, Result};
use libcontainer::container::Container;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub trait Runtime: Send + Sync {
    /// Creates and starts the container of `bundle`; returns the PID of its
    /// init process (a child of this process, a subreaper).
    fn run(&self, id: &str, bundle: &Path, stdout: OwnedFd, stderr: OwnedFd) -> Result<i32>;
    /// Sends `signal` to the container's init process.
    fn kill(&self, id: &str, signal: nix::sys::signal::Signal) -> Result<()>;
    /// Removes the container's state and cgroup; fine when it is already gone.
    fn delete(&self, id: &str) -> Result<()>;
    /// The PID of a container that is still running (for adoption after a restart).
    fn running_pid(&self, id: &str) -> Option<i32>;
}

pub struct Libcontainer {
    root: PathBuf,
    /// The `kube` executable that runs `kube container-start`.
    starter: PathBuf,
}

impl Libcontainer {
    pub fn new(root: PathBuf) -> Result<Libcontainer> {
        std::fs::create_dir_all(&root).map_err(AgentError::io("create runtime state folder", &root))?;
        let starter = PathBuf::from(super::runtime_start::SELF_EXE);
        super::runtime_start::become_subreaper()?;
        Ok(Libcontainer { root, starter })
    }

    fn load(&self, id: &str) -> Option<Container> {
        let dir = self.root.join(id);
        dir.exists().then(|| Container::load(dir).ok()).flatten()
    }
}

impl Runtime for Libcontainer {
    fn run(&self, id: &str, bundle: &Path, stdout: OwnedFd, stderr: OwnedFd) -> Result<i32> {
        if self.root.join(id).exists() {
            self.delete(id)?;
        }
        super::runtime_start::start(&self.starter, &self.root, id, bundle, stdout, stderr)
    }

    fn kill(&self, id: &str, signal: nix::sys::signal::Signal) -> Result<()> {
        let Some(container) = self.load(id) else { return Ok(()) };
        match container.pid() {
            Some(pid) => match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid.as_raw()), signal) {
                Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
                Err(err) => Err(AgentError::Sys { what: format!("signal container {id}"), source: err }),
            },
            None => Ok(()),
        }
    }

    fn delete(&self, id: &str) -> Result<()> {
        let Some(mut container) = self.load(id) else { return Ok(()) };
        if container.delete(true).is_err() {
            // State that libcontainer cannot read back: remove it by hand.
            let dir = self.root.join(id);
            std::fs::remove_dir_all(&dir).map_err(AgentError::io("remove container state", &dir))?;
        }
        Ok(())
    }

    fn running_pid(&self, id: &str) -> Option<i32> {
        let mut container = self.load(id)?;
        container.refresh_status().ok()?;
        use libcontainer::container::ContainerStatus;
        matches!(container.status(), ContainerStatus::Running | ContainerStatus::Created | ContainerStatus::Paused)
            .then(|| container.pid().map(|p| p.as_raw()))
            .flatten()
    }
}

/// A recorded runtime call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeCall {
    Run { id: String, bundle: PathBuf },
    Kill { id: String, signal: nix::sys::signal::Signal },
    Delete(String),
}

/// Records calls and hands out fake PIDs; `fail_run` injects a failure.
#[derive(Default)]
pub struct FakeRuntime {
    pub calls: Mutex<Vec<RuntimeCall>>,
    pub fail_run: bool,
    pub running: Mutex<Vec<(String, i32)>>,
}

impl FakeRuntime {
    pub fn calls(&self) -> Vec<RuntimeCall> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
    fn record(&self, call: RuntimeCall) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }
}

impl Runtime for FakeRuntime {
    fn run(&self, id: &str, bundle: &Path, _stdout: OwnedFd, _stderr: OwnedFd) -> Result<i32> {
        self.record(RuntimeCall::Run { id: id.into(), bundle: bundle.into() });
        if self.fail_run {
            return Err(AgentError::Runtime { id: id.into(), message: "injected failure".into() });
        }
        let pid = 100_000 + self.calls().len() as i32;
        if let Ok(mut running) = self.running.lock() {
            running.push((id.into(), pid));
        }
        Ok(pid)
    }
    fn kill(&self, id: &str, signal: nix::sys::signal::Signal) -> Result<()> {
        self.record(RuntimeCall::Kill { id: id.into(), signal });
        Ok(())
    }
    fn delete(&self, id: &str) -> Result<()> {
        self.record(RuntimeCall::Delete(id.into()));
        if let Ok(mut running) = self.running.lock() {
            running.retain(|(i, _)| i != id);
        }
        Ok(())
    }
    fn running_pid(&self, id: &str) -> Option<i32> {
        self.running.lock().ok()?.iter().find(|(i, _)| i == id).map(|(_, p)| *p)
    }
}
