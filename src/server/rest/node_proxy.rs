//! `pods/log`, `pods/exec` and `pods/portforward` for pods on other nodes: the API server
//! forwards the request to the node's agent (its kubelet port, Node
//! `status.daemonEndpoints.kubeletEndpoint.Port`, on its InternalIP) over
//! HTTPS, authenticating with the `kube-apiserver-kubelet-client` client
//! certificate signed by the cluster CA, and streams the answer back. Exec
//! and port-forward upgrades are spliced byte for byte (as upstream's
//! upgrade-aware proxy does), so the session is between kubectl and the agent.
//! Like upstream's default (no `--kubelet-certificate-authority`), the
//! agent's serving certificate is not verified.

use crate::server::error::ApiError;
use crate::server::pki::{Authority, CertPair, Usage};
use crate::server::state::ApiState;
use axum::body::Body;
use axum::response::Response;
use http::request::Parts;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The user the API server is to agents (upstream's name for it).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// The kubelet port when the Node does not say.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The name of this server's own agent's node, if it runs one.
fn local_node(state: &ApiState) -> Option<String> {
    state.config.run_agent.then(|| crate::agent::AgentConfig::for_server(&state.config).node_name)
}

/// The agent address serving `pod`, when the pod runs on another node than
/// this server's own agent; `None` for local pods (served in-process).
pub async fn remote_agent(state: &ApiState, pod: &Value) -> Result<Option<SocketAddr>, ApiError> {
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!("pod {name} is not scheduled to a node yet")));
    }
    agent_address(state, node).await
}

/// The agent address of node `node`, or `None` when it is this server's own
/// agent (served in-process).
pub async fn agent_address(state: &ApiState, node: &str) -> Result<Option<SocketAddr>, ApiError> {
    if local_node(state).as_deref() == Some(node) {
        return Ok(None);
    }
    let nodes = state
        .catalog
        .lookup("", "v1", "nodes")
        .ok_or_else(|| ApiError::service_unavailable("the nodes resource is not registered"))?;
    let obj = state.registry.get(&nodes, None, node).await?;
    let address = obj
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        .and_then(|a| a.get("address").and_then(Value::as_str))
        .and_then(|a| a.parse::<std::net::IpAddr>().ok())
        .ok_or_else(|| ApiError::service_unavailable(format!("node {node} has no InternalIP address")))?;
    let port = obj
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok(Some(SocketAddr::new(address, port)))
}

/// The API server's client certificate for agents, issued once by the CA
/// and kept in `<data-dir>/tls/client-kubelet-proxy.{crt,key}`.
fn identity(state: &ApiState) -> Result<CertPair, ApiError> {
    let dir = state.config.data_dir.join("tls");
    let ca = Authority::load_or_create(&dir).map_err(|err| ApiError::internal("load the cluster CA", &err))?;
    ca.load_or_issue(
        &dir,
        "client-kubelet-proxy",
        KUBELET_CLIENT_USER,
        Usage::Client { user: KUBELET_CLIENT_USER, groups: &[] },
        |_| true,
    )
    .map_err(|err| ApiError::internal("issue the kubelet client certificate", &err))
}

fn tls_client(identity: &CertPair) -> Result<rustls::ClientConfig, ApiError> {
    let bad = |err: &dyn std::fmt::Display| ApiError::internal("load the kubelet client certificate", err);
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes()).collect::<Result<_, _>>().map_err(|e| bad(&e))?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).map_err(|e| bad(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::server::client::AcceptAnyServer(provider)))
        .with_client_auth_cert(certs, key)
        .map_err(|e| bad(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Sends one HTTP/1.1 request to the agent at `addr` (upgrades allowed).
async fn send(
    state: &ApiState,
    addr: SocketAddr,
    request: http::Request<Body>,
) -> Result<Response<hyper::body::Incoming>, ApiError> {
    let unreachable =
        |err: &dyn std::fmt::Display| ApiError::service_unavailable(format!("cannot reach the agent at {addr}: {err}"));
    let config = tls_client(&identity(state)?)?;
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| unreachable(&"connection timed out"))?
        .map_err(|e| unreachable(&e))?;
    let name = ServerName::IpAddress(addr.ip().into());
    let tls =
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| unreachable(&e))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| unreachable(&e))?;
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(error = %err, "agent connection ended with an error");
        }
    });
    sender.send_request(request).await.map_err(|e| unreachable(&e))
}

/// `pods/log` of a pod on another node: `GET /containerLogs/{ns}/{pod}/{container}?query`.
pub async fn logs(
    state: &ApiState,
    addr: SocketAddr,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &str,
) -> Result<Response, ApiError> {
    let uri = format!("/containerLogs/{namespace}/{pod}/{container}?{query}");
    let request = http::Request::get(&uri)
        .header(http::header::HOST, addr.to_string())
        .body(Body::empty())
        .map_err(|err| ApiError::internal("build the agent request", &err))?;
    let response = send(state, addr, request).await?;
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// `GET /stats/summary` of the agent at `addr`: the node's resource usage.
pub async fn stats_summary(state: &ApiState, addr: SocketAddr) -> Result<crate::agent::stats::Summary, ApiError> {
    use http_body_util::BodyExt;
    let request = http::Request::get("/stats/summary")
        .header(http::header::HOST, addr.to_string())
        .body(Body::empty())
        .map_err(|err| ApiError::internal("build the agent request", &err))?;
    let response = send(state, addr, request).await?;
    let status = response.status();
    let body = tokio::time::timeout(CONNECT_TIMEOUT, response.into_body().collect())
        .await
        .map_err(|_| ApiError::service_unavailable(format!("the agent at {addr} did not answer in time")))?
        .map_err(|err| ApiError::service_unavailable(format!("reading the agent at {addr}: {err}")))?
        .to_bytes();
    if !status.is_success() {
        return Err(ApiError::service_unavailable(format!("the agent at {addr} answered {status}")));
    }
    serde_json::from_slice(&body)
        .map_err(|err| ApiError::service_unavailable(format!("the agent at {addr} sent a bad summary: {err}")))
}

/// `pods/exec` of a pod on another node: forwards the upgrade request to
/// `/exec/{ns}/{pod}/{container}?query` and, once the agent switched
/// protocols, splices the client's connection to the agent's.
pub async fn upgrade(state: &ApiState, addr: SocketAddr, path: &str, parts: &mut Parts) -> Result<Response, ApiError> {
    let client_upgrade = parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| ApiError::bad_request("Upgrade request required"))?;
    let mut request = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Body::empty())
        .map_err(|err| ApiError::internal("build the agent request", &err))?;
    for (name, value) in &parts.headers {
        let forwarded = name == http::header::CONNECTION
            || name == http::header::UPGRADE
            || name.as_str().starts_with("sec-websocket-")
            || name.as_str().starts_with("x-stream-protocol-");
        if forwarded {
            request.headers_mut().append(name, value.clone());
        }
    }
    let mut response = send(state, addr, request).await?;
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = response.into_parts();
        return Ok(Response::from_parts(parts, Body::new(body)));
    }
    let agent_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (client, agent) = match (client_upgrade.await, agent_upgrade.await) {
            (Ok(client), Ok(agent)) => (client, agent),
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(error = %err, "exec upgrade to the agent failed");
                return;
            }
        };
        let (mut client, mut agent) = (TokioIo::new(client), TokioIo::new(agent));
        if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut agent).await {
            tracing::debug!(error = %err, "exec stream to the agent ended");
        }
    });
    let (parts, _) = response.into_parts();
    Ok(Response::from_parts(parts, Body::empty()))
}
