//! Pulling one image: tries each endpoint `registries.yaml` gives (mirrors,
//! then the registry itself) with each credential that applies, picks the
//! host's platform from a manifest list, fetches and verifies the layer
//! blobs and unpacks the rootfs.

use super::registries::{Credentials, Target};
use super::{Image, ImageStore, Keyring, hex_of};
use crate::agent::error::{AgentError, Result};
use oci_client::Reference;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::ImageIndexEntry;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

/// The manifest of a list that runs here: `os`/`arch` (Go names), preferring
/// the variant the host has (`v8` for arm64), else the first of that arch.
pub fn pick_platform(manifests: &[ImageIndexEntry], os: &str, arch: &str, variant: Option<&str>) -> Option<String> {
    let candidates: Vec<&ImageIndexEntry> = manifests
        .iter()
        .filter(|m| m.platform.as_ref().is_some_and(|p| p.os.to_string() == os && p.architecture.to_string() == arch))
        .collect();
    candidates
        .iter()
        .find(|m| variant.is_some() && m.platform.as_ref().and_then(|p| p.variant.as_deref()) == variant)
        .or_else(|| candidates.first())
        .map(|m| m.digest.clone())
}

pub fn host_platform(manifests: &[ImageIndexEntry]) -> Option<String> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    let variant = match arch {
        "arm64" => Some("v8"),
        "arm" => Some("v7"),
        _ => None,
    };
    pick_platform(manifests, "linux", arch, variant)
}

fn to_auth(creds: &Credentials) -> RegistryAuth {
    match creds {
        Credentials::Basic { username, password } => RegistryAuth::Basic(username.clone(), password.clone()),
        Credentials::IdentityToken(token) => RegistryAuth::Bearer(token.clone()),
    }
}

/// An upstream-like description of a failed request.
fn describe(err: &OciDistributionError, target: &Target) -> String {
    match err {
        OciDistributionError::UnauthorizedError { url } => {
            format!("unexpected status from GET request to {url}: 401 Unauthorized")
        }
        OciDistributionError::ServerError { url, code, message } => {
            let reason = http::StatusCode::from_u16(*code).ok().and_then(|c| c.canonical_reason()).unwrap_or("");
            format!("unexpected status from GET request to {url}: {code} {reason} {message}").trim_end().to_string()
        }
        OciDistributionError::AuthenticationFailure(why) => {
            format!("failed to authorize with {}: {why}: 401 Unauthorized", target.host)
        }
        OciDistributionError::ImageManifestNotFoundError(_) => format!("{}: not found", target.host),
        other => format!("pulling from host {}: {other}", target.host),
    }
}

