//! `pods/exec` (and `pods/attach`'s checks): validates the request against
//! the pod, upgrades to a WebSocket speaking the channel protocol, and pumps
//! the process's streams between kubectl and the node's [`ContainerStreams`].
//! SPDY upgrades (kubectl's fallback) get a clear error.

use super::Call;
use super::channel::{self, ClientFrame};
use crate::agent::exec::{ContainerStreams, ExecError, ExecRequest, Output};
use crate::server::error::ApiError;
use axum::extract::FromRequestParts;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use http::request::Parts;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// How long a TTY session waits for kubectl's terminal size before starting the process.
const FIRST_RESIZE_WAIT: Duration = Duration::from_secs(1);
/// How long output may still drain after the process exited.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// The query of an exec request, with `command` repeated.
pub(crate) fn exec_request(query: &str, pod: &Value, attach: bool) -> Result<ExecRequest, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let flag = |name: &str| pairs.iter().any(|(k, v)| k == name && matches!(v.as_str(), "true" | "1"));
    let command: Vec<String> = pairs.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let (stdin, stdout, stderr, tty) = (flag("stdin"), flag("stdout"), flag("stderr"), flag("tty"));
    if !stdin && !stdout && !stderr {
        return Err(ApiError::bad_request("you must specify at least 1 of stdin, stdout, stderr"));
    }
    if !attach && command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least one command for the container"));
    }
    let container = pairs.iter().find(|(k, v)| k == "container" && !v.is_empty()).map(|(_, v)| v.clone());
    let container = resolve_container(pod, name, container)?;
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return Err(ApiError::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        )));
    }
    Ok(ExecRequest { container, command, stdin, stdout, stderr: stderr && !tty, tty, terminal_size: None })
}

fn container_names(pod: &Value) -> Vec<String> {
    ["/spec/containers", "/spec/initContainers", "/spec/ephemeralContainers"]
        .iter()
        .flat_map(|p| pod.pointer(p).and_then(Value::as_array).cloned().unwrap_or_default())
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The container named in the request, or the pod's only container.
fn resolve_container(pod: &Value, pod_name: &str, container: Option<String>) -> Result<String, ApiError> {
    let names = container_names(pod);
    match container {
        Some(c) if names.contains(&c) => Ok(c),
        Some(c) => Err(ApiError::bad_request(format!("container {c} is not valid for pod {pod_name}"))),
        None => {
            let apps: Vec<&str> = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect();
            match apps.as_slice() {
                [only] => Ok(only.to_string()),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    apps.join(" ")
                ))),
            }
        }
    }
}

pub(crate) fn streams_error(err: ExecError) -> ApiError {
    match err {
        ExecError::NotRunning { .. } => ApiError::bad_request(err.to_string()),
        other => ApiError::internal("exec", &other),
    }
}

/// Serves `GET`/`POST .../pods/<name>/exec`.
pub async fn exec(call: Call, mut parts: Parts) -> Result<Response, ApiError> {
    let pod = call.state.registry.get(&call.resource, call.namespace(), call.name()).await?;
    let request = exec_request(parts.uri.query().unwrap_or_default(), &pod, false)?;
    if let Some(agent) = super::node_proxy::remote_agent(&call.state, &pod).await? {
        let namespace = call.namespace().unwrap_or("default");
        let path = format!(
            "/exec/{namespace}/{}/{}?{}",
            call.name(),
            request.container,
            parts.uri.query().unwrap_or_default()
        );
        tracing::info!(pod = %call.name(), container = %request.container, %agent, "exec on another node");
        return super::node_proxy::upgrade(&call.state, agent, &path, &mut parts).await;
    }
    let streams = parts
        .extensions
        .get::<Arc<dyn ContainerStreams>>()
        .cloned()
        .ok_or_else(|| ApiError::bad_request("this server runs no agent"))?;
    streams.check_running(&pod, &request.container).map_err(streams_error)?;
    let upgrade = upgrade(&mut parts).await?;
    let protocol = upgrade.selected_protocol().and_then(|p| p.to_str().ok()).unwrap_or_default().to_string();
    tracing::info!(pod = %call.name(), container = %request.container, tty = request.tty, "exec");
    Ok(upgrade.on_upgrade(move |socket| async move {
        pump(socket, &protocol, request, streams.as_ref(), &pod).await;
    }))
}

/// The WebSocket upgrade, or why there is none.
pub(crate) async fn upgrade(parts: &mut Parts) -> Result<WebSocketUpgrade, ApiError> {
    let spdy = parts
        .headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("spdy"));
    if spdy {
        return Err(ApiError::bad_request(
            "SPDY streams are not supported by this server; use a kubectl that speaks WebSocket (v1.30 or newer)",
        ));
    }
    let upgrade = WebSocketUpgrade::from_request_parts(parts, &())
        .await
        .map_err(|rejection| ApiError::bad_request(format!("Upgrade request required: {rejection}")))?;
    let requested: Vec<String> = parts
        .headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    if !channel::PROTOCOLS.iter().any(|p| requested.iter().any(|r| r == p)) {
        return Err(ApiError::bad_request(format!(
            "requested protocol(s) are not supported: {requested:?}; supports {:?}",
            channel::PROTOCOLS
        )));
    }
    Ok(upgrade.protocols(channel::PROTOCOLS))
}

