//! Node registration and heartbeats: creates or updates this node's Node
//! object, renews its Lease in `kube-node-lease` every 10 s and posts node
//! status every 20 s (and whenever the lease shows the object was replaced).

use super::AgentConfig;
use super::error::{AgentError, Result};
use crate::server::client::Client;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const KUBELET_VERSION: &str = "v1.34.5+kube";
const LEASE_RENEW: Duration = Duration::from_secs(10);
const STATUS_EVERY: Duration = Duration::from_secs(20);

/// Facts about the machine the node reports.
#[derive(Clone, Debug)]
pub struct MachineInfo {
    pub cpus: usize,
    pub memory_kib: u64,
    pub kernel: String,
    pub os_image: String,
}

impl MachineInfo {
    pub fn probe() -> MachineInfo {
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0);
        let os_image = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string())
            })
            .unwrap_or_else(|| "Linux".into());
        MachineInfo {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_kib,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            os_image,
        }
    }
}

pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn micro_now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

/// The Node's status as this agent reports it.
pub fn node_status(config: &AgentConfig, machine: &MachineInfo, now: &str, since: &str) -> Value {
    let capacity = json!({
        "cpu": machine.cpus.to_string(),
        "memory": format!("{}Ki", machine.memory_kib),
        "pods": "110",
        "ephemeral-storage": "0",
    });
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": since})
    };
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": config.node_ip.to_string()},
            {"type": "Hostname", "address": config.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default(),
            "kernelVersion": machine.kernel,
            "osImage": machine.os_image,
            "containerRuntimeVersion": "libcontainer://0.7.0",
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    })
}

/// The Node object to create.
pub fn node_object(config: &AgentConfig, machine: &MachineInfo, now: &str) -> Value {
    let mut node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": config.node_name,
            "labels": {
                "kubernetes.io/hostname": config.node_name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
            },
        },
        "spec": {},
        "status": node_status(config, machine, now, now),
    });
    if config.control_plane {
        node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = json!("true");
    }
    for (key, value) in &config.node_labels {
        node["metadata"]["labels"][key] = json!(value);
    }
    if !config.node_taints.is_empty() {
        node["spec"]["taints"] = json!(config.node_taints);
    }
    node
}

fn lease_object(node: &str, node_uid: &str, renew: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": node,
            "namespace": "kube-node-lease",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}],
        },
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": renew},
    })
}

/// Registers the node (create, or merge labels/status into an existing one); returns its uid.
pub async fn register(client: &Client, config: &AgentConfig, machine: &MachineInfo) -> Result<String> {
    let now = now();
    let path = format!("/api/v1/nodes/{}", config.node_name);
    let node = match client.create("/api/v1/nodes", node_object(config, machine, &now)).await {
        Ok(node) => node,
        Err(err) if err.code == 409 => {
            let wanted = node_object(config, machine, &now);
            client
                .merge_patch(&path, json!({"metadata": {"labels": wanted["metadata"]["labels"]}}))
                .await
                .map_err(AgentError::api("label the node"))?
        }
        Err(err) => return Err(AgentError::api("register the node")(err)),
    };
    post_status(client, config, machine, &now).await?;
    tracing::info!(node = %config.node_name, "node registered");
    Ok(node.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string())
}

async fn post_status(client: &Client, config: &AgentConfig, machine: &MachineInfo, since: &str) -> Result<()> {
    let path = format!("/api/v1/nodes/{}/status", config.node_name);
    client
        .merge_patch(&path, json!({"status": node_status(config, machine, &now(), since)}))
        .await
        .map_err(AgentError::api("post node status"))?;
    Ok(())
}

async fn renew_lease(client: &Client, node: &str, node_uid: &str) -> Result<()> {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}");
    let renew = micro_now();
    match client.merge_patch(&path, json!({"spec": {"holderIdentity": node, "renewTime": renew}})).await {
        Ok(_) => Ok(()),
        Err(err) if err.code == 404 => client
            .create(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                lease_object(node, node_uid, &renew),
            )
            .await
            .map(|_| ())
            .map_err(AgentError::api("create the node lease")),
        Err(err) => Err(AgentError::api("renew the node lease")(err)),
    }
}

/// Registers the node, then keeps the lease and status fresh until shutdown.
pub async fn run(
    client: Client,
    config: AgentConfig,
    shutdown: CancellationToken,
    registered: tokio::sync::watch::Sender<bool>,
) {
    let machine = MachineInfo::probe();
    let since = now();
    let mut uid = loop {
        match register(&client, &config, &machine).await {
            Ok(uid) => break uid,
            Err(err) => tracing::warn!(node = %config.node_name, error = %err, "node registration failed; retrying"),
        }
        tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(2)) => {} }
    };
    let _ = registered.send(true);
    let mut lease = tokio::time::interval(LEASE_RENEW);
    let mut status = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = lease.tick() => {
                if let Err(err) = renew_lease(&client, &config.node_name, &uid).await {
                    tracing::warn!(node = %config.node_name, error = %err, "lease renewal failed");
                }
            }
            _ = status.tick() => {
                if let Err(err) = post_status(&client, &config, &machine, &since).await {
                    tracing::warn!(node = %config.node_name, error = %err, "node status update failed");
                    if err.not_found() && let Ok(new_uid) = register(&client, &config, &machine).await {
                        uid = new_uid;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_reports_ready_with_capacity() {
        let mut config = AgentConfig::new("nas", "/tmp/x".into(), "10.0.0.5".parse().expect("ip"));
        config.control_plane = true;
        let machine = MachineInfo { cpus: 2, memory_kib: 1000, kernel: "6.18".into(), os_image: "Debian".into() };
        let node = node_object(&config, &machine, "t");
        assert_eq!(node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"], "true");
        assert_eq!(node["status"]["capacity"]["pods"], "110");
        assert_eq!(node["status"]["capacity"]["memory"], "1000Ki");
        let ready = node["status"]["conditions"]
            .as_array()
            .expect("c")
            .iter()
            .find(|c| c["type"] == "Ready")
            .cloned()
            .expect("Ready");
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["reason"], "KubeletReady");
        assert_eq!(node["status"]["addresses"][0], json!({"type": "InternalIP", "address": "10.0.0.5"}));
        assert_eq!(node["status"]["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
    }
}
