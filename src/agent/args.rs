//! `kube agent` flags (k3s-like) and the checked settings built from them:
//! which server to join with which token, and the [`AgentConfig`] of the node.

use super::AgentConfig;
use super::image::Registries;
use crate::server::token::JoinToken;
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// How pods on this node are networked.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlannelBackend {
    /// A bridge per node and a VXLAN overlay between nodes.
    Vxlan,
    /// No pod network: the agent touches no links, routes or nftables.
    None,
}

/// The flags of `kube agent`.
#[derive(clap::Args, Clone, Debug)]
pub struct AgentArgs {
    /// URL of the server to join, e.g. https://nas:6443.
    #[arg(long, alias = "server", short = 's', env = "KUBE_URL", value_name = "URL")]
    pub join: String,
    /// Join token: the full K10… token from the server's <data-dir>/server/token
    /// (pins the server's CA), or only its secret (no pin; warns).
    #[arg(long, short = 't', env = "KUBE_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File holding the join token.
    #[arg(long, env = "KUBE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Folder of the agent's state; images, pods, logs and credentials go to <data-dir>/agent.
    #[arg(long, short = 'd', env = "KUBE_DATA_DIR", default_value = "/var/lib/kube")]
    pub data_dir: PathBuf,
    /// Name of this node (default: the host name, lowercased).
    #[arg(long, env = "KUBE_NODE_NAME")]
    pub node_name: Option<String>,
    /// Address of this node others reach it at (default: the address of the
    /// interface the host routes through).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Label the node registers with, KEY=VALUE (repeatable).
    #[arg(long = "node-label", value_name = "KEY=VALUE")]
    pub node_labels: Vec<String>,
    /// Taint the node registers with, KEY[=VALUE]:EFFECT (repeatable), e.g. dedicated=gpu:NoSchedule.
    #[arg(long = "node-taint", value_name = "KEY[=VALUE]:EFFECT")]
    pub node_taints: Vec<String>,
    /// Host interface for the pod network between nodes (default: the one of --node-ip).
    #[arg(long)]
    pub flannel_iface: Option<String>,
    /// Pod network backend; `none` leaves networking to something else.
    #[arg(long, value_enum, default_value = "vxlan")]
    pub flannel_backend: FlannelBackend,
    /// Registries configuration in k3s's registries.yaml format: mirrors
    /// (endpoints, rewrites, "*"), and per host auth and tls.
    #[arg(long, default_value = "/etc/kube/registries.yaml", value_name = "FILE")]
    pub private_registry: PathBuf,
    /// Address of the cluster DNS Service (as the server's --cluster-dns).
    #[arg(long, default_value = "10.43.0.10")]
    pub cluster_dns: Ipv4Addr,
    /// Cluster DNS domain (as the server's --cluster-domain).
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
}

/// What `kube agent` runs with, every flag checked.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// `https://host:port`.
    pub server: String,
    pub token: JoinToken,
    pub config: AgentConfig,
}

fn parse_label(text: &str) -> anyhow::Result<(String, String)> {
    let (key, value) = text.split_once('=').with_context(|| format!("--node-label {text}: expected KEY=VALUE"))?;
    if key.is_empty() {
        bail!("--node-label {text}: the key is empty");
    }
    Ok((key.to_string(), value.to_string()))
}

