//! Static pods: manifests (YAML or JSON, one or more documents) in
//! `<data-dir>/agent/pod-manifests/` run without the API server, like the
//! kubelet's file source. Each pod is named `<name>-<node>`, its UID is a hash
//! of node, file and content (so an edited file is a new pod, a removed file
//! stops it), and a mirror pod with live status is kept in the API.

use super::AgentCtx;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The annotation every mirror pod carries (value: the static pod's hash).
pub const MIRROR: &str = "kubernetes.io/config.mirror";
const HASH: &str = "kubernetes.io/config.hash";
const SOURCE: &str = "kubernetes.io/config.source";

#[derive(Debug, thiserror::Error)]
pub enum StaticPodError {
    #[error("static pod manifest {file}: {message}")]
    Manifest { file: String, message: String },
}

/// Whether `pod` is a static pod of this agent or a mirror pod in the API.
pub fn is_mirror(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations/kubernetes.io~1config.mirror").is_some()
}

/// The UID the agent runs a pod under: a mirror pod's static pod (its
/// `kubernetes.io/config.mirror` hash), otherwise the pod's own.
pub fn runtime_uid(pod: &Value) -> &str {
    pod.pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .or_else(|| pod.pointer("/metadata/uid"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub fn is_static(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations/kubernetes.io~1config.source").and_then(Value::as_str) == Some("file")
}

/// The static pods of one manifest file (`file` names it in the hash).
pub fn parse(file: &str, text: &str, node: &str) -> Result<Vec<Value>, StaticPodError> {
    let bad = |message: String| StaticPodError::Manifest { file: file.to_string(), message };
    let mut pods = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let doc = Value::deserialize(document).map_err(|err| bad(err.to_string()))?;
        if doc.is_null() {
            continue;
        }
        if doc.get("kind").and_then(Value::as_str) != Some("Pod") {
            return Err(bad(format!("kind {:?} is not Pod", doc.get("kind"))));
        }
        let name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            return Err(bad("metadata.name is missing".into()));
        }
        pods.push(static_pod(file, doc.clone(), node));
    }
    Ok(pods)
}

fn static_pod(file: &str, mut pod: Value, node: &str) -> Value {
    let mut hasher = Sha256::new();
    hasher.update(node.as_bytes());
    hasher.update(file.as_bytes());
    hasher.update(serde_json::to_vec(&pod).unwrap_or_default());
    let hash: String = hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
    let name = format!("{}-{node}", pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default());
    let meta = &mut pod["metadata"];
    meta["name"] = json!(name);
    if meta.get("namespace").and_then(Value::as_str).is_none_or(str::is_empty) {
        meta["namespace"] = json!("default");
    }
    meta["uid"] = json!(hash);
    let mut annotations: BTreeMap<String, Value> =
        meta.get("annotations").and_then(|a| serde_json::from_value(a.clone()).ok()).unwrap_or_default();
    annotations.insert(HASH.into(), json!(hash));
    annotations.insert(SOURCE.into(), json!("file"));
    meta["annotations"] = json!(annotations);
    let spec = &mut pod["spec"];
    spec["nodeName"] = json!(node);
    for (key, default) in [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
    ] {
        if spec.get(key).is_none() {
            spec[key] = default;
        }
    }
    if let Some(map) = pod.as_object_mut() {
        map.remove("status");
    }
    pod
}

/// The mirror pod of a static pod, owned by its Node.
pub fn mirror_of(pod: &Value, node: &str, node_uid: &str) -> Value {
    let mut annotations = pod.pointer("/metadata/annotations").cloned().unwrap_or(json!({}));
    annotations[MIRROR] = pod.pointer("/metadata/uid").cloned().unwrap_or_default();
    let mut metadata = json!({
        "name": pod.pointer("/metadata/name"),
        "namespace": pod.pointer("/metadata/namespace"),
        "annotations": annotations,
        "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid, "controller": true}],
    });
    if let Some(labels) = pod.pointer("/metadata/labels") {
        metadata["labels"] = labels.clone();
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod["spec"]})
}

/// Every static pod of the manifest folder (bad files are logged and skipped).
pub fn scan(dir: &Path, node: &str) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    files.sort();
    let mut pods = Vec::new();
    for path in files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        match parse(&path.display().to_string(), &text, node) {
            Ok(found) => pods.extend(found),
            Err(err) => tracing::warn!(error = %err, "static pod manifest skipped"),
        }
    }
    pods
}

