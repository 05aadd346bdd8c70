//! The Node restriction (upstream's Node authorizer + NodeRestriction, in
//! short): on top of what RBAC's `system:node` role allows, a node identity
//! (`system:node:<name>` in `system:nodes`) may only modify its own Node,
//! Lease and the pods bound to it, and may only read the Secrets,
//! ConfigMaps and PersistentVolumeClaims its pods reference.

use super::super::authn::UserInfo;
use super::super::error::{ApiError, Reason};
use super::super::registry::ListOptions;
use super::super::state::ApiState;
use super::rbac::Attributes;
use serde_json::Value;

/// The node a user is, if it is a node identity.
pub fn node_of(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    (!name.is_empty() && user.groups.iter().any(|g| g == "system:nodes")).then_some(name)
}

fn denied(node: &str, what: String) -> ApiError {
    ApiError::new(403, Reason::Forbidden, format!("node \"{node}\" is not allowed to {what}"))
}

fn is_write(verb: &str) -> bool {
    matches!(verb, "update" | "patch" | "delete" | "deletecollection")
}

/// The names of objects of `kind` (`secret`, `configMap`, `claim`) a pod refers to.
pub fn pod_references(pod: &Value, kind: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut push = |v: Option<&Value>| {
        if let Some(name) = v.and_then(Value::as_str) {
            names.push(name.to_string());
        }
    };
    let spec = &pod["spec"];
    let volumes = spec["volumes"].as_array().into_iter().flatten();
    for volume in volumes {
        match kind {
            "secret" => push(volume.pointer("/secret/secretName")),
            "configMap" => push(volume.pointer("/configMap/name")),
            _ => push(volume.pointer("/persistentVolumeClaim/claimName")),
        }
        for source in volume.pointer("/projected/sources").and_then(Value::as_array).into_iter().flatten() {
            push(source.pointer(&format!("/{kind}/name")));
        }
    }
    if kind == "secret" {
        for secret in spec["imagePullSecrets"].as_array().into_iter().flatten() {
            push(secret.get("name"));
        }
    }
    let containers = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|list| spec[*list].as_array().cloned().unwrap_or_default());
    for container in containers {
        for env in container["env"].as_array().into_iter().flatten() {
            push(env.pointer(&format!("/valueFrom/{kind}KeyRef/name")));
        }
        for from in container["envFrom"].as_array().into_iter().flatten() {
            push(from.pointer(&format!("/{kind}Ref/name")));
        }
    }
    names
}

async fn pods_of_node(state: &ApiState, namespace: &str, node: &str) -> Result<Vec<Value>, ApiError> {
    let Some(res) = state.catalog.lookup("", "v1", "pods") else { return Ok(Vec::new()) };
    let opts = ListOptions { resource_version: Some(0), ..Default::default() };
    let pods = state.registry.list(&res, Some(namespace), &opts).await?.items;
    Ok(pods.into_iter().filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)).collect())
}

async fn pod_is_on(state: &ApiState, namespace: &str, name: &str, node: &str) -> Result<bool, ApiError> {
    let Some(res) = state.catalog.lookup("", "v1", "pods") else { return Ok(false) };
    let pod = state.registry.try_get(&res, Some(namespace), name).await?;
    // A pod that is already gone cannot be harmed; the request then answers 404.
    Ok(pod.is_none_or(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)))
}

/// Refuses what RBAC allowed but a node may not do to other nodes' objects.
pub async fn restrict(state: &ApiState, user: &UserInfo, attrs: &Attributes<'_>) -> Result<(), ApiError> {
    let Some(node) = node_of(user) else { return Ok(()) };
    let Attributes::Resource { verb, group, resource, namespace, name } = *attrs else { return Ok(()) };
    let own = name == Some(node);
    match (group, resource) {
        ("", "nodes" | "nodes/status") if is_write(verb) && !own => {
            Err(denied(node, format!("{verb} node {:?}, only its own", name.unwrap_or("*"))))
        }
        ("coordination.k8s.io", "leases") if verb != "create" && !own => {
            Err(denied(node, format!("{verb} lease {:?}, only its own", name.unwrap_or("*"))))
        }
        ("", "pods" | "pods/status") if is_write(verb) => {
            let (Some(ns), Some(pod)) = (namespace, name) else {
                return Err(denied(node, format!("{verb} pods in bulk")));
            };
            if pod_is_on(state, ns, pod, node).await? {
                Ok(())
            } else {
                Err(denied(node, format!("{verb} pod {ns}/{pod}, which is not bound to it")))
            }
        }
        ("", "serviceaccounts/token") => {
            let (Some(ns), Some(account), "create") = (namespace, name, verb) else {
                return Err(denied(node, format!("{verb} {resource} other than by name")));
            };
            let pods = pods_of_node(state, ns, node).await?;
            let runs_as = |pod: &Value| {
                pod.pointer("/spec/serviceAccountName").and_then(Value::as_str).unwrap_or("default") == account
            };
            if pods.iter().any(runs_as) {
                Ok(())
            } else {
                Err(denied(node, format!("create a token for {ns}/{account}: no pod on the node runs as it")))
            }
        }
        ("", "secrets" | "configmaps" | "persistentvolumeclaims") => {
            let kind = match resource {
                "secrets" => "secret",
                "configmaps" => "configMap",
                _ => "claim",
            };
            let (Some(ns), Some(object), "get") = (namespace, name, verb) else {
                return Err(denied(node, format!("{verb} {resource} other than by name")));
            };
            let pods = pods_of_node(state, ns, node).await?;
            if pods.iter().any(|pod| pod_references(pod, kind).iter().any(|n| n == object)) {
                Ok(())
            } else {
                Err(denied(node, format!("get {resource} {ns}/{object}: no pod on the node references it")))
            }
        }
        _ => Ok(()),
    }
}

