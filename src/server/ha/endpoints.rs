//! The `kubernetes` Service's endpoints: every server, single or one of
//! several, renews a Lease `kube-system/kube-apiserver-<node>` naming its
//! advertised address, and writes the addresses of all servers with fresh
//! leases into the Endpoints and EndpointSlice `default/kubernetes` (upstream's
//! "lease" endpoint reconciler). A stopping server drops its lease and
//! itself from the list; a crashed one ages out after the lease's 15 s. With
//! replicated stores only servers whose address is a store voter's count, so
//! a removed member leaves the list at once.

use crate::server::client::Client;
use crate::server::error::ApiError;
use jiff::Timestamp;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";
const ENDPOINTS: &str = "/api/v1/namespaces/default/endpoints";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
/// Marks the servers' leases.
const LABEL: &str = "kube.io/apiserver";
const ADDRESS: &str = "kube.io/advertise-address";
const DURATION: i64 = 15;
const RENEW: Duration = Duration::from_secs(5);

/// This server, as its lease names it.
pub struct ApiServer {
    pub node: String,
    pub address: IpAddr,
    pub port: u16,
    /// The replicated store (None for a single server).
    pub store: Option<crate::store::Store>,
}

fn lease_name(node: &str) -> String {
    format!("kube-apiserver-{node}")
}

/// The addresses of leases renewed within their duration, sorted.
pub fn live_addresses(leases: &[Value], now: Timestamp) -> BTreeSet<String> {
    leases
        .iter()
        .filter(|lease| {
            let renewed =
                lease.pointer("/spec/renewTime").and_then(Value::as_str).and_then(|t| t.parse::<Timestamp>().ok());
            let duration = lease.pointer("/spec/leaseDurationSeconds").and_then(Value::as_i64).unwrap_or(DURATION);
            renewed.is_some_and(|at| now.as_second() - at.as_second() <= duration)
        })
        .filter_map(|lease| lease.pointer(&format!("/metadata/annotations/{}", ADDRESS.replace('/', "~1"))))
        .filter_map(|a| a.as_str().filter(|a| a.parse::<IpAddr>().is_ok()).map(str::to_string))
        .collect()
}

/// The Endpoints object for `addresses` on `port`.
pub fn endpoints(addresses: &BTreeSet<String>, port: u16) -> Value {
    let subsets = if addresses.is_empty() {
        json!([])
    } else {
        json!([{"addresses": addresses.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}])
    };
    json!({"apiVersion": "v1", "kind": "Endpoints",
           "metadata": {"name": "kubernetes", "namespace": "default",
                        "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
           "subsets": subsets})
}

/// The EndpointSlice object for `addresses` on `port`.
pub fn endpoint_slice(addresses: &BTreeSet<String>, port: u16) -> Value {
    let endpoints: Vec<Value> = addresses
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "kubernetes", "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "kubernetes"}},
           "addressType": "IPv4", "endpoints": endpoints,
           "ports": [{"name": "https", "port": port, "protocol": "TCP"}]})
}

fn micro_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

async fn renew(client: &Client, me: &ApiServer) -> Result<(), ApiError> {
    let name = lease_name(&me.node);
    let spec = json!({"holderIdentity": me.node, "leaseDurationSeconds": DURATION,
                      "renewTime": micro_time(Timestamp::now())});
    match client.get(&format!("{LEASES}/{name}")).await {
        Ok(mut lease) => {
            lease["spec"] = spec;
            lease["metadata"]["annotations"][ADDRESS] = json!(me.address.to_string());
            client.update(&format!("{LEASES}/{name}"), lease).await.map(|_| ())
        }
        Err(err) if err.code == 404 => {
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-system", "labels": {LABEL: "true"},
                             "annotations": {ADDRESS: me.address.to_string()}},
                "spec": spec});
            client.create(LEASES, lease).await.map(|_| ())
        }
        Err(err) => Err(err),
    }
}

