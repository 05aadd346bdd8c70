//! Service address allocation, as upstream's service registry: a cluster IP
//! from `--service-cidr` (unless headless or ExternalName) and node ports
//! from `--service-node-port-range` for NodePort and LoadBalancer services,
//! reserved in the store and released when the service goes.

use crate::server::config::ServerConfig;
use crate::server::error::{ApiError, FieldError};
use crate::server::registry::Registry;
use crate::server::registry::allocator::{NODE_PORTS, SERVICE_IPS};
use rand::Rng;
use serde_json::{Value, json};
use std::net::Ipv4Addr;

fn owner(svc: &Value) -> String {
    let text = |p: &str| svc.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
    format!("{}/{}", text("/metadata/namespace"), text("/metadata/name"))
}

fn kind(svc: &Value) -> &str {
    svc.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP")
}

fn invalid(svc: &Value, field: &str, value: &Value, detail: &str) -> ApiError {
    let name = svc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    ApiError::invalid("", "Service", name, vec![FieldError::invalid(field, value, detail)])
}

fn wants_node_ports(svc: &Value) -> bool {
    matches!(kind(svc), "NodePort" | "LoadBalancer")
}

/// Fills in and reserves the service's cluster IP and node ports.
pub async fn allocate(registry: &Registry, config: &ServerConfig, svc: &mut Value) -> Result<(), ApiError> {
    let who = owner(svc);
    if kind(svc) != "ExternalName" && svc.pointer("/spec/clusterIP").and_then(Value::as_str) != Some("None") {
        let requested =
            svc.pointer("/spec/clusterIP").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let ip = match requested {
            Some(text) => {
                let ip: Ipv4Addr = text
                    .parse()
                    .map_err(|_| invalid(svc, "spec.clusterIPs[0]", &json!(text), "must be a valid IP address"))?;
                if !config.service_cidr.contains(ip) {
                    let detail = format!(
                        "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                        config.service_cidr
                    );
                    return Err(invalid(svc, "spec.clusterIPs", &json!([text]), &detail));
                }
                if !registry.reserve(SERVICE_IPS, &text, &who).await? {
                    let detail = format!("failed to allocate IP {ip}: provided IP is already allocated");
                    return Err(invalid(svc, "spec.clusterIPs", &json!([text]), &detail));
                }
                text
            }
            None => pick_ip(registry, config, &who).await?,
        };
        svc["spec"]["clusterIP"] = json!(ip);
        svc["spec"]["clusterIPs"] = json!([ip]);
    }
    if wants_node_ports(svc) {
        allocate_node_ports(registry, config, svc, &who).await?;
    }
    Ok(())
}

async fn pick_ip(registry: &Registry, config: &ServerConfig, who: &str) -> Result<String, ApiError> {
    let size = 1u32 << (32 - u32::from(config.service_cidr.prefix));
    // Skip the network address, the first address (the `kubernetes` service) and the broadcast address.
    let usable = size.saturating_sub(3);
    let taken = registry.reserved(SERVICE_IPS).await?;
    let start = rand::rng().random_range(0..usable.max(1));
    for offset in 0..usable {
        let ip = config.service_cidr.nth(2 + (start + offset) % usable).to_string();
        if ip == config.cluster_dns.to_string() || taken.contains(&ip) {
            continue;
        }
        if registry.reserve(SERVICE_IPS, &ip, who).await? {
            return Ok(ip);
        }
    }
    Err(ApiError::internal("allocate a cluster IP", &format!("range {} is full", config.service_cidr)))
}

async fn allocate_node_ports(
    registry: &Registry,
    config: &ServerConfig,
    svc: &mut Value,
    who: &str,
) -> Result<(), ApiError> {
    let (low, high) = config.node_port_range;
    let count = svc.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
    for i in 0..count {
        let requested = svc.pointer(&format!("/spec/ports/{i}/nodePort")).and_then(Value::as_u64).filter(|p| *p != 0);
        let port = match requested {
            Some(port) => {
                if !(u64::from(low)..=u64::from(high)).contains(&port) {
                    let detail =
                        format!("provided port is not in the valid range. The range of valid ports is {low}-{high}");
                    return Err(invalid(svc, &format!("spec.ports[{i}].nodePort"), &json!(port), &detail));
                }
                if !registry.reserve(NODE_PORTS, &port.to_string(), who).await? {
                    return Err(invalid(
                        svc,
                        &format!("spec.ports[{i}].nodePort"),
                        &json!(port),
                        "provided port is already allocated",
                    ));
                }
                port
            }
            None => {
                let taken = registry.reserved(NODE_PORTS).await?;
                let span = u64::from(high - low) + 1;
                let start = rand::rng().random_range(0..span);
                let mut chosen = None;
                for offset in 0..span {
                    let port = u64::from(low) + (start + offset) % span;
                    if !taken.contains(&port.to_string())
                        && registry.reserve(NODE_PORTS, &port.to_string(), who).await?
                    {
                        chosen = Some(port);
                        break;
                    }
                }
                chosen.ok_or_else(|| ApiError::internal("allocate a node port", &"range is full"))?
            }
        };
        svc["spec"]["ports"][i]["nodePort"] = json!(port);
    }
    Ok(())
}

/// Releases everything `svc` holds.
pub async fn release(registry: &Registry, svc: &Value) -> Result<(), ApiError> {
    let who = owner(svc);
    for ip in svc.pointer("/spec/clusterIPs").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
    {
        registry.release(SERVICE_IPS, ip, &who).await?;
    }
    release_node_ports(registry, svc, None).await
}

/// Releases the node ports of `old` that `new` (if any) no longer uses.
pub async fn release_node_ports(registry: &Registry, old: &Value, new: Option<&Value>) -> Result<(), ApiError> {
    let ports = |svc: &Value| -> Vec<u64> {
        svc.pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("nodePort")?.as_u64())
            .collect()
    };
    let keep = new.map(ports).unwrap_or_default();
    for port in ports(old).into_iter().filter(|p| !keep.contains(p)) {
        registry.release(NODE_PORTS, &port.to_string(), &owner(old)).await?;
    }
    Ok(())
}

/// On update: keeps allocated node ports, allocates new ones, releases dropped ones.
pub async fn reallocate(
    registry: &Registry,
    config: &ServerConfig,
    new: &mut Value,
    old: &Value,
) -> Result<(), ApiError> {
    if wants_node_ports(new) {
        // Ports the client did not set keep the node port they had.
        let old_ports: Vec<Value> = old.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
        if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for port in ports.iter_mut().filter(|p| p.get("nodePort").and_then(Value::as_u64).unwrap_or(0) == 0) {
                let same = old_ports
                    .iter()
                    .find(|o| o.get("port") == port.get("port") && o.get("protocol") == port.get("protocol"));
                if let Some(node_port) = same.and_then(|o| o.get("nodePort")) {
                    port["nodePort"] = node_port.clone();
                }
            }
        }
        let who = owner(new);
        allocate_node_ports(registry, config, new, &who).await?;
    } else if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut() {
            if let Some(map) = port.as_object_mut() {
                map.remove("nodePort");
            }
        }
    }
    release_node_ports(registry, old, Some(new)).await
}