/// Moves bytes until the process exited and its output drained, then sends
/// the exit status on the error channel and closes the socket normally.
pub(crate) async fn pump(
    socket: WebSocket,
    protocol: &str,
    mut request: ExecRequest,
    streams: &dyn ContainerStreams,
    pod: &Value,
) {
    let (mut sink, mut source) = socket.split();
    let mut early = Vec::new();
    if request.tty {
        // kubectl sends its terminal size first: start the process with it.
        let wait = tokio::time::sleep(FIRST_RESIZE_WAIT);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                message = source.next() => match message {
                    Some(Ok(Message::Binary(data))) => {
                        if let Ok(ClientFrame::Resize(size)) = channel::decode(protocol, &data) {
                            request.terminal_size = Some(size);
                            break;
                        }
                        early.push(Ok(Message::Binary(data)));
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => {}
                },
                _ = &mut wait => break,
            }
        }
    }
    let session = streams.exec(pod, request.clone()).await;
    let mut source = futures::stream::iter(early).chain(source);
    let mut session = match session {
        Ok(session) => session,
        Err(err) => {
            let status = channel::failure_status(&err.to_string());
            let _ = sink.send(Message::Binary(channel::frame(channel::ERROR, status.to_string().as_bytes()))).await;
            let _ = sink.send(close_normal()).await;
            return;
        }
    };
    // The first (empty) message tells the client the streams are open.
    let first = if request.stdout || request.tty { channel::STDOUT } else { channel::ERROR };
    if sink.send(Message::Binary(channel::frame(first, b""))).await.is_err() {
        return;
    }
    let mut stdin = session.stdin.take();
    let resize = session.resize.take();
    let protocol = protocol.to_string();
    let mut reader = tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            match channel::decode(&protocol, &data) {
                Ok(ClientFrame::Stdin(bytes)) => {
                    if let Some(tx) = &stdin
                        && tx.send(bytes).await.is_err()
                    {
                        stdin = None;
                    }
                }
                Ok(ClientFrame::Resize(size)) => {
                    if let Some(tx) = &resize {
                        let _ = tx.send(size).await;
                    }
                }
                Ok(ClientFrame::CloseStdin) => stdin = None,
                Ok(ClientFrame::Ignored) => {}
                Err(message) => {
                    tracing::debug!(%message, "exec stream protocol error");
                    break;
                }
            }
        }
    });
    let mut exit: Option<i32> = None;
    let mut output_open = true;
    let mut client_gone = false;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    while output_open || exit.is_none() {
        let drain = async {
            match drain_deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            chunk = session.output.recv(), if output_open => match chunk {
                Some(Output::Stdout(bytes)) => {
                    if sink.send(Message::Binary(channel::frame(channel::STDOUT, &bytes))).await.is_err() { break }
                }
                Some(Output::Stderr(bytes)) => {
                    if sink.send(Message::Binary(channel::frame(channel::STDERR, &bytes))).await.is_err() { break }
                }
                None => output_open = false,
            },
            code = &mut session.exit, if exit.is_none() => {
                exit = Some(code.unwrap_or(255));
                drain_deadline = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            }
            _ = drain => break,
            _ = &mut reader, if !client_gone => {
                // Without stdin the client only reads; a closed socket means it left.
                client_gone = true;
                if exit.is_none() {
                    break;
                }
            }
        }
    }
    reader.abort();
    match exit {
        Some(code) => {
            let status = channel::exit_status(code);
            let _ = sink.send(Message::Binary(channel::frame(channel::ERROR, status.to_string().as_bytes()))).await;
            let _ = sink.send(close_normal()).await;
        }
        // The client went away first: the session's guard kills the process.
        None => session.kill(),
    }
}

pub(super) fn close_normal() -> Message {
    Message::Close(Some(CloseFrame { code: close_code::NORMAL, reason: "".into() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: &[&str]) -> Value {
        let list: Vec<Value> = containers.iter().map(|n| json!({"name": n, "image": "busybox"})).collect();
        json!({"metadata": {"name": "web"}, "spec": {"containers": list}, "status": {"phase": "Running"}})
    }

    #[test]
    fn reads_repeated_commands_and_flags() {
        let request = exec_request(
            "command=sh&command=-c&command=echo+hi&stdout=true&stderr=true&tty=false",
            &pod(&["c"]),
            false,
        )
        .expect("valid");
        assert_eq!(request.command, ["sh", "-c", "echo hi"]);
        assert_eq!(request.container, "c");
        assert!(request.stdout && request.stderr && !request.stdin && !request.tty);
        let tty =
            exec_request("command=sh&stdin=true&stdout=true&stderr=true&tty=true", &pod(&["c"]), false).expect("valid");
        assert!(tty.tty && !tty.stderr, "a terminal merges stderr into stdout");
    }

    #[test]
    fn rejects_what_upstream_rejects() {
        let err = exec_request("command=ls", &pod(&["c"]), false).expect_err("no streams");
        assert!(err.message.contains("at least 1 of stdin, stdout, stderr"));
        let err = exec_request("stdout=true", &pod(&["c"]), false).expect_err("no command");
        assert!(err.message.contains("at least one command"));
        let err = exec_request("command=ls&stdout=true", &pod(&["a", "b"]), false).expect_err("which container");
        assert_eq!(err.message, "a container name must be specified for pod web, choose one of: [a b]");
        let err = exec_request("command=ls&stdout=true&container=x", &pod(&["a"]), false).expect_err("unknown");
        assert_eq!(err.message, "container x is not valid for pod web");
        let mut done = pod(&["a"]);
        done["status"]["phase"] = json!("Succeeded");
        let err = exec_request("command=ls&stdout=true", &done, false).expect_err("completed");
        assert!(err.message.contains("completed pod"));
        let ok = exec_request("command=ls&stdout=true&container=b", &pod(&["a", "b"]), false).expect("b");
        assert_eq!(ok.container, "b");
    }
}
