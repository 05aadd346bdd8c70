//! Unit tests of the naming rules: one test per rule, over the fixture index.

use super::*;
use crate::dns::fixture;
use crate::dns::index::Kind;
use serde_json::json;

fn zone() -> Zone {
    Zone::new("cluster.local").unwrap()
}

fn ask(index: &Index, name: &str, qtype: RecordType) -> Lookup {
    lookup(index, &zone(), &Name::from_ascii(name).unwrap(), qtype)
}

/// The answer records' data as text, e.g. `["10.43.0.20"]`.
fn data(lookup: &Lookup) -> Vec<String> {
    match lookup {
        Lookup::Answer { answers, .. } => answers.iter().map(|r| r.data.to_string()).collect(),
        other => panic!("expected records, got {other:?}"),
    }
}

fn additional(lookup: &Lookup) -> Vec<String> {
    match lookup {
        Lookup::Answer { additionals, .. } => additionals.iter().map(|r| format!("{} {}", r.name, r.data)).collect(),
        other => panic!("expected records, got {other:?}"),
    }
}

#[test]
fn service_a_is_the_cluster_ip() {
    let index = fixture::index();
    assert_eq!(data(&ask(&index, "web.default.svc.cluster.local.", RecordType::A)), ["10.43.0.20"]);
    assert_eq!(data(&ask(&index, "api.other.svc.cluster.local.", RecordType::A)), ["10.43.0.30"]);
}

#[test]
fn names_are_case_insensitive_and_answers_keep_the_question_spelling() {
    let index = fixture::index();
    let lookup = ask(&index, "WEB.Default.SVC.cluster.LOCAL.", RecordType::A);
    assert_eq!(data(&lookup), ["10.43.0.20"]);
    let Lookup::Answer { answers, .. } = lookup else { unreachable!() };
    assert_eq!(answers[0].name.to_ascii(), "WEB.Default.SVC.cluster.LOCAL.");
    assert_eq!(answers[0].ttl, TTL);
}

#[test]
fn aaaa_answers_ipv6_cluster_ips_and_nodata_without_them() {
    let index = fixture::index();
    assert_eq!(data(&ask(&index, "dual.default.svc.cluster.local.", RecordType::AAAA)), ["fd00:43::21"]);
    assert_eq!(data(&ask(&index, "dual.default.svc.cluster.local.", RecordType::A)), ["10.43.0.21"]);
    assert_eq!(ask(&index, "web.default.svc.cluster.local.", RecordType::AAAA), Lookup::NoData);
    assert_eq!(ask(&index, "web.default.svc.cluster.local.", RecordType::MX), Lookup::NoData);
}

#[test]
fn unknown_services_and_namespaces_are_nxdomain() {
    let index = fixture::index();
    assert_eq!(ask(&index, "nope.default.svc.cluster.local.", RecordType::A), Lookup::NxDomain);
    assert_eq!(ask(&index, "web.nope.svc.cluster.local.", RecordType::A), Lookup::NxDomain);
    assert_eq!(ask(&index, "nope.svc.cluster.local.", RecordType::A), Lookup::NxDomain);
    assert_eq!(ask(&index, "a.b.c.d.e.f.cluster.local.", RecordType::A), Lookup::NxDomain);
    // A search-list expansion of an outside name stays inside the zone.
    assert_eq!(ask(&index, "example.com.default.svc.cluster.local.", RecordType::A), Lookup::NxDomain);
}

#[test]
fn intermediate_names_are_nodata() {
    let index = fixture::index();
    for name in ["default.svc.cluster.local.", "svc.cluster.local.", "cluster.local.", "pod.cluster.local."] {
        assert_eq!(ask(&index, name, RecordType::A), Lookup::NoData, "{name}");
    }
}

#[test]
fn the_apex_has_soa_ns_and_the_schema_version() {
    let index = fixture::index();
    let soa = data(&ask(&index, "cluster.local.", RecordType::SOA));
    assert!(soa[0].starts_with("ns.dns.cluster.local. hostmaster.cluster.local."), "{soa:?}");
    assert_eq!(data(&ask(&index, "cluster.local.", RecordType::NS)), ["ns.dns.cluster.local."]);
    assert_eq!(data(&ask(&index, "dns-version.cluster.local.", RecordType::TXT)), ["1.1.0"]);
}

