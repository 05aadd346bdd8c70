//! The in-memory index the DNS answers from: the few fields of Services,
//! EndpointSlices and Pods that names are made of, kept in step with the API
//! by the watch loops (`watch.rs`) and read by the lookups (`lookup.rs`).

use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// The index shared by the watch loops (writers) and the server (readers).
pub type SharedIndex = Arc<RwLock<Index>>;

/// The API collections the index is fed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Services,
    EndpointSlices,
    Pods,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Services, Kind::EndpointSlices, Kind::Pods];

    /// The cluster-wide collection path of this kind.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Services => "/api/v1/services",
            Kind::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
            Kind::Pods => "/api/v1/pods",
        }
    }
}

/// A port of a Service or an EndpointSlice; name and protocol lowercased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub name: String,
    pub protocol: String,
    pub port: u16,
}

/// How a Service is reached by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// A virtual IP per family (`spec.clusterIPs`).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the names resolve to the endpoints.
    Headless,
    /// `type: ExternalName`: a CNAME to `spec.externalName`.
    ExternalName(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub kind: ServiceKind,
    pub ports: Vec<PortSpec>,
    pub publish_not_ready: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addresses: Vec<IpAddr>,
    pub hostname: Option<String>,
    pub ready: bool,
    /// `targetRef.name` when the endpoint is a Pod.
    pub pod: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    pub service: String,
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<PortSpec>,
}

/// A pod with `spec.hostname` and `spec.subdomain` (StatefulSet pods).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodHost {
    pub hostname: String,
    pub subdomain: String,
}

/// An endpoint a name resolves to: ready, or the Service publishes not-ready ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served<'a> {
    pub endpoint: &'a Endpoint,
    /// The endpoint's DNS label: its hostname, else its first address with dashes.
    pub hostname: String,
    pub ports: &'a [PortSpec],
}

type Key = (String, String);

#[derive(Debug, Default)]
pub struct Index {
    services: HashMap<Key, Service>,
    slices: HashMap<Key, Slice>,
    slices_by_service: HashMap<Key, BTreeSet<String>>,
    pods: HashMap<Key, PodHost>,
    /// Reverse maps for PTR: cluster IP → Services, endpoint address → slices.
    services_by_ip: HashMap<IpAddr, BTreeSet<Key>>,
    slices_by_ip: HashMap<IpAddr, BTreeSet<Key>>,
    services_per_namespace: HashMap<String, usize>,
    synced: HashSet<Kind>,
    /// Counts changes; the zone's SOA serial.
    pub serial: u32,
}

fn text<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn key_of(obj: &Value) -> Key {
    (text(obj, "/metadata/namespace").to_lowercase(), text(obj, "/metadata/name").to_lowercase())
}

fn ports_of(obj: &Value, pointer: &str) -> Vec<PortSpec> {
    let ports = obj.pointer(pointer).and_then(Value::as_array).into_iter().flatten();
    ports
        .filter_map(|p| {
            Some(PortSpec {
                name: p.get("name").and_then(Value::as_str).unwrap_or_default().to_lowercase(),
                protocol: p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_lowercase(),
                port: u16::try_from(p.get("port")?.as_u64()?).ok()?,
            })
        })
        .collect()
}

/// The index's view of a Service object.
pub fn service_from(obj: &Value) -> Service {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let kind = if text(&spec, "/type") == "ExternalName" {
        ServiceKind::ExternalName(text(&spec, "/externalName").trim_end_matches('.').to_lowercase())
    } else if text(&spec, "/clusterIP") == "None" {
        ServiceKind::Headless
    } else {
        let mut ips: Vec<IpAddr> =
            spec.get("clusterIPs").and_then(Value::as_array).into_iter().flatten().filter_map(parse_ip).collect();
        if ips.is_empty() {
            ips.extend(spec.get("clusterIP").and_then(parse_ip));
        }
        ServiceKind::ClusterIp(ips)
    };
    Service {
        kind,
        ports: ports_of(&spec, "/ports"),
        publish_not_ready: spec.get("publishNotReadyAddresses").and_then(Value::as_bool) == Some(true),
    }
}

