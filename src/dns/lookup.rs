//! The naming rules of Kubernetes DNS (the kubernetes/dns specification, as
//! CoreDNS's kubernetes plugin answers them): a pure function from the index
//! and one question to what the answer is. Names compare case-insensitively;
//! answers keep the question's spelling.

use super::index::{Index, ServiceKind};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Time to live of every cluster record, as CoreDNS's kubernetes plugin.
pub const TTL: u32 = 5;
/// The `dns-version.<zone>` TXT record (the schema CoreDNS implements).
pub const SCHEMA_VERSION: &str = "1.1.0";

/// The cluster domain the server is authoritative for.
#[derive(Clone, Debug)]
pub struct Zone {
    /// Lowercase, without the trailing dot: `cluster.local`.
    pub domain: String,
    labels: Vec<String>,
    origin: Name,
}

/// What the answer to one question is.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// NOERROR with records.
    Answer { answers: Vec<Record>, additionals: Vec<Record> },
    /// An ExternalName Service: the CNAME, and the target the answer goes on at.
    Alias { cname: Box<Record>, target: Name },
    /// The name exists without records of that type: NOERROR, SOA in authority.
    NoData,
    /// The name does not exist: NXDOMAIN, SOA in authority.
    NxDomain,
    /// The index has not been listed yet: SERVFAIL, the client retries.
    NotSynced,
    /// Not a cluster name: ask the upstream resolvers.
    Forward,
}

impl Lookup {
    fn records(answers: Vec<Record>) -> Lookup {
        if answers.is_empty() { Lookup::NoData } else { Lookup::Answer { answers, additionals: Vec::new() } }
    }
}

impl Zone {
    /// The zone of a cluster domain such as `cluster.local`.
    pub fn new(domain: &str) -> Result<Zone, hickory_proto::ProtoError> {
        let domain = domain.trim_end_matches('.').to_lowercase();
        let origin = Name::from_ascii(format!("{domain}."))?;
        Ok(Zone { labels: domain.split('.').map(str::to_string).collect(), domain, origin })
    }

    /// `relative` (e.g. `web.default.svc`) inside the zone, as a DNS name.
    pub fn name(&self, relative: &str) -> Option<Name> {
        let text =
            if relative.is_empty() { format!("{}.", self.domain) } else { format!("{relative}.{}.", self.domain) };
        Name::from_ascii(text).ok()
    }

    /// The zone's SOA record, in the authority section of negative answers.
    pub fn soa(&self, serial: u32) -> Record {
        let mname = self.name("ns.dns").unwrap_or_else(|| self.origin.clone());
        let rname = self.name("hostmaster").unwrap_or_else(|| self.origin.clone());
        let soa = SOA::new(mname, rname, serial, 7200, 1800, 86400, TTL);
        Record::from_rdata(self.origin.clone(), TTL, RData::SOA(soa))
    }

    /// The labels of `name` before the zone, lowercased, when it is inside it.
    fn relative(&self, name: &Name) -> Option<Vec<String>> {
        let lower = name.to_lowercase().to_ascii();
        let mut labels: Vec<String> = lower.trim_end_matches('.').split('.').map(str::to_string).collect();
        if labels.len() < self.labels.len() || labels[labels.len() - self.labels.len()..] != self.labels[..] {
            return None;
        }
        labels.truncate(labels.len() - self.labels.len());
        Some(labels)
    }
}

fn record(name: &Name, data: RData) -> Record {
    Record::from_rdata(name.clone(), TTL, data)
}

/// Address records of `ips` that answer `qtype`; `None` when `qtype` asks
/// for no addresses.
fn address_records(name: &Name, qtype: RecordType, ips: &[IpAddr]) -> Option<Vec<Record>> {
    let (v4, v6) = match qtype {
        RecordType::A => (true, false),
        RecordType::AAAA => (false, true),
        RecordType::ANY => (true, true),
        _ => return None,
    };
    let mut records = Vec::new();
    for ip in ips {
        match ip {
            IpAddr::V4(ip) if v4 => records.push(record(name, RData::A(A(*ip)))),
            IpAddr::V6(ip) if v6 => records.push(record(name, RData::AAAA(AAAA(*ip)))),
            _ => {}
        }
    }
    Some(records)
}

