//! The Endpoints and EndpointSlice controllers: for every Service with a
//! selector, the matching pods' IPs (ready ones as addresses, others as
//! notReadyAddresses / ready=false) with the service's ports resolved
//! against the pods' container ports.

use super::Context;
use super::objects::{self, PODS, deleting, name, pod_ready, str_at, uid};
use super::queue::{self, Action, Key, Secondary, Wake};
use crate::server::error::ApiError;
use crate::server::selectors::LabelSelector;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SERVICES: (&str, &str, &str) = ("", "v1", "services");
const ENDPOINTS: (&str, &str, &str) = ("", "v1", "endpoints");
const SLICES: (&str, &str, &str) = ("discovery.k8s.io", "v1", "endpointslices");
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const SLICE_MANAGER: &str = "endpointslice-controller.k8s.io";
const SERVICE_NAME: &str = "kubernetes.io/service-name";

fn wake_namespace(pod: &Value) -> Vec<Wake> {
    vec![Wake::Namespace(str_at(pod, "/metadata/namespace").to_string())]
}

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let pods = Secondary { gvr: PODS, wakes: wake_namespace, deletions_only: false };
    queue::run_with(ctx, shutdown, "endpoints", SERVICES, &[pods], Duration::from_secs(30), reconcile).await;
}

pub async fn run_slices(ctx: Context, shutdown: CancellationToken) {
    let pods = Secondary { gvr: PODS, wakes: wake_namespace, deletions_only: false };
    queue::run_with(ctx, shutdown, "endpointslice", SERVICES, &[pods], Duration::from_secs(30), reconcile_slices).await;
}

/// A service port resolved for one pod: (name, port number, protocol).
type Port = (String, i64, String);

/// The service's ports as the pod serves them; `None` when a named
/// targetPort is not among the pod's container ports.
pub fn resolve_ports(service: &Value, pod: &Value) -> Option<Vec<Port>> {
    let ports = service.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut resolved = Vec::new();
    for port in &ports {
        let protocol = port.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string();
        let port_name = port.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let number = match port.get("targetPort") {
            Some(Value::Number(n)) => n.as_i64()?,
            Some(Value::String(target)) => match target.parse::<i64>() {
                Ok(n) => n,
                Err(_) => pod
                    .pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .flat_map(|c| c.get("ports").and_then(Value::as_array).cloned().unwrap_or_default())
                    .find(|p| {
                        p.get("name").and_then(Value::as_str) == Some(target.as_str())
                            && p.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == protocol
                    })
                    .and_then(|p| p.get("containerPort").and_then(Value::as_i64))?,
            },
            _ => port.get("port").and_then(Value::as_i64)?,
        };
        resolved.push((port_name, number, protocol));
    }
    Some(resolved)
}

/// The pods a service selects, with their resolved ports and readiness.
fn selected(service: &Value, pods: &[Value]) -> Option<Vec<(Value, Vec<Port>, bool)>> {
    let selector = service.pointer("/spec/selector").and_then(Value::as_object).filter(|s| !s.is_empty())?;
    let text: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect();
    let selector = LabelSelector::parse(&text.join(",")).ok()?;
    let publish = service.pointer("/spec/publishNotReadyAddresses").and_then(Value::as_bool) == Some(true);
    let mut chosen: Vec<(Value, Vec<Port>, bool)> = pods
        .iter()
        .filter(|p| selector.matches(p) && !deleting(p) && !str_at(p, "/status/podIP").is_empty())
        .filter(|p| !matches!(objects::phase(p), "Succeeded" | "Failed"))
        .filter_map(|p| resolve_ports(service, p).map(|ports| (p.clone(), ports, publish || pod_ready(p))))
        .collect();
    chosen.sort_by(|a, b| str_at(&a.0, "/status/podIP").cmp(str_at(&b.0, "/status/podIP")));
    Some(chosen)
}

fn target_ref(pod: &Value) -> Value {
    json!({"kind": "Pod", "namespace": str_at(pod, "/metadata/namespace"), "name": name(pod), "uid": uid(pod)})
}

