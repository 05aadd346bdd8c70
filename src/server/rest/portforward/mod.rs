//! `pods/portforward`: kubectl (v1.31+) first asks for a WebSocket with the
//! subprotocol `SPDY/3.1+portforward.k8s.io` and tunnels SPDY/3.1 frames in
//! its binary messages; older clients (and kubectl's fallback) upgrade the
//! HTTP connection to `SPDY/3.1` with `X-Stream-Protocol-Version:
//! portforward.k8s.io`. Both end in the same [`session`]. Client libraries
//! use the WebSocket channel protocol instead ([`channels`]). Pods on other
//! nodes are proxied to their agent's `/portForward/{ns}/{pod}`.

pub mod channels;
pub mod frame;
pub mod session;

use super::Call;
use crate::agent::exec::ContainerStreams;
use crate::server::error::ApiError;
use axum::extract::FromRequestParts;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::request::Parts;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::sync::Arc;

/// The port-forward stream protocol (upstream's `PortForwardProtocolV1Name`).
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of SPDY tunnelled in WebSocket.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
const SPDY_UPGRADE: &str = "SPDY/3.1";

/// Serves `GET`/`POST .../pods/<name>/portforward`.
pub async fn portforward(call: Call, mut parts: Parts) -> Result<Response, ApiError> {
    let pod = call.state.registry.get(&call.resource, call.namespace(), call.name()).await?;
    check_running(&pod)?;
    if let Some(agent) = super::node_proxy::remote_agent(&call.state, &pod).await? {
        let namespace = call.namespace().unwrap_or("default");
        let path = format!("/portForward/{namespace}/{}?{}", call.name(), parts.uri.query().unwrap_or_default());
        tracing::info!(pod = %call.name(), %agent, "port-forward on another node");
        return super::node_proxy::upgrade(&call.state, agent, &path, &mut parts).await;
    }
    let streams = parts
        .extensions
        .get::<Arc<dyn ContainerStreams>>()
        .cloned()
        .ok_or_else(|| ApiError::bad_request("this server runs no agent"))?;
    accept(&mut parts, target(&pod, streams)).await
}

/// Upstream's apiserver refuses port-forward to pods that cannot have a port open.
pub fn check_running(pod: &Value) -> Result<(), ApiError> {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    match pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default() {
        "Running" => Ok(()),
        phase => Err(ApiError::bad_request(format!(
            "unable to forward port because pod {name} is not running. Current status={phase}"
        ))),
    }
}

/// Where `pod`'s connections go.
pub fn target(pod: &Value, streams: Arc<dyn ContainerStreams>) -> session::Target {
    let text = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
    let pod_value = pod.clone();
    let dial: session::Dial = Arc::new(move |port| streams.dial(&pod_value, port));
    session::Target {
        dial,
        pod: format!("{}_{}", text("/metadata/name"), text("/metadata/namespace")),
        uid: text("/metadata/uid"),
        pair_timeout: session::PAIR_TIMEOUT,
    }
}

fn header_has(parts: &Parts, name: http::header::HeaderName, wanted: &str) -> bool {
    parts
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(wanted))
}

/// Upgrades the request (WebSocket tunnel or SPDY) and serves the session on it.
pub async fn accept(parts: &mut Parts, target: session::Target) -> Result<Response, ApiError> {
    if header_has(parts, http::header::UPGRADE, SPDY_UPGRADE) {
        return spdy(parts, target);
    }
    let upgrade = WebSocketUpgrade::from_request_parts(parts, &())
        .await
        .map_err(|rejection| ApiError::bad_request(format!("Upgrade request required: {rejection}")))?;
    if !header_has(parts, http::header::SEC_WEBSOCKET_PROTOCOL, TUNNEL_PROTOCOL) {
        return channel_protocol(parts, upgrade, target);
    }
    tracing::info!(pod = %target.pod, "port-forward (SPDY over WebSocket)");
    Ok(upgrade.protocols([TUNNEL_PROTOCOL]).on_upgrade(move |socket| async move {
        let (sink, source) = socket.split();
        let incoming = source.map(|message| match message {
            Ok(Message::Binary(bytes)) => Ok(bytes),
            Ok(Message::Close(_)) => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed")),
            Ok(_) => Ok(Bytes::new()),
            Err(err) => Err(std::io::Error::other(err)),
        });
        let outgoing = sink
            .sink_map_err(std::io::Error::other)
            .with(|bytes: Bytes| futures::future::ready(Ok::<_, std::io::Error>(Message::Binary(bytes))));
        session::serve(incoming, outgoing, target).await;
    }))
}

/// The WebSocket channel protocol (`v4.channel.k8s.io` or none) with the `ports` query.
fn channel_protocol(parts: &Parts, upgrade: WebSocketUpgrade, target: session::Target) -> Result<Response, ApiError> {
    let requested: Vec<&str> = parts
        .headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim))
        .filter(|p| !p.is_empty())
        .collect();
    let v4 = requested.contains(&channels::V4);
    if !requested.is_empty() && !v4 {
        return Err(ApiError::bad_request(format!(
            "requested protocol(s) are not supported: {requested:?}; supports [{TUNNEL_PROTOCOL:?}, {:?}]",
            channels::V4
        )));
    }
    let ports = channels::ports(parts.uri.query().unwrap_or_default()).map_err(ApiError::bad_request)?;
    tracing::info!(pod = %target.pod, ?ports, "port-forward (WebSocket channels)");
    let upgrade = if v4 { upgrade.protocols([channels::V4]) } else { upgrade };
    Ok(upgrade.on_upgrade(move |socket| channels::serve(socket, ports, target)))
}

/// The plain SPDY/3.1 upgrade: 101, then SPDY frames on the connection itself.
fn spdy(parts: &mut Parts, target: session::Target) -> Result<Response, ApiError> {
    if !header_has(parts, http::header::HeaderName::from_static("x-stream-protocol-version"), PROTOCOL) {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade: unable to negotiate protocol: client supports none of [{PROTOCOL}]"
        )));
    }
    let on_upgrade = parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| ApiError::bad_request("Upgrade request required"))?;
    tracing::info!(pod = %target.pod, "port-forward (SPDY)");
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(error = %err, "SPDY upgrade failed");
                return;
            }
        };
        let (read, write) = tokio::io::split(TokioIo::new(upgraded));
        let incoming = tokio_util::io::ReaderStream::new(read);
        let outgoing = tokio_util::codec::FramedWrite::new(write, tokio_util::codec::BytesCodec::new());
        session::serve(incoming, outgoing, target).await;
    });
    Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, SPDY_UPGRADE)
        .header("X-Stream-Protocol-Version", PROTOCOL)
        .body(axum::body::Body::empty())
        .map_err(|err| ApiError::internal("build the upgrade response", &err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_running_pods() {
        assert!(check_running(&json!({"metadata": {"name": "web"}, "status": {"phase": "Running"}})).is_ok());
        let err = check_running(&json!({"metadata": {"name": "web"}, "status": {"phase": "Pending"}})).expect_err("no");
        assert_eq!(err.message, "unable to forward port because pod web is not running. Current status=Pending");
    }
}
