//! The service load balancer (k3s's ServiceLB idea): a Service of type
//! LoadBalancer without a `loadBalancerClass` is reachable on every Ready
//! node, so its `status.loadBalancer.ingress` lists those nodes' addresses
//! (ExternalIP, else InternalIP); the service proxy forwards from them.

use super::Context;
use super::objects::{self, name, str_at};
use super::queue::{self, Action, Key, Secondary, Wake};
use super::replicaset::write_status;
use crate::server::error::ApiError;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SERVICES: (&str, &str, &str) = ("", "v1", "services");
const NODES: (&str, &str, &str) = ("", "v1", "nodes");

fn load_balancer(service: &Value) -> bool {
    str_at(service, "/spec/type") == "LoadBalancer" && str_at(service, "/spec/loadBalancerClass").is_empty()
}

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let nodes = Secondary { gvr: NODES, wakes: |_| vec![Wake::All], deletions_only: false };
    queue::run_filtered(
        ctx,
        shutdown,
        "servicelb",
        SERVICES,
        load_balancer,
        &[nodes],
        Duration::from_secs(60),
        reconcile,
    )
    .await;
}

/// The ingress addresses: one per Ready, schedulable node, sorted.
pub fn ingress(nodes: &[Value]) -> Vec<Value> {
    let mut ips: Vec<String> = nodes
        .iter()
        .filter(|n| {
            objects::condition(n, "Ready").and_then(|c| c.get("status")).and_then(Value::as_str) == Some("True")
                && n.pointer("/spec/unschedulable").and_then(Value::as_bool) != Some(true)
        })
        .filter_map(|n| {
            let addresses = n.pointer("/status/addresses").and_then(Value::as_array)?;
            let of = |kind: &str| {
                addresses
                    .iter()
                    .find(|a| a.get("type").and_then(Value::as_str) == Some(kind))
                    .and_then(|a| a.get("address").and_then(Value::as_str))
            };
            of("ExternalIP").or_else(|| of("InternalIP")).map(str::to_string)
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips.into_iter().map(|ip| json!({"ip": ip, "ipMode": "VIP"})).collect()
}

async fn reconcile(ctx: Context, (ns, svc): Key) -> Result<Action, ApiError> {
    let Some(service) = objects::get(&ctx, SERVICES, &ns, &svc).await? else { return Ok(Action::Done) };
    if !load_balancer(&service) {
        return Ok(Action::Done);
    }
    let nodes = objects::list(&ctx, NODES, None).await?;
    let ingress = ingress(&nodes);
    let current = service.pointer("/status/loadBalancer/ingress").cloned().unwrap_or(json!([]));
    if current == json!(ingress) {
        return Ok(Action::Done);
    }
    tracing::info!(service = %name(&service), namespace = %ns, addresses = ingress.len(), "updating load balancer ingress");
    let status = if ingress.is_empty() {
        json!({"loadBalancer": {"ingress": null}})
    } else {
        json!({"loadBalancer": {"ingress": ingress}})
    };
    write_status(&ctx, SERVICES, &service, status).await?;
    Ok(Action::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ready: &str, addresses: Value) -> Value {
        json!({"status": {"conditions": [{"type": "Ready", "status": ready}], "addresses": addresses}})
    }

    #[test]
    fn ready_nodes_addresses_prefer_external_ips() {
        let nodes = [
            node("True", json!([{"type": "InternalIP", "address": "192.168.1.20"}])),
            node(
                "True",
                json!([{"type": "InternalIP", "address": "10.0.0.5"}, {"type": "ExternalIP", "address": "203.0.113.7"}]),
            ),
            node("False", json!([{"type": "InternalIP", "address": "192.168.1.21"}])),
        ];
        assert_eq!(
            ingress(&nodes),
            [json!({"ip": "192.168.1.20", "ipMode": "VIP"}), json!({"ip": "203.0.113.7", "ipMode": "VIP"})]
        );
        assert!(load_balancer(&json!({"spec": {"type": "LoadBalancer"}})));
        assert!(!load_balancer(&json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": "metallb"}})));
    }
}
