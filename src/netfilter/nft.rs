//! Running transactions: the real `nft -j -f -` (stderr kept for the error
//! message) and a fake that records what it was given, for tests.

use super::NetfilterError;
use super::plan::Transaction;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Applies one transaction atomically.
pub trait Nft: Send + Sync {
    fn apply(&self, tx: &Transaction) -> Result<(), NetfilterError>;
}

/// The `nft` binary, in this network namespace or (tests, benchmarks) in a
/// named one through `ip netns exec`.
#[derive(Clone, Debug, Default)]
pub struct NftCommand {
    pub netns: Option<String>,
}

impl NftCommand {
    pub fn in_netns(name: &str) -> NftCommand {
        NftCommand { netns: Some(name.to_string()) }
    }

    fn command(&self, args: &[&str]) -> Command {
        match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, "nft"]).args(args);
                command
            }
            None => {
                let mut command = Command::new("nft");
                command.args(args);
                command
            }
        }
    }

    /// Runs `nft -j -f -` with `json` on stdin.
    pub fn apply_json(&self, what: &'static str, json: &str) -> Result<(), NetfilterError> {
        let spawn_error = |source| NetfilterError::Spawn { command: "nft -j -f -".into(), source };
        let mut child = self
            .command(&["-j", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(json.as_bytes()).map_err(spawn_error)?;
        }
        let output = child.wait_with_output().map_err(spawn_error)?;
        if output.status.success() {
            return Ok(());
        }
        Err(NetfilterError::Nft {
            what,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }

    /// `nft list table inet kube-proxy` as text (for tests and debugging).
    pub fn list_table(&self) -> Result<String, NetfilterError> {
        let output = self
            .command(&["list", "table", "inet", super::TABLE])
            .output()
            .map_err(|source| NetfilterError::Spawn { command: "nft list table".into(), source })?;
        if !output.status.success() {
            return Err(NetfilterError::Nft {
                what: "list",
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Nft for NftCommand {
    fn apply(&self, tx: &Transaction) -> Result<(), NetfilterError> {
        let what = if tx.full { "full" } else { "incremental" };
        self.apply_json(what, &tx.to_json()?)
    }
}

/// Records every transaction as its JSON; `fail_next` makes the next apply
/// fail the way nft does.
#[derive(Debug, Default)]
pub struct FakeNft {
    pub applied: Mutex<Vec<(bool, String)>>,
    pub fail_next: Mutex<bool>,
}

impl FakeNft {
    /// (full?, JSON) of each transaction applied so far.
    pub fn transactions(&self) -> Vec<(bool, String)> {
        self.applied.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

impl Nft for FakeNft {
    fn apply(&self, tx: &Transaction) -> Result<(), NetfilterError> {
        if let Ok(mut fail) = self.fail_next.lock()
            && std::mem::take(&mut *fail)
        {
            return Err(NetfilterError::Nft {
                what: "fake",
                status: "exit status: 1".into(),
                stderr: "injected".into(),
            });
        }
        if let Ok(mut applied) = self.applied.lock() {
            applied.push((tx.full, tx.to_json()?));
        }
        Ok(())
    }
}
