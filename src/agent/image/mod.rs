//! Images: pulls over the OCI distribution API through the mirrors,
//! credentials and TLS settings of `registries.yaml` ([`registries`]) and
//! the pod's pull secrets ([`keyring`]), keeps blobs in a content store under
//! `<data>/images/blobs/sha256` with digests verified, and unpacks each image
//! once into a read-only rootfs that containers use as overlayfs lower dir.
//! Image archives dropped into `<data>/images/` are imported ([`archive`]);
//! unused images are garbage-collected when the disk fills ([`gc`]).

pub mod archive;
pub mod cmd;
pub mod gc;
pub mod keyring;
pub mod pull;
pub mod registries;
pub mod unpack;

use super::error::{AgentError, Result};
use oci_client::Reference;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use keyring::Keyring;
pub use registries::Registries;

/// An image ready to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Image {
    /// The normalised reference, e.g. `127.0.0.1:5000/busybox:latest`.
    pub reference: String,
    /// `<repository>@<manifest digest>` (or `sha256:<config>` for an image
    /// imported without a manifest), what containerStatuses[].imageID shows.
    pub image_id: String,
    pub config_digest: String,
    /// The image config's `config` object (Env, Entrypoint, Cmd, WorkingDir, User).
    pub config: serde_json::Value,
    pub rootfs: PathBuf,
    /// Layer blob digests, lowest first.
    #[serde(default)]
    pub layers: Vec<String>,
    /// Bytes of the config and the layer blobs, as `crictl images` shows.
    #[serde(default)]
    pub size: u64,
    /// Unix seconds of the last time a container asked for this image.
    #[serde(default)]
    pub last_used: i64,
}

impl Image {
    fn strings(&self, key: &str) -> Vec<String> {
        self.config
            .get(key)
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }
    pub fn env(&self) -> Vec<String> {
        self.strings("Env")
    }
    pub fn entrypoint(&self) -> Vec<String> {
        self.strings("Entrypoint")
    }
    pub fn cmd(&self) -> Vec<String> {
        self.strings("Cmd")
    }
    pub fn working_dir(&self) -> Option<String> {
        self.config.get("WorkingDir").and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_string)
    }
}

/// Held while a container is being created from an image: garbage
/// collection waits for it, so it never removes a rootfs about to be mounted.
pub type InUse = tokio::sync::OwnedRwLockReadGuard<()>;

pub struct ImageStore {
    root: PathBuf,
    registries: Registries,
    /// Registries spoken to over plain HTTP (besides `http://` mirror endpoints).
    plain_http: Vec<String>,
    /// One client per endpoint (`http(s)://host`), with its TLS settings.
    clients: std::sync::Mutex<HashMap<String, oci_client::Client>>,
    /// One pull at a time per reference.
    locks: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Read: a container is being created; write: garbage collection.
    gc: Arc<tokio::sync::RwLock<()>>,
}

/// `sha256:<hex>` → `<hex>`, refusing anything else.
pub fn hex_of(digest: &str) -> Result<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| AgentError::Layer { digest: digest.into(), message: "only sha256 digests are supported".into() })
}

/// A file name for a reference.
pub(crate) fn ref_file(reference: &str) -> String {
    reference.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(format!("sha256:{:x}", hasher.finalize()))
}

/// The normalised form of an image name (`busybox` → `docker.io/library/busybox:latest`).
pub fn normalise(image: &str) -> Result<Reference> {
    image.parse().map_err(|err: oci_client::ParseError| AgentError::Reference {
        reference: image.into(),
        message: err.to_string(),
    })
}

pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A unique suffix for temporary files (other processes may import too).
pub(crate) fn unique() -> String {
    format!("{}-{:08x}", std::process::id(), rand::random::<u32>())
}

impl ImageStore {
    pub fn new(root: PathBuf, insecure_registries: &[String]) -> ImageStore {
        ImageStore::with_registries(root, insecure_registries, Registries::default())
    }

