//! A pod's volumes as files under `<pod>/volumes/<name>`: configMap, secret,
//! downwardAPI and projected (configMap, secret, downwardAPI and a bound
//! service-account token from the TokenRequest API), plus the folders of
//! emptyDir and hostPath. [`populate`] is idempotent: the pod worker calls it
//! again every minute, which carries configMap/Secret changes into running
//! pods and renews tokens once 80 % of their lifetime has passed (as the
//! kubelet). Files are replaced by rename, so readers never see half a file.

use super::AgentCtx;
use super::error::{AgentError, Result};
use super::node::MachineInfo;
use super::sandbox::PodPaths;
use base64::Engine;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Upstream's default lifetime of a projected token.
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(AgentError::io("create", parent))?;
    }
    if std::fs::read(path).is_ok_and(|current| current == bytes) {
        return Ok(());
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = path.with_file_name(format!("..{name}.tmp"));
    std::fs::write(&temporary, bytes).map_err(AgentError::io("write", &temporary))?;
    std::fs::rename(&temporary, path).map_err(AgentError::io("replace", path))
}

/// A relative file path from a volume spec, refused when it could leave the volume.
fn safe(path: &str) -> Option<&str> {
    (!path.is_empty() && !path.starts_with('/') && !path.split('/').any(|p| p == "..")).then_some(path)
}

/// Writes `data` (key → bytes) into `dir`, mapped by the volume's `items` if any.
fn write_keys(dir: &Path, data: &[(String, Vec<u8>)], items: Option<&Vec<Value>>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(AgentError::io("create volume", dir))?;
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                let key = item.get("key").and_then(Value::as_str).unwrap_or_default();
                let Some(path) = safe(item.get("path").and_then(Value::as_str).unwrap_or(key)) else { continue };
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

/// The keys of a ConfigMap (`secret` false) or Secret, or `None` when it is
/// missing and `optional`.
async fn source_data(
    ctx: &AgentCtx,
    namespace: &str,
    name: &str,
    secret: bool,
    optional: bool,
) -> Result<Option<Vec<(String, Vec<u8>)>>> {
    let plural = if secret { "secrets" } else { "configmaps" };
    match ctx.client.get(&format!("/api/v1/namespaces/{namespace}/{plural}/{name}")).await {
        Ok(obj) => {
            let mut data = decode_map(&obj, "data", secret);
            data.extend(decode_map(&obj, if secret { "stringData" } else { "binaryData" }, !secret));
            Ok(Some(data))
        }
        Err(err) if err.code == 404 && optional => Ok(None),
        Err(err) => Err(AgentError::api(format!("{} {namespace}/{name}", &plural[..plural.len() - 1]))(err)),
    }
}

/// The files of a downwardAPI volume (or projection): each item's fieldRef
/// or resourceFieldRef.
fn write_downward(pod: &Value, dir: &Path, items: &[Value], machine: &MachineInfo) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(AgentError::io("create volume", dir))?;
    for item in items {
        let Some(path) = item.get("path").and_then(Value::as_str).and_then(safe) else { continue };
        let value = if let Some(field) = item.pointer("/fieldRef/fieldPath").and_then(Value::as_str) {
            super::downward::field(pod, field)
        } else if let Some(reference) = item.get("resourceFieldRef") {
            super::downward::resource(pod, None, reference, machine)
        } else {
            None
        };
        if let Some(value) = value {
            write(&dir.join(path), value.as_bytes())?;
        }
    }
    Ok(())
}

/// Whether the token at `path` must be (re)requested: missing, or older
/// than 80 % of its lifetime or a day.
fn token_due(path: &Path, lifetime_seconds: i64) -> bool {
    let age =
        std::fs::metadata(path).and_then(|m| m.modified()).ok().and_then(|t| SystemTime::now().duration_since(t).ok());
    let renew_after = Duration::from_secs((lifetime_seconds.max(600) as u64) * 8 / 10).min(Duration::from_secs(86400));
    age.is_none_or(|age| age >= renew_after)
}

/// Requests a token of the pod's service account bound to the pod.
async fn request_token(ctx: &AgentCtx, pod: &Value, source: &Value) -> Result<Vec<u8>> {
    let text = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let (namespace, account) = (text("/metadata/namespace"), text("/spec/serviceAccountName"));
    let account = if account.is_empty() { "default" } else { account };
    let audiences: Vec<&str> =
        source.get("audience").and_then(Value::as_str).filter(|a| !a.is_empty()).into_iter().collect();
    let expiration = source.get("expirationSeconds").and_then(Value::as_i64).unwrap_or(DEFAULT_TOKEN_SECONDS);
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": audiences, "expirationSeconds": expiration,
                 "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": text("/metadata/name"), "uid": text("/metadata/uid")}}});
    let uri = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token");
    let answer = ctx
        .client
        .create(&uri, request)
        .await
        .map_err(AgentError::api(format!("a token for serviceaccount {namespace}/{account}")))?;
    Ok(answer.pointer("/status/token").and_then(Value::as_str).unwrap_or_default().as_bytes().to_vec())
}

