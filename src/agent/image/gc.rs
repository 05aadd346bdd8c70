//! Image garbage collection, the kubelet's way: when the image filesystem
//! is above the high threshold (85 %), images no container uses are removed,
//! least recently used first, until usage is under the low threshold (80 %).
//! An image counts as used while any pod on the node names it or a mounted
//! overlay has its rootfs as lower dir; containers being created hold
//! [`super::InUse`], which this waits for.

use super::{Image, ImageStore, archive, normalise};
use crate::agent::error::{AgentError, Result};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Filesystem usage in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub capacity: u64,
    pub used: u64,
}

impl Usage {
    pub fn of(path: &Path) -> Result<Usage> {
        let stat = nix::sys::statvfs::statvfs(path).map_err(AgentError::sys(format!("statvfs {}", path.display())))?;
        let block = stat.fragment_size() as u64;
        let capacity = stat.blocks() as u64 * block;
        Ok(Usage { capacity, used: capacity.saturating_sub(stat.blocks_available() as u64 * block) })
    }

    fn percent(&self) -> u64 {
        (self.used * 100).checked_div(self.capacity).unwrap_or(0)
    }
}

/// The kubelet's defaults: imageGCHighThresholdPercent / imageGCLowThresholdPercent.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    pub high: u64,
    pub low: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { high: 85, low: 80 }
    }
}

/// One unpacked image (all the references that share its rootfs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub config_digest: String,
    pub rootfs: PathBuf,
    pub references: Vec<String>,
    pub size: u64,
    pub last_used: i64,
}

/// Groups image records by rootfs.
pub fn groups(images: &[Image]) -> Vec<Group> {
    let mut by: BTreeMap<PathBuf, Group> = BTreeMap::new();
    for image in images {
        let group = by.entry(image.rootfs.clone()).or_insert_with(|| Group {
            config_digest: image.config_digest.clone(),
            rootfs: image.rootfs.clone(),
            references: Vec::new(),
            size: 0,
            last_used: i64::MIN,
        });
        group.references.push(image.reference.clone());
        group.size = group.size.max(image.size);
        group.last_used = group.last_used.max(image.last_used);
    }
    by.into_values().collect()
}

/// What to remove: nothing under `high`; else unused groups, least
/// recently used first, until the bytes freed bring usage under `low`.
pub fn choose(groups: &[Group], in_use: &HashSet<PathBuf>, usage: Usage, t: Thresholds) -> Vec<Group> {
    if usage.percent() < t.high {
        return Vec::new();
    }
    let goal = usage.used.saturating_sub(usage.capacity / 100 * t.low);
    let mut unused: Vec<&Group> = groups.iter().filter(|g| !in_use.contains(&g.rootfs)).collect();
    unused.sort_by_key(|g| g.last_used);
    let mut freed = 0;
    let mut chosen = Vec::new();
    for group in unused {
        if freed >= goal {
            break;
        }
        freed += group.size;
        chosen.push(group.clone());
    }
    chosen
}

/// The lower dirs of the overlays mounted in this mount namespace.
fn mounted_lower_dirs() -> HashSet<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(" - overlay "))
        .flat_map(|l| l.split([',', ' ']).filter_map(|opt| opt.strip_prefix("lowerdir=")).collect::<Vec<_>>())
        .flat_map(|dirs| dirs.split(':').map(PathBuf::from).collect::<Vec<_>>())
        .collect()
}

impl ImageStore {
    /// The rootfs of every image a pod on this node (its folder under
    /// `pods_dir`) names, and of every mounted container overlay.
    pub fn rootfs_in_use(&self, pods_dir: &Path) -> HashSet<PathBuf> {
        let mut used = mounted_lower_dirs();
        for entry in std::fs::read_dir(pods_dir).into_iter().flatten().flatten() {
            let Ok(bytes) = std::fs::read(entry.path().join("pod.json")) else { continue };
            let Ok(pod) = serde_json::from_slice::<Value>(&bytes) else { continue };
            for list in ["initContainers", "containers", "ephemeralContainers"] {
                for container in pod["spec"][list].as_array().into_iter().flatten() {
                    let Some(name) = container["image"].as_str() else { continue };
                    if let Some(image) = normalise(name).ok().and_then(|r| self.local(&r.whole())) {
                        used.insert(image.rootfs);
                    }
                }
            }
        }
        used
    }

    /// One garbage collection pass; returns the references removed.
    pub async fn garbage_collect(&self, pods_dir: &Path, t: Thresholds) -> Result<Vec<String>> {
        let usage = Usage::of(&self.root)?;
        if usage.percent() < t.high {
            return Ok(Vec::new());
        }
        // No container is between its image lookup and its mount while this is held.
        let _gc = self.gc.write().await;
        tokio::task::block_in_place(|| self.collect(pods_dir, usage, t))
    }

