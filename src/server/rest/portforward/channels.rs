//! Port-forward over the WebSocket channel protocol (`v4.channel.k8s.io`,
//! or no subprotocol), as the official client libraries (Python's
//! `kubernetes.stream.portforward`) speak it and upstream's kubelet
//! (`portforward/websocket.go`) serves it: the ports come in the `ports`
//! query; port i has data channel 2i and error channel 2i+1; the server
//! first sends the port (u16, little endian) on both; every port is dialled
//! at once; the WebSocket closes when every port's connection is done.

use super::session::Target;
use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const V4: &str = "v4.channel.k8s.io";
/// How much of the pod's output goes into one message.
const CHUNK: usize = 32 * 1024;

/// The ports of a request's `ports` query (repeated or comma separated), as upstream checks them.
pub fn ports(query: &str) -> Result<Vec<u16>, String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let values: Vec<&str> = pairs.iter().filter(|(k, _)| k == "ports").map(|(_, v)| v.as_str()).collect();
    if values.is_empty() {
        return Err("query parameter \"ports\" is required".into());
    }
    let mut ports = Vec::new();
    for value in values {
        if value.is_empty() {
            return Err("query parameter \"ports\" cannot be empty".into());
        }
        for text in value.split(',') {
            let port: u16 = text.parse().map_err(|err| format!("unable to parse {value:?} as a port: {err}"))?;
            if port == 0 {
                return Err(format!("port {value:?} must be > 0"));
            }
            ports.push(port);
        }
    }
    Ok(ports)
}

fn message(channel: usize, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel as u8);
    bytes.extend_from_slice(data);
    Message::Binary(Bytes::from(bytes))
}

/// Serves `ports` of `target` on `socket` until every port is done or the client left.
pub async fn serve(socket: WebSocket, ports: Vec<u16>, target: Target) {
    let (mut sink, mut source) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
        let _ = sink.close().await;
    });
    let gone = CancellationToken::new();
    let mut inputs = Vec::new();
    let mut forwards = tokio::task::JoinSet::new();
    for (i, port) in ports.into_iter().enumerate() {
        let (input, rx_input) = mpsc::channel::<Bytes>(16);
        inputs.push(Some(input));
        let (tx, gone, target) = (tx.clone(), gone.clone(), target.clone());
        forwards.spawn(async move {
            let (data, error) = (2 * i, 2 * i + 1);
            for channel in [data, error] {
                let _ = tx.send(message(channel, &port.to_le_bytes())).await;
            }
            tokio::select! {
                _ = forward(port, data, error, rx_input, &tx, &target) => {}
                _ = gone.cancelled() => {}
            }
        });
    }
    drop(tx);
    let reader = async {
        while let Some(Ok(message)) = source.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => return,
                _ => continue,
            };
            let Some((&channel, payload)) = data.split_first() else { continue };
            let channel = usize::from(channel);
            if channel % 2 == 0
                && let Some(slot) = inputs.get_mut(channel / 2)
                && let Some(input) = slot
                && input.send(Bytes::copy_from_slice(payload)).await.is_err()
            {
                *slot = None;
            }
        }
    };
    let all_done = async { while forwards.join_next().await.is_some() {} };
    tokio::select! {
        _ = reader => gone.cancel(),
        _ = all_done => {}
    }
    forwards.shutdown().await;
    let _ = writer.await;
}

/// One port's connection: dial, then copy both ways until the pod's side ends.
async fn forward(
    port: u16,
    data: usize,
    error: usize,
    mut input: mpsc::Receiver<Bytes>,
    out: &mpsc::Sender<Message>,
    target: &Target,
) {
    let tcp = match (target.dial)(port).await {
        Ok(tcp) => tcp,
        Err(err) => {
            let text = format!("error forwarding port {port} to pod {}, uid {}: {err}", target.pod, target.uid);
            tracing::info!(message = %text, "port-forward failed");
            let _ = out.send(message(error, text.as_bytes())).await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let writer = tokio::spawn(async move {
        while let Some(bytes) = input.recv().await {
            if to_pod.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to_pod.shutdown().await;
    });
    let mut chunk = vec![0u8; CHUNK];
    loop {
        match from_pod.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.send(message(data, &chunk[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
    writer.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_as_upstream_reads_them() {
        assert_eq!(ports("ports=8080"), Ok(vec![8080]));
        assert_eq!(ports("ports=80,443&ports=9000"), Ok(vec![80, 443, 9000]));
        assert_eq!(ports(""), Err("query parameter \"ports\" is required".to_string()));
        assert_eq!(ports("ports="), Err("query parameter \"ports\" cannot be empty".to_string()));
        assert!(ports("ports=http").expect_err("not a number").starts_with("unable to parse \"http\" as a port"));
        assert_eq!(ports("ports=0"), Err("port \"0\" must be > 0".to_string()));
    }

    #[test]
    fn messages_start_with_their_channel() {
        let Message::Binary(bytes) = message(3, &8080u16.to_le_bytes()) else { panic!("binary") };
        assert_eq!(&bytes[..], &[3, 0x90, 0x1f]);
    }
}
