//! Objects every cluster has from its first start: the default namespaces
//! and the `kubernetes` Service pointing at the API server.

use super::error::ApiError;
use super::rest::now_rfc3339;
use super::state::ApiState;
use serde_json::{Value, json};

fn with_system_metadata(mut obj: Value) -> Value {
    obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
    obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
    obj
}

/// Creates `obj` unless it exists.
async fn ensure(state: &ApiState, plural: &str, obj: Value) -> Result<(), ApiError> {
    let group = obj["apiVersion"].as_str().and_then(|v| v.rsplit_once('/')).map(|(g, _)| g).unwrap_or_default();
    let version = obj["apiVersion"].as_str().map(|v| v.rsplit('/').next().unwrap_or(v)).unwrap_or("v1");
    let res = state.catalog.lookup(group, version, plural).ok_or_else(|| ApiError::internal("bootstrap", &plural))?;
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
    if state.registry.try_get(&res, ns.as_deref(), &name).await?.is_some() {
        return Ok(());
    }
    match state.registry.create(&res, with_system_metadata(obj), None).await {
        Err(err) if err.code == 409 => Ok(()),
        other => other.map(|_| ()),
    }
}

pub async fn run(state: &ApiState) -> Result<(), ApiError> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let namespace = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        ensure(state, "namespaces", namespace).await?;
    }
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": state.config.kubernetes_service_ip().to_string(),
            "clusterIPs": [state.config.kubernetes_service_ip().to_string()],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": state.config.listen.port()}],
            "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {}},
    });
    let ip = state.config.kubernetes_service_ip().to_string();
    state.registry.reserve(crate::server::registry::allocator::SERVICE_IPS, &ip, "default/kubernetes").await?;
    ensure(state, "services", service).await?;
    let (roles, bindings) = super::authz::bootstrap_roles::objects();
    for role in roles {
        ensure(state, "clusterroles", role).await?;
    }
    for binding in bindings {
        ensure(state, "clusterrolebindings", binding).await?;
    }
    Ok(())
}
