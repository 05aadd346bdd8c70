//! NetworkPolicy tests: the decisions per pod (isolation, union, peers,
//! ports) and golden files of the rendered chains for the usual policies
//! (tests/golden/netfilter/policy-<name>.json; `UPDATE_GOLDEN=1` rewrites).

use super::model::Protocol;
use super::plan::{Desired, Transaction};
use super::policy_model::{Allow, Peer, PodPolicy, PortRange};
use super::policy_state::PolicyState;
use super::render::Fragment;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

const NODE: &str = "node-a";

fn pod(namespace: &str, name: &str, ip: &str, node: &str, labels: Value) -> Value {
    json!({"metadata": {"namespace": namespace, "name": name, "labels": labels},
           "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [
               {"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
           "status": {"phase": "Running", "podIP": ip}})
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}})
}

fn policy(namespace: &str, name: &str, spec: Value) -> Value {
    json!({"metadata": {"namespace": namespace, "name": name}, "spec": spec})
}

/// A small cluster: `web` (10.42.0.5) and `client` (10.42.0.6) on this
/// node in `default`, `other` (10.42.1.7) on node-b, `monitor`
/// (10.42.1.8) in namespace `ops` labelled team=ops, and a finished pod.
fn cluster(policies: &[Value]) -> PolicyState {
    let mut state = PolicyState::default();
    state.replace_namespaces(&[namespace("default", json!({})), namespace("ops", json!({"team": "ops"}))]);
    let mut done = pod("default", "done", "10.42.0.9", NODE, json!({"app": "client"}));
    done["status"]["phase"] = json!("Succeeded");
    state.replace_pods(&[
        pod("default", "web", "10.42.0.5", NODE, json!({"app": "web"})),
        pod("default", "client", "10.42.0.6", NODE, json!({"app": "client"})),
        pod("default", "other", "10.42.1.7", "node-b", json!({"app": "other"})),
        pod("ops", "monitor", "10.42.1.8", "node-b", json!({"app": "monitor"})),
        done,
    ]);
    state.replace_policies(policies);
    state
}

fn decide(policies: &[Value]) -> Vec<PodPolicy> {
    cluster(policies).local_policies(NODE)
}

fn ips(list: &[&str]) -> Peer {
    Peer::Pods(list.iter().map(|ip| ip.parse().expect("ip")).collect::<BTreeSet<Ipv4Addr>>())
}

fn tcp(first: u16, last: u16) -> PortRange {
    PortRange { protocol: Protocol::Tcp, first, last }
}

fn web_only(spec: Value) -> Value {
    let mut spec = spec;
    spec["podSelector"] = json!({"matchLabels": {"app": "web"}});
    policy("default", "p", spec)
}

#[test]
fn without_policies_no_pod_is_isolated() {
    assert_eq!(decide(&[]), vec![]);
}

#[test]
fn an_empty_ingress_list_isolates_the_selected_pods_and_allows_nothing() {
    let decided = decide(&[policy("default", "deny", json!({"podSelector": {}}))]);
    let pods: Vec<&str> = decided.iter().map(|p| p.pod.as_str()).collect();
    assert_eq!(pods, vec!["default/web", "default/client"], "only local pods, by address");
    assert!(decided.iter().all(|p| p.ingress == Some(vec![]) && p.egress.is_none()));
}

