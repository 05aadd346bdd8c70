//! The node agent (kubelet): registers the node and keeps its lease, runs
//! the pods bound to it with libcontainer, streams their logs, and adopts
//! running containers again after a restart.

pub mod args;
pub mod backoff;
pub mod downward;
pub mod env;
pub mod error;
pub mod exec;
pub mod host;
pub mod image;
pub mod kubelet_server;
pub mod logs;
pub mod node;
pub mod pod;
pub mod probe;
pub mod pull_secrets;
pub mod reaper;
pub mod remote;
pub mod runtime;
pub mod runtime_start;
pub mod sandbox;
pub mod servers;
pub mod spec;
pub mod static_pods;
pub mod stats;
pub mod status;
pub mod volumes;

pub use error::AgentError;

use crate::server::client::Client;
use serde_json::Value;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the agent needs to know; `AgentConfig::new` holds the defaults.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    /// The node's InternalIP (also hostIP of its pods).
    pub node_ip: IpAddr,
    /// `<server data-dir>/agent`: images, pods, logs, runtime state.
    pub data_dir: PathBuf,
    /// Registries pulled over plain HTTP (`host:port`).
    pub registries: Vec<String>,
    /// `--private-registry`: mirrors, rewrites, auth and TLS per host.
    pub private_registry: image::Registries,
    /// Image garbage collection thresholds (percent of the image filesystem).
    pub image_gc: image::gc::Thresholds,
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
    /// Whether the agent sets up pod networking (`--flannel-backend none` turns it off).
    pub pod_network: bool,
    /// The host interface the pod overlay uses (default: the one of `node_ip`).
    pub flannel_iface: Option<String>,
    /// Extra labels of the Node (`--node-label`).
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// Taints the Node is registered with (`--node-taint`), as Taint objects.
    pub node_taints: Vec<Value>,
    /// Whether the node runs the control plane (labelled node-role.kubernetes.io/control-plane).
    pub control_plane: bool,
    /// The cluster's pod network (`--cluster-cidr`); each node gets a subnet of it.
    /// Run the built-in service proxy (src/netfilter/); off with `--disable-kube-proxy`.
    pub service_proxy: bool,
    /// Service network (`--service-cidr`) and pod network (`--cluster-cidr`).
    pub service_cidr: String,
    pub cluster_cidr: String,
}

impl AgentConfig {
    pub fn new(node_name: &str, data_dir: PathBuf, node_ip: IpAddr) -> AgentConfig {
        AgentConfig {
            node_name: node_name.to_lowercase(),
            node_ip,
            data_dir,
            registries: vec!["127.0.0.1:5000".into()],
            private_registry: Default::default(),
            image_gc: Default::default(),
            cluster_dns: IpAddr::from([10, 43, 0, 10]),
            cluster_domain: "cluster.local".into(),
            pod_network: true,
            flannel_iface: None,
            node_labels: Default::default(),
            node_taints: Vec::new(),
            control_plane: false,
            service_proxy: true,
            service_cidr: "10.43.0.0/16".into(),
            cluster_cidr: "10.42.0.0/16".into(),
        }
    }

    /// The local agent of `kube server`: node named after the host, data under
    /// `<data-dir>/agent`, DNS settings from the server's flags.
    pub fn for_server(server: &crate::server::ServerConfig) -> AgentConfig {
        let mut config = AgentConfig::new(&server.node_name, server.data_dir.join("agent"), server.advertise_address);
        config.cluster_dns = IpAddr::V4(server.cluster_dns);
        config.cluster_domain = server.cluster_domain.clone();
        config.private_registry = server.private_registry.clone();
        config.control_plane = true;
        config.cluster_cidr = server.cluster_cidr.to_string();
        config.pod_network = server.pod_network;
        config.flannel_iface = server.flannel_iface.clone();
        config.service_proxy = server.run_service_proxy;
        config.service_cidr = server.service_cidr.to_string();
        config
    }