/// NodeRestriction admission of a pod a node creates: only a mirror pod of
/// one of its static pods (`kubernetes.io/config.mirror`), bound to itself,
/// owned by nothing but its own Node, referencing no service account,
/// Secret, ConfigMap or claim (upstream's messages). Others pass.
pub fn admit_pod_create(user: &UserInfo, pod: &Value) -> Result<(), ApiError> {
    let Some(node) = node_of(user) else { return Ok(()) };
    let forbid = |reason: String| {
        let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        Err(ApiError::forbidden("", "pods", name, &reason))
    };
    if pod.pointer("/metadata/annotations/kubernetes.io~1config.mirror").is_none() {
        return forbid(format!(
            "pod does not have \"kubernetes.io/config.mirror\" annotation, node \"{node}\" can only create mirror pods"
        ));
    }
    if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) {
        return forbid(format!("node \"{node}\" can only create pods with spec.nodeName set to itself"));
    }
    let owners = pod.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
    let own_node = |o: &Value| {
        o.get("kind").and_then(Value::as_str) == Some("Node") && o.get("name").and_then(Value::as_str) == Some(node)
    };
    if owners.len() > 1 || owners.iter().any(|o| !own_node(o)) {
        return forbid(format!("node \"{node}\" can only create pods with a single owner reference set to itself"));
    }
    let account = pod.pointer("/spec/serviceAccountName").and_then(Value::as_str).unwrap_or_default();
    if !account.is_empty() {
        return forbid(format!("node \"{node}\" can not create pods that reference a service account"));
    }
    for (kind, what) in [("secret", "secrets"), ("configMap", "configmaps"), ("claim", "persistentvolumeclaims")] {
        if !pod_references(pod, kind).is_empty() {
            return forbid(format!("node \"{node}\" can not create pods that reference {what}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_creates_only_its_own_mirror_pods() {
        let node = UserInfo::new("system:node:n1", ["system:nodes".to_string()]);
        let mirror = serde_json::json!({
            "metadata": {"name": "web-n1", "annotations": {"kubernetes.io/config.mirror": "abc"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "u"}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
        });
        assert!(admit_pod_create(&node, &mirror).is_ok());
        let mut plain = mirror.clone();
        plain["metadata"]["annotations"] = serde_json::json!({});
        let err = admit_pod_create(&node, &plain).expect_err("not a mirror pod");
        assert_eq!(err.code, 403);
        let mut elsewhere = mirror.clone();
        elsewhere["spec"]["nodeName"] = serde_json::json!("n2");
        assert!(admit_pod_create(&node, &elsewhere).is_err());
        let mut owned = mirror.clone();
        owned["metadata"]["ownerReferences"][0]["name"] = serde_json::json!("n2");
        assert!(admit_pod_create(&node, &owned).is_err());
        let mut secret = mirror.clone();
        secret["spec"]["volumes"] = serde_json::json!([{"name": "s", "secret": {"secretName": "x"}}]);
        assert!(admit_pod_create(&node, &secret).is_err());
        let admin = UserInfo::new("admin", ["system:masters".to_string()]);
        assert!(admit_pod_create(&admin, &plain).is_ok());
    }
    use serde_json::json;

    #[test]
    fn only_node_identities_are_restricted() {
        let node = UserInfo::new("system:node:n2", ["system:nodes".to_string()]);
        assert_eq!(node_of(&node), Some("n2"));
        assert_eq!(node_of(&UserInfo::new("system:node:n2", Vec::new())), None);
        assert_eq!(node_of(&UserInfo::new("admin", ["system:nodes".to_string()])), None);
    }

    #[test]
    fn pods_reference_secrets_configmaps_and_claims() {
        let pod = json!({"spec": {
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "secret": {"secretName": "vol"}},
                {"name": "b", "configMap": {"name": "cm"}},
                {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "d", "projected": {"sources": [{"secret": {"name": "proj"}}, {"configMap": {"name": "pcm"}}]}},
            ],
            "containers": [{"name": "x",
                "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "env", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "envcm"}}]}],
        }});
        assert_eq!(pod_references(&pod, "secret"), vec!["vol", "proj", "pull", "env"]);
        assert_eq!(pod_references(&pod, "configMap"), vec!["cm", "pcm", "envcm"]);
        assert_eq!(pod_references(&pod, "claim"), vec!["data"]);
    }
}
