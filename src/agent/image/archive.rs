//! Airgap image archives: an OCI layout tar (`skopeo copy … oci-archive:`)
//! or a `docker save` tar (`docker-archive:`), optionally gzip or zstd
//! compressed, imported into the content store. The agent imports those in
//! `<data-dir>/agent/images/` at start and when new or changed ones appear;
//! `kube image import` uses the same code. Writers take an exclusive lock on
//! `<images>/lock`, so the CLI and a running agent never step on each other.

use super::unpack::decompressed;
use super::{Image, ImageStore, hex_of, normalise, sha256_file, unique};
use crate::agent::error::{AgentError, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File names the airgap folder imports.
pub fn is_archive(name: &str) -> bool {
    [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"].iter().any(|s| name.ends_with(s))
}

/// The exclusive lock of the store's writers (released when dropped).
pub fn lock(root: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    std::fs::create_dir_all(root).map_err(AgentError::io("create", root))?;
    let path = root.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(AgentError::io("open store lock", &path))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| AgentError::sys(format!("lock {}", path.display()))(errno))
}

fn bad(path: &Path, message: impl Into<String>) -> AgentError {
    AgentError::Pull { image: path.display().to_string(), message: message.into() }
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(AgentError::io("read", path))?;
    serde_json::from_slice(&bytes).map_err(|err| bad(path, format!("not JSON: {err}")))
}

/// A file of the unpacked archive, refusing paths that leave it.
fn inside(dir: &Path, name: &str) -> Result<PathBuf> {
    if name.split('/').any(|p| p == "..") {
        return Err(bad(dir, format!("path {name:?} leaves the archive")));
    }
    Ok(dir.join(name.trim_start_matches('/')))
}

/// One image found in an archive, before it is stored.
struct Found {
    names: Vec<String>,
    manifest_digest: Option<String>,
    config: PathBuf,
    layers: Vec<PathBuf>,
}

/// The images of an OCI layout (index.json, blobs/sha256/…).
fn oci_images(dir: &Path) -> Result<Vec<Found>> {
    let index = read_json(&dir.join("index.json"))?;
    let blob = |digest: &str| -> Result<PathBuf> { Ok(dir.join("blobs/sha256").join(hex_of(digest)?)) };
    let mut found = Vec::new();
    for entry in index["manifests"].as_array().into_iter().flatten() {
        let annotations = &entry["annotations"];
        let name = annotations["io.containerd.image.name"]
            .as_str()
            .or_else(|| annotations["org.opencontainers.image.ref.name"].as_str())
            .filter(|n| n.contains('/'))
            .map(str::to_string);
        let Some(name) = name else {
            tracing::warn!(archive = %dir.display(), "an OCI archive entry without a full image name is skipped");
            continue;
        };
        let mut digest = entry["digest"].as_str().unwrap_or_default().to_string();
        let mut manifest = read_json(&blob(&digest)?)?;
        if manifest.get("manifests").is_some() {
            let entries: Vec<oci_client::manifest::ImageIndexEntry> =
                serde_json::from_value(manifest["manifests"].clone()).map_err(|e| bad(dir, e.to_string()))?;
            digest = super::pull::host_platform(&entries).ok_or_else(|| bad(dir, "no manifest for this platform"))?;
            manifest = read_json(&blob(&digest)?)?;
        }
        let config = blob(manifest["config"]["digest"].as_str().unwrap_or_default())?;
        let layers = manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| blob(l["digest"].as_str().unwrap_or_default()))
            .collect::<Result<Vec<_>>>()?;
        found.push(Found { names: vec![name], manifest_digest: Some(digest), config, layers });
    }
    Ok(found)
}

