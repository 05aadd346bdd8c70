//! The pod sandbox: the pod's folders, its network namespace and its place
//! on the pod network (an address through [`crate::cni`]), /etc/hosts,
//! /etc/resolv.conf, its volumes ([`super::volumes`]) and the containers'
//! bind mounts.

use super::AgentCtx;
use super::error::{AgentError, Result};
use super::spec::BindMount;
use crate::cni::{PodNetwork, PodRequest};
use serde_json::Value;
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where one pod's files live.
#[derive(Clone, Debug)]
pub struct PodPaths {
    pub root: PathBuf,
    pub netns: PathBuf,
    pub logs: PathBuf,
}

impl PodPaths {
    pub fn new(ctx: &AgentCtx, namespace: &str, name: &str, uid: &str) -> PodPaths {
        PodPaths {
            root: ctx.config.data_dir.join("pods").join(uid),
            netns: ctx.config.data_dir.join("netns").join(uid),
            logs: super::logs::pod_dir(&ctx.config.data_dir.join("logs"), namespace, name, uid),
        }
    }
    pub fn volume(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }
    pub fn records(&self) -> PathBuf {
        self.root.join("containers")
    }
}

pub fn host_network(pod: &Value) -> bool {
    pod.pointer("/spec/hostNetwork").and_then(Value::as_bool).unwrap_or(false)
}

/// resolv.conf for a ClusterFirst pod.
pub fn resolv_conf(namespace: &str, dns: &str, domain: &str) -> String {
    format!("search {namespace}.svc.{domain} svc.{domain} {domain}\nnameserver {dns}\noptions ndots:5\n")
}

pub fn hosts_file(hostname: &str, ip: Option<&str>) -> String {
    let mut hosts = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    if let Some(ip) = ip {
        hosts.push_str(&format!("{ip}\t{hostname}\n"));
    }
    hosts
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(AgentError::io("create", parent))?;
    }
    std::fs::write(path, data).map_err(AgentError::io("write", path))
}

/// Creates the sandbox (idempotent): folders, netns, hosts/resolv.conf and volumes.
pub async fn prepare(ctx: &AgentCtx, pod: &Value, paths: &PodPaths) -> Result<()> {
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    for dir in [&paths.root, &paths.logs, &paths.records()] {
        std::fs::create_dir_all(dir).map_err(AgentError::io("create pod folder", dir))?;
    }
    if let Some(parent) = paths.netns.parent() {
        std::fs::create_dir_all(parent).map_err(AgentError::io("create", parent))?;
    }
    let host_net = host_network(pod);
    if !host_net && !paths.netns.exists() {
        ctx.host.create_netns(&paths.netns)?;
    }
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    let pod_ip = match (&ctx.network, host_net) {
        (Some(network), false) => Some(add_network(network.clone(), uid, namespace, name, &paths.netns).await?),
        _ => None,
    };
    let hostname = pod.pointer("/spec/hostname").and_then(Value::as_str).unwrap_or(name);
    if host_net {
        let host_resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
        write(&paths.root.join("resolv.conf"), &host_resolv)?;
        write(&paths.root.join("hosts"), &std::fs::read("/etc/hosts").unwrap_or_default())?;
    } else {
        let resolv = resolv_conf(namespace, &ctx.config.cluster_dns.to_string(), &ctx.config.cluster_domain);
        write(&paths.root.join("resolv.conf"), resolv.as_bytes())?;
        write(&paths.root.join("hosts"), hosts_file(hostname, pod_ip.map(|ip| ip.to_string()).as_deref()).as_bytes())?;
    }
    write(&paths.root.join("hostname"), format!("{hostname}\n").as_bytes())?;
    super::volumes::populate(ctx, pod, paths).await?;
    Ok(())
}