    /// The log reader the API server's `pods/log` uses for this agent's pods.
    pub fn logs(&self) -> logs::Logs {
        logs::Logs::new(self.data_dir.join("logs"))
    }

    /// Where the API server's `pods/exec` runs commands for this agent's pods.
    pub fn streams(&self) -> Arc<dyn exec::ContainerStreams> {
        exec::LocalStreams::shared(self.data_dir.clone())
    }
}

/// The in-process identity of the local agent.
pub fn node_user(node_name: &str) -> crate::server::authn::UserInfo {
    crate::server::authn::UserInfo::new(format!("system:node:{node_name}"), ["system:nodes".to_string()])
}

/// What every part of the agent shares.
pub struct AgentCtx {
    pub client: Client,
    pub config: AgentConfig,
    pub host: Arc<dyn host::Host>,
    pub runtime: Arc<dyn runtime::Runtime>,
    pub images: image::ImageStore,
    pub reaper: Arc<reaper::Reaper>,
    /// The pod network; `None` with `--flannel-backend none`.
    pub network: Option<Arc<dyn crate::cni::PodNetwork>>,
}

/// Starts the local agent of `kube server` on the in-process router.
pub fn spawn_local(
    router: axum::Router,
    server: &crate::server::ServerConfig,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let config = AgentConfig::for_server(server);
    let client = Client::new(router, node_user(&config.node_name));
    tokio::spawn(async move {
        if let Err(err) = run_local(client, config, shutdown).await {
            tracing::error!(error = %err, "the local agent stopped");
        }
    })
}

/// Runs an agent until `shutdown`: the local one of `kube server` (in-process
/// client) or `kube agent` (remote client). Containers keep running when it stops.
pub async fn run_local(client: Client, config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    for dir in ["images", "pods", "netns", "logs", "run"] {
        let path = config.data_dir.join(dir);
        std::fs::create_dir_all(&path).map_err(AgentError::io("create agent folder", &path))?;
    }
    let ctx = Arc::new(AgentCtx {
        client: client.clone(),
        host: Arc::new(host::RealHost),
        runtime: Arc::new(runtime::Libcontainer::new(config.data_dir.join("run"))?),
        images: image::ImageStore::with_registries(
            config.data_dir.join("images"),
            &config.registries,
            config.private_registry.clone(),
        ),
        reaper: reaper::Reaper::start(),
        network: config.pod_network.then(|| pod_network(&config)),
        config: config.clone(),
    });
    // Static pods start before (and without) the API server.
    let workers =
        Arc::new(std::sync::Mutex::new(Workers { ctx: ctx.clone(), running: HashMap::new(), statics: HashMap::new() }));
    let network_ready = Arc::new(std::sync::atomic::AtomicBool::new(!config.pod_network));
    let mirrors_changed = Arc::new(tokio::sync::Notify::new());
    let manifests = config.data_dir.join("pod-manifests");
    std::fs::create_dir_all(&manifests).map_err(AgentError::io("create agent folder", &manifests))?;
    tokio::spawn(static_pods::run(
        ctx.clone(),
        workers.clone(),
        network_ready.clone(),
        mirrors_changed.clone(),
        shutdown.clone(),
    ));
    let (registered_tx, mut registered) = watch::channel(false);
    let heartbeat = tokio::spawn(node::run(client.clone(), config.clone(), shutdown.clone(), registered_tx));
    tracing::info!(node = %config.node_name, "agent waiting for node registration");
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        _ = registered.wait_for(|r| *r) => {}
    }
    let overlay = match &ctx.network {
        Some(network) => match crate::cni::agent::start(&client, &config.node_name, network.clone(), &shutdown).await {
            Some(task) => Some(task),
            None => return Ok(()),
        },
        None => None,
    };
    network_ready.store(true, std::sync::atomic::Ordering::Relaxed);
    mirrors_changed.notify_one();
    sandbox::release_unknown_addresses(&ctx).await;
    // Airgap archives are there before the first pod starts; new ones are picked up later.
    import_images(&ctx).await;
    tokio::spawn(images_loop(ctx.clone(), shutdown.clone()));
    if config.pod_network {
        let (client, node, domain) = (ctx.client.clone(), config.node_name.clone(), config.cluster_domain.clone());
        tokio::spawn(crate::dns::run_on_node(client, node, domain, shutdown.clone()));
    }
    tracing::info!(node = %config.node_name, dir = %config.data_dir.display(), "agent running pods");
    if config.service_proxy {
        tokio::spawn(crate::netfilter::run(
            ctx.client.clone(),
            crate::netfilter::ProxyConfig::for_agent(&config),
            shutdown.clone(),
        ));
    }
    pods_loop(ctx, workers, mirrors_changed, shutdown).await;
    let _ = heartbeat.await;
    if let Some(overlay) = overlay {
        let _ = overlay.await;
    }
    Ok(())
}