/// The Endpoints subsets: pods grouped by their resolved port lists.
pub fn subsets(service: &Value, pods: &[Value]) -> Option<Vec<Value>> {
    let chosen = selected(service, pods)?;
    let mut groups: BTreeMap<Vec<Port>, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    for (pod, ports, ready) in chosen {
        let mut address = json!({"ip": str_at(&pod, "/status/podIP"), "targetRef": target_ref(&pod)});
        if let Some(node) = pod.pointer("/spec/nodeName").filter(|n| n.as_str().is_some_and(|n| !n.is_empty())) {
            address["nodeName"] = node.clone();
        }
        let group = groups.entry(ports).or_default();
        if ready { group.0.push(address) } else { group.1.push(address) }
    }
    Some(
        groups
            .into_iter()
            .map(|(ports, (ready, not_ready))| {
                let ports: Vec<Value> = ports
                    .into_iter()
                    .map(|(n, port, protocol)| {
                        let mut p = json!({"port": port, "protocol": protocol});
                        if !n.is_empty() {
                            p["name"] = json!(n);
                        }
                        p
                    })
                    .collect();
                let mut subset = json!({"ports": ports});
                if !ready.is_empty() {
                    subset["addresses"] = json!(ready);
                }
                if !not_ready.is_empty() {
                    subset["notReadyAddresses"] = json!(not_ready);
                }
                subset
            })
            .collect(),
    )
}

async fn reconcile(ctx: Context, (ns, svc_name): Key) -> Result<Action, ApiError> {
    let existing = objects::get(&ctx, ENDPOINTS, &ns, &svc_name).await?;
    let Some(service) = objects::get(&ctx, SERVICES, &ns, &svc_name).await? else {
        if existing.is_some() {
            let path = objects::path(&ctx, ENDPOINTS, Some(&ns), Some(&svc_name), None)?;
            objects::ignore_gone(ctx.client.delete(&path, None).await)?;
        }
        return Ok(Action::Done);
    };
    let pods = objects::list(&ctx, PODS, Some(&ns)).await?;
    let Some(subsets) = subsets(&service, &pods) else { return Ok(Action::Done) };
    let mut desired = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": svc_name, "namespace": ns,
            "labels": service.pointer("/metadata/labels").cloned().unwrap_or(json!({}))}});
    if !subsets.is_empty() {
        desired["subsets"] = json!(subsets);
    }
    match existing {
        None => {
            let path = objects::path(&ctx, ENDPOINTS, Some(&ns), None, None)?;
            match ctx.client.create(&path, desired).await {
                Ok(_) => tracing::info!(service = %svc_name, namespace = %ns, "created endpoints"),
                Err(err) if err.code == 409 => return Ok(Action::RequeueAfter(Duration::from_millis(100))),
                Err(err) => return Err(err),
            }
        }
        Some(current) => {
            if current.get("subsets").cloned().unwrap_or(json!([]))
                == desired.get("subsets").cloned().unwrap_or(json!([]))
                && current.pointer("/metadata/labels") == desired.pointer("/metadata/labels")
            {
                return Ok(Action::Done);
            }
            desired["metadata"]["resourceVersion"] = json!(str_at(&current, "/metadata/resourceVersion"));
            if let Some(annotations) = current.pointer("/metadata/annotations") {
                desired["metadata"]["annotations"] = annotations.clone();
            }
            let path = objects::path(&ctx, ENDPOINTS, Some(&ns), Some(&svc_name), None)?;
            objects::ignore_gone(ctx.client.update(&path, desired).await)?;
        }
    }
    Ok(Action::Done)
}

/// The EndpointSlices of a service: one per distinct port list.
pub fn slices(service: &Value, pods: &[Value]) -> Option<Vec<Value>> {
    let chosen = selected(service, pods)?;
    let mut groups: BTreeMap<Vec<Port>, Vec<Value>> = BTreeMap::new();
    for (pod, ports, ready) in chosen {
        let mut endpoint = json!({"addresses": [str_at(&pod, "/status/podIP")],
            "conditions": {"ready": ready, "serving": ready, "terminating": false},
            "targetRef": target_ref(&pod)});
        if let Some(node) = pod.pointer("/spec/nodeName").filter(|n| n.as_str().is_some_and(|n| !n.is_empty())) {
            endpoint["nodeName"] = node.clone();
        }
        groups.entry(ports).or_default().push(endpoint);
    }
    if groups.is_empty() {
        // An empty slice with the service's ports, as upstream keeps one.
        let ports = resolve_ports(service, &json!({})).unwrap_or_default();
        groups.insert(ports, Vec::new());
    }
    Some(
        groups
            .into_iter()
            .map(|(ports, endpoints)| {
                let ports: Vec<Value> = ports
                    .into_iter()
                    .map(|(n, port, protocol)| json!({"name": n, "port": port, "protocol": protocol}))
                    .collect();
                json!({"addressType": "IPv4", "endpoints": endpoints, "ports": ports})
            })
            .collect(),
    )
}