fn parse_taint(text: &str) -> anyhow::Result<Value> {
    let (pair, effect) =
        text.rsplit_once(':').with_context(|| format!("--node-taint {text}: expected KEY[=VALUE]:EFFECT"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        bail!("--node-taint {text}: the effect must be NoSchedule, PreferNoSchedule or NoExecute");
    }
    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
    if key.is_empty() {
        bail!("--node-taint {text}: the key is empty");
    }
    let mut taint = json!({"key": key, "effect": effect});
    if !value.is_empty() {
        taint["value"] = json!(value);
    }
    Ok(taint)
}

/// The registries file, checked; a missing file is an empty configuration.
pub fn read_registries(path: &Path) -> anyhow::Result<Registries> {
    Registries::load(path).with_context(|| "--private-registry")
}

/// The address of the interface the host routes through, found without
/// sending anything (a UDP socket's connect only picks a route).
fn default_node_ip() -> IpAddr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|socket| {
        socket.connect("10.255.255.255:9")?;
        socket.local_addr()
    });
    match probe {
        Ok(addr) if !addr.ip().is_unspecified() => addr.ip(),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

impl AgentArgs {
    /// Checks the flags; a bad value is rejected naming its flag.
    pub fn check(&self) -> anyhow::Result<AgentSettings> {
        let token_text = match (&self.token, &self.token_file) {
            (Some(token), _) => token.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .with_context(|| format!("--token-file {}: cannot read it", file.display()))?,
            (None, None) => bail!("a join token is required: --token (or KUBE_TOKEN) or --token-file"),
        };
        let token = JoinToken::parse(&token_text).context("--token")?;
        let server = self.join.trim_end_matches('/').to_string();
        if !server.starts_with("https://") {
            bail!("--join {}: expected https://HOST:PORT", self.join);
        }
        let node_name = match &self.node_name {
            Some(name) => name.clone(),
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.to_str().map(str::to_string))
                .context("cannot read the host name; pass --node-name")?,
        }
        .to_lowercase();
        let mut config =
            AgentConfig::new(&node_name, self.data_dir.join("agent"), self.node_ip.unwrap_or_else(default_node_ip));
        config.node_labels =
            self.node_labels.iter().map(|l| parse_label(l)).collect::<anyhow::Result<BTreeMap<_, _>>>()?;
        config.node_taints = self.node_taints.iter().map(|t| parse_taint(t)).collect::<anyhow::Result<Vec<_>>>()?;
        config.pod_network = self.flannel_backend != FlannelBackend::None;
        config.flannel_iface = self.flannel_iface.clone();
        config.cluster_dns = IpAddr::V4(self.cluster_dns);
        config.cluster_domain = self.cluster_domain.clone();
        config.private_registry = read_registries(&self.private_registry)?;
        Ok(AgentSettings { server, token, config })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AgentArgs,
    }

    fn settings(flags: &[&str]) -> anyhow::Result<AgentSettings> {
        let mut argv = vec!["kube", "--private-registry", "/nonexistent/registries.yaml"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv)?.args.check()
    }

    #[test]
    fn k3s_style_flags_build_the_node_config() {
        let s = settings(&[
            "--server",
            "https://nas:6443/",
            "--token",
            "secret",
            "--node-name",
            "N2",
            "--node-ip",
            "10.0.0.2",
            "--node-label",
            "zone=a",
            "--node-taint",
            "dedicated=gpu:NoSchedule",
            "--node-taint",
            "x:NoExecute",
            "--flannel-backend",
            "none",
            "--data-dir",
            "/srv/kube",
        ])
        .unwrap();
        assert_eq!(s.server, "https://nas:6443");
        assert_eq!(s.token.secret, "secret");
        assert_eq!(s.config.node_name, "n2");
        assert_eq!(s.config.data_dir, PathBuf::from("/srv/kube/agent"));
        assert_eq!(s.config.node_labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(s.config.node_taints[0], json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}));
        assert_eq!(s.config.node_taints[1], json!({"key": "x", "effect": "NoExecute"}));
        assert!(!s.config.pod_network && !s.config.control_plane);
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let err = |flags: &[&str]| settings(flags).unwrap_err().to_string();
        assert!(err(&["--join", "https://a:1"]).contains("--token"));
        assert!(err(&["--join", "http://a:1", "--token", "x"]).contains("--join"));
        assert!(err(&["--join", "https://a:1", "--token", "x", "--node-taint", "k=v:Sometimes"]).contains("effect"));
        assert!(err(&["--join", "https://a:1", "--token", "x", "--node-label", "novalue"]).contains("--node-label"));
    }

    #[test]
    fn a_malformed_registries_file_names_file_and_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registries.yaml");
        std::fs::write(&path, "mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n").expect("write");
        let err = format!("{:#}", read_registries(&path).unwrap_err());
        assert!(err.contains("--private-registry") && err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("mirrors.docker.io.endpoint[0]"), "{err}");
    }
}
