//! Desired state of one Service, port by port: which addresses and ports it
//! answers on and which endpoints serve it, decided from the Service and its
//! EndpointSlices (discovery.k8s.io/v1) as kube-proxy decides it. Pure.

use serde_json::Value;
use std::fmt;
use std::net::IpAddr;

/// `namespace/name` of a Service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: &str, name: &str) -> ServiceKey {
        ServiceKey { namespace: namespace.to_string(), name: name.to_string() }
    }

    /// The key of a Service object.
    pub fn of_service(service: &Value) -> Option<ServiceKey> {
        let namespace = service.pointer("/metadata/namespace").and_then(Value::as_str)?;
        let name = service.pointer("/metadata/name").and_then(Value::as_str)?;
        Some(ServiceKey::new(namespace, name))
    }

    /// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
    pub fn of_slice(slice: &Value) -> Option<ServiceKey> {
        let namespace = slice.pointer("/metadata/namespace").and_then(Value::as_str)?;
        let name = slice.pointer("/metadata/labels/kubernetes.io~1service-name").and_then(Value::as_str)?;
        Some(ServiceKey::new(namespace, name))
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn parse(text: Option<&str>) -> Option<Protocol> {
        match text.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The name nft uses (`meta l4proto tcp`).
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One endpoint that may receive traffic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    /// On this node (for the Local traffic policies).
    pub local: bool,
}

/// One port of one Service, everything the rules need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub service: ServiceKey,
    /// The port's name, or its number when unnamed.
    pub label: String,
    pub protocol: Protocol,
    pub port: u16,
    pub cluster_ips: Vec<IpAddr>,
    pub node_port: Option<u16>,
    /// externalIPs and LoadBalancer ingress IPs.
    pub external_ips: Vec<IpAddr>,
    /// externalTrafficPolicy Local.
    pub external_local: bool,
    /// internalTrafficPolicy Local.
    pub internal_local: bool,
    /// sessionAffinity ClientIP: seconds a client sticks to its endpoint.
    pub affinity_seconds: Option<u32>,
    /// Usable endpoints, sorted: the ready ones, else the serving terminating ones.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    pub fn local_endpoints(&self) -> Vec<&Endpoint> {
        self.endpoints.iter().filter(|e| e.local).collect()
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn ips(values: impl Iterator<Item = Option<String>>) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = values.flatten().filter_map(|ip| ip.parse().ok()).collect();
    ips.sort();
    ips.dedup();
    ips
}

/// The ports a Service needs rules for; empty for headless and
/// ExternalName Services.
pub fn service_ports(service: &Value, slices: &[&Value], node_name: &str) -> Vec<ServicePort> {
    let Some(key) = ServiceKey::of_service(service) else { return Vec::new() };
    let spec = service.get("spec").cloned().unwrap_or(Value::Null);
    if str_at(&spec, "/type") == Some("ExternalName") {
        return Vec::new();
    }
    let cluster_ips = {
        let listed = spec.get("clusterIPs").and_then(Value::as_array).cloned().unwrap_or_default();
        let single = str_at(&spec, "/clusterIP").map(str::to_string);
        ips(listed.iter().map(|ip| ip.as_str().map(str::to_string)).chain(std::iter::once(single)))
    };
    let mut external_ips = {
        let listed = spec.get("externalIPs").and_then(Value::as_array).cloned().unwrap_or_default();
        let ingress = service.pointer("/status/loadBalancer/ingress").and_then(Value::as_array).cloned();
        let ingress = ingress.unwrap_or_default().into_iter().filter(|i| str_at(i, "/ipMode") != Some("Proxy"));
        let ingress: Vec<Option<String>> = ingress.map(|i| str_at(&i, "/ip").map(str::to_string)).collect();
        ips(listed.iter().map(|ip| ip.as_str().map(str::to_string)).chain(ingress))
    };
    external_ips.retain(|ip| !cluster_ips.contains(ip));
    let external_local = str_at(&spec, "/externalTrafficPolicy") == Some("Local");
    let internal_local = str_at(&spec, "/internalTrafficPolicy") == Some("Local");
    let affinity_seconds = (str_at(&spec, "/sessionAffinity") == Some("ClientIP")).then(|| {
        let timeout = spec.pointer("/sessionAffinityConfig/clientIP/timeoutSeconds").and_then(Value::as_u64);
        timeout.and_then(|t| u32::try_from(t).ok()).filter(|t| *t > 0).unwrap_or(10800)
    });
    let node_ports = str_at(&spec, "/type").is_some_and(|t| t == "NodePort" || t == "LoadBalancer");
    let mut ports = Vec::new();
    for port in spec.get("ports").and_then(Value::as_array).into_iter().flatten() {
        let Some(protocol) = Protocol::parse(str_at(port, "/protocol")) else { continue };
        let Some(number) = port.get("port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        let name = str_at(port, "/name").unwrap_or_default();
        let node_port = port.get("nodePort").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok());
        ports.push(ServicePort {
            service: key.clone(),
            label: if name.is_empty() { number.to_string() } else { name.to_string() },
            protocol,
            port: number,
            cluster_ips: cluster_ips.clone(),
            node_port: node_port.filter(|p| node_ports && *p > 0),
            external_ips: external_ips.clone(),
            external_local,
            internal_local,
            affinity_seconds,
            endpoints: endpoints_for(slices, name, protocol, node_name),
        });
    }
    ports
}

