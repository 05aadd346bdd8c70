//! `kube server` flags and the checked configuration built from them. Defaults
//! live here, in one place, and show in `--help` (as k3s's server flags).

use anyhow::{Context, bail};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// The flags of `kube server`.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// Folder holding the store, certificates and kubeconfigs.
    #[arg(long, short = 'd', env = "KUBE_DATA_DIR", default_value = "/var/lib/kube")]
    pub data_dir: PathBuf,
    /// Address the API server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Port of the API server (HTTPS).
    #[arg(long, default_value_t = 6443)]
    pub https_listen_port: u16,
    /// Address other nodes and clients reach this server at (default: the first
    /// non-loopback address of the host, else 127.0.0.1).
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// Extra host names or addresses for the serving certificate (repeatable).
    #[arg(long = "tls-san", value_delimiter = ',')]
    pub tls_sans: Vec<String>,
    /// Where to write the admin kubeconfig (default: <data-dir>/admin.kubeconfig).
    #[arg(long, short = 'o', env = "KUBE_KUBECONFIG_OUTPUT")]
    pub write_kubeconfig: Option<PathBuf>,
    /// File mode of the written kubeconfig, in octal.
    #[arg(long, default_value = "0600")]
    pub write_kubeconfig_mode: String,
    /// Pod network of the cluster; each node gets a /24 of it.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Network of Service cluster IPs; its first address is the `kubernetes` Service.
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// Address of the cluster DNS Service.
    #[arg(long, default_value = "10.43.0.10")]
    pub cluster_dns: Ipv4Addr,
    /// Cluster DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Range of NodePort Service ports.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// How long the store keeps history for watches that resume (seconds).
    #[arg(long, default_value_t = 300)]
    pub history_window_seconds: u64,
    /// Run only the control plane, without a local agent.
    #[arg(long)]
    pub disable_agent: bool,
    /// The local agent's registries configuration in k3s's registries.yaml
    /// format: mirrors (endpoints, rewrites, "*"), and per host auth and tls.
    #[arg(long, default_value = "/etc/kube/registries.yaml", value_name = "FILE")]
    pub private_registry: PathBuf,
    /// Secret of the join token agents use (a bare secret or a full K10… token);
    /// default: the one in <data-dir>/server/token, else a random one.
    #[arg(long, env = "KUBE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Backend (valid values: 'none', 'vxlan'). 'none' leaves pods with loopback only.
    #[arg(long, value_enum, default_value = "vxlan")]
    pub flannel_backend: FlannelBackend,
    /// Override default flannel interface.
    #[arg(long)]
    pub flannel_iface: Option<String>,
    /// Do not run the built-in service proxy (nftables table `inet kube-proxy`).
    #[arg(long)]
    pub disable_kube_proxy: bool,
    /// Name of this server's node (default: the host name, lowercased).
    #[arg(long, env = "KUBE_NODE_NAME")]
    pub node_name: Option<String>,
    /// Found a highly available cluster: the store listens for other servers
    /// (on --raft-port) so that `kube server --join` can add them.
    #[arg(long, conflicts_with = "join")]
    pub cluster_init: bool,
    /// Join the cluster of the server at this URL (https://HOST:6443) as another
    /// server; needs the full K10… --token from that server's <data-dir>/server/token.
    #[arg(long, alias = "server", env = "KUBE_URL", value_name = "URL")]
    pub join: Option<String>,
    /// Port the servers' store replicas talk Raft on (mutual TLS), with
    /// --cluster-init or --join.
    #[arg(long, default_value_t = 2380)]
    pub raft_port: u16,
    /// Take this stopped server out of its cluster and exit: asks the server
    /// at --join URL (any other member, with --token) to remove this one's
    /// store member, then sets the local store aside.
    #[arg(long, requires = "join")]
    pub remove: bool,
    /// How often the store leader writes a scheduled snapshot to
    /// <data-dir>/server/db/snapshots (e.g. 30m, 12h, 1d; 0 disables), like
    /// k3s's default schedule of every 12 hours.
    #[arg(long, alias = "etcd-snapshot-interval", default_value = "12h")]
    pub snapshot_interval: String,
    /// How many scheduled snapshots to keep (on-demand ones are never pruned).
    #[arg(long, alias = "etcd-snapshot-retention", default_value_t = 5)]
    pub snapshot_retention: usize,
    /// Do not write scheduled snapshots.
    #[arg(long, alias = "etcd-disable-snapshots")]
    pub disable_snapshots: bool,
}

/// The pod network backend (`--flannel-backend`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlannelBackend {
    /// No pod network: pods get loopback only.
    None,
    /// Bridge + host-local IPAM on each node, a VXLAN overlay between nodes.
    Vxlan,
}

