//! The pod sandbox: the pod's folders, its network namespace (loopback
//! only until pod networking lands), /etc/hosts, /etc/resolv.conf, and its
//! volumes (emptyDir, configMap, secret and hostPath written to files).

use super::AgentCtx;
use super::error::{AgentError, Result};
use super::spec::BindMount;
use base64::Engine;
use serde_json::Value;
use std::path::{Path, PathBuf};

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

/// Writes `items` (key → bytes) into `dir`, mapped by the volume's `items` if any.
fn write_keys(dir: &Path, data: &[(String, Vec<u8>)], items: Option<&Vec<Value>>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(AgentError::io("create volume", dir))?;
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                let key = item.get("key").and_then(Value::as_str).unwrap_or_default();
                let path = item.get("path").and_then(Value::as_str).unwrap_or(key);
                if path.split('/').any(|p| p == "..") {
                    continue;
                }
                if let Some((_, bytes)) = data.iter().find(|(k, _)| k == key) {
                    write(&dir.join(path), bytes)?;
                }
            }
        }
        _ => {
            for (key, bytes) in data {
                if !key.contains('/') && key != ".." {
                    write(&dir.join(key), bytes)?;
                }
            }
        }
    }
    Ok(())
}

fn decode_map(obj: &Value, key: &str, base64: bool) -> Vec<(String, Vec<u8>)> {
    obj.get(key)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let text = v.as_str()?;
            let bytes = if base64 {
                base64::engine::general_purpose::STANDARD.decode(text).ok()?
            } else {
                text.as_bytes().to_vec()
            };
            Some((k.clone(), bytes))
        })
        .collect()
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
    let hostname = pod.pointer("/spec/hostname").and_then(Value::as_str).unwrap_or(name);
    if host_net {
        let host_resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
        write(&paths.root.join("resolv.conf"), &host_resolv)?;
        write(&paths.root.join("hosts"), &std::fs::read("/etc/hosts").unwrap_or_default())?;
    } else {
        let resolv = resolv_conf(namespace, &ctx.config.cluster_dns.to_string(), &ctx.config.cluster_domain);
        write(&paths.root.join("resolv.conf"), resolv.as_bytes())?;
        write(&paths.root.join("hosts"), hosts_file(hostname, None).as_bytes())?;
    }
    write(&paths.root.join("hostname"), format!("{hostname}\n").as_bytes())?;
    for volume in pod.pointer("/spec/volumes").and_then(Value::as_array).into_iter().flatten() {
        let Some(vname) = volume.get("name").and_then(Value::as_str) else { continue };
        let dir = paths.volume(vname);
        if let Some(cm) = volume.get("configMap") {
            let source = cm.get("name").and_then(Value::as_str).unwrap_or_default();
            let optional = cm.get("optional").and_then(Value::as_bool).unwrap_or(false);
            match ctx.client.get(&format!("/api/v1/namespaces/{namespace}/configmaps/{source}")).await {
                Ok(obj) => {
                    let mut data = decode_map(&obj, "data", false);
                    data.extend(decode_map(&obj, "binaryData", true));
                    write_keys(&dir, &data, cm.get("items").and_then(Value::as_array))?;
                }
                Err(err) if err.code == 404 && optional => write_keys(&dir, &[], None)?,
                Err(err) => {
                    return Err(AgentError::api(format!("configmap {namespace}/{source} for volume {vname}"))(err));
                }
            }
        } else if let Some(secret) = volume.get("secret") {
            let source = secret.get("secretName").and_then(Value::as_str).unwrap_or_default();
            let optional = secret.get("optional").and_then(Value::as_bool).unwrap_or(false);
            match ctx.client.get(&format!("/api/v1/namespaces/{namespace}/secrets/{source}")).await {
                Ok(obj) => {
                    let mut data = decode_map(&obj, "data", true);
                    data.extend(decode_map(&obj, "stringData", false));
                    write_keys(&dir, &data, secret.get("items").and_then(Value::as_array))?;
                }
                Err(err) if err.code == 404 && optional => write_keys(&dir, &[], None)?,
                Err(err) => {
                    return Err(AgentError::api(format!("secret {namespace}/{source} for volume {vname}"))(err));
                }
            }
        } else if let Some(path) = volume.pointer("/hostPath/path").and_then(Value::as_str) {
            let kind = volume.pointer("/hostPath/type").and_then(Value::as_str).unwrap_or_default();
            if kind == "DirectoryOrCreate" {
                std::fs::create_dir_all(path).map_err(AgentError::io("create hostPath", path))?;
            }
        } else {
            if volume.get("emptyDir").is_none() {
                tracing::warn!(pod = %format!("{namespace}/{name}"), volume = vname, "unsupported volume type; using an empty folder");
            }
            std::fs::create_dir_all(&dir).map_err(AgentError::io("create volume", &dir))?;
        }
    }
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
            || volume.is_some_and(|v| v.get("configMap").is_some() || v.get("secret").is_some());
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

/// Removes what `prepare` made (logs are kept until the pod object is gone).
pub fn teardown(ctx: &AgentCtx, paths: &PodPaths, uid: &str, remove_logs: bool) -> Result<()> {
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

    #[test]
    fn keys_map_through_items() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = vec![("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())];
        write_keys(dir.path(), &data, Some(&vec![json!({"key": "b", "path": "sub/x"})])).expect("write");
        assert_eq!(std::fs::read(dir.path().join("sub/x")).expect("x"), b"2");
        assert!(!dir.path().join("a").exists());
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
