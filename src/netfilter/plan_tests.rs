//! Incremental sync: a change costs commands for what changed only, map
//! elements follow their owners, and failures fall back to a full rebuild.

use super::fixtures::{self, ready};
use super::nft::FakeNft;
use super::plan::Transaction;
use super::state::ProxyState;
use serde_json::{Value, json};
use std::sync::Arc;

fn commands(tx: &Transaction) -> Vec<Value> {
    let doc: Value = serde_json::from_str(&tx.to_json().unwrap()).unwrap();
    doc["nftables"].as_array().unwrap().clone()
}

/// `verb object name` of every command, e.g. "flush chain svc-…".
fn summary(tx: &Transaction) -> Vec<String> {
    commands(tx)
        .iter()
        .map(|cmd| {
            let (verb, body) = cmd.as_object().unwrap().iter().next().unwrap();
            let (kind, object) = body.as_object().unwrap().iter().next().unwrap();
            let name = object.get("name").or_else(|| object.get("chain")).and_then(Value::as_str).unwrap_or("");
            format!("{verb} {kind} {name}")
        })
        .collect()
}

fn loaded(count: u32) -> ProxyState {
    let mut state = ProxyState::new(fixtures::config());
    let (services, slices) = fixtures::many(count, 2);
    state.replace_services(services);
    state.replace_slices(slices);
    assert!(state.plan().unwrap().full);
    state
}

#[test]
fn an_endpoint_change_touches_only_that_service() {
    let mut state = loaded(50);
    assert!(state.plan().is_none(), "nothing changed");
    let slice = fixtures::slice("bench", "svc-7", "x", ("http", 8080, "TCP"), &[ready("10.42.0.16", "node-b")]);
    state.upsert_slice(slice);
    let tx = state.plan().unwrap();
    assert!(!tx.full);
    let summary = summary(&tx);
    assert!(summary.iter().all(|s| s.contains("bench/svc-7/")), "{summary:#?}");
    // svc-7 had 10.42.0.16 and 10.42.0.17; the second endpoint chain goes away.
    assert!(summary.contains(&"delete chain ep-bench/svc-7/tcp/http@10.42.0.17:8080".to_string()), "{summary:#?}");
    assert!(summary.contains(&"flush chain svc-bench/svc-7/tcp/http".to_string()), "{summary:#?}");
    assert!(!summary.iter().any(|s| s.contains("element")), "the ClusterIP still goes to the same chain: {summary:#?}");
}

#[test]
fn a_status_only_update_plans_nothing() {
    let mut state = loaded(3);
    let (mut services, _) = fixtures::many(3, 2);
    services[1]["metadata"]["resourceVersion"] = json!("42");
    state.upsert_service(services.remove(1));
    assert!(state.plan().is_none());
}

#[test]
fn losing_all_endpoints_moves_the_address_to_the_reject_map() {
    let mut state = loaded(3);
    state.delete_slice(&fixtures::slice("bench", "svc-1", "x", ("http", 8080, "TCP"), &[]));
    let summary = summary(&state.plan().unwrap());
    assert_eq!(
        summary,
        vec![
            "delete element service-ips",
            "flush chain ep-bench/svc-1/tcp/http@10.42.0.4:8080",
            "flush chain ep-bench/svc-1/tcp/http@10.42.0.5:8080",
            "flush chain svc-bench/svc-1/tcp/http",
            "delete chain ep-bench/svc-1/tcp/http@10.42.0.4:8080",
            "delete chain ep-bench/svc-1/tcp/http@10.42.0.5:8080",
            "delete chain svc-bench/svc-1/tcp/http",
            "add element no-endpoint-services",
        ]
    );
}

#[test]
fn a_shared_external_address_passes_to_the_next_owner() {
    let mut state = ProxyState::new(fixtures::config());
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for (name, ip) in [("a", "10.43.0.50"), ("b", "10.43.0.51")] {
        let mut service = fixtures::service("default", name, ip, &[("http", 80, "TCP")]);
        service["spec"]["externalIPs"] = json!(["192.0.2.10"]);
        services.push(service);
        slices.push(fixtures::slice("default", name, "x", ("http", 8080, "TCP"), &[ready("10.42.0.9", "node-a")]));
    }
    state.replace_services(services.clone());
    state.replace_slices(slices);
    let full = state.plan().unwrap().to_json().unwrap();
    assert!(
        full.contains(r#"{"concat":["192.0.2.10","tcp",80]},{"goto":{"target":"ext-default/a/tcp/http"}}"#),
        "{full}"
    );
    assert!(!full.contains(r#"{"goto":{"target":"ext-default/b/tcp/http"}}"#), "one owner per key");
    state.delete_service(&services[0]);
    let next = state.plan().unwrap().to_json().unwrap();
    assert!(
        next.contains(r#"{"concat":["192.0.2.10","tcp",80]},{"goto":{"target":"ext-default/b/tcp/http"}}"#),
        "{next}"
    );
}

#[test]
fn an_affinity_timeout_change_recreates_the_sets_and_refills_their_chains() {
    let mut state = ProxyState::new(fixtures::config());
    let (_, mut services, slices) = fixtures::scenarios().remove(3);
    state.replace_services(services.clone());
    state.replace_slices(slices);
    state.plan().unwrap();
    services[0]["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] = json!(120);
    state.upsert_service(services.remove(0));
    let summary = summary(&state.plan().unwrap());
    assert!(summary.contains(&"delete set aff-default/sticky/tcp/http@10.42.0.5:8080".to_string()), "{summary:#?}");
    assert!(summary.contains(&"add set aff-default/sticky/tcp/http@10.42.0.5:8080".to_string()), "{summary:#?}");
    assert!(summary.contains(&"flush chain ep-default/sticky/tcp/http@10.42.0.5:8080".to_string()), "{summary:#?}");
}

#[tokio::test]
async fn a_failed_apply_makes_the_next_sync_a_full_rebuild() {
    let mut state = loaded(2);
    let nft = Arc::new(FakeNft::default());
    *nft.fail_next.lock().unwrap() = true;
    state.upsert_slice(fixtures::slice("bench", "svc-0", "x", ("http", 8080, "TCP"), &[ready("10.42.0.2", "node-b")]));
    assert!(super::sync::sync_once(&mut state, nft.clone()).await.is_err());
    assert!(nft.transactions().is_empty());
    assert!(super::sync::sync_once(&mut state, nft.clone()).await.is_ok());
    let applied = nft.transactions();
    assert_eq!(applied.len(), 1);
    assert!(applied[0].0, "the retry is a full rebuild");
    assert!(!applied[0].1.contains("10.42.0.3"), "the rebuild has the new endpoints only");
}

#[test]
fn the_node_pod_cidr_gives_the_dns_target() {
    let mut state = ProxyState::new(super::ProxyConfig { dns_target: None, ..fixtures::config() });
    state.plan().unwrap();
    let node = json!({"metadata": {"name": "node-a"}, "spec": {"podCIDR": "10.42.3.0/24"}});
    state.set_node(&node);
    let tx = state.plan().unwrap();
    assert!(tx.full);
    assert!(tx.to_json().unwrap().contains(r#"{"dnat":{"addr":"10.42.3.1","family":"ip","port":53}}"#));
    state.set_node(&node);
    assert!(state.plan().is_none(), "same podCIDR, nothing to do");
}