/// The files of a projected volume, source by source.
async fn write_projected(
    ctx: &AgentCtx,
    pod: &Value,
    dir: &Path,
    projected: &Value,
    machine: &MachineInfo,
) -> Result<()> {
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
    std::fs::create_dir_all(dir).map_err(AgentError::io("create volume", dir))?;
    for source in projected.get("sources").and_then(Value::as_array).into_iter().flatten() {
        for (key, secret, name_field) in [("configMap", false, "name"), ("secret", true, "name")] {
            let Some(spec) = source.get(key) else { continue };
            let name = spec.get(name_field).and_then(Value::as_str).unwrap_or_default();
            let optional = spec.get("optional").and_then(Value::as_bool).unwrap_or(false);
            if let Some(data) = source_data(ctx, namespace, name, secret, optional).await? {
                write_keys(dir, &data, spec.get("items").and_then(Value::as_array))?;
            }
        }
        if let Some(items) = source.pointer("/downwardAPI/items").and_then(Value::as_array) {
            write_downward(pod, dir, items, machine)?;
        }
        if let Some(token) = source.get("serviceAccountToken") {
            let Some(path) = token.get("path").and_then(Value::as_str).and_then(safe) else { continue };
            let file = dir.join(path);
            let lifetime = token.get("expirationSeconds").and_then(Value::as_i64).unwrap_or(DEFAULT_TOKEN_SECONDS);
            if token_due(&file, lifetime) {
                write(&file, &request_token(ctx, pod, token).await?)?;
            }
        }
    }
    Ok(())
}

/// Creates or refreshes every volume of the pod.
pub async fn populate(ctx: &AgentCtx, pod: &Value, paths: &PodPaths) -> Result<()> {
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
    let machine = MachineInfo::probe();
    for volume in pod.pointer("/spec/volumes").and_then(Value::as_array).into_iter().flatten() {
        let Some(vname) = volume.get("name").and_then(Value::as_str) else { continue };
        let dir = paths.volume(vname);
        if let Some(cm) = volume.get("configMap") {
            let name = cm.get("name").and_then(Value::as_str).unwrap_or_default();
            let optional = cm.get("optional").and_then(Value::as_bool).unwrap_or(false);
            let data = source_data(ctx, namespace, name, false, optional).await?.unwrap_or_default();
            write_keys(&dir, &data, cm.get("items").and_then(Value::as_array))?;
        } else if let Some(secret) = volume.get("secret") {
            let name = secret.get("secretName").and_then(Value::as_str).unwrap_or_default();
            let optional = secret.get("optional").and_then(Value::as_bool).unwrap_or(false);
            let data = source_data(ctx, namespace, name, true, optional).await?.unwrap_or_default();
            write_keys(&dir, &data, secret.get("items").and_then(Value::as_array))?;
        } else if let Some(projected) = volume.get("projected") {
            write_projected(ctx, pod, &dir, projected, &machine).await?;
        } else if let Some(items) = volume.pointer("/downwardAPI/items").and_then(Value::as_array) {
            write_downward(pod, &dir, items, &machine)?;
        } else if let Some(path) = volume.pointer("/hostPath/path").and_then(Value::as_str) {
            let kind = volume.pointer("/hostPath/type").and_then(Value::as_str).unwrap_or_default();
            if kind == "DirectoryOrCreate" {
                std::fs::create_dir_all(path).map_err(AgentError::io("create hostPath", path))?;
            }
        } else {
            if volume.get("emptyDir").is_none() {
                let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                tracing::warn!(pod = %format!("{namespace}/{name}"), volume = vname, "unsupported volume type; using an empty folder");
            }
            std::fs::create_dir_all(&dir).map_err(AgentError::io("create volume", &dir))?;
        }
    }
    Ok(())
}

/// Whether containers see the volume read-only whatever their mount says.
pub fn always_read_only(volume: &Value) -> bool {
    ["configMap", "secret", "projected", "downwardAPI"].iter().any(|kind| volume.get(kind).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_through_items() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = vec![("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())];
        write_keys(dir.path(), &data, Some(&vec![json!({"key": "b", "path": "sub/x"})])).expect("write");
        assert_eq!(std::fs::read(dir.path().join("sub/x")).expect("x"), b"2");
        assert!(!dir.path().join("a").exists());
    }

    #[test]
    fn paths_stay_inside_the_volume() {
        assert_eq!(safe("ca.crt"), Some("ca.crt"));
        assert_eq!(safe("sub/dir/file"), Some("sub/dir/file"));
        assert_eq!(safe("../etc/passwd"), None);
        assert_eq!(safe("/etc/passwd"), None);
        assert_eq!(safe(""), None);
    }

    #[test]
    fn tokens_renew_after_eighty_percent_of_their_life() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        assert!(token_due(&token, 3607), "a missing token is due");
        write(&token, b"t").expect("write");
        assert!(!token_due(&token, 3607), "a fresh token is not due");
        let old = SystemTime::now() - Duration::from_secs(2900);
        std::fs::File::options().write(true).open(&token).and_then(|f| f.set_modified(old)).expect("age it");
        assert!(token_due(&token, 3607), "a token past 80 % of 3607 s is due");
    }

    #[test]
    fn downward_files_hold_fields_and_resources() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = json!({"metadata": {"namespace": "prod", "labels": {"a": "1"}},
            "spec": {"containers": [{"name": "app", "resources": {"limits": {"memory": "32Mi"}}}]}});
        let items = vec![
            json!({"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}),
            json!({"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}),
            json!({"path": "mem", "resourceFieldRef": {"containerName": "app", "resource": "limits.memory", "divisor": "1Mi"}}),
            json!({"path": "../escape", "fieldRef": {"fieldPath": "metadata.namespace"}}),
        ];
        let machine = MachineInfo { cpus: 1, memory_kib: 1024, kernel: String::new(), os_image: String::new() };
        write_downward(&pod, dir.path(), &items, &machine).expect("write");
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).expect(f);
        assert_eq!(read("namespace"), "prod");
        assert_eq!(read("labels"), "a=\"1\"");
        assert_eq!(read("mem"), "32");
        assert!(!dir.path().parent().expect("parent").join("escape").exists());
    }
}