/// An IPv4 network in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(flag: &str, text: &str) -> anyhow::Result<Cidr> {
        let (addr, prefix) = text.split_once('/').with_context(|| format!("--{flag} {text}: expected a.b.c.d/len"))?;
        let addr: Ipv4Addr = addr.parse().with_context(|| format!("--{flag} {text}: bad address"))?;
        let prefix: u8 = prefix.parse().with_context(|| format!("--{flag} {text}: bad prefix length"))?;
        if prefix > 30 {
            bail!("--{flag} {text}: prefix length must be at most 30");
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        if u32::from(addr) & !mask != 0 {
            bail!(
                "--{flag} {text}: host bits are set (did you mean {}/{prefix}?)",
                Ipv4Addr::from(u32::from(addr) & mask)
            );
        }
        Ok(Cidr { addr, prefix })
    }

    /// The `n`th address of the network (1 = first usable).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + n)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.addr)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The server configuration after every flag was checked.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub advertise_address: IpAddr,
    pub tls_sans: Vec<String>,
    pub kubeconfig_path: PathBuf,
    pub kubeconfig_mode: u32,
    pub cluster_cidr: Cidr,
    pub service_cidr: Cidr,
    pub cluster_dns: Ipv4Addr,
    pub cluster_domain: String,
    pub node_port_range: (u16, u16),
    pub history_window: std::time::Duration,
    pub run_agent: bool,
    /// `--private-registry`, read and checked (empty without a local agent).
    pub private_registry: crate::agent::image::Registries,
    /// `--token`: the join token's secret (None: reuse or generate).
    pub token: Option<String>,
    pub pod_network: bool,
    pub flannel_iface: Option<String>,
    pub run_service_proxy: bool,
    /// The local node's name, also this server's name among the servers.
    pub node_name: String,
    /// How the store replicates (alone, founding a group, or joining one).
    pub cluster: ClusterMode,
    /// Scheduled snapshots; `None` with `--disable-snapshots` or an interval of 0.
    pub snapshots: Option<crate::server::snapshot::schedule::Schedule>,
}

/// How this server's store takes part in a replicated group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterMode {
    /// One server, no peer listener: the default until `--cluster-init`.
    Single,
    /// Peers may join; `raft` is where this server's store listens.
    Init { raft: SocketAddr },
    /// Join the cluster at `url` (once; later starts reuse the stored membership).
    Join { url: String, raft: SocketAddr },
}

impl ServerConfig {
    /// Checks the flags; a bad value or combination is rejected naming the flags.
    pub fn from_args(args: &ServerArgs) -> anyhow::Result<ServerConfig> {
        let cluster_cidr = Cidr::parse("cluster-cidr", &args.cluster_cidr)?;
        let service_cidr = Cidr::parse("service-cidr", &args.service_cidr)?;
        if cluster_cidr.contains(service_cidr.addr) || service_cidr.contains(cluster_cidr.addr) {
            bail!("--cluster-cidr {cluster_cidr} and --service-cidr {service_cidr} overlap");
        }
        if !service_cidr.contains(args.cluster_dns) {
            bail!("--cluster-dns {} is outside --service-cidr {service_cidr}", args.cluster_dns);
        }
        let kubeconfig_mode = u32::from_str_radix(args.write_kubeconfig_mode.trim_start_matches("0o"), 8)
            .with_context(|| {
                format!("--write-kubeconfig-mode {}: expected an octal mode", args.write_kubeconfig_mode)
            })?;
        let node_port_range = parse_port_range(&args.service_node_port_range)?;
        if args.history_window_seconds == 0 {
            bail!("--history-window-seconds must be at least 1");
        }
        let advertise_address = args.advertise_address.unwrap_or_else(default_advertise_address);
        let raft = SocketAddr::new(args.bind_address, args.raft_port);
        let cluster = match &args.join {
            Some(url) => {
                if !url.starts_with("https://") {
                    bail!("--join {url}: expected https://HOST:PORT");
                }
                if args.token.as_deref().is_none_or(|t| !t.starts_with("K10")) {
                    bail!(
                        "--join needs --token with the full K10… token from the first server's <data-dir>/server/token"
                    );
                }
                ClusterMode::Join { url: url.trim_end_matches('/').to_string(), raft }
            }
            None if args.cluster_init || args.data_dir.join("server").join("raft-peer").exists() => {
                ClusterMode::Init { raft }
            }
            None => ClusterMode::Single,
        };
        let interval = crate::server::token_cmd::parse_duration("snapshot-interval", &args.snapshot_interval)?;
        if args.snapshot_retention == 0 {
            bail!("--snapshot-retention must be at least 1 (use --disable-snapshots to turn them off)");
        }
        let snapshots = match interval {
            Some(seconds) if !args.disable_snapshots => Some(crate::server::snapshot::schedule::Schedule {
                every: std::time::Duration::from_secs(seconds.unsigned_abs()),
                retention: args.snapshot_retention,
            }),
            _ => None,
        };
        let private_registry = if args.disable_agent {
            Default::default()
        } else {
            crate::agent::args::read_registries(&args.private_registry)?
        };
        let node_name = match &args.node_name {
            Some(name) => name.clone(),
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.to_str().map(str::to_lowercase))
                .context("cannot read the host name; pass --node-name")?,
        };
        Ok(ServerConfig {
            data_dir: args.data_dir.clone(),
            listen: SocketAddr::new(args.bind_address, args.https_listen_port),
            advertise_address,
            tls_sans: args.tls_sans.clone(),
            kubeconfig_path: args.write_kubeconfig.clone().unwrap_or_else(|| args.data_dir.join("admin.kubeconfig")),
            kubeconfig_mode,
            cluster_cidr,
            service_cidr,
            cluster_dns: args.cluster_dns,
            cluster_domain: args.cluster_domain.clone(),
            node_port_range,
            history_window: std::time::Duration::from_secs(args.history_window_seconds),
            run_agent: !args.disable_agent,
            private_registry,
            token: args.token.clone(),
            pod_network: args.flannel_backend == FlannelBackend::Vxlan,
            flannel_iface: args.flannel_iface.clone(),
            run_service_proxy: !args.disable_kube_proxy,
            node_name,
            cluster,
            snapshots,
        })
    }

    /// The cluster IP of the `kubernetes` Service (first address of the service network).
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        self.service_cidr.nth(1)
    }
}

