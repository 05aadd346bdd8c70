//! `pods/attach`: the live output of a container's main process, from the
//! agent's log of the current run (stdout and stderr arrive merged on the
//! stdout channel) until the container exits. Attaching stdin is refused:
//! the agent does not keep containers' stdin open.

use super::Call;
use super::channel;
use super::exec::{close_normal, exec_request, streams_error, upgrade};
use crate::agent::exec::ContainerStreams;
use crate::agent::logs::{LogOptions, Logs};
use crate::server::error::ApiError;
use axum::extract::ws::{Message, WebSocket};
use axum::response::Response;
use futures::{SinkExt, Stream, StreamExt};
use http::request::Parts;
use std::sync::Arc;

/// Serves `GET`/`POST .../pods/<name>/attach`.
pub async fn attach(call: Call, mut parts: Parts) -> Result<Response, ApiError> {
    let pod = call.state.registry.get(&call.resource, call.namespace(), call.name()).await?;
    let request = exec_request(parts.uri.query().unwrap_or_default(), &pod, true)?;
    if request.stdin {
        return Err(ApiError::bad_request(format!(
            "cannot attach to the stdin of container {}: this node does not keep container stdin open; \
             use kubectl attach without -i, or kubectl exec",
            request.container
        )));
    }
    let streams = parts.extensions.get::<Arc<dyn ContainerStreams>>().cloned();
    let logs = parts.extensions.get::<Logs>().cloned();
    let (Some(streams), Some(logs)) = (streams, logs) else {
        return Err(ApiError::bad_request("this server runs no agent"));
    };
    streams.check_running(&pod, &request.container).map_err(streams_error)?;
    let uid = crate::agent::static_pods::runtime_uid(&pod);
    let options = LogOptions { follow: true, tail_lines: Some(0), timestamps: false, previous: false };
    let output = logs
        .open(uid, &request.container, options)
        .map_err(|err| ApiError::bad_request(format!("cannot attach to container {}: {err}", request.container)))?;
    let upgrade = upgrade(&mut parts).await?;
    tracing::info!(pod = %call.name(), container = %request.container, "attach");
    Ok(upgrade.on_upgrade(move |socket| pump(socket, output)))
}

/// Forwards the output until the container's run ends or the client leaves.
async fn pump(socket: WebSocket, output: impl Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static) {
    let (mut sink, mut source) = socket.split();
    let mut output = std::pin::pin!(output);
    if sink.send(Message::Binary(channel::frame(channel::STDOUT, b""))).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            chunk = output.next() => match chunk {
                Some(Ok(bytes)) => {
                    if sink.send(Message::Binary(channel::frame(channel::STDOUT, &bytes))).await.is_err() {
                        return;
                    }
                }
                Some(Err(_)) | None => break,
            },
            message = source.next() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let status = channel::exit_status(0);
    let _ = sink.send(Message::Binary(channel::frame(channel::ERROR, status.to_string().as_bytes()))).await;
    let _ = sink.send(close_normal()).await;
}