impl ImageStore {
    /// The client for one endpoint and credential, made once with the host's
    /// TLS settings (oci-client keeps the first credential a client used per
    /// registry, so each credential gets a client of its own).
    fn client(&self, target: &Target, auth: &RegistryAuth) -> Result<oci_client::Client> {
        use sha2::Digest;
        let who = match auth {
            RegistryAuth::Anonymous => String::new(),
            RegistryAuth::Basic(user, password) => format!("basic:{user}:{:x}", sha2::Sha256::digest(password)),
            RegistryAuth::Bearer(token) => format!("bearer:{:x}", sha2::Sha256::digest(token)),
        };
        let key = format!("{}://{} {who}", if target.plain_http { "http" } else { "https" }, target.host);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let mut config = ClientConfig {
            protocol: if target.plain_http { ClientProtocol::Http } else { ClientProtocol::Https },
            platform_resolver: Some(Box::new(host_platform)),
            ..Default::default()
        };
        if let Some(host) = self.registries.config(&target.host) {
            config.accept_invalid_certificates = host.tls.insecure_skip_verify;
            if let Some(ca) = &host.tls.ca_file {
                let data = std::fs::read(ca).map_err(AgentError::io("read registry ca_file", ca))?;
                config.extra_root_certificates.push(Certificate { encoding: CertificateEncoding::Pem, data });
            }
            if host.tls.cert_file.is_some() {
                tracing::warn!(host = %target.host, "client certificates (tls.cert_file) are not supported yet; connecting without one");
            }
        }
        let client = oci_client::Client::new(config);
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// The credentials to try at `target`, in order, ending with anonymous.
    fn auths(&self, target: &Target, image: &str, keyring: &Keyring) -> Vec<RegistryAuth> {
        let mut auths: Vec<RegistryAuth> = Vec::new();
        if target.default {
            auths.extend(keyring.lookup(image).iter().map(to_auth));
        }
        let configured = self.registries.config(&target.host).and_then(|c| c.auth.as_ref());
        if let Some(Ok(Some(creds))) = configured.map(|a| a.credentials()) {
            auths.push(to_auth(&creds));
        }
        auths.push(RegistryAuth::Anonymous);
        auths
    }

    pub(super) async fn pull(&self, reference: &Reference, keyring: &Keyring) -> Result<Image> {
        let name = reference.whole();
        let started = std::time::Instant::now();
        let image_key = format!("{}/{}", reference.registry(), reference.repository());
        let targets = self.registries.targets(reference.registry(), reference.repository(), &self.plain_http);
        let mut last = String::from("no endpoint to pull from");
        for target in &targets {
            let at = match reference.digest() {
                Some(digest) => Reference::with_digest(target.host.clone(), target.repository.clone(), digest.into()),
                None => Reference::with_tag(
                    target.host.clone(),
                    target.repository.clone(),
                    reference.tag().unwrap_or("latest").into(),
                ),
            };
            for auth in self.auths(target, &image_key, keyring) {
                let client = self.client(target, &auth)?;
                match client.pull_manifest_and_config(&at, &auth).await {
                    Ok((manifest, digest, config)) => {
                        let image = self.fetch(&client, &at, reference, manifest, digest, &config).await?;
                        tracing::info!(image_id = %image.image_id, from = %target.host, layers = image.layers.len(), elapsed_ms = started.elapsed().as_millis() as u64, "image ready");
                        return Ok(image);
                    }
                    Err(err) => {
                        last = describe(&err, target);
                        tracing::info!(endpoint = %target.host, repository = %target.repository, error = %err, "pull attempt failed");
                    }
                }
            }
        }
        Err(AgentError::Pull {
            image: name.clone(),
            message: format!("failed to pull and unpack image {name:?}: failed to resolve reference {name:?}: {last}"),
        })
    }

    async fn fetch(
        &self,
        client: &oci_client::Client,
        at: &Reference,
        reference: &Reference,
        manifest: OciImageManifest,
        manifest_digest: String,
        config_text: &str,
    ) -> Result<Image> {
        let name = reference.whole();
        let pull_err = |message: String| AgentError::Pull { image: name.clone(), message };
        let config: serde_json::Value =
            serde_json::from_str(config_text).map_err(|err| pull_err(format!("image config: {err}")))?;
        let config_hex = hex_of(&manifest.config.digest)?.to_string();
        let mut blobs = Vec::new();
        for layer in &manifest.layers {
            blobs.push((self.fetch_blob(client, at, layer).await?, layer.digest.clone()));
        }
        let root = self.root.clone();
        let rootfs = tokio::task::spawn_blocking(move || super::unpack_rootfs(&root, &config_hex, &blobs))
            .await
            .map_err(|err| pull_err(format!("unpack task: {err}")))??;
        let size =
            manifest.config.size.max(0) as u64 + manifest.layers.iter().map(|l| l.size.max(0) as u64).sum::<u64>();
        let image = Image {
            reference: name.clone(),
            image_id: format!("{}/{}@{}", reference.registry(), reference.repository(), manifest_digest),
            config_digest: manifest.config.digest.clone(),
            config: config.get("config").cloned().unwrap_or_default(),
            rootfs,
            layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            size,
            last_used: super::now_unix(),
        };
        self.write_record(&image)?;
        Ok(image)
    }

    /// A layer blob in the content store, fetched and verified when missing.
    async fn fetch_blob(&self, client: &oci_client::Client, at: &Reference, layer: &OciDescriptor) -> Result<PathBuf> {
        let path = self.blob_path(&layer.digest)?;
        if path.exists() {
            return Ok(path);
        }
        let tmp = self.temp_blob()?;
        let layer_err = |message: String| AgentError::Layer { digest: layer.digest.clone(), message };
        let mut file = tokio::fs::File::create(&tmp).await.map_err(AgentError::io("create blob", &tmp))?;
        if let Err(err) = client.pull_blob(at, layer, &mut file).await {
            let _ = std::fs::remove_file(&tmp);
            return Err(layer_err(format!("download: {err}")));
        }
        file.flush().await.map_err(AgentError::io("write blob", &tmp))?;
        drop(file);
        let check = tmp.clone();
        let got = tokio::task::spawn_blocking(move || super::sha256_file(&check))
            .await
            .map_err(|err| layer_err(err.to_string()))?
            .map_err(AgentError::io("hash blob", &tmp))?;
        if got != layer.digest {
            let _ = std::fs::remove_file(&tmp);
            return Err(layer_err(format!("content has digest {got}")));
        }
        self.store_blob(&tmp, &layer.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>, digest: &str) -> ImageIndexEntry {
        serde_json::from_value(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": 1,
            "platform": {"os": "linux", "architecture": arch, "variant": variant},
        }))
        .expect("entry")
    }

    #[test]
    fn manifest_lists_pick_the_host_platform() {
        let list = vec![
            entry("amd64", None, "sha256:a"),
            entry("arm", Some("v6"), "sha256:b"),
            entry("arm", Some("v7"), "sha256:c"),
            entry("arm64", Some("v8"), "sha256:d"),
        ];
        assert_eq!(pick_platform(&list, "linux", "amd64", None).as_deref(), Some("sha256:a"));
        assert_eq!(pick_platform(&list, "linux", "arm", Some("v7")).as_deref(), Some("sha256:c"));
        assert_eq!(pick_platform(&list, "linux", "arm64", Some("v8")).as_deref(), Some("sha256:d"));
        assert_eq!(pick_platform(&list, "linux", "s390x", None), None);
        let here = host_platform(&list).expect("this host's platform is in the list");
        let expected = if cfg!(target_arch = "x86_64") { "sha256:a" } else { "sha256:d" };
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert_eq!(here, expected);
        }
    }
}