#[test]
fn headless_services_answer_their_ready_endpoints() {
    let index = fixture::index();
    assert_eq!(data(&ask(&index, "db.default.svc.cluster.local.", RecordType::A)), ["10.42.0.7", "10.42.0.8"]);
}

#[test]
fn headless_services_publishing_not_ready_addresses_answer_all() {
    let mut index = fixture::index();
    index.upsert(
        Kind::Services,
        &json!({"metadata": {"namespace": "default", "name": "db"},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": true}}),
    );
    assert_eq!(
        data(&ask(&index, "db.default.svc.cluster.local.", RecordType::A)),
        ["10.42.0.7", "10.42.0.8", "10.42.0.9"]
    );
}

#[test]
fn headless_services_without_ready_endpoints_are_nxdomain() {
    let index = fixture::index();
    assert_eq!(ask(&index, "empty.default.svc.cluster.local.", RecordType::A), Lookup::NxDomain);
}

#[test]
fn endpoint_hostnames_of_headless_services() {
    let index = fixture::index();
    // From the pod's hostname + subdomain (StatefulSet pods).
    assert_eq!(data(&ask(&index, "db-0.db.default.svc.cluster.local.", RecordType::A)), ["10.42.0.7"]);
    // From the endpoint's own hostname.
    assert_eq!(data(&ask(&index, "db-1.db.default.svc.cluster.local.", RecordType::A)), ["10.42.0.8"]);
    // Not ready: no name.
    assert_eq!(ask(&index, "10-42-0-9.db.default.svc.cluster.local.", RecordType::A), Lookup::NxDomain);
    // Endpoint names exist only under headless services.
    assert_eq!(ask(&index, "x.web.default.svc.cluster.local.", RecordType::A), Lookup::NxDomain);
    assert_eq!(ask(&index, "db-0.db.default.svc.cluster.local.", RecordType::TXT), Lookup::NoData);
}

#[test]
fn endpoints_without_hostname_are_named_by_their_address() {
    let mut index = fixture::index();
    index.remove(Kind::Pods, &json!({"metadata": {"namespace": "default", "name": "db-0"}}));
    assert_eq!(data(&ask(&index, "10-42-0-7.db.default.svc.cluster.local.", RecordType::A)), ["10.42.0.7"]);
    assert_eq!(ask(&index, "db-0.db.default.svc.cluster.local.", RecordType::A), Lookup::NxDomain);
}

#[test]
fn srv_for_named_ports_of_cluster_ip_services() {
    let index = fixture::index();
    let lookup = ask(&index, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(data(&lookup), ["0 100 80 web.default.svc.cluster.local."]);
    assert_eq!(additional(&lookup), ["web.default.svc.cluster.local. 10.43.0.20"]);
    assert_eq!(data(&ask(&index, "_dns._udp.web.default.svc.cluster.local.", RecordType::SRV)).len(), 1);
    // Wrong protocol, unknown port, unnamed port: no such name.
    assert_eq!(ask(&index, "_dns._tcp.web.default.svc.cluster.local.", RecordType::SRV), Lookup::NxDomain);
    assert_eq!(ask(&index, "_nope._tcp.web.default.svc.cluster.local.", RecordType::SRV), Lookup::NxDomain);
    assert_eq!(ask(&index, "__tcp.web.default.svc.cluster.local.", RecordType::SRV), Lookup::NxDomain);
    // The name exists, without A records.
    assert_eq!(ask(&index, "_http._tcp.web.default.svc.cluster.local.", RecordType::A), Lookup::NoData);
}

#[test]
fn srv_of_headless_services_lists_every_endpoint() {
    let index = fixture::index();
    let lookup = ask(&index, "_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        data(&lookup),
        ["0 50 5432 db-0.db.default.svc.cluster.local.", "0 50 5432 db-1.db.default.svc.cluster.local."]
    );
    assert_eq!(
        additional(&lookup),
        ["db-0.db.default.svc.cluster.local. 10.42.0.7", "db-1.db.default.svc.cluster.local. 10.42.0.8"]
    );
}

#[test]
fn srv_on_the_service_name_lists_all_ports() {
    let index = fixture::index();
    assert_eq!(data(&ask(&index, "web.default.svc.cluster.local.", RecordType::SRV)).len(), 3);
    assert_eq!(data(&ask(&index, "db.default.svc.cluster.local.", RecordType::SRV)).len(), 2);
}

#[test]
fn external_names_are_cnames() {
    let index = fixture::index();
    let lookup = ask(&index, "ext.default.svc.cluster.local.", RecordType::A);
    let Lookup::Alias { cname, target } = lookup else { panic!("expected an alias, got {lookup:?}") };
    assert_eq!(cname.data.to_string(), "example.com.");
    assert_eq!(target.to_ascii(), "example.com.");
    assert_eq!(data(&ask(&index, "ext.default.svc.cluster.local.", RecordType::CNAME)), ["example.com."]);
}

#[test]
fn pod_names_are_dashed_addresses() {
    let index = fixture::index();
    assert_eq!(data(&ask(&index, "10-42-0-7.default.pod.cluster.local.", RecordType::A)), ["10.42.0.7"]);
    assert_eq!(data(&ask(&index, "fd00--7.default.pod.cluster.local.", RecordType::AAAA)), ["fd00::7"]);
    assert_eq!(ask(&index, "10-42-0-7.default.pod.cluster.local.", RecordType::AAAA), Lookup::NoData);
    assert_eq!(ask(&index, "not-an-ip.default.pod.cluster.local.", RecordType::A), Lookup::NxDomain);
}

#[test]
fn ptr_for_cluster_ips_and_endpoints() {
    let index = fixture::index();
    assert_eq!(data(&ask(&index, "20.0.43.10.in-addr.arpa.", RecordType::PTR)), ["web.default.svc.cluster.local."]);
    assert_eq!(data(&ask(&index, "7.0.42.10.in-addr.arpa.", RecordType::PTR)), ["db-0.db.default.svc.cluster.local."]);
    let v6 = "1.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.4.0.0.0.0.d.f.ip6.arpa.";
    assert_eq!(data(&ask(&index, v6, RecordType::PTR)), ["dual.default.svc.cluster.local."]);
    assert_eq!(ask(&index, "20.0.43.10.in-addr.arpa.", RecordType::A), Lookup::NoData);
}

#[test]
fn unknown_reverse_names_and_outside_names_go_upstream() {
    let index = fixture::index();
    assert_eq!(ask(&index, "9.9.9.9.in-addr.arpa.", RecordType::PTR), Lookup::Forward);
    assert_eq!(ask(&index, "43.10.in-addr.arpa.", RecordType::PTR), Lookup::Forward);
    assert_eq!(ask(&index, "example.com.", RecordType::A), Lookup::Forward);
    assert_eq!(ask(&index, "local.", RecordType::A), Lookup::Forward);
    assert_eq!(ask(&index, "notcluster.local.", RecordType::A), Lookup::Forward);
}

#[test]
fn nothing_is_answered_before_the_first_list() {
    let index = Index::default();
    assert_eq!(ask(&index, "web.default.svc.cluster.local.", RecordType::A), Lookup::NotSynced);
}

#[test]
fn other_cluster_domains_work() {
    let index = fixture::index();
    let zone = Zone::new("Example.Internal.").unwrap();
    let name = Name::from_ascii("web.default.svc.example.internal.").unwrap();
    let lookup = lookup(&index, &zone, &name, RecordType::SRV);
    assert_eq!(data(&lookup)[0], "0 33 80 web.default.svc.example.internal.");
    let name = Name::from_ascii("web.default.svc.cluster.local.").unwrap();
    assert_eq!(super::lookup(&index, &zone, &name, RecordType::A), Lookup::Forward);
}
