//! `kube snapshot save/list/delete/prune/restore`, like `k3s etcd-snapshot`.
//! `save` asks the running server (as the admin of its kubeconfig, the way
//! `kube token` does); the others work on the snapshot folder directly, and
//! `restore` needs the server stopped.

use super::api::{SNAPSHOTS_PATH, SaveRequest, SaveResponse};
use super::{ON_DEMAND, delete, list, prune, snapshot_dir};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Clone, Debug)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: SnapshotCommand,
    /// The server's data folder (snapshots are in <data-dir>/server/db/snapshots).
    #[arg(long, short = 'd', env = "KUBE_DATA_DIR", default_value = "/var/lib/kube", global = true)]
    pub data_dir: PathBuf,
    /// Kubeconfig of an admin, for `save` (default: <data-dir>/admin.kubeconfig).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum SnapshotCommand {
    /// Ask the running server for a snapshot of the store; prints its path.
    Save {
        /// Prefix of the snapshot's name: <name>-<node>-<unix time>.
        #[arg(long, default_value = ON_DEMAND)]
        name: String,
    },
    /// List the snapshots in the folder (works with the server stopped).
    #[command(alias = "ls")]
    List,
    /// Delete snapshots by name.
    #[command(alias = "rm")]
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Delete the oldest snapshots of a name beyond the retention.
    Prune {
        /// How many of the newest snapshots to keep.
        #[arg(long, default_value_t = 5)]
        snapshot_retention: usize,
        /// Which snapshots: those named <name>-….
        #[arg(long, default_value = ON_DEMAND)]
        name: String,
    },
    /// Replace the store with a snapshot (server stopped): the old store is
    /// kept aside, the next `kube server` starts alone with the snapshot's
    /// objects, like `k3s server --cluster-reset --cluster-reset-restore-path`.
    Restore {
        /// A snapshot file, or the name of one in the snapshot folder.
        file: PathBuf,
    },
}

fn human_time(unix: i64) -> String {
    jiff::Timestamp::from_second(unix).map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default()
}

fn print_table(rows: &[[String; 4]]) {
    let widths: Vec<usize> = (0..4).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    for r in rows {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", cells.join(" ").trim_end());
    }
}

/// A path as given if it exists, else a snapshot of that name in the folder.
fn resolve(file: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    if file.exists() {
        return Ok(file.to_path_buf());
    }
    let named = dir.join(file);
    if file.components().count() == 1 && named.exists() {
        return Ok(named);
    }
    bail!("no snapshot {}: neither a file nor a name in {} (see `kube snapshot list`)", file.display(), dir.display())
}

async fn save(args: &SnapshotArgs, name: &str) -> anyhow::Result<()> {
    super::check_name(name)?;
    let kubeconfig = args.kubeconfig.clone().unwrap_or_else(|| args.data_dir.join("admin.kubeconfig"));
    let (client, _) = crate::server::token_cmd::kubeconfig_client(&kubeconfig)
        .with_context(|| format!("cannot reach the server with {} (is it running?)", kubeconfig.display()))?;
    let body = serde_json::to_value(SaveRequest { name: Some(name.to_string()) })?;
    let answer = client
        .request(http::Method::POST, SNAPSHOTS_PATH, Some(("application/json", body)))
        .await
        .map_err(|err| anyhow::anyhow!("the server did not save a snapshot: {}", err.message))?;
    let saved: SaveResponse = serde_json::from_value(answer).context("the server's answer is malformed")?;
    eprintln!("saved snapshot {} ({} bytes, revision {})", saved.name, saved.size, saved.revision);
    println!("{}", saved.path);
    Ok(())
}

fn restore(data_dir: &Path, file: &Path) -> anyhow::Result<()> {
    let file = resolve(file, &snapshot_dir(data_dir))?;
    let store_dir = data_dir.join("db");
    let restored = crate::store::snapshot::restore(&file, &store_dir)?;
    println!(
        "restored {} ({} keys, revision {}) into {}",
        file.display(),
        restored.snapshot.keys,
        restored.snapshot.revision,
        store_dir.display()
    );
    if let Some(reason) = &restored.old_store_unreadable {
        println!("warning: the old store could not be read ({reason}); revisions continue from the snapshot's");
    }
    if restored.revision != restored.snapshot.revision {
        println!(
            "the old store was at a later revision: revisions continue from {} (watches from older versions re-list)",
            restored.revision
        );
    }
    if let Some(aside) = &restored.moved_aside {
        println!("the previous store was moved to {} (delete it once the restore is verified)", aside.display());
    }
    let reset = crate::server::ha::reset_membership(data_dir)?;
    if !reset.is_empty() {
        println!(
            "this server's membership was reset: it starts as a single server (add --cluster-init to let other servers join again, after clearing their data folders)"
        );
    }
    println!("start the server: kube server --data-dir {}", data_dir.display());
    Ok(())
}

/// Runs `kube snapshot …`.
pub async fn run(args: SnapshotArgs) -> anyhow::Result<()> {
    let dir = snapshot_dir(&args.data_dir);
    match &args.command {
        SnapshotCommand::Save { name } => save(&args, name).await?,
        SnapshotCommand::List => {
            let mut rows = vec![["Name", "Location", "Size", "Created"].map(String::from)];
            for e in list(&dir)? {
                let location = format!("file://{}", e.path.display());
                rows.push([e.name, location, e.size.to_string(), human_time(e.created)]);
            }
            print_table(&rows);
        }
        SnapshotCommand::Delete { names } => {
            for name in names {
                let path = delete(&dir, name)?;
                println!("deleted snapshot {}", path.display());
            }
        }
        SnapshotCommand::Prune { snapshot_retention, name } => {
            super::check_name(name)?;
            let pruned = prune(&dir, name, *snapshot_retention)?;
            for e in &pruned {
                println!("deleted snapshot {}", e.path.display());
            }
            println!("{} snapshot(s) pruned, the newest {snapshot_retention} of {name:?} kept", pruned.len());
        }
        SnapshotCommand::Restore { file } => restore(&args.data_dir, file)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_resolves_paths_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = dir.path().join("snapshots");
        std::fs::create_dir_all(&snaps).unwrap();
        std::fs::write(snaps.join("on-demand-n-1"), b"x").unwrap();
        assert_eq!(resolve(Path::new("on-demand-n-1"), &snaps).unwrap(), snaps.join("on-demand-n-1"));
        let full = snaps.join("on-demand-n-1");
        assert_eq!(resolve(&full, Path::new("/nonexistent")).unwrap(), full);
        let err = resolve(Path::new("missing"), &snaps).unwrap_err().to_string();
        assert!(err.contains("kube snapshot list"), "{err}");
    }

    #[test]
    fn times_read_like_k3s() {
        assert_eq!(human_time(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
