//! The agent's own HTTPS API (the kubelet port, 10250): `GET
//! /containerLogs/{ns}/{pod}/{container}`, `/exec/{ns}/{pod}/{container}`
//! (WebSocket, the channel protocol the API server speaks to kubectl) and
//! `/portForward/{ns}/{pod}` (SPDY, tunnelled in WebSocket or not), which the
//! API server proxies `pods/log`, `pods/exec` and `pods/portforward` of this
//! node's pods to, and `GET /stats/summary` (resource usage, [`super::stats`])
//! it scrapes for `metrics.k8s.io`.
//! Only the API server may call it: a client certificate signed by the
//! cluster CA naming `kube-apiserver-kubelet-client`; anything else gets 401/403.
//! The serving certificate is self-signed, as upstream's kubelet does without
//! a serving CSR.

use super::AgentConfig;
use super::exec::{ContainerStreams, LocalStreams};
use crate::server::client::Client;
use crate::server::error::ApiError;
use crate::server::listener::{self, PeerIdentity, TlsMaterial};
use crate::server::rest::exec as rest_exec;
use crate::server::rest::node_proxy::{DEFAULT_KUBELET_PORT, KUBELET_CLIENT_USER};
use crate::server::rest::portforward as rest_portforward;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::request::Parts;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum KubeletServerError {
    #[error("cannot make the agent's serving certificate")]
    Certificate(#[from] rcgen::Error),
    #[error(transparent)]
    Listener(#[from] listener::ListenerError),
}

/// What the handlers share.
#[derive(Clone)]
struct Served {
    client: Client,
    config: AgentConfig,
    streams: Arc<dyn ContainerStreams>,
}

fn to_response(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Refuses every caller but the API server.
fn authorize(parts: &Parts) -> Result<(), ApiError> {
    let user = parts.extensions.get::<PeerIdentity>().and_then(|p| p.0.clone()).ok_or_else(ApiError::unauthorized)?;
    if user.name != KUBELET_CLIENT_USER {
        return Err(ApiError::new(
            403,
            crate::server::error::Reason::Forbidden,
            format!("user {} may not use the node's API (only {KUBELET_CLIENT_USER})", user.name),
        ));
    }
    Ok(())
}

async fn pod(served: &Served, namespace: &str, name: &str) -> Result<serde_json::Value, ApiError> {
    let pod = served.client.get(&format!("/api/v1/namespaces/{namespace}/pods/{name}")).await?;
    let node = pod.pointer("/spec/nodeName").and_then(serde_json::Value::as_str).unwrap_or_default();
    if node != served.config.node_name {
        return Err(ApiError::bad_request(format!(
            "pod {namespace}/{name} runs on node {node:?}, not on {}",
            served.config.node_name
        )));
    }
    Ok(pod)
}

async fn container_logs(
    State(served): State<Served>,
    Path((namespace, name, container)): Path<(String, String, String)>,
    Query(mut params): Query<HashMap<String, String>>,
    request: axum::extract::Request,
) -> Response {
    let (parts, _) = request.into_parts();
    to_response(
        async {
            authorize(&parts)?;
            let pod = pod(&served, &namespace, &name).await?;
            params.insert("container".into(), container);
            super::logs::respond(&served.config.logs(), &pod, &params)
        }
        .await,
    )
}

async fn exec(
    State(served): State<Served>,
    Path((namespace, name, container)): Path<(String, String, String)>,
    request: axum::extract::Request,
) -> Response {
    let (mut parts, _) = request.into_parts();
    to_response(
        async {
            authorize(&parts)?;
            let pod = pod(&served, &namespace, &name).await?;
            let query = format!("{}&container={container}", parts.uri.query().unwrap_or_default());
            let request = rest_exec::exec_request(&query, &pod, false)?;
            served.streams.check_running(&pod, &request.container).map_err(rest_exec::streams_error)?;
            let upgrade = rest_exec::upgrade(&mut parts).await?;
            let protocol = upgrade.selected_protocol().and_then(|p| p.to_str().ok()).unwrap_or_default().to_string();
            tracing::info!(pod = %name, %container, tty = request.tty, "exec for the API server");
            let streams = served.streams.clone();
            Ok(upgrade.on_upgrade(move |socket| async move {
                rest_exec::pump(socket, &protocol, request, streams.as_ref(), &pod).await;
            }))
        }
        .await,
    )
}

async fn port_forward(
    State(served): State<Served>,
    Path((namespace, name)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    let (mut parts, _) = request.into_parts();
    to_response(
        async {
            authorize(&parts)?;
            let pod = pod(&served, &namespace, &name).await?;
            rest_portforward::check_running(&pod)?;
            tracing::info!(pod = %name, "port-forward for the API server");
            rest_portforward::accept(&mut parts, rest_portforward::target(&pod, served.streams.clone())).await
        }
        .await,
    )
}

async fn stats_summary(State(served): State<Served>, request: axum::extract::Request) -> Response {
    let (parts, _) = request.into_parts();
    to_response(
        async {
            authorize(&parts)?;
            let (node, logs) = (served.config.node_name.clone(), served.config.data_dir.join("logs"));
            let summary = tokio::task::spawn_blocking(move || super::stats::collect_host(&node, &logs))
                .await
                .map_err(|err| ApiError::internal("collect resource usage", &err))?
                .map_err(|err| ApiError::internal("collect resource usage", &err))?;
            Ok(axum::Json(summary).into_response())
        }
        .await,
    )
}

fn router(served: Served) -> Router {
    Router::new()
        .route("/stats/summary", get(stats_summary))
        .route("/containerLogs/{namespace}/{pod}/{container}", get(container_logs))
        .route("/exec/{namespace}/{pod}/{container}", get(exec).post(exec))
        .route("/portForward/{namespace}/{pod}", get(port_forward).post(port_forward))
        .with_state(served)
}

/// A self-signed serving certificate for the node's address and name.
fn serving_certificate(config: &AgentConfig) -> Result<(String, String), KubeletServerError> {
    let names = vec![config.node_ip.to_string(), config.node_name.clone()];
    let certified = rcgen::generate_simple_self_signed(names)?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

/// Serves the agent's API on `<node-ip>:10250` until `shutdown`. `ca_pem`
/// is the cluster CA that signs the API server's client certificate. A port
/// that is taken is logged, not fatal: pods still run, only logs and exec
/// through the API fail.
pub async fn run(client: Client, config: AgentConfig, ca_pem: String, shutdown: CancellationToken) {
    let addr = SocketAddr::new(config.node_ip, DEFAULT_KUBELET_PORT);
    let started = async {
        let (cert_pem, key_pem) = serving_certificate(&config)?;
        let tls = listener::tls_config(&TlsMaterial { ca_pem: &ca_pem, cert_pem: &cert_pem, key_pem: &key_pem })?;
        let tcp = listener::bind(addr).await?;
        Ok::<_, KubeletServerError>((tls, tcp))
    };
    let (tls, tcp) = match started.await {
        Ok(pair) => pair,
        Err(err) => {
            tracing::error!(%addr, error = %err, "the agent's API (logs, exec) is not served");
            return;
        }
    };
    let streams = LocalStreams::shared(config.data_dir.clone());
    tracing::info!(%addr, "agent API listening");
    let served = Served { client, config, streams };
    listener::serve(tcp, tls, router(served), shutdown, Duration::from_secs(2)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::authn::UserInfo;
    use tower::ServiceExt;

    fn served() -> Router {
        let config =
            AgentConfig::new("n2", std::env::temp_dir().join("kube-kubelet-server-test"), [127, 0, 0, 1].into());
        let client = Client::new(Router::new(), super::super::node_user("n2"));
        router(Served { client, streams: LocalStreams::shared(config.data_dir.clone()), config })
    }

    async fn status(identity: Option<PeerIdentity>, uri: &str) -> u16 {
        let mut request = http::Request::get(uri).body(axum::body::Body::empty()).expect("request");
        if let Some(identity) = identity {
            request.extensions_mut().insert(identity);
        }
        served().oneshot(request).await.expect("response").status().as_u16()
    }

    #[tokio::test]
    async fn only_the_api_server_may_call_the_agent() {
        let logs = "/containerLogs/default/web/main";
        assert_eq!(status(None, logs).await, 401);
        assert_eq!(status(Some(PeerIdentity(None)), logs).await, 401);
        let admin = PeerIdentity(Some(UserInfo::new("system:admin", ["system:masters".to_string()])));
        assert_eq!(status(Some(admin.clone()), logs).await, 403);
        assert_eq!(status(Some(admin.clone()), "/exec/default/web/main?command=ls&stdout=1").await, 403);
        assert_eq!(status(Some(admin), "/stats/summary").await, 403);
        assert_eq!(status(None, "/stats/summary").await, 401);
        // The API server passes authorization (the pod lookup then fails: no API here).
        let apiserver = PeerIdentity(Some(UserInfo::new(KUBELET_CLIENT_USER, Vec::new())));
        let code = status(Some(apiserver), logs).await;
        assert!(code != 401 && code != 403, "the API server was refused: {code}");
        // The usage summary needs no API: the host's procfs and no pods of this agent.
        let apiserver = PeerIdentity(Some(UserInfo::new(KUBELET_CLIENT_USER, Vec::new())));
        assert_eq!(status(Some(apiserver), "/stats/summary").await, 200);
    }
}