/// The answer to `qname`/`qtype` from the index.
pub fn lookup(index: &Index, zone: &Zone, qname: &Name, qtype: RecordType) -> Lookup {
    if let Some(labels) = zone.relative(qname) {
        if !index.synced() {
            return Lookup::NotSynced;
        }
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        return cluster_name(index, zone, qname, qtype, &labels);
    }
    reverse(index, zone, qname, qtype)
}

fn cluster_name(index: &Index, zone: &Zone, qname: &Name, qtype: RecordType, labels: &[&str]) -> Lookup {
    match labels {
        [] => match qtype {
            RecordType::SOA | RecordType::ANY => Lookup::records(vec![zone.soa(index.serial)]),
            RecordType::NS => match zone.name("ns.dns") {
                Some(ns) => Lookup::records(vec![record(qname, RData::NS(NS(ns)))]),
                None => Lookup::NoData,
            },
            _ => Lookup::NoData,
        },
        ["dns-version"] => match qtype {
            RecordType::TXT | RecordType::ANY => {
                Lookup::records(vec![record(qname, RData::TXT(TXT::new(vec![SCHEMA_VERSION.into()])))])
            }
            _ => Lookup::NoData,
        },
        ["svc"] | ["pod"] | [_, "pod"] => Lookup::NoData,
        [ns, "svc"] if index.has_namespace(ns) => Lookup::NoData,
        [service, ns, "svc"] => service_name(index, zone, qname, qtype, ns, service),
        [endpoint, service, ns, "svc"] if !endpoint.starts_with('_') => {
            endpoint_name(index, qname, qtype, ns, service, endpoint)
        }
        [port, proto, service, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            srv_name(index, zone, qname, qtype, ns, service, &port[1..], &proto[1..])
        }
        [ip, _, "pod"] => pod_name(qname, qtype, ip),
        _ => Lookup::NxDomain,
    }
}

/// `<service>.<ns>.svc.<zone>`.
fn service_name(index: &Index, zone: &Zone, qname: &Name, qtype: RecordType, ns: &str, name: &str) -> Lookup {
    let Some(service) = index.service(ns, name) else { return Lookup::NxDomain };
    match &service.kind {
        ServiceKind::ExternalName(target) => {
            let Ok(target) = Name::from_ascii(format!("{target}.")) else { return Lookup::NoData };
            let cname = Box::new(record(qname, RData::CNAME(CNAME(target.clone()))));
            if qtype == RecordType::CNAME { Lookup::records(vec![*cname]) } else { Lookup::Alias { cname, target } }
        }
        ServiceKind::ClusterIp(ips) => {
            if qtype == RecordType::SRV {
                let target = zone.name(&format!("{name}.{ns}.svc")).unwrap_or_else(|| qname.clone());
                let ports: Vec<u16> = service.ports.iter().map(|p| p.port).collect();
                return srv_answer(qname, ports.into_iter().map(|port| (port, target.clone(), ips.clone())).collect());
            }
            address_records(qname, qtype, ips).map_or(Lookup::NoData, Lookup::records)
        }
        ServiceKind::Headless => {
            let served = index.served(ns, name);
            if served.is_empty() {
                return Lookup::NxDomain;
            }
            if qtype == RecordType::SRV {
                let mut targets = Vec::new();
                for s in &served {
                    let Some(target) = zone.name(&format!("{}.{name}.{ns}.svc", s.hostname)) else { continue };
                    for port in s.ports {
                        targets.push((port.port, target.clone(), s.endpoint.addresses.clone()));
                    }
                }
                return srv_answer(qname, targets);
            }
            let ips: BTreeSet<IpAddr> = served.iter().flat_map(|s| s.endpoint.addresses.iter().copied()).collect();
            let ips: Vec<IpAddr> = ips.into_iter().collect();
            address_records(qname, qtype, &ips).map_or(Lookup::NoData, Lookup::records)
        }
    }
}

