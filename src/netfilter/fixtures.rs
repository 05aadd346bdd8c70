//! API objects for tests and benchmarks of the proxy: Services and
//! EndpointSlices as the API server stores them, built from a few fields.

use crate::server::config::Cidr;
use serde_json::{Value, json};
use std::net::Ipv4Addr;

/// A Service `namespace/name` with cluster IP `ip` and `ports` as
/// `(name, port, protocol)`; the caller adds type, policies and so on.
pub fn service(namespace: &str, name: &str, ip: &str, ports: &[(&str, u16, &str)]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(port_name, port, protocol)| json!({"name": port_name, "port": port, "protocol": protocol}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": ports},
    })
}

/// One endpoint of a slice: address, node, ready?
pub struct EndpointSpec<'a> {
    pub ip: &'a str,
    pub node: &'a str,
    pub ready: bool,
}

pub fn ready<'a>(ip: &'a str, node: &'a str) -> EndpointSpec<'a> {
    EndpointSpec { ip, node, ready: true }
}

/// The EndpointSlice `<service>-<suffix>` of Service `namespace/service`
/// with one port `(name, port, protocol)`.
pub fn slice(
    namespace: &str,
    service: &str,
    suffix: &str,
    port: (&str, u16, &str),
    endpoints: &[EndpointSpec],
) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            json!({"addresses": [e.ip], "nodeName": e.node,
                   "conditions": {"ready": e.ready, "serving": e.ready, "terminating": false}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": namespace, "name": format!("{service}-{suffix}"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": port.0, "port": port.1, "protocol": port.2}],
        "endpoints": endpoints,
    })
}

/// The configuration the golden files and the root tests use: node `node-a`,
/// cluster 10.42.0.0/16, services 10.43.0.0/16, DNS 10.43.0.10 → 10.42.0.1.
pub fn config() -> super::ProxyConfig {
    let mut config = super::ProxyConfig::new("node-a");
    config.cluster_cidr = Some(Cidr { addr: Ipv4Addr::new(10, 42, 0, 0), prefix: 16 });
    config.service_cidr = Some(Cidr { addr: Ipv4Addr::new(10, 43, 0, 0), prefix: 16 });
    config.cluster_dns = Some(Ipv4Addr::new(10, 43, 0, 10));
    config.dns_target = Some(Ipv4Addr::new(10, 42, 0, 1));
    config
}

/// `count` Services `bench/svc-N` (10.43.x.y:80 → `endpoints` pods each on
/// 10.42.x.y:8080) and their slices, for benchmarks.
pub fn many(count: u32, endpoints: u32) -> (Vec<Value>, Vec<Value>) {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for n in 0..count {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 43, 0, 0)) + 1000 + n).to_string();
        services.push(service("bench", &format!("svc-{n}"), &ip, &[("http", 80, "TCP")]));
        let pods: Vec<String> = (0..endpoints)
            .map(|e| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 42, 0, 0)) + 2 + n * endpoints + e).to_string())
            .collect();
        let specs: Vec<EndpointSpec> = pods.iter().map(|ip| ready(ip, "node-b")).collect();
        slices.push(slice("bench", &format!("svc-{n}"), "x", ("http", 8080, "TCP"), &specs));
    }
    (services, slices)
}

/// The realistic states the golden files pin down: (name, Services, slices).
pub fn scenarios() -> Vec<(&'static str, Vec<Value>, Vec<Value>)> {
    let http = ("http", 8080, "TCP");
    let web = service("default", "web", "10.43.0.100", &[("http", 80, "TCP")]);
    let two = slice("default", "web", "a", http, &[ready("10.42.0.5", "node-a"), ready("10.42.1.6", "node-b")]);

    let mut node_port = service("default", "np", "10.43.0.101", &[("http", 80, "TCP")]);
    node_port["spec"]["type"] = json!("NodePort");
    node_port["spec"]["ports"][0]["nodePort"] = json!(30080);
    let node_port_slice = slice("default", "np", "a", http, &[ready("10.42.0.7", "node-a")]);

    let mut empty = service("default", "empty", "10.43.0.102", &[("dns", 53, "UDP")]);
    empty["spec"]["type"] = json!("NodePort");
    empty["spec"]["ports"][0]["nodePort"] = json!(30053);
    let not_ready = slice(
        "default",
        "empty",
        "a",
        ("dns", 5353, "UDP"),
        &[EndpointSpec { ip: "10.42.0.8", node: "node-a", ready: false }],
    );

    let mut sticky = service("default", "sticky", "10.43.0.103", &[("http", 80, "TCP")]);
    sticky["spec"]["sessionAffinity"] = json!("ClientIP");
    sticky["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 60}});
    let sticky_slice =
        slice("default", "sticky", "a", http, &[ready("10.42.0.5", "node-a"), ready("10.42.1.6", "node-b")]);

    let mut local = service("default", "lb", "10.43.0.104", &[("https", 443, "TCP")]);
    local["spec"]["type"] = json!("LoadBalancer");
    local["spec"]["externalTrafficPolicy"] = json!("Local");
    local["spec"]["ports"][0]["nodePort"] = json!(30443);
    local["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.5"}]}});
    let local_slice = slice(
        "default",
        "lb",
        "a",
        ("https", 8443, "TCP"),
        &[ready("10.42.0.5", "node-a"), ready("10.42.1.6", "node-b")],
    );

    vec![
        ("clusterip-two-endpoints", vec![web], vec![two]),
        ("nodeport", vec![node_port], vec![node_port_slice]),
        ("no-endpoints", vec![empty], vec![not_ready]),
        ("affinity", vec![sticky], vec![sticky_slice]),
        ("external-local", vec![local], vec![local_slice]),
    ]
}