/// The images of a `docker save` archive (manifest.json).
fn docker_images(dir: &Path) -> Result<Vec<Found>> {
    let manifest = read_json(&dir.join("manifest.json"))?;
    let mut found = Vec::new();
    for entry in manifest.as_array().into_iter().flatten() {
        let names: Vec<String> =
            entry["RepoTags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect();
        let config = inside(dir, entry["Config"].as_str().unwrap_or_default())?;
        let layers = entry["Layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| inside(dir, l.as_str().unwrap_or_default()))
            .collect::<Result<Vec<_>>>()?;
        found.push(Found { names, manifest_digest: None, config, layers });
    }
    Ok(found)
}

impl ImageStore {
    /// Imports every image of the archive at `path`; returns their names.
    /// The caller holds [`lock`].
    pub fn import_archive(&self, path: &Path) -> Result<Vec<Image>> {
        let work = self.root.join(format!("import.partial-{}", unique()));
        std::fs::create_dir_all(&work).map_err(AgentError::io("create", &work))?;
        let result = self.import_into(path, &work);
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    fn import_into(&self, path: &Path, work: &Path) -> Result<Vec<Image>> {
        let file = std::fs::File::open(path).map_err(AgentError::io("open image archive", path))?;
        let reader = decompressed(file).map_err(AgentError::io("read image archive", path))?;
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(false);
        archive.unpack(work).map_err(|err| bad(path, format!("not a tar archive: {err}")))?;
        let found = if work.join("index.json").exists() {
            oci_images(work)?
        } else if work.join("manifest.json").exists() {
            docker_images(work)?
        } else {
            return Err(bad(path, "neither an OCI layout (index.json) nor a docker archive (manifest.json)"));
        };
        let mut images = Vec::new();
        for image in found {
            let config_digest =
                sha256_file(&image.config).map_err(AgentError::io("read image config", &image.config))?;
            let config = read_json(&image.config)?;
            let mut layers = Vec::new();
            let mut size = std::fs::metadata(&image.config).map_or(0, |m| m.len());
            for layer in &image.layers {
                let digest = sha256_file(layer).map_err(AgentError::io("read layer", layer))?;
                size += std::fs::metadata(layer).map_or(0, |m| m.len());
                let stored = self.blob_path(&digest)?;
                let stored = if stored.exists() { stored } else { self.store_blob(layer, &digest)? };
                layers.push((stored, digest));
            }
            let config_hex = hex_of(&config_digest)?.to_string();
            let rootfs = super::unpack_rootfs(&self.root, &config_hex, &layers)?;
            for name in &image.names {
                let reference = normalise(name)?;
                let image_id = match &image.manifest_digest {
                    Some(digest) => format!("{}/{}@{digest}", reference.registry(), reference.repository()),
                    None => config_digest.clone(),
                };
                let record = Image {
                    reference: reference.whole(),
                    image_id,
                    config_digest: config_digest.clone(),
                    config: config.get("config").cloned().unwrap_or_default(),
                    rootfs: rootfs.clone(),
                    layers: layers.iter().map(|(_, d)| d.clone()).collect(),
                    size,
                    last_used: super::now_unix(),
                };
                self.write_record(&record)?;
                images.push(record);
            }
        }
        Ok(images)
    }

    /// Imports the archives in the store's folder that are new or changed
    /// since the last scan (remembered in `imported.json`).
    pub fn import_folder(&self) -> Result<Vec<Image>> {
        let _lock = lock(&self.root)?;
        let state_path = self.root.join("imported.json");
        let mut seen: BTreeMap<String, String> =
            std::fs::read(&state_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let mut images = Vec::new();
        let mut changed = false;
        for entry in std::fs::read_dir(&self.root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || !is_archive(&name) {
                continue;
            }
            let stamp = format!("{}:{:?}", meta.len(), meta.modified().ok());
            if seen.get(&name) == Some(&stamp) {
                continue;
            }
            match self.import_archive(&entry.path()) {
                Ok(found) => {
                    for image in &found {
                        tracing::info!(archive = %name, image = %image.reference, "image imported");
                    }
                    images.extend(found);
                }
                Err(err) => tracing::warn!(archive = %name, error = %err, "cannot import image archive"),
            }
            seen.insert(name, stamp);
            changed = true;
        }
        if changed {
            let text = serde_json::to_vec(&seen).unwrap_or_default();
            std::fs::write(&state_path, text).map_err(AgentError::io("write", &state_path))?;
        }
        Ok(images)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, path, *data).expect("append");
        }
        builder.into_inner().expect("tar")
    }

    fn digest(data: &[u8]) -> String {
        format!("{:x}", sha2::Sha256::digest(data))
    }

    #[test]
    fn docker_and_oci_archives_import() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::new(dir.path().join("images"), &[]);
        let layer = tar_of(&[("bin/hello", b"hi")]);
        let config = br#"{"config":{"Cmd":["/bin/hello"]}}"#.to_vec();
        let docker = tar_of(&[
            ("manifest.json", br#"[{"Config":"c.json","RepoTags":["busybox:saved"],"Layers":["l/layer.tar"]}]"#),
            ("c.json", &config),
            ("l/layer.tar", &layer),
        ]);
        let gz = {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&docker).expect("gzip");
            gz.finish().expect("gzip")
        };
        let path = dir.path().join("docker.tar.gz");
        std::fs::write(&path, gz).expect("write");
        let images = store.import_archive(&path).expect("docker import");
        assert_eq!(images[0].reference, "docker.io/library/busybox:saved");
        assert_eq!(images[0].image_id, format!("sha256:{}", digest(&config)));
        assert_eq!(std::fs::read_to_string(images[0].rootfs.join("bin/hello")).expect("rootfs"), "hi");
        assert_eq!(images[0].cmd(), ["/bin/hello"]);

        let (l, c) = (digest(&layer), digest(&config));
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"sha256:{c}","size":{}}},"layers":[{{"digest":"sha256:{l}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        );
        let m = digest(manifest.as_bytes());
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"sha256:{m}","size":1,"annotations":{{"org.opencontainers.image.ref.name":"example.com/team/app:1"}}}}]}}"#
        );
        let oci = tar_of(&[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            ("index.json", index.as_bytes()),
            (&format!("blobs/sha256/{m}"), manifest.as_bytes()),
            (&format!("blobs/sha256/{c}"), &config),
            (&format!("blobs/sha256/{l}"), &layer),
        ]);
        std::fs::write(
            store.root().join("app.tar.zst"),
            ruzstd::encoding::compress_to_vec(&oci[..], ruzstd::encoding::CompressionLevel::Fastest),
        )
        .expect("write");
        let imported = store.import_folder().expect("folder");
        assert_eq!(imported.len(), 1);
        assert_eq!(imported[0].image_id, format!("example.com/team/app@sha256:{m}"));
        assert!(store.local("example.com/team/app:1").is_some());
        assert!(store.import_folder().expect("rescan").is_empty(), "unchanged archives are not imported again");
        assert_eq!(store.list().len(), 2);
    }
}
