//! Helpers for upstream's defaulting functions over JSON objects, and the
//! pod spec defaults shared by pods and every workload's pod template.

use serde_json::{Value, json};

/// Sets `obj[path]` to `value` unless it is already set (creating parents).
pub fn set_default(obj: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = obj;
    for key in parents {
        if !node.is_object() {
            return;
        }
        node = match node.as_object_mut() {
            Some(map) => map.entry(key.to_string()).or_insert_with(|| json!({})),
            None => return,
        };
    }
    if let Some(map) = node.as_object_mut() {
        map.entry(last.to_string()).or_insert(value);
    }
}

/// The image pull policy upstream picks: Always for `:latest` or untagged images.
fn pull_policy(image: &str) -> &'static str {
    let name = image.split('@').next().unwrap_or(image);
    let last = name.rsplit('/').next().unwrap_or(name);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn container_defaults(container: &mut Value) {
    let image = container.get("image").and_then(Value::as_str).unwrap_or_default().to_string();
    set_default(container, &["imagePullPolicy"], json!(pull_policy(&image)));
    set_default(container, &["terminationMessagePath"], json!("/dev/termination-log"));
    set_default(container, &["terminationMessagePolicy"], json!("File"));
    set_default(container, &["resources"], json!({}));
    for port in container.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
        set_default(port, &["protocol"], json!("TCP"));
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = container.get_mut(probe) {
            set_default(probe, &["timeoutSeconds"], json!(1));
            set_default(probe, &["periodSeconds"], json!(10));
            set_default(probe, &["successThreshold"], json!(1));
            set_default(probe, &["failureThreshold"], json!(3));
        }
    }
}

/// Upstream's `SetDefaults_PodSpec` and its containers' and volumes' defaults.
pub fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, &["restartPolicy"], json!("Always"));
    set_default(spec, &["terminationGracePeriodSeconds"], json!(30));
    set_default(spec, &["dnsPolicy"], json!("ClusterFirst"));
    set_default(spec, &["securityContext"], json!({}));
    set_default(spec, &["schedulerName"], json!("default-scheduler"));
    set_default(spec, &["enableServiceLinks"], json!(true));
    for list in ["containers", "initContainers"] {
        for container in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            container_defaults(container);
        }
    }
    for volume in spec.get_mut("volumes").and_then(Value::as_array_mut).into_iter().flatten() {
        for source in ["configMap", "secret"] {
            if let Some(source) = volume.get_mut(source) {
                set_default(source, &["defaultMode"], json!(420));
            }
        }
        if let Some(empty) = volume.get_mut("emptyDir")
            && empty.is_null()
        {
            *empty = json!({});
        }
    }
}

/// The pod spec defaults of a workload's pod template at `path` (e.g. `spec.template`).
pub fn pod_template(obj: &mut Value, path: &[&str]) {
    let mut node = obj;
    for key in path {
        match node.get_mut(*key) {
            Some(next) => node = next,
            None => return,
        }
    }
    if let Some(spec) = node.get_mut("spec") {
        pod_spec(spec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(pull_policy("busybox"), "Always");
        assert_eq!(pull_policy("busybox:latest"), "Always");
        assert_eq!(pull_policy("127.0.0.1:5000/busybox"), "Always");
        assert_eq!(pull_policy("127.0.0.1:5000/busybox:1.36"), "IfNotPresent");
        assert_eq!(pull_policy("busybox@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn pod_spec_defaults_do_not_override() {
        let mut spec = json!({"restartPolicy": "Never", "containers": [{"name": "a", "image": "x:1", "ports": [{"containerPort": 80}]}]});
        pod_spec(&mut spec);
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["containers"][0]["ports"][0]["protocol"], "TCP");
    }
}