fn parse_ip(value: &Value) -> Option<IpAddr> {
    value.as_str()?.parse().ok()
}

/// The index's view of an EndpointSlice object (FQDN slices have no addresses).
pub fn slice_from(obj: &Value) -> Slice {
    let service = text(obj, "/metadata/labels/kubernetes.io~1service-name").to_lowercase();
    let endpoints = obj.get("endpoints").and_then(Value::as_array).into_iter().flatten();
    let endpoints = endpoints
        .map(|e| Endpoint {
            addresses: e
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(parse_ip)
                .collect(),
            hostname: e.get("hostname").and_then(Value::as_str).filter(|h| !h.is_empty()).map(str::to_lowercase),
            // An unset condition means ready (discovery.k8s.io/v1).
            ready: e.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false),
            pod: (text(e, "/targetRef/kind") == "Pod")
                .then(|| text(e, "/targetRef/name").to_lowercase())
                .filter(|n| !n.is_empty()),
        })
        .filter(|e| !e.addresses.is_empty())
        .collect();
    Slice { service, endpoints, ports: ports_of(obj, "/ports") }
}

/// The hostname and subdomain of a pod, when it has both.
pub fn pod_host_from(obj: &Value) -> Option<PodHost> {
    let hostname = text(obj, "/spec/hostname").to_lowercase();
    let subdomain = text(obj, "/spec/subdomain").to_lowercase();
    (!hostname.is_empty() && !subdomain.is_empty()).then_some(PodHost { hostname, subdomain })
}