/// `<hostname>.<service>.<ns>.svc.<zone>` of a headless Service's endpoint.
fn endpoint_name(index: &Index, qname: &Name, qtype: RecordType, ns: &str, service: &str, host: &str) -> Lookup {
    if !matches!(index.service(ns, service).map(|s| &s.kind), Some(ServiceKind::Headless)) {
        return Lookup::NxDomain;
    }
    let ips: BTreeSet<IpAddr> = index
        .served(ns, service)
        .iter()
        .filter(|s| s.hostname == host)
        .flat_map(|s| s.endpoint.addresses.iter().copied())
        .collect();
    if ips.is_empty() {
        return Lookup::NxDomain;
    }
    let ips: Vec<IpAddr> = ips.into_iter().collect();
    address_records(qname, qtype, &ips).map_or(Lookup::NoData, Lookup::records)
}

/// `_<port>._<proto>.<service>.<ns>.svc.<zone>`: SRV for a named port.
#[allow(clippy::too_many_arguments)]
fn srv_name(
    index: &Index,
    zone: &Zone,
    qname: &Name,
    qtype: RecordType,
    ns: &str,
    name: &str,
    port: &str,
    proto: &str,
) -> Lookup {
    let Some(service) = index.service(ns, name) else { return Lookup::NxDomain };
    let matches = |p: &super::index::PortSpec| !p.name.is_empty() && p.name == port && p.protocol == proto;
    let mut targets = Vec::new();
    match &service.kind {
        ServiceKind::ClusterIp(ips) => {
            let target = zone.name(&format!("{name}.{ns}.svc")).unwrap_or_else(|| qname.clone());
            for p in service.ports.iter().filter(|p| matches(p)) {
                targets.push((p.port, target.clone(), ips.clone()));
            }
        }
        ServiceKind::Headless => {
            for s in index.served(ns, name) {
                let Some(target) = zone.name(&format!("{}.{name}.{ns}.svc", s.hostname)) else { continue };
                for p in s.ports.iter().filter(|p| matches(p)) {
                    targets.push((p.port, target.clone(), s.endpoint.addresses.clone()));
                }
            }
        }
        ServiceKind::ExternalName(_) => {}
    }
    if targets.is_empty() {
        return Lookup::NxDomain;
    }
    if qtype != RecordType::SRV && qtype != RecordType::ANY {
        return Lookup::NoData;
    }
    srv_answer(qname, targets)
}

/// SRV records (priority 0, weights splitting 100) and their targets'
/// addresses in the additional section.
fn srv_answer(qname: &Name, targets: Vec<(u16, Name, Vec<IpAddr>)>) -> Lookup {
    let weight = u16::try_from(100 / targets.len().max(1)).unwrap_or(1).max(1);
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    let mut seen = BTreeSet::new();
    for (port, target, ips) in targets {
        answers.push(record(qname, RData::SRV(SRV::new(0, weight, port, target.clone()))));
        if seen.insert(target.to_ascii()) {
            additionals.extend(address_records(&target, RecordType::ANY, &ips).unwrap_or_default());
        }
    }
    if answers.is_empty() { Lookup::NoData } else { Lookup::Answer { answers, additionals } }
}

/// `<a-b-c-d>.<ns>.pod.<zone>` (CoreDNS's `pods insecure`, as k3s runs it).
fn pod_name(qname: &Name, qtype: RecordType, label: &str) -> Lookup {
    let ip = if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        IpAddr::V4(v4)
    } else if let Ok(v6) = label.replace('-', ":").parse::<Ipv6Addr>() {
        IpAddr::V6(v6)
    } else {
        return Lookup::NxDomain;
    };
    address_records(qname, qtype, &[ip]).map_or(Lookup::NoData, Lookup::records)
}

/// PTR for cluster IPs and endpoint addresses; other reverse names (and
/// everything outside the zone) go upstream.
fn reverse(index: &Index, zone: &Zone, qname: &Name, qtype: RecordType) -> Lookup {
    let Ok(net) = qname.parse_arpa_name() else { return Lookup::Forward };
    if net.prefix_len() != net.max_prefix_len() {
        return Lookup::Forward;
    }
    let ip = net.addr();
    let names = index.names_for_ip(ip);
    if names.is_empty() {
        return Lookup::Forward;
    }
    if qtype != RecordType::PTR && qtype != RecordType::ANY {
        return Lookup::NoData;
    }
    let answers = names
        .iter()
        .filter_map(|n| zone.name(&format!("{n}.svc")))
        .map(|target| record(qname, RData::PTR(PTR(target))))
        .collect();
    Lookup::records(answers)
}

#[cfg(test)]
#[path = "lookup_tests.rs"]
mod tests;