/// Imports new or changed archives of `<data-dir>/agent/images/`.
async fn import_images(ctx: &Arc<AgentCtx>) {
    let task = ctx.clone();
    match tokio::task::spawn_blocking(move || task.images.import_folder()).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "cannot import image archives"),
        Err(err) => tracing::warn!(error = %err, "image import task failed"),
    }
}

/// Every 10 s: picks up new image archives, and collects unused images
/// when the disk is above the high threshold.
async fn images_loop(ctx: Arc<AgentCtx>, shutdown: CancellationToken) {
    let pods = ctx.config.data_dir.join("pods");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        import_images(&ctx).await;
        if let Err(err) = ctx.images.garbage_collect(&pods, ctx.config.image_gc).await {
            tracing::warn!(error = %err, "image garbage collection failed");
        }
    }
}

/// The real pod network of this node (netlink in the agent's namespace).
fn pod_network(config: &AgentConfig) -> Arc<dyn crate::cni::PodNetwork> {
    Arc::new(crate::cni::Netlink::new(crate::cni::NodeConfig {
        node_ip: config.node_ip,
        iface: config.flannel_iface.clone(),
        ipam_dir: config.data_dir.join("ipam"),
        netns: None,
    }))
}

pub struct Workers {
    ctx: Arc<AgentCtx>,
    running: HashMap<String, (watch::Sender<Option<Value>>, tokio::task::JoinHandle<()>)>,
    /// The static pods (by UID) from the manifest folder.
    statics: HashMap<String, Value>,
}

impl Workers {
    /// Starts the static pods that appeared and stops the ones whose
    /// manifest went away (gracefully); returns the removed ones.
    fn sync_static(&mut self, desired: HashMap<String, Value>) -> Vec<Value> {
        let removed: Vec<Value> =
            self.statics.iter().filter(|(uid, _)| !desired.contains_key(*uid)).map(|(_, p)| p.clone()).collect();
        for mut pod in removed.clone() {
            let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            tracing::info!(pod = %name, "static pod manifest removed; stopping it");
            let uid = uid_of(&pod);
            pod["metadata"]["deletionTimestamp"] = serde_json::json!(node::now());
            self.update(&uid, Some(pod));
            self.statics.remove(&uid);
        }
        for (uid, pod) in desired {
            if !self.statics.contains_key(&uid) {
                let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
                tracing::info!(pod = %name, "starting a static pod");
                self.update(&uid, Some(pod.clone()));
                self.statics.insert(uid, pod);
            }
        }
        removed
    }

    /// Hands a static pod to its worker again (its mirror pod was recreated).
    fn nudge(&self, uid: &str, pod: Value) {
        if let Some((tx, _)) = self.running.get(uid) {
            let _ = tx.send(Some(pod));
        }
    }