/// The bind mounts of one container: its volumeMounts plus hosts/resolv.conf/hostname.
pub fn container_mounts(pod: &Value, container: &Value, paths: &PodPaths) -> Vec<BindMount> {
    let mut mounts = Vec::new();
    let volumes = pod.pointer("/spec/volumes").and_then(Value::as_array).cloned().unwrap_or_default();
    for mount in container.get("volumeMounts").and_then(Value::as_array).into_iter().flatten() {
        let Some(vname) = mount.get("name").and_then(Value::as_str) else { continue };
        let Some(destination) = mount.get("mountPath").and_then(Value::as_str) else { continue };
        let volume = volumes.iter().find(|v| v.get("name").and_then(Value::as_str) == Some(vname));
        let mut source = match volume.and_then(|v| v.pointer("/hostPath/path")).and_then(Value::as_str) {
            Some(host) => PathBuf::from(host),
            None => paths.volume(vname),
        };
        if let Some(sub) =
            mount.get("subPath").and_then(Value::as_str).filter(|s| !s.is_empty() && !s.split('/').any(|p| p == ".."))
        {
            source = source.join(sub);
            if !source.exists() {
                let _ = std::fs::create_dir_all(&source);
            }
        }
        let readonly = mount.get("readOnly").and_then(Value::as_bool).unwrap_or(false)
            || volume.is_some_and(super::volumes::always_read_only);
        mounts.push(BindMount { destination: destination.to_string(), source, readonly });
    }
    for (file, destination) in
        [("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf"), ("hostname", "/etc/hostname")]
    {
        if !mounts.iter().any(|m| m.destination == destination) {
            mounts.push(BindMount { destination: destination.into(), source: paths.root.join(file), readonly: false });
        }
    }
    mounts
}

/// Connects the pod to the pod network (on a blocking thread: netlink work
/// runs on threads of its own); returns its address.
async fn add_network(
    network: Arc<dyn PodNetwork>,
    uid: &str,
    namespace: &str,
    name: &str,
    netns: &Path,
) -> Result<IpAddr> {
    let key = format!("{namespace}/{name}");
    let (uid, namespace, name, netns) = (uid.to_string(), namespace.to_string(), name.to_string(), netns.to_path_buf());
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        network.add_pod(&PodRequest { uid: &uid, namespace: &namespace, name: &name, netns: &netns })
    })
    .await;
    let ip = match result {
        Ok(Ok(ip)) => ip,
        Ok(Err(err)) => return Err(AgentError::Sandbox { pod: key, message: format!("pod network: {err}") }),
        Err(err) => return Err(AgentError::Sandbox { pod: key, message: format!("pod network task: {err}") }),
    };
    tracing::info!(ip = %ip, elapsed_us = started.elapsed().as_micros() as u64, "pod network added");
    Ok(ip)
}

/// The pod's IP for its status: the node IP for hostNetwork pods, else the
/// address the pod network gave it (none without a pod network).
pub fn pod_ip(ctx: &AgentCtx, pod: &Value, uid: &str) -> Option<String> {
    if host_network(pod) {
        return Some(ctx.config.node_ip.to_string());
    }
    ctx.network.as_ref()?.pod_ip(uid).map(|ip| ip.to_string())
}

/// Frees addresses no pod of this node holds any more (an agent crashed
/// between a pod's end and its cleanup). Pods still in the API or still on
/// disk keep theirs: their workers release them on teardown.
pub async fn release_unknown_addresses(ctx: &AgentCtx) {
    let Some(network) = ctx.network.clone() else { return };
    let uri = format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{}", ctx.config.node_name);
    let pods = match ctx.client.list(&uri).await {
        Ok(pods) => pods,
        Err(err) => {
            tracing::warn!(error = %err.message, "cannot list this node's pods; stale addresses stay allocated");
            return;
        }
    };
    let mut live: HashSet<String> =
        pods.iter().filter_map(|p| p.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string)).collect();
    for entry in std::fs::read_dir(ctx.config.data_dir.join("pods")).into_iter().flatten().flatten() {
        live.insert(entry.file_name().to_string_lossy().into_owned());
    }
    match tokio::task::spawn_blocking(move || network.release_unknown(&live)).await {
        Ok(Ok(freed)) if !freed.is_empty() => tracing::info!(?freed, "released addresses of pods that are gone"),
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "cannot release stale pod addresses"),
        Err(err) => tracing::warn!(error = %err, "address sweep task failed"),
    }
}