/// The DNS label of an address: `10-42-0-5`, or `fd00--5` for IPv6.
pub fn dashed(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

impl Index {
    pub fn shared() -> SharedIndex {
        Arc::new(RwLock::new(Index::default()))
    }

    /// True once Services and EndpointSlices were listed at least once.
    pub fn synced(&self) -> bool {
        [Kind::Services, Kind::EndpointSlices].iter().all(|k| self.synced.contains(k))
    }

    /// Adds or replaces one object.
    pub fn upsert(&mut self, kind: Kind, obj: &Value) {
        self.serial = self.serial.wrapping_add(1);
        let key = key_of(obj);
        match kind {
            Kind::Services => {
                let service = service_from(obj);
                for ip in cluster_ips(&service) {
                    self.services_by_ip.entry(*ip).or_default().insert(key.clone());
                }
                match self.services.insert(key.clone(), service) {
                    Some(old) => self.unlink_ips(&key, cluster_ips(&old), Kind::Services),
                    None => *self.services_per_namespace.entry(key.0).or_default() += 1,
                }
            }
            Kind::EndpointSlices => {
                let slice = slice_from(obj);
                self.unlink_slice(&key);
                self.slices_by_service.entry((key.0.clone(), slice.service.clone())).or_default().insert(key.1.clone());
                for ip in slice.endpoints.iter().flat_map(|e| &e.addresses) {
                    self.slices_by_ip.entry(*ip).or_default().insert(key.clone());
                }
                self.slices.insert(key, slice);
            }
            Kind::Pods => match pod_host_from(obj) {
                Some(host) => {
                    self.pods.insert(key, host);
                }
                None => {
                    self.pods.remove(&key);
                }
            },
        }
    }

    /// Removes one object (a DELETED event).
    pub fn remove(&mut self, kind: Kind, obj: &Value) {
        self.serial = self.serial.wrapping_add(1);
        let key = key_of(obj);
        match kind {
            Kind::Services => {
                let Some(old) = self.services.remove(&key) else { return };
                self.unlink_ips(&key, cluster_ips(&old), Kind::Services);
                if let Some(count) = self.services_per_namespace.get_mut(&key.0) {
                    *count -= 1;
                    if *count == 0 {
                        self.services_per_namespace.remove(&key.0);
                    }
                }
            }
            Kind::EndpointSlices => {
                self.unlink_slice(&key);
                self.slices.remove(&key);
            }
            Kind::Pods => {
                self.pods.remove(&key);
            }
        }
    }

    /// Drops the index entries of the slice stored under `key` (not the slice).
    fn unlink_slice(&mut self, key: &Key) {
        let Some(old) = self.slices.get(key) else { return };
        let service_key = (key.0.clone(), old.service.clone());
        if let Some(names) = self.slices_by_service.get_mut(&service_key) {
            names.remove(&key.1);
            if names.is_empty() {
                self.slices_by_service.remove(&service_key);
            }
        }
        let ips: Vec<IpAddr> = old.endpoints.iter().flat_map(|e| e.addresses.iter().copied()).collect();
        self.unlink_ips(key, &ips, Kind::EndpointSlices);
    }

    /// Removes `key` from the reverse map of `kind` for each of `ips`, unless
    /// the object stored under `key` now still has that address.
    fn unlink_ips(&mut self, key: &Key, ips: &[IpAddr], kind: Kind) {
        for ip in ips {
            let still = match kind {
                Kind::Services => self.services.get(key).is_some_and(|s| cluster_ips(s).contains(ip)),
                _ => false,
            };
            let map = if kind == Kind::Services { &mut self.services_by_ip } else { &mut self.slices_by_ip };
            if still {
                continue;
            }
            if let Some(keys) = map.get_mut(ip) {
                keys.remove(key);
                if keys.is_empty() {
                    map.remove(ip);
                }
            }
        }
    }

    /// Replaces every object of a kind (after a list) and marks it synced.
    pub fn replace(&mut self, kind: Kind, objects: &[Value]) {
        match kind {
            Kind::Services => {
                self.services.clear();
                self.services_per_namespace.clear();
                self.services_by_ip.clear();
            }
            Kind::EndpointSlices => {
                self.slices.clear();
                self.slices_by_service.clear();
                self.slices_by_ip.clear();
            }
            Kind::Pods => self.pods.clear(),
        }
        for obj in objects {
            self.upsert(kind, obj);
        }
        self.synced.insert(kind);
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services.get(&(namespace.to_string(), name.to_string()))
    }

    /// True when the namespace has at least one Service.
    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.services_per_namespace.contains_key(namespace)
    }

    /// The endpoints a Service's names resolve to, in a stable order.
    pub fn served(&self, namespace: &str, service: &str) -> Vec<Served<'_>> {
        let Some(svc) = self.service(namespace, service) else { return Vec::new() };
        let key = (namespace.to_string(), service.to_string());
        let names = self.slices_by_service.get(&key).into_iter().flatten();
        let slices = names.filter_map(|name| self.slices.get(&(namespace.to_string(), name.clone())));
        let mut served = Vec::new();
        for slice in slices {
            for endpoint in slice.endpoints.iter().filter(|e| e.ready || svc.publish_not_ready) {
                served.push(Served {
                    endpoint,
                    hostname: self.hostname_of(namespace, service, endpoint),
                    ports: &slice.ports,
                });
            }
        }
        served
    }

    /// The endpoint's hostname; else its pod's `spec.hostname` when the pod's
    /// subdomain is this Service (as upstream's EndpointSlice controller
    /// fills it in); else its first address with dashes.
    fn hostname_of(&self, namespace: &str, service: &str, endpoint: &Endpoint) -> String {
        if let Some(hostname) = &endpoint.hostname {
            return hostname.clone();
        }
        let from_pod = endpoint.pod.as_ref().and_then(|pod| self.pods.get(&(namespace.to_string(), pod.clone())));
        if let Some(host) = from_pod.filter(|h| h.subdomain == service) {
            return host.hostname.clone();
        }
        endpoint.addresses.first().map(dashed).unwrap_or_default()
    }

    /// The names whose PTR record an address gets: `svc.ns` for cluster IPs,
    /// `hostname.svc.ns` for endpoints (relative to `<domain>.svc`).
    pub fn names_for_ip(&self, ip: IpAddr) -> Vec<String> {
        let services = self.services_by_ip.get(&ip).into_iter().flatten();
        let mut names: Vec<String> = services.map(|(ns, name)| format!("{name}.{ns}")).collect();
        let mut endpoint_names = BTreeSet::new();
        for (ns, slice_name) in self.slices_by_ip.get(&ip).into_iter().flatten() {
            let Some(slice) = self.slices.get(&(ns.clone(), slice_name.clone())) else { continue };
            let Some(service) = self.service(ns, &slice.service) else { continue };
            let served = slice.endpoints.iter().filter(|e| e.ready || service.publish_not_ready);
            for endpoint in served.filter(|e| e.addresses.contains(&ip)) {
                let hostname = self.hostname_of(ns, &slice.service, endpoint);
                endpoint_names.insert(format!("{hostname}.{}.{ns}", slice.service));
            }
        }
        names.extend(endpoint_names);
        names
    }
}

