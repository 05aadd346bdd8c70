//! The credentials of a pod's `imagePullSecrets`, read through the agent's
//! API client (the node authorizer lets a node read the secrets its pods
//! reference), and the kubelet's image pull back-off.

use super::image::Keyring;
use crate::server::client::Client;
use serde_json::Value;
use std::time::Duration;

/// A keyring of the pod's pull secrets; missing or unusable ones are
/// logged and skipped, as the kubelet does.
pub async fn keyring(client: &Client, pod: &Value) -> Keyring {
    let mut keyring = Keyring::default();
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
    let names = pod.pointer("/spec/imagePullSecrets").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut missing = Vec::new();
    for name in names.iter().filter_map(|s| s.get("name").and_then(Value::as_str)).filter(|n| !n.is_empty()) {
        match client.get(&format!("/api/v1/namespaces/{namespace}/secrets/{name}")).await {
            Ok(secret) if keyring.add_secret(&secret) => {}
            Ok(_) => tracing::warn!(secret = %name, "imagePullSecret is not a dockerconfigjson/dockercfg secret"),
            Err(err) => {
                tracing::debug!(secret = %name, error = %err.message, "cannot read imagePullSecret");
                missing.push(name.to_string());
            }
        }
    }
    if !missing.is_empty() {
        tracing::warn!(
            "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
            missing.join(", ")
        );
    }
    keyring
}

/// The wait before pull attempt `failures + 1` (the kubelet's: 10 s doubling to 300 s).
pub fn pull_backoff(failures: u32) -> Duration {
    Duration::from_secs(10u64.saturating_mul(1u64 << failures.saturating_sub(1).min(5)).min(300))
}

/// The waiting message while backing off, as the kubelet words it.
pub fn backoff_message(image: &str, pull_error: &str) -> String {
    format!("Back-off pulling image {image:?}: ErrImagePull: {pull_error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let secs: Vec<u64> = (1..=7).map(|n| pull_backoff(n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(
            backoff_message("busybox", "401 Unauthorized"),
            "Back-off pulling image \"busybox\": ErrImagePull: 401 Unauthorized"
        );
    }
}
