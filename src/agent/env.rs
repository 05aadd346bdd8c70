//! A container's environment from its pod, as the kubelet builds it: the
//! Service links (`<NAME>_SERVICE_HOST`, `<NAME>_PORT_…`, always including
//! the `kubernetes` Service), then `envFrom` ConfigMaps/Secrets, then `env`
//! in order (values with `$(VAR)` references, fieldRef, resourceFieldRef,
//! configMapKeyRef, secretKeyRef). Image variables and HOSTNAME come first,
//! from [`super::spec::environment`].

use super::AgentCtx;
use super::error::{AgentError, Result};
use super::node::MachineInfo;
use super::spec::expand;
use base64::Engine;
use serde_json::Value;

pub type Vars = Vec<(String, String)>;

fn set(vars: &mut Vars, name: String, value: String) {
    vars.retain(|(k, _)| k != &name);
    vars.push((name, value));
}

/// The variables of one Service (upstream's `FromServices`); none for
/// headless and ExternalName Services.
pub fn service_vars(service: &Value) -> Vars {
    let ip = service.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or_default();
    if ip.is_empty() || ip == "None" {
        return Vec::new();
    }
    let name = service.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let prefix = name.to_uppercase().replace('-', "_");
    let ports = service.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut vars = vec![(format!("{prefix}_SERVICE_HOST"), ip.to_string())];
    for (i, port) in ports.iter().enumerate() {
        let number = port.get("port").and_then(Value::as_i64).unwrap_or_default();
        let protocol = port.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        let lower = protocol.to_lowercase();
        if i == 0 {
            vars.push((format!("{prefix}_SERVICE_PORT"), number.to_string()));
            vars.push((format!("{prefix}_PORT"), format!("{lower}://{ip}:{number}")));
        }
        if let Some(port_name) = port.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            vars.push((
                format!("{prefix}_SERVICE_PORT_{}", port_name.to_uppercase().replace('-', "_")),
                number.to_string(),
            ));
        }
        let base = format!("{prefix}_PORT_{number}_{}", protocol.to_uppercase());
        vars.push((base.clone(), format!("{lower}://{ip}:{number}")));
        vars.push((format!("{base}_PROTO"), lower.clone()));
        vars.push((format!("{base}_PORT"), number.to_string()));
        vars.push((format!("{base}_ADDR"), ip.to_string()));
    }
    vars
}

/// The Service links of a pod: its namespace's Services (unless
/// `enableServiceLinks: false`) and the `kubernetes` Service.
async fn service_links(ctx: &AgentCtx, pod: &Value) -> Result<Vars> {
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
    let mut services = Vec::new();
    if pod.pointer("/spec/enableServiceLinks").and_then(Value::as_bool) != Some(false) {
        let uri = format!("/api/v1/namespaces/{namespace}/services");
        services = ctx.client.list(&uri).await.map_err(AgentError::api(format!("list services in {namespace}")))?;
        // Upstream leaves out other Services named `kubernetes` outside `default`.
        services.retain(|s| {
            namespace == "default" || s.pointer("/metadata/name").and_then(Value::as_str) != Some("kubernetes")
        });
    }
    if namespace != "default" || services.is_empty() {
        match ctx.client.get("/api/v1/namespaces/default/services/kubernetes").await {
            Ok(master) => services.push(master),
            Err(err) if err.code == 404 => {}
            Err(err) => return Err(AgentError::api("get the kubernetes service")(err)),
        }
    }
    let mut vars = Vars::new();
    for service in &services {
        for (k, v) in service_vars(service) {
            set(&mut vars, k, v);
        }
    }
    Ok(vars)
}

/// The data of a ConfigMap or Secret (decoded), or `None` when missing and optional.
async fn source(ctx: &AgentCtx, namespace: &str, name: &str, secret: bool, optional: bool) -> Result<Option<Vars>> {
    let (plural, kind) = if secret { ("secrets", "secret") } else { ("configmaps", "configmap") };
    let obj = match ctx.client.get(&format!("/api/v1/namespaces/{namespace}/{plural}/{name}")).await {
        Ok(obj) => obj,
        Err(err) if err.code == 404 && optional => return Ok(None),
        Err(err) if err.code == 404 => {
            return Err(AgentError::ContainerConfig { message: format!("{kind} \"{name}\" not found") });
        }
        Err(err) => return Err(AgentError::api(format!("get {kind} {namespace}/{name}"))(err)),
    };
    let mut vars = Vars::new();
    for (key, value) in obj.get("data").and_then(Value::as_object).into_iter().flatten() {
        let text = value.as_str().unwrap_or_default();
        let text = if secret {
            let bytes = base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            text.to_string()
        };
        vars.push((key.clone(), text));
    }
    Ok(Some(vars))
}

/// Whether a name may be an environment variable (upstream's C_IDENTIFIER-ish rule).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_graphic() && c != '=')
}