    /// Removes what [`choose`] picks, under the store's writer lock.
    pub fn collect(&self, pods_dir: &Path, usage: Usage, t: Thresholds) -> Result<Vec<String>> {
        let _lock = archive::lock(&self.root)?;
        let in_use = self.rootfs_in_use(pods_dir);
        let images = self.list();
        let chosen = choose(&groups(&images), &in_use, usage, t);
        let mut removed = Vec::new();
        for group in &chosen {
            for reference in &group.references {
                let path = self.root.join("refs").join(super::ref_file(reference));
                std::fs::remove_file(&path).map_err(AgentError::io("remove image record", &path))?;
                removed.push(reference.clone());
            }
            if let Err(err) = std::fs::remove_dir_all(&group.rootfs) {
                tracing::warn!(rootfs = %group.rootfs.display(), error = %err, "cannot remove image rootfs");
            }
            tracing::info!(image = %group.config_digest, references = ?group.references, bytes = group.size, "image garbage-collected");
        }
        // Blobs no remaining image needs go too.
        let kept: HashSet<String> = self.list().iter().flat_map(|i| i.layers.clone()).collect();
        for group in &chosen {
            for image in images.iter().filter(|i| i.rootfs == group.rootfs) {
                for layer in image.layers.iter().filter(|l| !kept.contains(*l)) {
                    if let Ok(path) = self.blob_path(layer) {
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, size: u64, last_used: i64) -> Group {
        Group {
            config_digest: format!("sha256:{name}"),
            rootfs: PathBuf::from(format!("/r/{name}")),
            references: vec![name.to_string()],
            size,
            last_used,
        }
    }

    #[test]
    fn least_recently_used_unused_images_go_until_under_the_low_mark() {
        let all = vec![group("old", 30, 1), group("used", 50, 0), group("mid", 40, 5), group("new", 40, 9)];
        let in_use: HashSet<PathBuf> = [PathBuf::from("/r/used")].into();
        let t = Thresholds::default();
        // 84 % used: below the high mark, nothing goes.
        assert!(choose(&all, &in_use, Usage { capacity: 1000, used: 840 }, t).is_empty());
        // 90 % used: 100 bytes to free to reach 80 %: old (30) + mid (40) + new (40); never `used`.
        let names = |c: Vec<Group>| c.into_iter().map(|g| g.references[0].clone()).collect::<Vec<_>>();
        assert_eq!(names(choose(&all, &in_use, Usage { capacity: 1000, used: 900 }, t)), ["old", "mid", "new"]);
        // 86 %: 60 bytes, old and mid suffice.
        assert_eq!(names(choose(&all, &in_use, Usage { capacity: 1000, used: 860 }, t)), ["old", "mid"]);
    }

    #[test]
    fn collection_keeps_images_pods_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::new(dir.path().join("images"), &[]);
        let mut records = Vec::new();
        for (name, hex) in [("example.com/a:1", "a"), ("example.com/b:1", "b")] {
            let rootfs = store.root().join("rootfs").join(hex.repeat(64));
            std::fs::create_dir_all(&rootfs).expect("rootfs");
            let layer = format!("sha256:{}", hex.repeat(64));
            let blob = store.blob_path(&layer).expect("blob path");
            std::fs::create_dir_all(blob.parent().expect("dir")).expect("blobs");
            std::fs::write(&blob, "layer").expect("blob");
            let image = Image {
                reference: name.into(),
                image_id: String::new(),
                config_digest: format!("sha256:{}", hex.repeat(64)),
                config: Default::default(),
                rootfs,
                layers: vec![layer],
                size: 10,
                last_used: 0,
            };
            store.write_record(&image).expect("record");
            records.push(image);
        }
        let pods = dir.path().join("pods");
        std::fs::create_dir_all(pods.join("uid1")).expect("pod dir");
        let pod = serde_json::json!({"spec": {"containers": [{"name": "c", "image": "example.com/a:1"}]}});
        std::fs::write(pods.join("uid1/pod.json"), pod.to_string()).expect("pod.json");
        let full = Usage { capacity: 100, used: 100 };
        let removed = store.collect(&pods, full, Thresholds::default()).expect("collect");
        assert_eq!(removed, ["example.com/b:1"]);
        assert!(store.local("example.com/a:1").is_some() && records[0].rootfs.is_dir());
        assert!(store.local("example.com/b:1").is_none() && !records[1].rootfs.exists());
        assert!(store.blob_path(&records[0].layers[0]).expect("path").exists());
        assert!(!store.blob_path(&records[1].layers[0]).expect("path").exists());
    }
}