/// Removes what `prepare` made (logs are kept until the pod object is gone).
pub fn teardown(ctx: &AgentCtx, paths: &PodPaths, uid: &str, remove_logs: bool) -> Result<()> {
    if let Some(network) = &ctx.network
        && let Err(err) = network.delete_pod(uid)
    {
        tracing::warn!(error = %err, "cannot remove the pod's network");
    }
    ctx.host.remove_netns(&paths.netns)?;
    ctx.host.remove_cgroup(&format!("kubepods/pod{uid}"))?;
    if paths.root.exists() {
        std::fs::remove_dir_all(&paths.root).map_err(AgentError::io("remove pod folder", &paths.root))?;
    }
    if remove_logs && paths.logs.exists() {
        std::fs::remove_dir_all(&paths.logs).map_err(AgentError::io("remove pod logs", &paths.logs))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolv_conf_searches_the_namespace() {
        assert_eq!(
            resolv_conf("web", "10.43.0.10", "cluster.local"),
            "search web.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.43.0.10\noptions ndots:5\n"
        );
    }

    fn fake_ctx(dir: &Path, network: Arc<crate::cni::FakeNetwork>) -> AgentCtx {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let user = crate::agent::node_user("n1");
        let config = crate::agent::AgentConfig::new("n1", dir.to_path_buf(), "192.168.70.2".parse().expect("ip"));
        AgentCtx {
            client: crate::server::client::Client::new(axum::Router::new(), user),
            images: crate::agent::image::ImageStore::new(dir.join("images"), &config.registries),
            config,
            host: Arc::new(crate::agent::host::FakeHost::default()),
            runtime: Arc::new(crate::agent::runtime::FakeRuntime::default()),
            reaper: Arc::new(crate::agent::reaper::Reaper::default()),
            network: Some(network),
        }
    }

    #[tokio::test]
    async fn pods_get_an_address_hosts_entry_and_lose_it_on_teardown() {
        use crate::cni::{FakeNetwork, NetworkCall, PodNetwork, Subnet};
        let dir = tempfile::tempdir().expect("tempdir");
        let network = Arc::new(FakeNetwork::default());
        network.setup_node(Subnet::parse("10.42.0.0/24").expect("subnet")).expect("setup");
        let ctx = fake_ctx(dir.path(), network.clone());
        let pod = json!({"metadata": {"namespace": "default", "name": "web", "uid": "u1"}, "spec": {}});
        let paths = PodPaths::new(&ctx, "default", "web", "u1");
        prepare(&ctx, &pod, &paths).await.expect("prepare");
        assert_eq!(pod_ip(&ctx, &pod, "u1").as_deref(), Some("10.42.0.2"));
        let hosts = std::fs::read_to_string(paths.root.join("hosts")).expect("hosts");
        assert!(hosts.ends_with("10.42.0.2\tweb\n"), "{hosts}");
        // Preparing again (a retry) keeps the address.
        prepare(&ctx, &pod, &paths).await.expect("prepare again");
        assert_eq!(pod_ip(&ctx, &pod, "u1").as_deref(), Some("10.42.0.2"));
        teardown(&ctx, &paths, "u1", true).expect("teardown");
        assert_eq!(pod_ip(&ctx, &pod, "u1"), None);
        assert!(network.calls().contains(&NetworkCall::DeletePod("u1".into())));

        // hostNetwork pods report the node IP and never touch the pod network.
        let host_pod =
            json!({"metadata": {"namespace": "kube-system", "name": "h", "uid": "u2"}, "spec": {"hostNetwork": true}});
        let paths = PodPaths::new(&ctx, "kube-system", "h", "u2");
        prepare(&ctx, &host_pod, &paths).await.expect("prepare host pod");
        assert_eq!(pod_ip(&ctx, &host_pod, "u2").as_deref(), Some("192.168.70.2"));
        let adds = network.calls().iter().filter(|c| matches!(c, NetworkCall::AddPod { .. })).count();
        assert_eq!(adds, 2, "only the pod-network pod was added (twice)");
    }

    #[tokio::test]
    async fn a_failing_pod_network_fails_the_sandbox() {
        let dir = tempfile::tempdir().expect("tempdir");
        let network = Arc::new(crate::cni::FakeNetwork::failing());
        let ctx = fake_ctx(dir.path(), network);
        let pod = json!({"metadata": {"namespace": "default", "name": "web", "uid": "u1"}, "spec": {}});
        let paths = PodPaths::new(&ctx, "default", "web", "u1");
        let err = prepare(&ctx, &pod, &paths).await.expect_err("must fail");
        assert!(err.to_string().contains("pod network: injected failure"), "{err}");
    }

    #[test]
    fn mounts_volumes_and_etc_files() {
        let pod = json!({"spec": {"volumes": [{"name": "cfg", "configMap": {"name": "c"}}, {"name": "scratch", "emptyDir": {}}]}});
        let container = json!({"volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "scratch", "mountPath": "/scratch"}]});
        let paths = PodPaths { root: "/d/pods/u".into(), netns: "/d/netns/u".into(), logs: "/d/logs/x".into() };
        let mounts = container_mounts(&pod, &container, &paths);
        assert_eq!(
            mounts[0],
            BindMount { destination: "/etc/cfg".into(), source: "/d/pods/u/volumes/cfg".into(), readonly: true }
        );
        assert_eq!(
            mounts[1],
            BindMount { destination: "/scratch".into(), source: "/d/pods/u/volumes/scratch".into(), readonly: false }
        );
        assert!(mounts.iter().any(|m| m.destination == "/etc/resolv.conf"));
    }
}