/// Everything the pod adds to the container's environment, in order.
pub async fn resolve(ctx: &AgentCtx, pod: &Value, container: &Value) -> Result<Vars> {
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
    let mut vars = service_links(ctx, pod).await?;
    for from in container.get("envFrom").and_then(Value::as_array).into_iter().flatten() {
        let prefix = from.get("prefix").and_then(Value::as_str).unwrap_or_default();
        let (reference, secret) = match (from.get("configMapRef"), from.get("secretRef")) {
            (Some(r), _) => (r, false),
            (None, Some(r)) => (r, true),
            _ => continue,
        };
        let name = reference.get("name").and_then(Value::as_str).unwrap_or_default();
        let optional = reference.get("optional").and_then(Value::as_bool).unwrap_or(false);
        for (key, value) in source(ctx, namespace, name, secret, optional).await?.unwrap_or_default() {
            let name = format!("{prefix}{key}");
            if valid_name(&name) {
                set(&mut vars, name, value);
            }
        }
    }
    let container_name = container.get("name").and_then(Value::as_str);
    // The addresses are the agent's to know before the pod's status says them.
    let mut pod = pod.clone();
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
    let pod_ip = super::sandbox::pod_ip(ctx, &pod, &uid);
    if let Some(status) = pod.as_object_mut().map(|p| p.entry("status").or_insert_with(|| serde_json::json!({}))) {
        let host_ip = ctx.config.node_ip.to_string();
        status["hostIP"] = serde_json::json!(host_ip);
        status["hostIPs"] = serde_json::json!([{"ip": host_ip}]);
        if let Some(ip) = pod_ip {
            status["podIP"] = serde_json::json!(ip);
            status["podIPs"] = serde_json::json!([{"ip": ip}]);
        }
    }
    let pod = &pod;
    for var in container.get("env").and_then(Value::as_array).into_iter().flatten() {
        let Some(name) = var.get("name").and_then(Value::as_str) else { continue };
        let from = var.get("valueFrom");
        let value = if let Some(value) = var.get("value").and_then(Value::as_str) {
            expand(value, &vars)
        } else if let Some(path) = from.and_then(|f| f.pointer("/fieldRef/fieldPath")).and_then(Value::as_str) {
            super::downward::field(pod, path).unwrap_or_default()
        } else if let Some(reference) = from.and_then(|f| f.get("resourceFieldRef")) {
            super::downward::resource(pod, container_name, reference, &MachineInfo::probe()).unwrap_or_default()
        } else if let Some((reference, secret)) = from.and_then(|f| {
            f.get("configMapKeyRef").map(|r| (r, false)).or_else(|| f.get("secretKeyRef").map(|r| (r, true)))
        }) {
            let source_name = reference.get("name").and_then(Value::as_str).unwrap_or_default();
            let key = reference.get("key").and_then(Value::as_str).unwrap_or_default();
            let optional = reference.get("optional").and_then(Value::as_bool).unwrap_or(false);
            match source(ctx, namespace, source_name, secret, optional).await? {
                None => continue,
                Some(data) => match data.into_iter().find(|(k, _)| k == key) {
                    Some((_, value)) => value,
                    None if optional => continue,
                    None => {
                        let kind = if secret { "Secret" } else { "ConfigMap" };
                        return Err(AgentError::ContainerConfig {
                            message: format!("couldn't find key {key} in {kind} {namespace}/{source_name}"),
                        });
                    }
                },
            }
        } else {
            String::new()
        };
        set(&mut vars, name.to_string(), value);
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn services_become_docker_link_variables() {
        let service = json!({"metadata": {"name": "redis-primary"}, "spec": {"clusterIP": "10.43.0.20",
            "ports": [{"name": "db", "port": 6379, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let vars = service_vars(&service);
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("REDIS_PRIMARY_SERVICE_HOST"), Some("10.43.0.20"));
        assert_eq!(get("REDIS_PRIMARY_SERVICE_PORT"), Some("6379"));
        assert_eq!(get("REDIS_PRIMARY_SERVICE_PORT_DB"), Some("6379"));
        assert_eq!(get("REDIS_PRIMARY_PORT"), Some("tcp://10.43.0.20:6379"));
        assert_eq!(get("REDIS_PRIMARY_PORT_53_UDP"), Some("udp://10.43.0.20:53"));
        assert_eq!(get("REDIS_PRIMARY_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get("REDIS_PRIMARY_PORT_6379_TCP_ADDR"), Some("10.43.0.20"));
        let headless = json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}});
        assert!(service_vars(&headless).is_empty());
    }

    #[test]
    fn env_names_follow_upstreams_rule() {
        assert!(valid_name("APP_MODE"));
        assert!(valid_name("app.mode"));
        assert!(!valid_name("1ST"));
        assert!(!valid_name("A=B"));
        assert!(!valid_name(""));
    }
}