/// Writes `desired` at `collection/kubernetes` unless it already holds it.
async fn put(
    client: &Client,
    collection: &str,
    desired: Value,
    same: impl Fn(&Value, &Value) -> bool,
) -> Result<(), ApiError> {
    let path = format!("{collection}/kubernetes");
    match client.get(&path).await {
        Ok(current) if same(&current, &desired) => Ok(()),
        Ok(current) => {
            let mut next = desired;
            next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
            client.update(&path, next).await.map(|_| ())
        }
        Err(err) if err.code == 404 => client.create(collection, desired).await.map(|_| ()),
        Err(err) => Err(err),
    }
}

/// The hosts of the store's voters' peer addresses.
pub fn voter_hosts(store: &crate::store::Store) -> BTreeSet<String> {
    let voters = store.voters();
    let members = store.members();
    let hosts = members.iter().filter(|(id, _)| voters.contains(id));
    hosts.filter_map(|(_, addr)| addr.parse::<std::net::SocketAddr>().ok()).map(|a| a.ip().to_string()).collect()
}

async fn reconcile(client: &Client, me: &ApiServer) -> Result<(), ApiError> {
    let port = me.port;
    let leases = client.list(&format!("{LEASES}?labelSelector={LABEL}%3Dtrue")).await?;
    let mut addresses = live_addresses(&leases, Timestamp::now());
    if let Some(store) = &me.store {
        let voters = voter_hosts(store);
        if !voters.is_empty() {
            addresses.retain(|address| voters.contains(address));
        }
    }
    put(client, ENDPOINTS, endpoints(&addresses, port), |a, b| a["subsets"] == b["subsets"]).await?;
    put(client, SLICES, endpoint_slice(&addresses, port), |a, b| {
        a["endpoints"] == b["endpoints"] && a["ports"] == b["ports"]
    })
    .await
}

/// Renews this server's lease and the endpoints until `shutdown`, then
/// withdraws this server.
pub async fn run(client: Client, me: ApiServer, shutdown: CancellationToken) {
    loop {
        if let Err(err) = renew(&client, &me).await {
            tracing::warn!(error = %err.message, "cannot renew this server's endpoint lease");
        } else if let Err(err) = reconcile(&client, &me).await {
            tracing::warn!(error = %err.message, "cannot update the kubernetes Service's endpoints");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(RENEW) => {}
        }
    }
    let _ = client.delete(&format!("{LEASES}/{}", lease_name(&me.node)), None).await;
    if let Err(err) = reconcile(&client, &me).await {
        tracing::debug!(error = %err.message, "cannot withdraw this server from the kubernetes endpoints");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(address: &str, renewed: &str) -> Value {
        json!({"metadata": {"annotations": {ADDRESS: address}},
               "spec": {"renewTime": renewed, "leaseDurationSeconds": 15}})
    }

    #[test]
    fn only_fresh_leases_with_addresses_count() {
        let now: Timestamp = "2026-12-07T10:00:30Z".parse().unwrap();
        let leases = [
            lease("192.168.1.2", "2026-12-07T10:00:20.000000Z"),
            lease("192.168.1.1", "2026-12-07T10:00:29.000000Z"),
            lease("192.168.1.3", "2026-12-07T09:59:00.000000Z"),
            lease("not-an-ip", "2026-12-07T10:00:29.000000Z"),
        ];
        let live: Vec<String> = live_addresses(&leases, now).into_iter().collect();
        assert_eq!(live, ["192.168.1.1", "192.168.1.2"]);
    }

    #[test]
    fn endpoints_list_every_server_on_the_https_port() {
        let addresses: BTreeSet<String> = ["10.0.0.1".to_string(), "10.0.0.2".to_string()].into();
        let ep = endpoints(&addresses, 6443);
        assert_eq!(ep["subsets"][0]["addresses"][1]["ip"], "10.0.0.2");
        assert_eq!(ep["subsets"][0]["ports"][0]["port"], 6443);
        assert_eq!(endpoints(&BTreeSet::new(), 6443)["subsets"], json!([]));
        let slice = endpoint_slice(&addresses, 6443);
        assert_eq!(slice["endpoints"].as_array().map(Vec::len), Some(2));
        assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], "kubernetes");
    }
}