#[test]
fn egress_is_isolated_when_listed_in_policy_types_or_when_egress_rules_exist() {
    let listed = decide(&[web_only(json!({"policyTypes": ["Egress"]}))]);
    assert_eq!((listed[0].ingress.clone(), listed[0].egress.clone()), (None, Some(vec![])));
    let implied = decide(&[web_only(json!({"egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}))]);
    assert_eq!(implied[0].ingress, Some(vec![]), "Ingress is always implied");
    let dns = PortRange { protocol: Protocol::Udp, first: 53, last: 53 };
    assert_eq!(implied[0].egress, Some(vec![Allow { peer: Peer::Any, ports: Some(vec![dns]) }]));
}

#[test]
fn pod_selectors_pick_pods_of_the_policy_namespace_only_and_skip_finished_pods() {
    let spec = json!({"ingress": [{"from": [{"podSelector": {"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["client", "monitor"]}]}}]}]});
    let decided = decide(&[web_only(spec)]);
    assert_eq!(decided[0].ingress, Some(vec![Allow { peer: ips(&["10.42.0.6"]), ports: None }]));
}

#[test]
fn namespace_and_pod_selectors_in_one_peer_must_both_match() {
    let both = json!({"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}},
                                            "podSelector": {"matchLabels": {"app": "other"}}}]}]});
    assert_eq!(decide(&[web_only(both)])[0].ingress, Some(vec![]), "no pod matches both");
    let by_name = json!({"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}]}]});
    assert_eq!(decide(&[web_only(by_name)])[0].ingress, Some(vec![Allow { peer: ips(&["10.42.1.8"]), ports: None }]));
}

#[test]
fn policies_are_a_union_and_unknown_named_ports_allow_nothing() {
    let from_client = web_only(json!({"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                                                  "ports": [{"port": "http"}]}]}));
    let mut from_anyone =
        web_only(json!({"ingress": [{"ports": [{"port": "nope"}, {"port": 9000, "endPort": 9010}]}]}));
    from_anyone["metadata"]["name"] = json!("q");
    let decided = decide(&[from_client, from_anyone]);
    let want = vec![
        Allow { peer: Peer::Any, ports: Some(vec![tcp(9000, 9010)]) },
        Allow { peer: ips(&["10.42.0.6"]), ports: Some(vec![tcp(8080, 8080)]) },
    ];
    assert_eq!(decided[0].ingress, Some(want));
    let unknown = web_only(json!({"ingress": [{"ports": [{"port": "nope"}]}]}));
    assert_eq!(decide(&[unknown])[0].ingress, Some(vec![]));
}

#[test]
fn changes_that_do_not_matter_leave_the_state_clean() {
    let mut state = cluster(&[]);
    let _ = state.render(NODE);
    let mut web = pod("default", "web", "10.42.0.5", NODE, json!({"app": "web"}));
    web["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    state.upsert_pod(&web);
    assert!(!state.is_dirty(), "a status condition does not change any rule");
    web["metadata"]["labels"]["app"] = json!("api");
    state.upsert_pod(&web);
    assert!(state.is_dirty());
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/netfilter").join(format!("policy-{name}.json"))
}

/// The commands that add the policy chains to a table holding nothing else.
fn policy_commands(fragment: Fragment) -> Transaction {
    let mut desired = Desired::new(Fragment::default());
    let mut tx = Transaction::default();
    desired.replace_service(&super::model::ServiceKey::new("", "network-policies"), Some(fragment), &mut tx);
    tx
}

fn scenarios() -> Vec<(&'static str, Vec<Value>)> {
    let client = json!({"podSelector": {"matchLabels": {"app": "client"}}});
    vec![
        ("default-deny-ingress", vec![policy("default", "deny", json!({"podSelector": {}}))]),
        ("allow-pod-selector", vec![web_only(json!({"ingress": [{"from": [client.clone()]}]}))]),
        (
            "namespace-selector",
            vec![web_only(json!({"ingress": [{"from": [
                {"namespaceSelector": {"matchLabels": {"team": "ops"}}},
                {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "other"}}}]}]}))],
        ),
        (
            "ip-block-except",
            vec![web_only(json!({"ingress": [{"from": [
                {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24", "192.168.2.7/32"]}},
                {"ipBlock": {"cidr": "fd00::/8"}}]}]}))],
        ),
        (
            "ports-end-port",
            vec![web_only(json!({"ingress": [{"from": [client.clone()], "ports": [
                {"port": 80}, {"port": 8000, "endPort": 8100}, {"port": "http"},
                {"protocol": "UDP", "port": 5000}, {"protocol": "SCTP"}]}]}))],
        ),
        (
            "egress-deny-allow-dns",
            vec![policy(
                "default",
                "dns-only",
                json!({"podSelector": {"matchLabels": {"app": "client"}},
                "policyTypes": ["Egress"], "egress": [{"ports": [
                    {"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]}),
            )],
        ),
        (
            "union",
            vec![
                web_only(json!({"ingress": [{"from": [client], "ports": [{"port": 80}]}]})),
                policy(
                    "default",
                    "monitoring",
                    json!({"podSelector": {}, "ingress": [{"from": [
                    {"namespaceSelector": {"matchLabels": {"team": "ops"}}}]}]}),
                ),
            ],
        ),
    ]
}

#[test]
fn rendered_policy_chains_match_the_golden_files() {
    let mut mismatched = Vec::new();
    for (name, policies) in scenarios() {
        let rendered = policy_commands(cluster(&policies).render(NODE)).to_json_pretty().expect("encode") + "\n";
        let path = golden_path(name);
        if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
            std::fs::write(&path, &rendered).expect("write golden file");
            continue;
        }
        if std::fs::read_to_string(&path).unwrap_or_default() != rendered {
            mismatched.push(format!("{}:\n{rendered}", path.display()));
        }
    }
    assert!(mismatched.is_empty(), "policy chains differ (UPDATE_GOLDEN=1 to accept):\n{}", mismatched.join("\n"));
}
