//! The cluster DNS (replaces CoreDNS): answers Kubernetes names from an
//! index fed by list+watch of Services, EndpointSlices and Pods, and forwards
//! every other name to the node's upstream resolvers.
//!
//! Entry points: [`run_on_node`] (the agent: waits for the node's podCIDR
//! and serves on its first address, port 53), [`run`] (any API source, any
//! listen addresses), [`serve`] (an index filled by the caller, e.g. by
//! [`feed_index`]; returns the bound addresses).

pub mod error;
pub mod handler;
pub mod index;
pub mod listen;
pub mod lookup;
pub mod metrics;
pub mod upstream;
pub mod watch;

#[cfg(test)]
mod bench_tests;
#[cfg(test)]
mod fixture;
#[cfg(test)]
mod serve_tests;

pub use error::DnsError;
pub use index::{Index, Kind, SharedIndex};
pub use upstream::system_upstreams;
pub use watch::ApiSource;

use hickory_server::server::Server;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a TCP client may stay idle before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Addresses to serve on (UDP and TCP each); port 0 picks a free one.
    pub listen: Vec<SocketAddr>,
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
    /// Resolvers for every name outside the cluster (see [`system_upstreams`]).
    pub upstreams: Vec<SocketAddr>,
}

/// A running server.
pub struct Running {
    /// The addresses it serves on (ports resolved).
    pub addrs: Vec<SocketAddr>,
    pub metrics: Arc<metrics::Metrics>,
    task: tokio::task::JoinHandle<Result<(), DnsError>>,
}

impl Running {
    /// Waits until the server stops (after `shutdown`).
    pub async fn wait(self) -> Result<(), DnsError> {
        self.task.await.map_err(|err| DnsError::Server(err.to_string()))?
    }
}

/// Serves `index` on the configured addresses until `shutdown`.
pub async fn serve(index: SharedIndex, config: &DnsConfig, shutdown: CancellationToken) -> Result<Running, DnsError> {
    let zone = lookup::Zone::new(&config.domain)
        .map_err(|err| DnsError::Server(format!("cluster domain {:?}: {err}", config.domain)))?;
    let bound = listen::bind_all(&config.listen)?;
    // An upstream that is this server would loop.
    let upstreams: Vec<SocketAddr> = config.upstreams.iter().filter(|u| !bound.addrs.contains(u)).copied().collect();
    let metrics = Arc::new(metrics::Metrics::default());
    let handler =
        handler::Handler { index, zone, upstreams: upstream::Upstreams::new(upstreams), metrics: metrics.clone() };
    let mut server = Server::new(handler);
    for socket in bound.udp {
        server.register_socket(socket);
    }
    for listener in bound.tcp {
        server.register_listener(listener, TCP_IDLE, 64);
    }
    let stop = server.shutdown_token().clone();
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => stop.cancel(),
            _ = stop.cancelled() => {}
        }
        server.block_until_done().await.map_err(|err| DnsError::Server(err.to_string()))
    });
    tracing::info!(addrs = ?bound.addrs, domain = %config.domain, "cluster DNS serving");
    Ok(Running { addrs: bound.addrs, metrics, task })
}

/// An index kept in step with `source` (one list+watch task per kind) until
/// `shutdown`.
pub fn feed_index<S: ApiSource>(source: S, shutdown: CancellationToken) -> SharedIndex {
    let index = Index::shared();
    for kind in Kind::ALL {
        tokio::spawn(watch::feed(source.clone(), kind, index.clone(), shutdown.clone()));
    }
    index
}

/// Feeds an index from `source` and serves it until `shutdown`; binding is
/// retried (every 5 s) while the listen addresses cannot be bound.
pub async fn run<S: ApiSource>(source: S, config: DnsConfig, shutdown: CancellationToken) -> Result<(), DnsError> {
    let index = feed_index(source, shutdown.clone());
    loop {
        match serve(index.clone(), &config, shutdown.clone()).await {
            Ok(running) => return running.wait().await,
            Err(err) => {
                tracing::warn!(error = %err, "cluster DNS cannot start; retrying in 5 s");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    }
}

/// The node-local DNS address: the first address of the Node's
/// `spec.podCIDR` (the bridge's gateway), port 53.
pub fn node_dns_address(node: &Value) -> Result<SocketAddr, DnsError> {
    let name = node.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let cidr = node.pointer("/spec/podCIDR").and_then(Value::as_str).unwrap_or_default().to_string();
    let bad = || DnsError::PodCidr { node: name.clone(), cidr: cidr.clone() };
    let (network, _) = cidr.split_once('/').ok_or_else(bad)?;
    let ip = match network.parse::<IpAddr>().map_err(|_| bad())? {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4).checked_add(1).ok_or_else(bad)?)),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6).checked_add(1).ok_or_else(bad)?)),
    };
    Ok(SocketAddr::new(ip, 53))
}

/// The agent's DNS: waits for the node's podCIDR, then serves on its first
/// address (port 53) from the API until `shutdown`, forwarding to the
/// resolvers of the node's resolv.conf.
pub async fn run_on_node(
    client: crate::server::client::Client,
    node_name: String,
    domain: String,
    shutdown: CancellationToken,
) {
    let uri = format!("/api/v1/nodes/{node_name}");
    let mut logged = false;
    let listen = loop {
        match client.get(&uri).await.map_err(DnsError::from).and_then(|node| node_dns_address(&node)) {
            Ok(addr) => break addr,
            Err(err) => {
                if !logged {
                    tracing::info!(node = %node_name, reason = %err, "cluster DNS waiting for the node's podCIDR");
                    logged = true;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let config = DnsConfig { listen: vec![listen], domain, upstreams: system_upstreams() };
    if let Err(err) = run(client, config, shutdown).await {
        tracing::error!(error = %err, "the cluster DNS stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_node_dns_address_is_the_first_of_its_pod_cidr() {
        let node = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.42.3.0/24"}});
        assert_eq!(node_dns_address(&node).unwrap(), "10.42.3.1:53".parse().unwrap());
        let v6 = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "fd00:42::/64"}});
        assert_eq!(node_dns_address(&v6).unwrap(), "[fd00:42::1]:53".parse().unwrap());
        let none = json!({"metadata": {"name": "n1"}, "spec": {}});
        assert!(node_dns_address(&none).unwrap_err().to_string().contains("n1 has no usable spec.podCIDR"));
    }
}