async fn reconcile_slices(ctx: Context, (ns, svc_name): Key) -> Result<Action, ApiError> {
    let all = objects::list(&ctx, SLICES, Some(&ns)).await?;
    let mut existing: Vec<Value> = all
        .into_iter()
        .filter(|s| {
            let label = |k: &str| str_at(s, &format!("/metadata/labels/{}", k.replace('/', "~1"))).to_string();
            label(SERVICE_NAME) == svc_name && label(MANAGED_BY) == SLICE_MANAGER
        })
        .collect();
    existing.sort_by(|a, b| name(a).cmp(name(b)));
    let service = objects::get(&ctx, SERVICES, &ns, &svc_name).await?;
    let desired = match &service {
        Some(service) => slices(service, &objects::list(&ctx, PODS, Some(&ns)).await?).unwrap_or_default(),
        None => Vec::new(),
    };
    let mut existing = existing.into_iter();
    for slice in desired {
        let Some(service) = &service else { break };
        let mut labels = service.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
        labels[SERVICE_NAME] = json!(svc_name);
        labels[MANAGED_BY] = json!(SLICE_MANAGER);
        let mut object = slice.clone();
        object["apiVersion"] = json!("discovery.k8s.io/v1");
        object["kind"] = json!("EndpointSlice");
        object["metadata"] = json!({"namespace": ns, "labels": labels,
            "ownerReferences": [objects::controller_ref(service, "v1", "Service")]});
        match existing.next() {
            Some(current) => {
                let same = ["addressType", "endpoints", "ports"].iter().all(|k| current.get(*k) == object.get(*k))
                    && current.pointer("/metadata/labels") == object.pointer("/metadata/labels");
                if same {
                    continue;
                }
                object["metadata"]["name"] = json!(name(&current));
                object["metadata"]["resourceVersion"] = json!(str_at(&current, "/metadata/resourceVersion"));
                let path = objects::path(&ctx, SLICES, Some(&ns), Some(name(&current)), None)?;
                objects::ignore_gone(ctx.client.update(&path, object).await)?;
            }
            None => {
                object["metadata"]["generateName"] = json!(format!("{svc_name}-"));
                let path = objects::path(&ctx, SLICES, Some(&ns), None, None)?;
                ctx.client.create(&path, object).await?;
            }
        }
    }
    for stale in existing {
        let path = objects::path(&ctx, SLICES, Some(&ns), Some(name(&stale)), None)?;
        objects::ignore_gone(ctx.client.delete(&path, None).await)?;
    }
    Ok(Action::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "web", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn service() -> Value {
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}})
    }

    #[test]
    fn ready_and_not_ready_pods_with_named_ports() {
        let pods = [pod("a", "10.42.0.5", true), pod("b", "10.42.0.6", false), pod("c", "", true)];
        let subsets = subsets(&service(), &pods).unwrap_or_default();
        assert_eq!(subsets.len(), 1);
        assert_eq!(subsets[0]["ports"], json!([{"port": 8080, "protocol": "TCP", "name": "http"}]));
        assert_eq!(subsets[0]["addresses"][0]["ip"], "10.42.0.5");
        assert_eq!(subsets[0]["addresses"][0]["targetRef"]["name"], "a");
        assert_eq!(subsets[0]["notReadyAddresses"][0]["ip"], "10.42.0.6");
    }

    #[test]
    fn services_without_selectors_are_left_alone() {
        let mut svc = service();
        svc["spec"].as_object_mut().map(|s| s.remove("selector"));
        assert!(subsets(&svc, &[pod("a", "10.42.0.5", true)]).is_none());
    }

    #[test]
    fn slices_list_endpoints_with_conditions() {
        let slices =
            slices(&service(), &[pod("a", "10.42.0.5", true), pod("b", "10.42.0.6", false)]).unwrap_or_default();
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0]["endpoints"][1]["conditions"]["ready"], false);
        assert_eq!(slices[0]["ports"][0]["port"], 8080);
    }
}
