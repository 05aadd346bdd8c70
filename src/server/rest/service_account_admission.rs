//! ServiceAccount admission for new pods, as upstream's plugin: unless the
//! pod or its ServiceAccount opts out (`automountServiceAccountToken:
//! false`), the pod gets the projected `kube-api-access-<suffix>` volume (a
//! bound service-account token, the cluster CA from `kube-root-ca.crt` and
//! the namespace) mounted read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container, where
//! in-cluster clients look for them. Mirror pods are left alone.
//!
//! Unlike upstream, a pod whose ServiceAccount does not exist yet is not
//! refused (the namespace's `default` account is made moments after the
//! namespace, and refusing would only make early pods fail).

use super::Call;
use super::objects::random_suffix;
use crate::server::error::ApiError;
use serde_json::{Value, json};

pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Upstream's token lifetime for these volumes (an hour plus a little jitter).
const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// Adds the token volume to a pod being created, when it should have one.
pub async fn admit(call: &Call, pod: &mut Value) -> Result<(), ApiError> {
    if !call.resource.group.is_empty() || call.resource.kind != "Pod" || call.info.subresource.is_some() {
        return Ok(());
    }
    if pod.pointer("/metadata/annotations/kubernetes.io~1config.mirror").is_some() {
        return Ok(());
    }
    let account = pod.pointer("/spec/serviceAccountName").and_then(Value::as_str).unwrap_or("default").to_string();
    let automount = match pod.pointer("/spec/automountServiceAccountToken").and_then(Value::as_bool) {
        Some(choice) => choice,
        None => account_automounts(call, &account).await?,
    };
    if automount {
        mount_token(pod, &random_suffix());
    }
    Ok(())
}

async fn account_automounts(call: &Call, account: &str) -> Result<bool, ApiError> {
    let Some(accounts) = call.state.catalog.lookup("", "v1", "serviceaccounts") else { return Ok(true) };
    let found = call.state.registry.try_get(&accounts, call.namespace(), account).await?;
    Ok(found.and_then(|sa| sa.get("automountServiceAccountToken").and_then(Value::as_bool)).unwrap_or(true))
}

/// The projected volume upstream adds: token, CA bundle and namespace.
fn token_volume(name: &str) -> Value {
    json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}})
}

/// Adds the volume and mounts it in every container that has nothing at
/// the mount path yet; a pod where every container already has one is left as is.
fn mount_token(pod: &mut Value, suffix: &str) {
    let name = format!("kube-api-access-{suffix}");
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let mut mounted = false;
    for list in CONTAINER_LISTS {
        for container in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            let mounts = container.as_object_mut().map(|c| c.entry("volumeMounts").or_insert_with(|| json!([])));
            let Some(mounts) = mounts.and_then(Value::as_array_mut) else { continue };
            if mounts.iter().any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH)) {
                continue;
            }
            mounts.push(json!({"name": name, "mountPath": MOUNT_PATH, "readOnly": true}));
            mounted = true;
        }
    }
    if mounted {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.push(token_volume(&name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_gets_the_token_mount_once() {
        let mut pod = json!({"spec": {
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "app", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                           {"name": "own", "volumeMounts": [{"name": "mine", "mountPath": MOUNT_PATH}]}],
            "volumes": [{"name": "data", "emptyDir": {}}]}});
        mount_token(&mut pod, "abcde");
        let spec = &pod["spec"];
        assert_eq!(spec["initContainers"][0]["volumeMounts"][0]["name"], "kube-api-access-abcde");
        assert_eq!(spec["containers"][0]["volumeMounts"][1]["mountPath"], MOUNT_PATH);
        assert_eq!(spec["containers"][0]["volumeMounts"][1]["readOnly"], true);
        assert_eq!(spec["containers"][1]["volumeMounts"].as_array().map(Vec::len), Some(1), "its own mount stays");
        let volume = &spec["volumes"][1];
        assert_eq!(volume["name"], "kube-api-access-abcde");
        assert_eq!(volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(volume["projected"]["sources"][1]["configMap"]["name"], "kube-root-ca.crt");
    }

    #[test]
    fn a_pod_whose_containers_all_mount_something_there_gets_no_volume() {
        let mut pod = json!({"spec": {"containers": [{"name": "own",
            "volumeMounts": [{"name": "mine", "mountPath": MOUNT_PATH}]}]}});
        mount_token(&mut pod, "abcde");
        assert!(pod["spec"].get("volumes").is_none());
    }
}
