//! Collects exited processes: container inits and log shims are children of
//! the agent and are reaped by PID on SIGCHLD (never `waitpid(-1)`, which
//! would steal other components' children); adopted containers from before a
//! restart are not our children and are polled instead.

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, or 128 + the signal that killed it.
    pub code: i32,
    pub signal: Option<i32>,
    /// False when the process was not our child and its status is unknown.
    pub known: bool,
}

impl Exit {
    pub fn from_status(status: WaitStatus) -> Option<Exit> {
        match status {
            WaitStatus::Exited(_, code) => Some(Exit { code, signal: None, known: true }),
            WaitStatus::Signaled(_, signal, _) => {
                Some(Exit { code: 128 + signal as i32, signal: Some(signal as i32), known: true })
            }
            _ => None,
        }
    }
}

#[derive(Default)]
pub struct Reaper {
    waiting: Mutex<HashMap<i32, oneshot::Sender<Exit>>>,
}

impl Reaper {
    /// Starts the SIGCHLD loop (with a 1 s fallback tick).
    pub fn start() -> Arc<Reaper> {
        let reaper = Arc::new(Reaper::default());
        let weak = Arc::downgrade(&reaper);
        tokio::spawn(async move {
            let mut signals = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
            loop {
                match signals.as_mut() {
                    Some(s) => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), s.recv()).await;
                    }
                    None => tokio::time::sleep(Duration::from_millis(200)).await,
                }
                let Some(reaper) = weak.upgrade() else { return };
                reaper.collect();
            }
        });
        reaper
    }

    fn collect(&self) {
        let Ok(mut waiting) = self.waiting.lock() else { return };
        let pids: Vec<i32> = waiting.keys().copied().collect();
        for pid in pids {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(status) => {
                    if let Some(exit) = Exit::from_status(status)
                        && let Some(tx) = waiting.remove(&pid)
                    {
                        let _ = tx.send(exit);
                    }
                }
                Err(nix::Error::ECHILD) => {
                    if let Some(tx) = waiting.remove(&pid) {
                        let _ = tx.send(Exit { code: 255, signal: None, known: false });
                    }
                }
                Err(_) => {}
            }
        }
    }

    /// Resolves when our child `pid` exits.
    pub fn watch_child(&self, pid: i32) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(pid, tx);
        }
        self.collect();
        rx
    }

    /// Resolves when `pid` (not our child) is gone; its exit status is unknown.
    pub fn watch_foreign(&self, pid: i32) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            loop {
                let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|stat| {
                        stat.rsplit(')').next().map(|rest| !rest.trim_start().starts_with('Z')).unwrap_or(false)
                    })
                    .unwrap_or(false);
                if !alive || tx.is_closed() {
                    let _ = tx.send(Exit { code: 255, signal: None, known: false });
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    #[allow(clippy::zombie_processes)] // the reaper under test waits for them
    async fn reaps_our_children_by_pid() {
        let reaper = Reaper::start();
        let child = std::process::Command::new("/bin/sh").args(["-c", "exit 3"]).spawn().expect("spawn");
        let exit = reaper.watch_child(child.id() as i32).await.expect("exit");
        assert_eq!(exit, Exit { code: 3, signal: None, known: true });
        let child = std::process::Command::new("/bin/sh").args(["-c", "kill -9 $$"]).spawn().expect("spawn");
        let exit = reaper.watch_child(child.id() as i32).await.expect("exit");
        assert_eq!(exit.code, 137);
        assert_eq!(exit.signal, Some(9));
    }
}
