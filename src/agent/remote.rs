//! `kube agent`: joins a server by token and runs the node agent against it
//! over HTTPS. The join pins the server's CA (its sha256 must match the
//! token's before any credential is sent), then trades the token's secret, a
//! node password and a CSR for a node client certificate; from then on the
//! agent only uses that certificate, which it keeps (with the CA and the node
//! password) in `<data-dir>/agent/` and reuses across restarts (renewing
//! it by the same exchange on a start within 90 days of its expiry). It fails
//! over between the servers of an HA control plane (`super::servers`).

use super::args::{AgentArgs, AgentSettings};
use crate::server::client::{Client, RemoteConfig, ServerTrust};
use crate::server::error::ApiError;
use crate::server::join::{CLIENT_CERT_PATH, JoinRequest, JoinResponse};
use crate::server::token::{ca_hash, random_secret};
use anyhow::{Context, bail};
use base64::Engine;
use http::Method;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The files of the agent's identity, under `<data-dir>/agent/`.
struct CredentialFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    password: PathBuf,
}

impl CredentialFiles {
    fn new(dir: &Path) -> CredentialFiles {
        CredentialFiles {
            ca: dir.join("server-ca.crt"),
            cert: dir.join("client-kubelet.crt"),
            key: dir.join("client-kubelet.key"),
            password: dir.join("node-password"),
        }
    }
}

/// The agent's verified view of the server and its own identity (PEM).
struct Credentials {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    crate::server::pki::write(path, contents, mode).with_context(|| format!("cannot write {}", path.display()))
}

/// Whether a stored certificate is for this node and still valid for a day.
fn usable_certificate(cert_pem: &str, node: &str) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else { return false };
    let Ok(cert) = pem.parse_x509() else { return false };
    let name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string);
    let expires = cert.validity().not_after.timestamp();
    name.as_deref() == Some(format!("system:node:{node}").as_str())
        && expires > jiff::Timestamp::now().as_second() + 24 * 3600
}

/// The credentials stored by an earlier join, when they still fit the token and node.
fn stored_credentials(files: &CredentialFiles, settings: &AgentSettings) -> Option<Credentials> {
    let read = |path: &Path| std::fs::read_to_string(path).ok();
    let creds = Credentials { ca_pem: read(&files.ca)?, cert_pem: read(&files.cert)?, key_pem: read(&files.key)? };
    let pinned = settings.token.ca_hash.as_ref().is_none_or(|hash| *hash == ca_hash(&creds.ca_pem));
    (pinned && usable_certificate(&creds.cert_pem, &settings.config.node_name)).then_some(creds)
}

