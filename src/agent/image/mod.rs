//! Images: pulls over the OCI distribution API (plain HTTP for the configured
//! insecure registries, HTTPS otherwise), keeps blobs in a content store under
//! `<data>/images/blobs/sha256` with digests verified, and unpacks each image
//! once into a read-only rootfs that containers use as overlayfs lower dir.

pub mod unpack;

use super::error::{AgentError, Result};
use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol, linux_amd64_resolver};
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// An image ready to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Image {
    /// The normalised reference, e.g. `127.0.0.1:5000/busybox:latest`.
    pub reference: String,
    /// `<repository>@<manifest digest>`, what containerStatuses[].imageID shows.
    pub image_id: String,
    pub config_digest: String,
    /// The image config's `config` object (Env, Entrypoint, Cmd, WorkingDir, User).
    pub config: serde_json::Value,
    pub rootfs: PathBuf,
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

pub struct ImageStore {
    root: PathBuf,
    client: oci_client::Client,
    /// One pull at a time per reference.
    locks: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// `sha256:<hex>` → `<hex>`, refusing anything else.
fn hex_of(digest: &str) -> Result<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| AgentError::Layer { digest: digest.into(), message: "only sha256 digests are supported".into() })
}

/// A file name for a reference.
fn ref_file(reference: &str) -> String {
    reference.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(format!("sha256:{:x}", hasher.finalize()))
}

impl ImageStore {
    pub fn new(root: PathBuf, insecure_registries: &[String]) -> ImageStore {
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure_registries.to_vec()),
            platform_resolver: Some(Box::new(linux_amd64_resolver)),
            ..Default::default()
        };
        ImageStore { root, client: oci_client::Client::new(config), locks: Default::default() }
    }

    /// The image for `image` under `policy` (Always / IfNotPresent / Never):
    /// the local copy when allowed, a pull otherwise.
    #[tracing::instrument(skip(self), fields(image = %image))]
    pub async fn ensure(&self, image: &str, policy: &str) -> Result<Image> {
        let reference: Reference = image.parse().map_err(|err: oci_client::ParseError| AgentError::Reference {
            reference: image.into(),
            message: err.to_string(),
        })?;
        let name = reference.whole();
        let lock = self.locks.lock().await.entry(name.clone()).or_default().clone();
        let _guard = lock.lock().await;
        let local = self.local(&name);
        let always = policy == "Always"
            || (policy.is_empty() && reference.digest().is_none() && reference.tag().is_none_or(|t| t == "latest"));
        match (local, policy) {
            (Some(image), _) if !always => return Ok(image),
            (None, "Never") => {
                return Err(AgentError::Pull {
                    image: name,
                    message: "image not present and imagePullPolicy is Never".into(),
                });
            }
            (local, _) => match self.pull(&reference).await {
                Ok(image) => Ok(image),
                Err(err) => match local {
                    Some(image) => {
                        tracing::warn!(error = %err, "pull failed; using the local copy");
                        Ok(image)
                    }
                    None => Err(err),
                },
            },
        }
    }

    fn local(&self, name: &str) -> Option<Image> {
        let text = std::fs::read(self.root.join("refs").join(ref_file(name))).ok()?;
        let image: Image = serde_json::from_slice(&text).ok()?;
        image.rootfs.is_dir().then_some(image)
    }

    async fn pull(&self, reference: &Reference) -> Result<Image> {
        let name = reference.whole();
        let pull_err = |message: String| AgentError::Pull { image: name.clone(), message };
        let started = std::time::Instant::now();
        let (manifest, manifest_digest, config) = self
            .client
            .pull_manifest_and_config(reference, &RegistryAuth::Anonymous)
            .await
            .map_err(|err| pull_err(format!("manifest: {err}")))?;
        let config: serde_json::Value =
            serde_json::from_str(&config).map_err(|err| pull_err(format!("image config: {err}")))?;
        let config_hex = hex_of(&manifest.config.digest)?.to_string();
        let rootfs = self.root.join("rootfs").join(&config_hex);
        if !rootfs.is_dir() {
            let mut blobs = Vec::new();
            for layer in &manifest.layers {
                blobs.push((self.fetch_blob(reference, layer).await?, layer.digest.clone()));
            }
            let partial = self.root.join("rootfs").join(format!("{config_hex}.partial"));
            let target = rootfs.clone();
            tokio::task::spawn_blocking(move || -> Result<()> {
                let _ = std::fs::remove_dir_all(&partial);
                std::fs::create_dir_all(&partial).map_err(AgentError::io("create rootfs", &partial))?;
                for (blob, digest) in &blobs {
                    unpack::apply_layer(blob, digest, &partial)?;
                }
                std::fs::rename(&partial, &target).map_err(AgentError::io("finish rootfs", &target))
            })
            .await
            .map_err(|err| pull_err(format!("unpack task: {err}")))??;
        }
        let image = Image {
            reference: name.clone(),
            image_id: format!("{}/{}@{}", reference.registry(), reference.repository(), manifest_digest),
            config_digest: manifest.config.digest.clone(),
            config: config.get("config").cloned().unwrap_or_default(),
            rootfs,
        };
        let refs = self.root.join("refs");
        std::fs::create_dir_all(&refs).map_err(AgentError::io("create", &refs))?;
        let path = refs.join(ref_file(&name));
        let text = serde_json::to_vec(&image).map_err(|err| pull_err(err.to_string()))?;
        std::fs::write(&path, text).map_err(AgentError::io("write image record", &path))?;
        tracing::info!(image_id = %image.image_id, layers = manifest.layers.len(), elapsed_ms = started.elapsed().as_millis() as u64, "image ready");
        Ok(image)
    }

    /// A layer blob in the content store, fetched and verified when missing.
    async fn fetch_blob(&self, reference: &Reference, layer: &oci_client::manifest::OciDescriptor) -> Result<PathBuf> {
        let hex = hex_of(&layer.digest)?;
        let dir = self.root.join("blobs").join("sha256");
        let path = dir.join(hex);
        if path.exists() {
            return Ok(path);
        }
        tokio::fs::create_dir_all(&dir).await.map_err(AgentError::io("create", &dir))?;
        let tmp = dir.join(format!("{hex}.partial"));
        let mut file = tokio::fs::File::create(&tmp).await.map_err(AgentError::io("create blob", &tmp))?;
        self.client
            .pull_blob(reference, layer, &mut file)
            .await
            .map_err(|err| AgentError::Layer { digest: layer.digest.clone(), message: format!("download: {err}") })?;
        file.flush().await.map_err(AgentError::io("write blob", &tmp))?;
        drop(file);
        let check = tmp.clone();
        let got = tokio::task::spawn_blocking(move || sha256_file(&check))
            .await
            .map_err(|err| AgentError::Layer { digest: layer.digest.clone(), message: err.to_string() })?
            .map_err(AgentError::io("hash blob", &tmp))?;
        if got != layer.digest {
            let _ = std::fs::remove_file(&tmp);
            return Err(AgentError::Layer {
                digest: layer.digest.clone(),
                message: format!("content has digest {got}"),
            });
        }
        std::fs::rename(&tmp, &path).map_err(AgentError::io("store blob", &path))?;
        Ok(path)
    }
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
    }
}