/// A condition that is absent counts as `default` (ready and serving
/// default to true, terminating to false).
fn condition(endpoint: &Value, name: &str, default: bool) -> bool {
    endpoint.pointer(&format!("/conditions/{name}")).and_then(Value::as_bool).unwrap_or(default)
}

/// The endpoints of the slices' port named `port_name`: the ready ones, or
/// when none is ready the serving ones that are terminating (so a rolling
/// update does not drop connections).
fn endpoints_for(slices: &[&Value], port_name: &str, protocol: Protocol, node_name: &str) -> Vec<Endpoint> {
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for slice in slices {
        if !matches!(str_at(slice, "/addressType"), Some("IPv4") | Some("IPv6")) {
            continue;
        }
        let slice_ports = slice.get("ports").and_then(Value::as_array).cloned().unwrap_or_default();
        let port = slice_ports.iter().find(|p| {
            str_at(p, "/name").unwrap_or_default() == port_name
                && Protocol::parse(str_at(p, "/protocol")) == Some(protocol)
        });
        let Some(port) = port.and_then(|p| p.get("port")).and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in slice.get("endpoints").and_then(Value::as_array).into_iter().flatten() {
            let Some(ip) = endpoint.pointer("/addresses/0").and_then(Value::as_str).and_then(|a| a.parse().ok()) else {
                continue;
            };
            let local = str_at(endpoint, "/nodeName") == Some(node_name);
            let entry = Endpoint { ip, port, local };
            let is_ready = condition(endpoint, "ready", true);
            if is_ready {
                ready.push(entry);
            } else if condition(endpoint, "serving", is_ready) && condition(endpoint, "terminating", false) {
                terminating.push(entry);
            }
        }
    }
    let mut chosen = if ready.is_empty() { terminating } else { ready };
    chosen.sort();
    chosen.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(spec: Value) -> Value {
        json!({"metadata": {"namespace": "default", "name": "web"}, "spec": spec})
    }

    fn slice(endpoints: Value) -> Value {
        json!({"metadata": {"namespace": "default", "name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}], "endpoints": endpoints})
    }

    #[test]
    fn ready_endpoints_win_over_terminating_ones() {
        let svc = service(json!({"clusterIP": "10.43.0.100", "ports": [{"name": "http", "port": 80}]}));
        let eps = slice(json!([
            {"addresses": ["10.42.0.5"], "nodeName": "n1"},
            {"addresses": ["10.42.1.6"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.42.0.7"], "conditions": {"ready": false}},
        ]));
        let ports = service_ports(&svc, &[&eps], "n1");
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].label, "http");
        assert_eq!(ports[0].endpoints, vec![Endpoint { ip: "10.42.0.5".parse().unwrap(), port: 8080, local: true }]);
    }

    #[test]
    fn terminating_serving_endpoints_are_the_fallback() {
        let svc = service(json!({"clusterIP": "10.43.0.100", "ports": [{"name": "http", "port": 80}]}));
        let eps = slice(json!([
            {"addresses": ["10.42.1.6"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.42.1.7"], "conditions": {"ready": false, "serving": false, "terminating": true}},
        ]));
        let ports = service_ports(&svc, &[&eps], "n1");
        assert_eq!(ports[0].endpoints.len(), 1);
        assert!(!ports[0].endpoints[0].local);
    }

    #[test]
    fn headless_and_external_name_services_have_no_rules_and_node_ports_need_the_type() {
        let headless = service(json!({"clusterIP": "None", "ports": [{"port": 80}]}));
        assert!(service_ports(&headless, &[], "n1")[0].cluster_ips.is_empty());
        let external = service(json!({"type": "ExternalName", "externalName": "example.com"}));
        assert!(service_ports(&external, &[], "n1").is_empty());
        let node_port = service(json!({"type": "NodePort", "clusterIP": "10.43.0.9",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "UDP"}],
            "externalTrafficPolicy": "Local", "sessionAffinity": "ClientIP"}));
        let ports = service_ports(&node_port, &[], "n1");
        assert_eq!(
            (ports[0].node_port, ports[0].protocol, ports[0].label.as_str()),
            (Some(30080), Protocol::Udp, "80")
        );
        assert!(ports[0].external_local);
        assert_eq!(ports[0].affinity_seconds, Some(10800));
    }

    #[test]
    fn load_balancer_ingress_and_external_ips_are_external_addresses() {
        let mut svc = service(json!({"type": "LoadBalancer", "clusterIP": "10.43.0.9", "externalIPs": ["192.0.2.7"],
            "ports": [{"port": 443, "nodePort": 31443}]}));
        svc["status"] =
            json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.5"}, {"ip": "192.168.1.9", "ipMode": "Proxy"}]}});
        let ports = service_ports(&svc, &[], "n1");
        let want: Vec<IpAddr> = vec!["192.0.2.7".parse().unwrap(), "192.168.1.5".parse().unwrap()];
        assert_eq!(ports[0].external_ips, want);
    }
}
