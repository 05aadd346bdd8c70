//! Snapshot files of the whole store (`kube snapshot save/restore`): the same
//! state-machine dump an openraft snapshot carries ([`state_machine::encode_stored`]),
//! framed by a magic header and a SHA-256 trailer so that a truncated or
//! damaged file is refused, and written atomically (temp file, fsync, rename).
//! [`restore`] turns a file into a fresh store folder without Raft state: the
//! next [`super::Store::open`] founds a new one-member group over it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::codec;
use super::data::{DataError, META_APPLIED, META_COMPACTED, META_MEMBERSHIP, META_REVISION, SmData};
use super::state_machine::{self, Record, SnapshotError as EncodingError};
use super::types::Revision;

/// The first bytes of every snapshot file (format version 1).
pub const MAGIC: &[u8; 8] = b"KUBESNP1";
const CHECKSUM_LEN: usize = 32;
/// Index of the metadata tree in a dump (see [`super::data::SNAPSHOT_TREES`]).
const META_TREE: u8 = 4;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a kube snapshot file (it does not start with the snapshot header)", path.display())]
    NotASnapshot { path: PathBuf },
    #[error(
        "{} is corrupt or truncated: its SHA-256 checksum does not match ({size} bytes); use another snapshot",
        path.display()
    )]
    Checksum { path: PathBuf, size: u64 },
    #[error("{} passed its checksum but its content is malformed", path.display())]
    Malformed {
        path: PathBuf,
        #[source]
        source: EncodingError,
    },
    #[error(
        "the store in {} is in use: stop `kube server` (and anything else using this data folder) before restoring",
        path.display()
    )]
    InUse { path: PathBuf },
    #[error("cannot open the store in {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("cannot {action} the store in {}", path.display())]
    Data {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: DataError,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io { action, path, source }
}

/// What a written or read snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    /// Size of the file in bytes.
    pub size: u64,
    /// The store's revision at the snapshot.
    pub revision: Revision,
    /// How many keys the snapshot holds (latest values).
    pub keys: usize,
}

/// A verified snapshot file's records.
struct Contents {
    records: Vec<Record>,
    info: SnapshotInfo,
}

fn revision_of<V: AsRef<[u8]>>(records: impl Iterator<Item = (u8, V, V)>) -> (Revision, usize) {
    let mut revision = 0;
    let mut keys = 0;
    for (tree, k, v) in records {
        if tree == 0 {
            keys += 1;
        } else if tree == META_TREE && k.as_ref() == META_REVISION {
            revision = codec::read_rev(v.as_ref()).unwrap_or(0);
        }
    }
    (revision, keys)
}

/// Dumps `data` (a consistent cut: the dump holds the state machine's read
/// lock) and writes it to `path` atomically.
pub(super) fn write(data: &SmData, path: &Path) -> Result<SnapshotInfo, SnapshotError> {
    let dump_err = |source| SnapshotError::Data { action: "dump", path: path.to_path_buf(), source };
    let records = data.dump().map_err(dump_err)?;
    let (revision, keys) = revision_of(records.iter().map(|(t, k, v)| (*t, k.as_ref(), v.as_ref())));
    let malformed = |source| SnapshotError::Malformed { path: path.to_path_buf(), source };
    let (meta, body) = state_machine::snapshot_of(&records).map_err(malformed)?;
    drop(records);
    let mut file = MAGIC.to_vec();
    file.extend_from_slice(&state_machine::encode_stored(&meta, &body).map_err(malformed)?);
    drop(body);
    let sum = Sha256::digest(&file);
    file.extend_from_slice(&sum);
    write_atomically(path, &file)?;
    Ok(SnapshotInfo { path: path.to_path_buf(), size: file.len() as u64, revision, keys })
}

/// Writes `bytes` to a temporary file next to `path` (mode 0600: snapshots
/// hold every Secret), fsyncs it, renames it over `path` and fsyncs the folder.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io("set the mode of", dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Unique per write, so two saves of the same name never share a temp file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        file.write_all(bytes).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
        std::fs::rename(&tmp, path).map_err(io("rename the temporary file to", path))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync", dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn read(path: &Path) -> Result<Contents, SnapshotError> {
    let raw = std::fs::read(path).map_err(io("read", path))?;
    let size = raw.len() as u64;
    if !raw.starts_with(MAGIC) {
        return Err(SnapshotError::NotASnapshot { path: path.to_path_buf() });
    }
    if raw.len() < MAGIC.len() + CHECKSUM_LEN {
        return Err(SnapshotError::Checksum { path: path.to_path_buf(), size });
    }
    let (framed, sum) = raw.split_at(raw.len() - CHECKSUM_LEN);
    if Sha256::digest(framed).as_slice() != sum {
        return Err(SnapshotError::Checksum { path: path.to_path_buf(), size });
    }
    let malformed = |source| SnapshotError::Malformed { path: path.to_path_buf(), source };
    let (_meta, body) = state_machine::decode_stored(&framed[MAGIC.len()..]).map_err(malformed)?;
    let records = state_machine::decode_records(&body).map_err(malformed)?;
    let (revision, keys) = revision_of(records.iter().map(|(t, k, v)| (*t, k.as_slice(), v.as_slice())));
    Ok(Contents { records, info: SnapshotInfo { path: path.to_path_buf(), size, revision, keys } })
}