fn cluster_ips(service: &Service) -> &[IpAddr] {
    match &service.kind {
        ServiceKind::ClusterIp(ips) => ips,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub fn slice(name: &str, service: &str, endpoints: Value) -> Value {
        json!({"metadata": {"namespace": "default", "name": name,
            "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
    }

    #[test]
    fn services_are_parsed_by_type() {
        let cluster = json!({"spec": {"clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5", "fd00::5"],
            "ports": [{"name": "HTTP", "port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let svc = service_from(&cluster);
        assert_eq!(svc.kind, ServiceKind::ClusterIp(vec!["10.43.0.5".parse().unwrap(), "fd00::5".parse().unwrap()]));
        assert_eq!(svc.ports[0], PortSpec { name: "http".into(), protocol: "tcp".into(), port: 80 });
        assert_eq!(svc.ports[1].name, "");
        let headless = json!({"spec": {"clusterIP": "None", "publishNotReadyAddresses": true}});
        assert_eq!(service_from(&headless).kind, ServiceKind::Headless);
        assert!(service_from(&headless).publish_not_ready);
        let external = json!({"spec": {"type": "ExternalName", "externalName": "Example.COM."}});
        assert_eq!(service_from(&external).kind, ServiceKind::ExternalName("example.com".into()));
    }

    #[test]
    fn endpoints_default_to_ready_and_skip_empty_addresses() {
        let parsed = slice_from(&slice(
            "web-1",
            "web",
            json!([{"addresses": ["10.42.0.5"], "hostname": "Web-0", "targetRef": {"kind": "Pod", "name": "web-0"}},
                   {"addresses": ["10.42.0.6"], "conditions": {"ready": false}},
                   {"addresses": []}]),
        ));
        assert_eq!(parsed.service, "web");
        assert_eq!(parsed.endpoints.len(), 2);
        assert!(parsed.endpoints[0].ready);
        assert_eq!(parsed.endpoints[0].hostname.as_deref(), Some("web-0"));
        assert_eq!(parsed.endpoints[0].pod.as_deref(), Some("web-0"));
        assert!(!parsed.endpoints[1].ready);
    }

    fn headless_index(publish: bool) -> Index {
        let mut index = Index::default();
        index.replace(
            Kind::Services,
            &[json!({"metadata": {"namespace": "default", "name": "db"},
                "spec": {"clusterIP": "None", "publishNotReadyAddresses": publish}})],
        );
        index.replace(
            Kind::EndpointSlices,
            &[slice(
                "db-abc",
                "db",
                json!([{"addresses": ["10.42.0.7"], "targetRef": {"kind": "Pod", "name": "db-0"}},
                       {"addresses": ["10.42.0.8"], "conditions": {"ready": false}}]),
            )],
        );
        index
    }

    #[test]
    fn served_endpoints_honour_publish_not_ready() {
        assert_eq!(headless_index(false).served("default", "db").len(), 1);
        assert_eq!(headless_index(true).served("default", "db").len(), 2);
    }

    #[test]
    fn hostnames_come_from_the_endpoint_then_the_pod_then_the_address() {
        let mut index = headless_index(false);
        assert_eq!(index.served("default", "db")[0].hostname, "10-42-0-7");
        let pod = json!({"metadata": {"namespace": "default", "name": "db-0"},
            "spec": {"hostname": "db-0", "subdomain": "db"}});
        index.upsert(Kind::Pods, &pod);
        assert_eq!(index.served("default", "db")[0].hostname, "db-0");
        let other = json!({"metadata": {"namespace": "default", "name": "db-0"},
            "spec": {"hostname": "db-0", "subdomain": "other"}});
        index.upsert(Kind::Pods, &other);
        assert_eq!(index.served("default", "db")[0].hostname, "10-42-0-7");
    }

    #[test]
    fn slices_move_between_services_and_go_away() {
        let mut index = headless_index(false);
        index.upsert(
            Kind::Services,
            &json!({"metadata": {"namespace": "default", "name": "db2"}, "spec": {"clusterIP": "None"}}),
        );
        index.upsert(Kind::EndpointSlices, &slice("db-abc", "db2", json!([{"addresses": ["10.42.0.9"]}])));
        assert!(index.served("default", "db").is_empty());
        assert_eq!(index.served("default", "db2").len(), 1);
        index.remove(Kind::EndpointSlices, &slice("db-abc", "db2", json!([])));
        assert!(index.served("default", "db2").is_empty());
        assert!(index.slices_by_service.is_empty());
    }

    #[test]
    fn namespaces_exist_while_they_have_services() {
        let mut index = headless_index(false);
        assert!(index.has_namespace("default"));
        index.remove(Kind::Services, &json!({"metadata": {"namespace": "default", "name": "db"}}));
        assert!(!index.has_namespace("default"));
        assert!(index.service("default", "db").is_none());
    }

    #[test]
    fn sync_needs_services_and_slices() {
        let mut index = Index::default();
        assert!(!index.synced());
        index.replace(Kind::Services, &[]);
        assert!(!index.synced());
        index.replace(Kind::EndpointSlices, &[]);
        assert!(index.synced());
    }

    #[test]
    fn reverse_names_cover_cluster_ips_and_endpoints() {
        let mut index = headless_index(false);
        index.upsert(
            Kind::Services,
            &json!({"metadata": {"namespace": "default", "name": "web"}, "spec": {"clusterIP": "10.43.0.20"}}),
        );
        assert_eq!(index.names_for_ip("10.43.0.20".parse().unwrap()), vec!["web.default"]);
        assert_eq!(index.names_for_ip("10.42.0.7".parse().unwrap()), vec!["10-42-0-7.db.default"]);
        assert!(index.names_for_ip("10.42.0.8".parse().unwrap()).is_empty(), "not ready");
    }

    #[test]
    fn reverse_maps_follow_changes() {
        let mut index = headless_index(false);
        let web = |ip: &str| json!({"metadata": {"namespace": "default", "name": "web"}, "spec": {"clusterIP": ip}});
        index.upsert(Kind::Services, &web("10.43.0.20"));
        index.upsert(Kind::Services, &web("10.43.0.21"));
        assert!(index.names_for_ip("10.43.0.20".parse().unwrap()).is_empty(), "old cluster IP");
        assert_eq!(index.names_for_ip("10.43.0.21".parse().unwrap()), vec!["web.default"]);
        index.remove(Kind::Services, &web("10.43.0.21"));
        assert!(index.services_by_ip.is_empty());
        index.upsert(Kind::EndpointSlices, &slice("db-abc", "db", json!([{"addresses": ["10.42.0.70"]}])));
        assert!(index.names_for_ip("10.42.0.7".parse().unwrap()).is_empty(), "old endpoint");
        assert_eq!(index.names_for_ip("10.42.0.70".parse().unwrap()), vec!["10-42-0-70.db.default"]);
        index.remove(Kind::EndpointSlices, &slice("db-abc", "db", json!([])));
        assert!(index.slices_by_ip.is_empty());
    }
}
