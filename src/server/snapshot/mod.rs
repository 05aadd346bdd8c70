//! Store snapshots, like `k3s etcd-snapshot`: files named
//! `<name>-<node>-<unix time>` in `<data-dir>/server/db/snapshots`, written by
//! the server on request ([`api`], `kube snapshot save`) or on a schedule
//! ([`schedule`]), listed, deleted and pruned from the folder ([`cmd`]), and
//! restored offline with the server stopped.

pub mod api;
pub mod cmd;
pub mod schedule;

use std::path::{Path, PathBuf};

/// The name of snapshots `kube snapshot save` takes without `--name`.
pub const ON_DEMAND: &str = "on-demand";
/// The name of the server's scheduled snapshots.
pub const SCHEDULED: &str = "scheduled";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFilesError {
    #[error(
        "invalid snapshot name {name:?}: use letters, digits, '-', '_' and '.' (at most 100), not starting with '.'"
    )]
    BadName { name: String },
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no snapshot {name:?} in {}: see `kube snapshot list`", dir.display())]
    NotFound { name: String, dir: PathBuf },
}

/// Where a server's snapshots live.
pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("server").join("db").join("snapshots")
}

/// Checks a user-given snapshot name (it becomes part of a file name).
pub fn check_name(name: &str) -> Result<(), SnapshotFilesError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(SnapshotFilesError::BadName { name: name.to_string() }) }
}

/// `<name>-<node>-<unix time>`, as k3s names them.
pub fn file_name(name: &str, node: &str, unix_seconds: i64) -> String {
    format!("{name}-{node}-{unix_seconds}")
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// One snapshot file in the folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// Unix time it was taken: the file name's suffix, else its mtime.
    pub created: i64,
}

/// The unix-time suffix of a snapshot file name.
fn name_time(name: &str) -> Option<i64> {
    name.rsplit_once('-').and_then(|(_, t)| t.parse().ok())
}

/// The snapshots in `dir`, oldest first (a missing folder holds none).
pub fn list(dir: &Path) -> Result<Vec<Entry>, SnapshotFilesError> {
    let io = |action| move |source| SnapshotFilesError::Io { action, path: dir.to_path_buf(), source };
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io("read")(err)),
    };
    let mut out = Vec::new();
    for item in read {
        let item = item.map_err(io("read"))?;
        let name = item.file_name().to_string_lossy().into_owned();
        // Temporary files of a snapshot being written start with a dot.
        if name.starts_with('.') {
            continue;
        }
        let meta = item.metadata().map_err(io("read"))?;
        if !meta.is_file() {
            continue;
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let created = name_time(&name).unwrap_or(mtime);
        out.push(Entry { path: item.path(), name, size: meta.len(), created });
    }
    out.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    Ok(out)
}

/// The snapshots of `prefix` (`<prefix>-…`) beyond the newest `retention`, oldest first.
pub fn prune_victims(entries: &[Entry], prefix: &str, retention: usize) -> Vec<Entry> {
    let own: Vec<&Entry> = entries.iter().filter(|e| e.name.starts_with(&format!("{prefix}-"))).collect();
    let excess = own.len().saturating_sub(retention);
    own.into_iter().take(excess).cloned().collect()
}

/// Deletes the snapshots of `prefix` beyond the newest `retention`; returns them.
pub fn prune(dir: &Path, prefix: &str, retention: usize) -> Result<Vec<Entry>, SnapshotFilesError> {
    let victims = prune_victims(&list(dir)?, prefix, retention);
    for v in &victims {
        std::fs::remove_file(&v.path).map_err(|source| SnapshotFilesError::Io {
            action: "delete",
            path: v.path.clone(),
            source,
        })?;
    }
    Ok(victims)
}

/// Deletes one snapshot by name (a file name in `dir`, never a path).
pub fn delete(dir: &Path, name: &str) -> Result<PathBuf, SnapshotFilesError> {
    check_name(name)?;
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(path),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            Err(SnapshotFilesError::NotFound { name: name.to_string(), dir: dir.to_path_buf() })
        }
        Err(source) => Err(SnapshotFilesError::Io { action: "delete", path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> Entry {
        Entry { name: name.into(), path: name.into(), size: 1, created: name_time(name).unwrap_or(0) }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("on-demand").is_ok());
        assert!(check_name("before_upgrade.1").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(file_name("on-demand", "nas", 1700000000), "on-demand-nas-1700000000");
        assert_eq!(name_time("on-demand-my-node-1700000000"), Some(1700000000));
    }

    #[test]
    fn prune_keeps_the_newest_of_its_prefix_only() {
        let entries: Vec<Entry> = [
            "scheduled-n-100",
            "on-demand-n-150",
            "scheduled-n-200",
            "scheduled-n-300",
            "on-demand-n-50",
            "scheduled-n-400",
        ]
        .into_iter()
        .map(entry)
        .collect();
        let mut sorted = entries.clone();
        sorted.sort_by_key(|e| e.created);
        let names = |v: Vec<Entry>| v.into_iter().map(|e| e.name).collect::<Vec<_>>();
        assert_eq!(names(prune_victims(&sorted, SCHEDULED, 2)), ["scheduled-n-100", "scheduled-n-200"]);
        assert_eq!(names(prune_victims(&sorted, SCHEDULED, 5)), Vec::<String>::new());
        assert_eq!(names(prune_victims(&sorted, ON_DEMAND, 1)), ["on-demand-n-50"]);
    }

    #[test]
    fn list_prune_and_delete_in_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list(&dir.path().join("missing")).unwrap().is_empty());
        for name in ["scheduled-n-3", "scheduled-n-1", "scheduled-n-2", ".scheduled-n-4.tmp-1", "on-demand-n-0"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let names: Vec<String> = list(dir.path()).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["on-demand-n-0", "scheduled-n-1", "scheduled-n-2", "scheduled-n-3"]);
        let pruned = prune(dir.path(), SCHEDULED, 1).unwrap();
        assert_eq!(pruned.len(), 2);
        let names: Vec<String> = list(dir.path()).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["on-demand-n-0", "scheduled-n-3"]);
        assert!(delete(dir.path(), "on-demand-n-0").is_ok());
        assert!(matches!(delete(dir.path(), "on-demand-n-0"), Err(SnapshotFilesError::NotFound { .. })));
        assert!(matches!(delete(dir.path(), "../x"), Err(SnapshotFilesError::BadName { .. })));
    }
}