/// Keeps the workers of static pods in line with the manifest folder and
/// their mirror pods in the API; `nudge` wakes it (a mirror pod changed).
pub async fn run(
    ctx: Arc<AgentCtx>,
    workers: Arc<std::sync::Mutex<super::Workers>>,
    network_ready: Arc<std::sync::atomic::AtomicBool>,
    nudge: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let dir = ctx.config.data_dir.join("pod-manifests");
    let node = ctx.config.node_name.clone();
    let mut node_uid: Option<String> = None;
    loop {
        let ready = network_ready.load(std::sync::atomic::Ordering::Relaxed);
        let desired: Vec<Value> =
            scan(&dir, &node).into_iter().filter(|p| ready || super::sandbox::host_network(p)).collect();
        let uid = |p: &Value| p.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
        let removed = match workers.lock() {
            Ok(mut w) => w.sync_static(desired.iter().map(|p| (uid(p), p.clone())).collect()),
            Err(_) => return,
        };
        for pod in removed {
            delete_mirror(&ctx, &pod, None).await;
        }
        if node_uid.is_none() {
            node_uid = ctx
                .client
                .get(&format!("/api/v1/nodes/{node}"))
                .await
                .ok()
                .and_then(|n| n.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string));
        }
        if let Some(node_uid) = &node_uid {
            for pod in &desired {
                if sync_mirror(&ctx, pod, &node, node_uid).await
                    && let Ok(w) = workers.lock()
                {
                    // A fresh mirror pod has no status: the worker posts it again.
                    w.nudge(&uid(pod), pod.clone());
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = nudge.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

fn pod_path(pod: &Value) -> String {
    format!(
        "/api/v1/namespaces/{}/pods/{}",
        pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default(),
        pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
    )
}

async fn delete_mirror(ctx: &AgentCtx, pod: &Value, mirror_uid: Option<&str>) {
    let mut options = json!({"gracePeriodSeconds": 0});
    if let Some(uid) = mirror_uid {
        options["preconditions"] = json!({"uid": uid});
    }
    match ctx.client.delete(&pod_path(pod), Some(options)).await {
        Ok(_) => tracing::info!(pod = %pod_path(pod), "mirror pod deleted"),
        Err(err) if err.code == 404 || err.code == 409 => {}
        Err(err) => tracing::warn!(error = %err.message, "cannot delete the mirror pod"),
    }
}

/// Creates the mirror pod when missing, replaces a stale or deleted one;
/// whether it created one.
async fn sync_mirror(ctx: &AgentCtx, pod: &Value, node: &str, node_uid: &str) -> bool {
    let path = pod_path(pod);
    let hash = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    match ctx.client.get(&path).await {
        Ok(mirror) => {
            let current = mirror.pointer("/metadata/annotations/kubernetes.io~1config.mirror").and_then(Value::as_str);
            if current == Some(hash) && mirror.pointer("/metadata/deletionTimestamp").is_none() {
                return false;
            }
            let uid = mirror.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string);
            delete_mirror(ctx, pod, uid.as_deref()).await;
        }
        Err(err) if err.code == 404 => {}
        Err(_) => return false,
    }
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    match ctx.client.create(&format!("/api/v1/namespaces/{namespace}/pods"), mirror_of(pod, node, node_uid)).await {
        Ok(_) => {
            tracing::info!(pod = %path, "mirror pod created");
            true
        }
        Err(err) => {
            tracing::warn!(pod = %path, error = %err.message, "cannot create the mirror pod");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {app: web}}\nspec:\n  containers: [{name: c, image: busybox}]\n---\n{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"db\", \"namespace\": \"data\"}, \"spec\": {\"containers\": []}}\n";

    #[test]
    fn manifests_become_static_pods_with_stable_uids() {
        let pods = parse("/m/web.yaml", MANIFEST, "n1").expect("parse");
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0]["metadata"]["name"], "web-n1");
        assert_eq!(pods[0]["metadata"]["namespace"], "default");
        assert_eq!(pods[1]["metadata"]["namespace"], "data");
        assert_eq!(pods[0]["spec"]["nodeName"], "n1");
        assert_eq!(pods[0]["spec"]["restartPolicy"], "Always");
        assert!(is_static(&pods[0]) && !is_mirror(&pods[0]));
        let again = parse("/m/web.yaml", MANIFEST, "n1").expect("parse");
        assert_eq!(again[0]["metadata"]["uid"], pods[0]["metadata"]["uid"]);
        let edited = parse("/m/web.yaml", &MANIFEST.replace("busybox", "nginx"), "n1").expect("parse");
        assert_ne!(edited[0]["metadata"]["uid"], pods[0]["metadata"]["uid"]);
        assert!(parse("/m/x.yaml", "kind: Service\nmetadata: {name: s}\n", "n1").is_err());
    }

    #[test]
    fn the_mirror_pod_points_at_its_node() {
        let pod = &parse("/m/web.yaml", MANIFEST, "n1").expect("parse")[0];
        let mirror = mirror_of(pod, "n1", "node-uid");
        assert_eq!(mirror["metadata"]["annotations"][MIRROR], pod["metadata"]["uid"]);
        assert_eq!(mirror["metadata"]["annotations"][SOURCE], "file");
        assert_eq!(mirror["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert_eq!(mirror["metadata"]["ownerReferences"][0]["uid"], "node-uid");
        assert_eq!(mirror["metadata"]["labels"]["app"], "web");
        assert!(mirror["metadata"].get("uid").is_none());
        assert!(is_mirror(&mirror));
        assert_eq!(runtime_uid(&mirror), pod["metadata"]["uid"]);
    }
}
