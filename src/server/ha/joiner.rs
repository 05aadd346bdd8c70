//! The joining side of `kube server --join URL --token K10…`: before anything
//! is sent, the server's CA must hash to the token's pin; then the server
//! token buys the cluster's shared keys (written once into the TLS folder),
//! and after the store opened as an empty member, a request to be added.

use super::SHARED_FILES;
use super::handoff::{BOOTSTRAP_PATH, BootstrapFiles, MEMBERS_PATH, MemberRequest, Members};
use crate::agent::remote::{back_off, fetch_ca, is_unreachable};
use crate::server::client::{Client, RemoteConfig, ServerTrust};
use crate::server::token::{JoinToken, ca_hash};
use anyhow::{Context, bail};
use base64::Engine;
use http::Method;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A client of the server being joined, pinned to `ca_pem` and sending the token.
fn pinned_client(url: &str, ca_pem: &str, token: &JoinToken) -> anyhow::Result<Client> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("server:{}", token.secret));
    let config = RemoteConfig {
        server: url.to_string(),
        trust: ServerTrust::Pinned(ca_pem.to_string()),
        identity: None,
        authorization: Some(format!("Basic {basic}")),
    };
    Ok(Client::remote(&config)?)
}

/// The server's CA, checked against the token's pin.
async fn verified_ca(url: &str, token: &JoinToken, shutdown: &CancellationToken) -> anyhow::Result<Option<String>> {
    let Some(ca_pem) = fetch_ca(url, shutdown).await? else { return Ok(None) };
    let got = ca_hash(&ca_pem);
    match &token.ca_hash {
        Some(expected) if *expected == got => Ok(Some(ca_pem)),
        Some(expected) => {
            bail!("the server's CA does not match the token (expected {expected}, got {got}): refusing to join {url}")
        }
        None => bail!("--join needs the full K10… token (it pins the cluster's CA)"),
    }
}

/// A client of the server at `url` that checked its CA against the token
/// and sends the server token; `None` on shutdown.
pub async fn verified_client(
    url: &str,
    token: &JoinToken,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Client>> {
    let Some(ca_pem) = verified_ca(url, token, shutdown).await? else { return Ok(None) };
    Ok(Some(pinned_client(url, &ca_pem, token)?))
}

/// Fetches the shared keys into `tls_dir` unless an earlier join did; false on shutdown.
pub async fn fetch_shared_keys(
    url: &str,
    token: &JoinToken,
    tls_dir: &Path,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    if SHARED_FILES.iter().all(|name| tls_dir.join(name).exists()) {
        return Ok(true);
    }
    let Some(ca_pem) = verified_ca(url, token, shutdown).await? else { return Ok(false) };
    tracing::info!(%url, "the server's CA matches the token; fetching the cluster keys");
    let client = pinned_client(url, &ca_pem, token)?;
    let answer = client.request(Method::POST, BOOTSTRAP_PATH, None).await.map_err(|err| match err.code {
        401 => anyhow::anyhow!("{url} refused the server token: {}", err.message),
        code => anyhow::anyhow!("fetching the cluster keys from {url} failed ({code}): {}", err.message),
    })?;
    let answer: BootstrapFiles = serde_json::from_value(answer).context("the server's key handoff is malformed")?;
    if answer.files.get("ca.crt") != Some(&ca_pem) {
        bail!("{url} handed over a CA other than the one it serves with");
    }
    for name in SHARED_FILES {
        let text = answer.files.get(name).with_context(|| format!("{url} did not hand over {name}"))?;
        let mode = if name.ends_with(".key") { 0o600 } else { 0o644 };
        crate::server::pki::write(&tls_dir.join(name), text, mode)?;
    }
    Ok(true)
}

/// Asks the cluster at `url` to add this server's store (id at `peer_address`)
/// as a voter, retrying while it cannot; false on shutdown.
pub async fn request_membership(
    url: &str,
    ca_pem: &str,
    token: &JoinToken,
    request: &MemberRequest,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let client = pinned_client(url, ca_pem, token)?;
    let body = serde_json::to_value(request).context("cannot encode the member request")?;
    let mut delay = Duration::from_secs(1);
    loop {
        match client.request(Method::POST, MEMBERS_PATH, Some(("application/json", body.clone()))).await {
            Ok(answer) => {
                let members: Members = serde_json::from_value(answer).context("malformed member list")?;
                tracing::info!(voters = ?members.voters, leader = ?members.leader, "joined the store's group");
                return Ok(true);
            }
            Err(err) if is_unreachable(&err) || err.code == 503 => {
                tracing::warn!(error = %err.message, "waiting to be added to the store's group");
            }
            Err(err) if err.code == 401 => bail!("{url} refused the server token: {}", err.message),
            Err(err) => bail!("joining the store's group at {url} failed ({}): {}", err.code, err.message),
        }
        if !back_off(&mut delay, shutdown).await {
            return Ok(false);
        }
    }
}
