//! Writes kubeconfig files (the admin's, and later nodes') with the CA and
//! client certificate embedded, as `kubectl` and `helm` read them.

use super::pki::{self, CertPair, PkiError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use std::path::Path;

/// The YAML of a kubeconfig with one cluster, user and context, all named `default` (as k3s).
pub fn render(server_url: &str, ca_pem: &str, client: &CertPair) -> String {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default", "cluster": {
            "server": server_url,
            "certificate-authority-data": STANDARD.encode(ca_pem),
        }}],
        "users": [{"name": "default", "user": {
            "client-certificate-data": STANDARD.encode(&client.cert_pem),
            "client-key-data": STANDARD.encode(&client.key_pem),
        }}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "current-context": "default",
        "preferences": {},
    });
    serde_norway::to_string(&config).unwrap_or_default()
}

/// Writes the kubeconfig to `path` with file mode `mode`.
pub fn write(path: &Path, server_url: &str, ca_pem: &str, client: &CertPair, mode: u32) -> Result<(), PkiError> {
    pki::write(path, &render(server_url, ca_pem, client), mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_kubeconfig_kubectl_reads() {
        let pair = CertPair { cert_pem: "CERT".into(), key_pem: "KEY".into() };
        let text = render("https://127.0.0.1:6443", "CA", &pair);
        let value: serde_json::Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(value["clusters"][0]["cluster"]["server"], "https://127.0.0.1:6443");
        assert_eq!(value["users"][0]["user"]["client-key-data"], STANDARD.encode("KEY"));
        assert_eq!(value["current-context"], "default");
    }
}