    pub fn with_registries(root: PathBuf, insecure_registries: &[String], registries: Registries) -> ImageStore {
        ImageStore {
            root,
            plain_http: insecure_registries.to_vec(),
            registries,
            clients: Default::default(),
            locks: Default::default(),
            gc: Default::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The image for `image` under `policy` (Always / IfNotPresent / Never):
    /// the local copy when allowed, a pull otherwise (with `keyring`'s
    /// credentials for the registry itself). The guard keeps garbage
    /// collection away until the container's rootfs is mounted.
    #[tracing::instrument(skip(self, keyring), fields(image = %image))]
    pub async fn ensure(&self, image: &str, policy: &str, keyring: &Keyring) -> Result<(Image, InUse)> {
        let reference = normalise(image)?;
        let name = reference.whole();
        let in_use = self.gc.clone().read_owned().await;
        let lock = self.locks.lock().await.entry(name.clone()).or_default().clone();
        let _guard = lock.lock().await;
        let local = self.local(&name);
        let always = policy == "Always"
            || (policy.is_empty() && reference.digest().is_none() && reference.tag().is_none_or(|t| t == "latest"));
        let image = match (local, policy) {
            (Some(image), _) if !always => image,
            (None, "Never") => {
                return Err(AgentError::NeverPull { image: image.to_string() });
            }
            (local, _) => match self.pull(&reference, keyring).await {
                Ok(image) => image,
                Err(err) => match local {
                    Some(image) => {
                        tracing::warn!(error = %err, "pull failed; using the local copy");
                        image
                    }
                    None => return Err(err),
                },
            },
        };
        let mut image = image;
        image.last_used = now_unix();
        let _ = self.write_record(&image);
        Ok((image, in_use))
    }

    /// The image stored under a normalised reference, if its rootfs is there.
    pub fn local(&self, name: &str) -> Option<Image> {
        let text = std::fs::read(self.root.join("refs").join(ref_file(name))).ok()?;
        let image: Image = serde_json::from_slice(&text).ok()?;
        image.rootfs.is_dir().then_some(image)
    }

    /// Every image record (also those whose rootfs is gone).
    pub fn list(&self) -> Vec<Image> {
        let mut images: Vec<Image> = std::fs::read_dir(self.root.join("refs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().contains(".partial"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        images.sort_by(|a: &Image, b: &Image| a.reference.cmp(&b.reference));
        images
    }

    /// Writes an image record atomically (write + rename).
    pub fn write_record(&self, image: &Image) -> Result<()> {
        let refs = self.root.join("refs");
        std::fs::create_dir_all(&refs).map_err(AgentError::io("create", &refs))?;
        let path = refs.join(ref_file(&image.reference));
        let tmp = refs.join(format!("{}.partial-{}", ref_file(&image.reference), unique()));
        let text = serde_json::to_vec(image)
            .map_err(|err| AgentError::Pull { image: image.reference.clone(), message: err.to_string() })?;
        std::fs::write(&tmp, text).map_err(AgentError::io("write image record", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(AgentError::io("write image record", &path))
    }

    /// Where the blob of `digest` lives in the content store.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("blobs").join("sha256").join(hex_of(digest)?))
    }

    /// Moves a verified file into the content store as the blob of `digest`.
    pub fn store_blob(&self, file: &Path, digest: &str) -> Result<PathBuf> {
        let path = self.blob_path(digest)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(AgentError::io("create", dir))?;
        }
        std::fs::rename(file, &path).map_err(AgentError::io("store blob", &path))?;
        Ok(path)
    }

    /// A temporary file name in the blob folder (same filesystem, for renames).
    pub fn temp_blob(&self) -> Result<PathBuf> {
        let dir = self.root.join("blobs").join("sha256");
        std::fs::create_dir_all(&dir).map_err(AgentError::io("create", &dir))?;
        Ok(dir.join(format!("tmp.partial-{}", unique())))
    }
}

/// Unpacks `layers` (blob paths with their digests) into the rootfs of
/// `config_hex` under the store `root` unless it is there already; returns its path.
pub fn unpack_rootfs(root: &Path, config_hex: &str, layers: &[(PathBuf, String)]) -> Result<PathBuf> {
    let dir = root.join("rootfs");
    let rootfs = dir.join(config_hex);
    if rootfs.is_dir() {
        return Ok(rootfs);
    }
    let partial = dir.join(format!("{config_hex}.partial-{}", unique()));
    std::fs::create_dir_all(&partial).map_err(AgentError::io("create rootfs", &partial))?;
    let result = layers.iter().try_for_each(|(blob, digest)| unpack::apply_layer(blob, digest, &partial));
    if let Err(err) = result {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(err);
    }
    if let Err(err) = std::fs::rename(&partial, &rootfs) {
        let _ = std::fs::remove_dir_all(&partial);
        // Another importer finished first: theirs is as good.
        if !rootfs.is_dir() {
            return Err(AgentError::io("finish rootfs", &rootfs)(err));
        }
    }
    Ok(rootfs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_ref_files() {
        assert!(hex_of("sha256:abc").is_err());
        let hex = "a".repeat(64);
        assert_eq!(hex_of(&format!("sha256:{hex}")).expect("hex"), hex);
        assert_eq!(ref_file("127.0.0.1:5000/busybox:latest"), "127.0.0.1_5000_busybox_latest");
        assert_eq!(normalise("busybox").expect("ref").whole(), "docker.io/library/busybox:latest");
    }
}