fn parse_port_range(text: &str) -> anyhow::Result<(u16, u16)> {
    let parsed = text.split_once('-').and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)));
    match parsed {
        Some((low, high)) if low > 0 && low <= high => Ok((low, high)),
        _ => bail!("--service-node-port-range {text}: expected LOW-HIGH, e.g. 30000-32767"),
    }
}

/// The address of the first non-loopback interface the host routes through,
/// found without sending anything (a UDP socket's connect only picks a route).
fn default_advertise_address() -> IpAddr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|socket| {
        socket.connect("10.255.255.255:9")?;
        socket.local_addr()
    });
    match probe {
        Ok(addr) if !addr.ip().is_unspecified() => addr.ip(),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServerArgs,
    }

    fn config(flags: &[&str]) -> anyhow::Result<ServerConfig> {
        let mut argv = vec!["kube"];
        argv.extend_from_slice(flags);
        ServerConfig::from_args(&Cli::try_parse_from(argv)?.args)
    }

    #[test]
    fn defaults_are_k3s_networks() {
        let config = config(&["--advertise-address", "192.168.1.5"]).unwrap();
        assert_eq!(config.cluster_cidr.to_string(), "10.42.0.0/16");
        assert_eq!(config.kubernetes_service_ip(), Ipv4Addr::new(10, 43, 0, 1));
        assert_eq!(config.listen.port(), 6443);
        assert_eq!(config.kubeconfig_mode, 0o600);
        assert!(config.run_agent);
        assert!(config.pod_network);
        let config = config_of(&["--flannel-backend", "none", "--flannel-iface", "eth1"]);
        assert!(!config.pod_network);
        assert_eq!(config.flannel_iface.as_deref(), Some("eth1"));
    }

    fn config_of(flags: &[&str]) -> ServerConfig {
        let mut all = vec!["--advertise-address", "192.168.1.5"];
        all.extend_from_slice(flags);
        config(&all).expect("config")
    }

    #[test]
    fn rejects_bad_combinations_naming_the_flags() {
        let err = config(&["--cluster-dns", "10.99.0.10"]).unwrap_err().to_string();
        assert!(err.contains("--cluster-dns") && err.contains("--service-cidr"), "{err}");
        let err = config(&["--service-cidr", "10.42.0.0/24"]).unwrap_err().to_string();
        assert!(err.contains("overlap"), "{err}");
        let err = config(&["--cluster-cidr", "10.42.0.1/16"]).unwrap_err().to_string();
        assert!(err.contains("host bits"), "{err}");
        let err = config(&["--service-node-port-range", "5-1"]).unwrap_err().to_string();
        assert!(err.contains("--service-node-port-range"), "{err}");
        let err = config(&["--snapshot-interval", "12x"]).unwrap_err().to_string();
        assert!(err.contains("--snapshot-interval"), "{err}");
        let err = config(&["--snapshot-retention", "0"]).unwrap_err().to_string();
        assert!(err.contains("--snapshot-retention"), "{err}");
    }

    #[test]
    fn scheduled_snapshots_default_to_every_12_hours_keeping_5() {
        use crate::server::snapshot::schedule::Schedule;
        let every = |h: u64| std::time::Duration::from_secs(h * 3600);
        assert_eq!(config_of(&[]).snapshots, Some(Schedule { every: every(12), retention: 5 }));
        let custom = config_of(&["--snapshot-interval", "1h30m", "--snapshot-retention", "2"]);
        assert_eq!(custom.snapshots, Some(Schedule { every: std::time::Duration::from_secs(5400), retention: 2 }));
        assert_eq!(config_of(&["--snapshot-interval", "0"]).snapshots, None);
        assert_eq!(config_of(&["--disable-snapshots"]).snapshots, None);
        assert_eq!(config_of(&["--etcd-disable-snapshots"]).snapshots, None);
    }
}