/// Reads and verifies a snapshot file (header, checksum, structure).
pub fn verify(path: &Path) -> Result<SnapshotInfo, SnapshotError> {
    read(path).map(|c| c.info)
}

/// What [`restore`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub snapshot: SnapshotInfo,
    /// The store's revision now: the snapshot's, or the replaced store's if
    /// that was newer (so resource versions never go backwards).
    pub revision: Revision,
    /// Where the replaced store was moved, if there was one.
    pub moved_aside: Option<PathBuf>,
    /// Why the replaced store's revision could not be read (a damaged store
    /// is still replaced, but revisions then continue from the snapshot's).
    pub old_store_unreadable: Option<String>,
}

fn sled_path(store_dir: &Path) -> PathBuf {
    store_dir.join("sled")
}

fn open_sled(store_dir: &Path) -> Result<sled::Db, SnapshotError> {
    let path = sled_path(store_dir);
    sled::Config::new().path(&path).open().map_err(|source| {
        if super::is_lock_error(&source) {
            SnapshotError::InUse { path: store_dir.to_path_buf() }
        } else {
            SnapshotError::Open { path: path.clone(), source }
        }
    })
}

/// Replaces the store in `store_dir` (a [`super::StoreConfig::data_dir`])
/// with the snapshot in `file`: verifies the file, checks that no process
/// holds the store (sled's lock), moves the old folder aside to
/// `<store_dir>-old-<unix time>` and writes a fresh store holding the
/// snapshot's keys, history and revision, with no Raft state or membership.
///
/// If the replaced store had a newer revision than the snapshot, the new
/// store continues from that revision, marked compacted there (like
/// `etcdutl snapshot restore --bump-revision --mark-compacted`): clients
/// resuming a watch from a version they saw get 410 Gone and list again.
pub fn restore(file: &Path, store_dir: &Path) -> Result<Restored, SnapshotError> {
    let contents = read(file)?;
    let mut floor = 0;
    let mut moved_aside = None;
    let mut old_store_unreadable = None;
    if store_dir.exists() {
        if sled_path(store_dir).exists() {
            match old_revision(store_dir) {
                Ok(revision) => floor = revision,
                Err(err @ SnapshotError::InUse { .. }) => return Err(err),
                Err(err) => {
                    let reason = error_chain(&err);
                    tracing::warn!(error = %reason, "the old store is unreadable; replacing it anyway");
                    old_store_unreadable = Some(reason);
                }
            }
        }
        let aside = aside_path(store_dir);
        std::fs::rename(store_dir, &aside).map_err(io("move the old store aside to", &aside))?;
        moved_aside = Some(aside);
    }
    std::fs::create_dir_all(store_dir).map_err(io("create", store_dir))?;
    let db = open_sled(store_dir)?;
    let data_err = |action| move |source| SnapshotError::Data { action, path: store_dir.to_path_buf(), source };
    let data = SmData::open(&db, 16).map_err(data_err("create"))?;
    let snapshot_revision = contents.info.revision;
    let bump = floor > snapshot_revision;
    let mut records: Vec<Record> = contents
        .records
        .into_iter()
        .filter(|(tree, key, _)| {
            // The Raft position and membership belong to the old group: the
            // next open founds a new one over this state.
            let raft = key.as_slice() == META_APPLIED || key.as_slice() == META_MEMBERSHIP;
            let counters = key.as_slice() == META_REVISION || key.as_slice() == META_COMPACTED;
            *tree != META_TREE || !(raft || (bump && counters))
        })
        .collect();
    if bump {
        for key in [META_REVISION, META_COMPACTED] {
            records.push((META_TREE, key.to_vec(), codec::rev_bytes(floor).to_vec()));
        }
    }
    data.load(records).map_err(data_err("load the snapshot into"))?;
    let revision = data.revision();
    db.flush().map_err(|source| SnapshotError::Open { path: sled_path(store_dir), source })?;
    tracing::debug!(file = %file.display(), revision, bumped = bump, "restored a snapshot");
    Ok(Restored { snapshot: contents.info, revision, moved_aside, old_store_unreadable })
}

/// The revision of the (closed) store in `store_dir`; `InUse` if it is open.
fn old_revision(store_dir: &Path) -> Result<Revision, SnapshotError> {
    let db = open_sled(store_dir)?;
    let data = SmData::open(&db, 16).map_err(|source| SnapshotError::Data {
        action: "read",
        path: store_dir.to_path_buf(),
        source,
    })?;
    Ok(data.revision())
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `<store_dir>-old-<unix time>`, with a counter if that exists already.
fn aside_path(store_dir: &Path) -> PathBuf {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let base = store_dir.as_os_str().to_string_lossy().trim_end_matches('/').to_string();
    let mut path = PathBuf::from(format!("{base}-old-{now}"));
    let mut n = 1;
    while path.exists() {
        path = PathBuf::from(format!("{base}-old-{now}-{n}"));
        n += 1;
    }
    path
}
