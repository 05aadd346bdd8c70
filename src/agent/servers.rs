//! Which API servers a joined agent may use. The agent starts with the
//! `--join` URL and the servers it learned before (kept in
//! `<data-dir>/agent/servers`, one URL per line), then follows the
//! `default/kubernetes` Endpoints, which list every live server; its remote
//! client fails over between them when one cannot be reached.

use crate::server::client::Client;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the agent reads the `kubernetes` Endpoints.
const REFRESH: Duration = Duration::from_secs(10);
const ENDPOINTS: &str = "/api/v1/namespaces/default/endpoints/kubernetes";

/// The file that keeps the known servers across restarts.
pub fn servers_file(agent_dir: &Path) -> PathBuf {
    agent_dir.join("servers")
}

/// The join URL first, then the servers learned before (unreadable file: none).
pub fn initial(join_url: &str, file: &Path) -> Vec<String> {
    let mut urls = vec![join_url.trim_end_matches('/').to_string()];
    let known = std::fs::read_to_string(file).unwrap_or_default();
    for line in known.lines().map(str::trim).filter(|line| !line.is_empty()) {
        if !urls.iter().any(|url| url == line) {
            urls.push(line.to_string());
        }
    }
    urls
}

/// The `https://ADDRESS:PORT` URLs an Endpoints object of the API servers names.
pub fn from_endpoints(endpoints: &Value) -> Vec<String> {
    let mut urls = Vec::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        let ports = subset["ports"].as_array();
        let https = ports.into_iter().flatten().find(|p| p["name"] == "https").or_else(|| ports?.first());
        let Some(port) = https.and_then(|p| p["port"].as_u64()) else { continue };
        for address in subset["addresses"].as_array().into_iter().flatten() {
            let Some(ip) = address["ip"].as_str() else { continue };
            let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
            urls.push(format!("https://{host}:{port}"));
        }
    }
    urls
}

/// Keeps `client`'s servers in step with the `kubernetes` Endpoints until shutdown.
pub async fn follow(client: Client, join_url: String, file: PathBuf, shutdown: CancellationToken) {
    let join_url = join_url.trim_end_matches('/').to_string();
    loop {
        match client.get(ENDPOINTS).await {
            Ok(endpoints) => {
                let learned = from_endpoints(&endpoints);
                if !learned.is_empty() {
                    update(&client, &join_url, learned, &file);
                }
            }
            Err(err) => tracing::debug!(error = %err.message, "cannot read the kubernetes endpoints"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}

/// Sets the join URL plus the `learned` servers when they changed, and keeps them.
fn update(client: &Client, join_url: &str, learned: Vec<String>, file: &Path) {
    let mut urls = vec![join_url.to_string()];
    urls.extend(learned.iter().filter(|url| *url != join_url).cloned());
    if urls == client.servers() {
        return;
    }
    if let Err(err) = client.set_servers(&urls) {
        tracing::warn!(error = %err, "the kubernetes endpoints name an unusable server");
        return;
    }
    tracing::info!(servers = %learned.join(", "), "API servers");
    let text: String = learned.iter().map(|url| format!("{url}\n")).collect();
    if let Err(err) = crate::server::pki::write(file, &text, 0o644) {
        tracing::warn!(file = %file.display(), error = %err, "cannot keep the list of API servers");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoints_name_every_server_and_the_join_url_comes_first() {
        let endpoints = json!({"subsets": [{
            "addresses": [{"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "fd00::4"}],
            "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
        }]});
        assert_eq!(
            from_endpoints(&endpoints),
            vec!["https://10.0.0.2:6443", "https://10.0.0.3:6443", "https://[fd00::4]:6443"]
        );
        assert!(from_endpoints(&json!({"subsets": [{"addresses": [{"ip": "10.0.0.2"}]}]})).is_empty());

        let dir = tempfile::tempdir().unwrap();
        let file = servers_file(dir.path());
        assert_eq!(initial("https://lb:6443/", &file), vec!["https://lb:6443"]);
        std::fs::write(&file, "https://10.0.0.2:6443\n\nhttps://lb:6443\n").unwrap();
        assert_eq!(initial("https://lb:6443", &file), vec!["https://lb:6443", "https://10.0.0.2:6443"]);
    }
}