    /// Hands the pod (or its absence) to its worker, starting one if needed.
    fn update(&mut self, uid: &str, pod: Option<Value>) {
        self.running.retain(|_, (_, task)| !task.is_finished());
        if let Some((tx, _)) = self.running.get(uid) {
            let _ = tx.send(pod);
            return;
        }
        let terminal = pod.as_ref().is_some_and(|p| {
            let phase = p.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
            (phase == "Succeeded" || phase == "Failed")
                && p.pointer("/metadata/deletionTimestamp").is_none()
                && !self.ctx.config.data_dir.join("pods").join(uid).exists()
        });
        if terminal {
            return;
        }
        let (tx, rx) = watch::channel(pod);
        let task = tokio::spawn(pod::run(self.ctx.clone(), uid.to_string(), rx));
        self.running.insert(uid.to_string(), (tx, task));
    }
}

fn uid_of(pod: &Value) -> String {
    pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// List + watch the pods bound to this node and feed the workers.
async fn pods_loop(
    ctx: Arc<AgentCtx>,
    workers: Arc<std::sync::Mutex<Workers>>,
    mirrors_changed: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let selector = format!("fieldSelector=spec.nodeName%3D{}", ctx.config.node_name);
    // Mirror pods are the static pods' reflection, not pods to run.
    let update = |uid: &str, pod: Option<Value>| {
        if let Some(p) = &pod
            && static_pods::is_mirror(p)
        {
            mirrors_changed.notify_one();
            return;
        }
        if let Ok(mut w) = workers.lock() {
            w.update(uid, pod);
        }
    };
    let mut first = true;
    // Doubles from 1 s to 10 s while the server does not answer; reset by a good list.
    let mut retry = Duration::from_secs(1);
    loop {
        let list = match ctx.client.get(&format!("/api/v1/pods?{selector}")).await {
            Ok(list) => list,
            Err(err) => {
                tracing::warn!(error = %err.message, retry_in = ?retry, "cannot list this node's pods; retrying");
                let wait = retry;
                retry = (retry * 2).min(Duration::from_secs(10));
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(wait) => continue }
            }
        };
        retry = Duration::from_secs(1);
        let items = list.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut seen: Vec<String> = Vec::new();
        for pod in items {
            let uid = uid_of(&pod);
            seen.push(uid.clone());
            update(&uid, Some(pod));
        }
        let statics: Vec<String> = workers.lock().map(|w| w.statics.keys().cloned().collect()).unwrap_or_default();
        seen.extend(statics);
        // Pods that went away while we were not watching (or before a restart).
        let mut gone: Vec<String> = workers
            .lock()
            .map(|w| w.running.keys().filter(|u| !seen.contains(u)).cloned().collect())
            .unwrap_or_default();
        if first {
            for entry in std::fs::read_dir(ctx.config.data_dir.join("pods")).into_iter().flatten().flatten() {
                let uid = entry.file_name().to_string_lossy().into_owned();
                if !seen.contains(&uid) && !gone.contains(&uid) {
                    gone.push(uid);
                }
            }
            first = false;
        }
        for uid in gone {
            update(&uid, None);
        }
        let rv = list.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default().to_string();
        let uri = format!(
            "/api/v1/pods?{selector}&watch=true&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=300"
        );
        let mut watch = match ctx.client.watch(&uri).await {
            Ok(w) => Box::pin(w),
            Err(err) => {
                tracing::warn!(error = %err.message, "cannot watch this node's pods; relisting");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => continue }
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                event = futures::StreamExt::next(&mut watch) => match event {
                    Some((kind, pod)) if kind == "ADDED" || kind == "MODIFIED" => update(&uid_of(&pod), Some(pod)),
                    Some((kind, pod)) if kind == "DELETED" && static_pods::is_mirror(&pod) => mirrors_changed.notify_one(),
                    Some((kind, pod)) if kind == "DELETED" => update(&uid_of(&pod), None),
                    Some((kind, _)) if kind == "BOOKMARK" => {}
                    Some(_) | None => break,
                },
            }
        }
    }
}