/// Sleeps for the next back-off step (1 s doubling to 30 s); false on shutdown.
pub(crate) async fn back_off(delay: &mut Duration, shutdown: &CancellationToken) -> bool {
    let wait = *delay;
    *delay = (*delay * 2).min(Duration::from_secs(30));
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// Whether the request got no answer at all (worth retrying).
pub(crate) fn is_unreachable(err: &ApiError) -> bool {
    matches!(err.code, 503 | 504) && err.message.starts_with("cannot reach ")
}

/// Fetches `/cacerts` without verification, retrying while the server is unreachable.
pub(crate) async fn fetch_ca(server: &str, shutdown: &CancellationToken) -> anyhow::Result<Option<String>> {
    let config = RemoteConfig {
        server: server.to_string(),
        trust: ServerTrust::Unverified,
        identity: None,
        authorization: None,
    };
    let client = Client::remote(&config)?;
    let mut delay = Duration::from_secs(1);
    loop {
        match client.request_bytes(Method::GET, "/cacerts", None).await {
            Ok(bytes) => {
                return Ok(Some(String::from_utf8(bytes.to_vec()).context("the server's /cacerts is not text")?));
            }
            Err(err) if is_unreachable(&err) => tracing::warn!(error = %err.message, "waiting for the server"),
            Err(err) => bail!("cannot fetch the CA from {server}/cacerts: {}", err.message),
        }
        if !back_off(&mut delay, shutdown).await {
            return Ok(None);
        }
    }
}

/// The node password of this machine, made on first join.
fn node_password(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        Ok(_) => bail!("{} is empty: delete it to make a new node password", path.display()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let password = random_secret();
            write_file(path, &format!("{password}\n"), 0o600)?;
            Ok(password)
        }
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Checks the CA against the token, then trades the token for a node certificate.
async fn join(
    settings: &AgentSettings,
    files: &CredentialFiles,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Credentials>> {
    let server = &settings.server;
    let Some(ca_pem) = fetch_ca(server, shutdown).await? else { return Ok(None) };
    let got = ca_hash(&ca_pem);
    match &settings.token.ca_hash {
        Some(expected) if *expected != got => {
            bail!(
                "the server's CA does not match the token (expected {expected}, got {got}): refusing to join {server}"
            )
        }
        Some(_) => tracing::info!(%server, "the server's CA matches the token"),
        None => tracing::warn!(
            %server, ca_hash = %got,
            "THE TOKEN HAS NO CA HASH: trusting whatever CA this server presents. Use the full K10… token from the \
             server's <data-dir>/server/token to pin it"
        ),
    }
    let password = node_password(&files.password)?;
    let key = rcgen::KeyPair::generate().context("cannot generate the node key")?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("system:node:{}", settings.config.node_name));
    let csr = params.serialize_request(&key).and_then(|csr| csr.pem()).context("cannot make the CSR")?;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("node:{}", settings.token.secret));
    let config = RemoteConfig {
        server: server.clone(),
        trust: ServerTrust::Pinned(ca_pem.clone()),
        identity: None,
        authorization: Some(format!("Basic {basic}")),
    };
    let client = Client::remote(&config)?;
    let request = JoinRequest { node_name: settings.config.node_name.clone(), node_password: password, csr };
    let body = serde_json::to_value(&request).context("cannot encode the join request")?;
    let mut delay = Duration::from_secs(1);
    let answer = loop {
        match client.request(Method::POST, CLIENT_CERT_PATH, Some(("application/json", body.clone()))).await {
            Ok(answer) => break answer,
            Err(err) if is_unreachable(&err) => tracing::warn!(error = %err.message, "waiting for the server"),
            Err(err) if err.code == 401 => bail!("{server} refused the join token: {}", err.message),
            Err(err) if err.code == 403 => bail!("{server} refused to let this machine join: {}", err.message),
            Err(err) => bail!("joining {server} failed ({}): {}", err.code, err.message),
        }
        if !back_off(&mut delay, shutdown).await {
            return Ok(None);
        }
    };
    let answer: JoinResponse = serde_json::from_value(answer).context("the server's join answer is malformed")?;
    let creds = Credentials { ca_pem, cert_pem: answer.certificate, key_pem: key.serialize_pem() };
    write_file(&files.ca, &creds.ca_pem, 0o644)?;
    write_file(&files.key, &creds.key_pem, 0o600)?;
    write_file(&files.cert, &creds.cert_pem, 0o644)?;
    tracing::info!(node = %settings.config.node_name, cert = %files.cert.display(), "joined: got a node certificate");
    Ok(Some(creds))
}

/// Runs `kube agent` until a shutdown signal.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let settings = args.check()?;
    let dir = &settings.config.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        crate::server::shutdown_signal().await;
        tracing::info!("shutting down");
        on_signal.cancel();
    });
    let files = CredentialFiles::new(dir);
    let creds = match stored_credentials(&files, &settings) {
        Some(creds) if crate::server::pki::expires_within(&creds.cert_pem, crate::server::pki::RENEW_BEFORE_DAYS) => {
            tracing::info!(cert = %files.cert.display(), "the node certificate expires soon: renewing it");
            match join(&settings, &files, &shutdown).await {
                Ok(Some(renewed)) => renewed,
                Ok(None) => return Ok(()),
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "cannot renew the node certificate; using it until it expires");
                    creds
                }
            }
        }
        Some(creds) => {
            tracing::info!(cert = %files.cert.display(), "reusing the node certificate");
            creds
        }
        None => match join(&settings, &files, &shutdown).await? {
            Some(creds) => creds,
            None => return Ok(()),
        },
    };
    let client = Client::remote(&RemoteConfig {
        server: settings.server.clone(),
        trust: ServerTrust::Pinned(creds.ca_pem.clone()),
        identity: Some((creds.cert_pem, creds.key_pem)),
        authorization: None,
    })?;
    let servers_file = super::servers::servers_file(dir);
    client.set_servers(&super::servers::initial(&settings.server, &servers_file))?;
    tracing::info!(server = %settings.server, node = %settings.config.node_name, "agent starting");
    let follow = super::servers::follow(client.clone(), settings.server.clone(), servers_file, shutdown.clone());
    tokio::spawn(follow);
    let kubelet_api =
        super::kubelet_server::run(client.clone(), settings.config.clone(), creds.ca_pem, shutdown.clone());
    let kubelet_api = tokio::spawn(kubelet_api);
    super::run_local(client, settings.config, shutdown).await?;
    let _ = kubelet_api.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::pki::{Authority, Usage};

    #[test]
    fn a_stored_certificate_is_reused_only_for_its_node_and_pinned_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::load_or_create(&dir.path().join("tls")).unwrap();
        let pair =
            ca.issue("system:node:n2", Usage::Client { user: "system:node:n2", groups: &["system:nodes"] }).unwrap();
        let files = CredentialFiles::new(dir.path());
        std::fs::write(&files.ca, &ca.cert_pem).unwrap();
        std::fs::write(&files.cert, &pair.cert_pem).unwrap();
        std::fs::write(&files.key, &pair.key_pem).unwrap();
        let args = |node: &str, token: String| AgentSettings {
            server: "https://a:1".into(),
            token: crate::server::token::JoinToken::parse(&token).unwrap(),
            config: super::super::AgentConfig::new(node, dir.path().into(), "127.0.0.1".parse().unwrap()),
        };
        let pinned = format!("K10{}::server:s", ca_hash(&ca.cert_pem));
        assert!(stored_credentials(&files, &args("n2", pinned.clone())).is_some());
        assert!(stored_credentials(&files, &args("n2", "s".into())).is_some());
        assert!(stored_credentials(&files, &args("n3", pinned)).is_none());
        let elsewhere = format!("K10{}::server:s", "00".repeat(32));
        assert!(stored_credentials(&files, &args("n2", elsewhere)).is_none());
    }
}
