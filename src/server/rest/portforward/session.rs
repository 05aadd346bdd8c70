//! The server side of one port-forward connection, as upstream's kubelet
//! (`pkg/kubelet/cri/streaming/portforward/httpstream.go`) runs it: every
//! stream kubectl opens gets a SYN_REPLY; an error stream and a data stream
//! with the same `requestID` form a pair; the pair's port is dialled in the
//! pod and bytes are copied both ways; a failure is written as text on the
//! error stream; both streams are closed (FIN) when the pod's side is done.

use super::frame::{self, Decoder, Encoder, Frame, Headers};
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{Sink, SinkExt, Stream, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Opens a TCP connection to `port` of the pod (inside its network namespace).
pub type Dial = Arc<dyn Fn(u16) -> BoxFuture<'static, Result<TcpStream, String>> + Send + Sync>;

/// The pod the connection forwards to.
#[derive(Clone)]
pub struct Target {
    pub dial: Dial,
    /// `<name>_<namespace>`, as upstream's messages name the pod.
    pub pod: String,
    pub uid: String,
    /// How long half of a pair waits for its other half ([`PAIR_TIMEOUT`]).
    pub pair_timeout: Duration,
}

/// Upstream's default stream creation timeout.
pub const PAIR_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of the pod's output goes into one DATA frame.
const CHUNK: usize = 32 * 1024;
/// Frames queued toward the client before the pumps wait.
const OUTGOING: usize = 64;
/// DATA chunks queued toward the pod before the reader waits.
const INCOMING: usize = 16;

/// One half of a pair, until its other half arrives.
struct Pending {
    since: Instant,
    error: Option<u32>,
    data: Option<(u32, u16, mpsc::Receiver<Bytes>)>,
    bad_port: Option<String>,
}

/// A data stream's way to its forwarder.
struct DataStream {
    /// `None` once the client half-closed the stream (FIN).
    input: Option<mpsc::Sender<Bytes>>,
    reset: CancellationToken,
}

/// Serves port-forward streams read from `incoming` (the client's bytes)
/// and written to `outgoing` until the client closes the connection.
pub async fn serve<R, W>(mut incoming: R, outgoing: W, target: Target)
where
    R: Stream<Item = std::io::Result<Bytes>> + Unpin + Send,
    W: Sink<Bytes, Error = std::io::Error> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Frame>(OUTGOING);
    let writer = tokio::spawn(async move {
        let mut outgoing = Box::pin(outgoing);
        let mut encoder = Encoder::default();
        while let Some(frame) = rx.recv().await {
            let mut wire = BytesMut::new();
            if let Err(err) = encoder.encode(&frame, &mut wire) {
                tracing::warn!(error = %err, "cannot encode a port-forward frame");
                break;
            }
            if outgoing.send(wire.freeze()).await.is_err() {
                break;
            }
        }
        let _ = outgoing.close().await;
    });
    let session = CancellationToken::new();
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::new();
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut data_streams: HashMap<u32, DataStream> = HashMap::new();
    let target = Arc::new(target);
    let mut sweep = tokio::time::interval((target.pair_timeout / 4).max(Duration::from_millis(50)));
    'read: loop {
        let chunk = tokio::select! {
            chunk = incoming.next() => chunk,
            _ = sweep.tick() => {
                expire(&mut pending, target.pair_timeout, &tx).await;
                continue;
            }
        };
        let Some(Ok(chunk)) = chunk else { break };
        buf.extend_from_slice(&chunk);
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(error = %err, "port-forward protocol error");
                    let _ = tx.send(Frame::GoAway { last_good: 0, status: 1 }).await;
                    break 'read;
                }
            };
            match frame {
                Frame::SynStream { stream_id, headers, .. } => {
                    if tx.send(Frame::SynReply { stream_id, flags: 0, headers: Vec::new() }).await.is_err() {
                        break 'read;
                    }
                    let opened = Opened::read(stream_id, &headers);
                    let Some(opened) = opened else {
                        let _ = tx.send(Frame::RstStream { stream_id, status: frame::PROTOCOL_ERROR }).await;
                        continue;
                    };
                    let entry = pending.entry(opened.request.clone()).or_insert_with(|| Pending {
                        since: Instant::now(),
                        error: None,
                        data: None,
                        bad_port: None,
                    });
                    if opened.data {
                        let (input, rx_data) = mpsc::channel(INCOMING);
                        let reset = session.child_token();
                        data_streams.insert(stream_id, DataStream { input: Some(input), reset });
                        match opened.port {
                            Ok(port) => entry.data = Some((stream_id, port, rx_data)),
                            Err(message) => {
                                entry.bad_port = Some(message);
                                entry.data = Some((stream_id, 0, rx_data));
                            }
                        }
                    } else {
                        entry.error = Some(stream_id);
                    }
                    let complete = entry.error.is_some() && entry.data.is_some();
                    if complete
                        && let Some(Pending { error: Some(error), data: Some((data, port, input)), bad_port, .. }) =
                            pending.remove(&opened.request)
                    {
                        let reset = data_streams.get(&data).map(|d| d.reset.clone()).unwrap_or_default();
                        let pair = Pair { error, data, port, bad_port, input, reset };
                        tokio::spawn(forward(pair, tx.clone(), target.clone()));
                    }
                }
                Frame::Data { stream_id, flags, data } => {
                    let Some(stream) = data_streams.get_mut(&stream_id) else { continue };
                    if !data.is_empty()
                        && let Some(input) = &stream.input
                        && input.send(data).await.is_err()
                    {
                        stream.input = None;
                    }
                    if flags & frame::FLAG_FIN != 0 {
                        stream.input = None;
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    if let Some(stream) = data_streams.remove(&stream_id) {
                        stream.reset.cancel();
                    }
                }
                Frame::Ping { id } => {
                    if tx.send(Frame::Ping { id }).await.is_err() {
                        break 'read;
                    }
                }
                Frame::GoAway { .. } => break 'read,
                // No flow control (as spdystream), settings and headers change nothing here.
                Frame::Settings { .. }
                | Frame::WindowUpdate { .. }
                | Frame::Headers { .. }
                | Frame::SynReply { .. }
                | Frame::Unknown { .. } => {}
            }
        }
    }
    session.cancel();
    drop(tx);
    let _ = writer.await;
}

/// Drops half pairs older than `timeout`, telling the client on the error
/// stream as upstream does, and closes their streams.
async fn expire(pending: &mut HashMap<String, Pending>, timeout: Duration, tx: &mpsc::Sender<Frame>) {
    let expired: Vec<String> =
        pending.iter().filter(|(_, p)| p.since.elapsed() >= timeout).map(|(k, _)| k.clone()).collect();
    for request in expired {
        let Some(half) = pending.remove(&request) else { continue };
        tracing::info!(%request, "port-forward timed out waiting for streams");
        if let Some(error) = half.error {
            let text = format!("(request={request}) timed out waiting for streams");
            let _ = tx.send(Frame::data(error, Bytes::from(text))).await;
            let _ = tx.send(Frame::fin(error)).await;
        }
        if let Some((data, _, _)) = half.data {
            let _ = tx.send(Frame::fin(data)).await;
        }
    }
}

/// What a SYN_STREAM's headers say.
struct Opened {
    data: bool,
    request: String,
    port: Result<u16, String>,
}

impl Opened {
    /// `None` for a stream type that is neither `error` nor `data`.
    fn read(stream_id: u32, headers: &Headers) -> Option<Opened> {
        let data = match frame::header(headers, "streamType") {
            Some("error") => false,
            Some("data") => true,
            _ => return None,
        };
        // Clients before requestID sent the error stream first, the data stream next.
        let request = match frame::header(headers, "requestID") {
            Some(id) => id.to_string(),
            None if data => stream_id.saturating_sub(2).to_string(),
            None => stream_id.to_string(),
        };
        let text = frame::header(headers, "port").unwrap_or_default();
        let port = text
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("invalid port {text:?}: ports must be 1 to 65535"));
        Some(Opened { data, request, port })
    }
}

struct Pair {
    error: u32,
    data: u32,
    port: u16,
    bad_port: Option<String>,
    input: mpsc::Receiver<Bytes>,
    reset: CancellationToken,
}

/// How dialling the pair's port went.
enum Dialled {
    Connected(TcpStream),
    /// The text for the error stream.
    Failed(String),
    /// The client reset the data stream first.
    Reset,
}

/// Forwards one pair, then closes both streams.
async fn forward(mut pair: Pair, out: mpsc::Sender<Frame>, target: Arc<Target>) {
    let port = pair.port;
    let failed = |message: String| {
        Dialled::Failed(format!("error forwarding port {port} to pod {}, uid {}: {message}", target.pod, target.uid))
    };
    let dialled = match pair.bad_port.take() {
        Some(message) => Dialled::Failed(message),
        None => tokio::select! {
            dialled = (target.dial)(port) => dialled.map_or_else(failed, Dialled::Connected),
            _ = pair.reset.cancelled() => Dialled::Reset,
        },
    };
    match dialled {
        Dialled::Connected(tcp) => {
            tracing::debug!(pod = %target.pod, port, "forwarding a connection");
            let (mut from_pod, mut to_pod) = tcp.into_split();
            let mut input = pair.input;
            let writer = tokio::spawn(async move {
                while let Some(bytes) = input.recv().await {
                    if to_pod.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                let _ = to_pod.shutdown().await;
            });
            let reader = async {
                let mut chunk = vec![0u8; CHUNK];
                loop {
                    match from_pod.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if out.send(Frame::data(pair.data, Bytes::copy_from_slice(&chunk[..n]))).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            };
            tokio::select! {
                _ = reader => {}
                _ = pair.reset.cancelled() => {}
            }
            writer.abort();
        }
        Dialled::Reset => {}
        Dialled::Failed(message) => {
            tracing::info!(%message, "port-forward failed");
            let _ = out.send(Frame::data(pair.error, Bytes::from(message))).await;
        }
    }
    let _ = out.send(Frame::fin(pair.error)).await;
    let _ = out.send(Frame::fin(pair.data)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn headers(kind: &str, port: &str, request: &str) -> Headers {
        vec![("streamtype".into(), kind.into()), ("port".into(), port.into()), ("requestid".into(), request.into())]
    }

    fn open(stream_id: u32, headers: Headers) -> Frame {
        Frame::SynStream { stream_id, associated: 0, priority: 0, flags: 0, headers }
    }

    /// A client of [`serve`] in the test: frames in, frames out.
    struct Client {
        to_server: mpsc::Sender<std::io::Result<Bytes>>,
        from_server: mpsc::Receiver<Bytes>,
        encoder: Encoder,
        decoder: Decoder,
        buf: BytesMut,
    }

    impl Client {
        fn start(target: Target) -> (Client, tokio::task::JoinHandle<()>) {
            let (to_server, incoming) = mpsc::channel(16);
            let (outgoing, from_server) = mpsc::channel::<Bytes>(16);
            let sink = futures::sink::unfold(outgoing, |tx, bytes: Bytes| async move {
                tx.send(bytes).await.map_err(|_| std::io::Error::other("closed"))?;
                Ok::<_, std::io::Error>(tx)
            });
            let incoming = tokio_stream_from(incoming);
            let server = tokio::spawn(serve(incoming, sink, target));
            let client = Client {
                to_server,
                from_server,
                encoder: Encoder::default(),
                decoder: Decoder::default(),
                buf: BytesMut::new(),
            };
            (client, server)
        }

        async fn send(&mut self, frame: Frame) {
            let mut wire = BytesMut::new();
            self.encoder.encode(&frame, &mut wire).expect("encode");
            // Split in two writes, as Go's framer writes fields one by one.
            let second = wire.split_off(wire.len() / 2);
            self.to_server.send(Ok(wire.freeze())).await.expect("server reads");
            self.to_server.send(Ok(second.freeze())).await.expect("server reads");
        }

        async fn next(&mut self) -> Frame {
            loop {
                if let Some(frame) = self.decoder.decode(&mut self.buf).expect("valid frame") {
                    return frame;
                }
                let bytes = tokio::time::timeout(std::time::Duration::from_secs(5), self.from_server.recv())
                    .await
                    .expect("a frame in time")
                    .expect("server open");
                self.buf.extend_from_slice(&bytes);
            }
        }
    }

    fn tokio_stream_from(
        mut rx: mpsc::Receiver<std::io::Result<Bytes>>,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin + Send {
        Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }

    fn loopback_target() -> Target {
        let dial: Dial = Arc::new(|port| {
            Box::pin(async move {
                TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("dial tcp4 127.0.0.1:{port}: {e}"))
            })
        });
        Target { dial, pod: "web_default".into(), uid: "u1".into(), pair_timeout: Duration::from_millis(300) }
    }

    #[tokio::test]
    async fn forwards_a_connection_and_closes_both_streams() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port().to_string();
        let echo = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut got = vec![0u8; 4];
            conn.read_exact(&mut got).await.expect("read");
            conn.write_all(&[b"re:", &got[..]].concat()).await.expect("write");
        });
        let (mut client, server) = Client::start(loopback_target());
        client.send(Frame::Ping { id: 1 }).await;
        assert_eq!(client.next().await, Frame::Ping { id: 1 });
        client.send(open(1, headers("error", &port, "0"))).await;
        assert_eq!(client.next().await, Frame::SynReply { stream_id: 1, flags: 0, headers: Vec::new() });
        client.send(Frame::fin(1)).await;
        client.send(open(3, headers("data", &port, "0"))).await;
        assert_eq!(client.next().await, Frame::SynReply { stream_id: 3, flags: 0, headers: Vec::new() });
        client.send(Frame::data(3, Bytes::from_static(b"ping"))).await;
        let mut echoed = Vec::new();
        let mut closed = Vec::new();
        while closed.len() < 2 {
            match client.next().await {
                Frame::Data { stream_id: 3, flags: 0, data } => echoed.extend_from_slice(&data),
                Frame::Data { stream_id, flags: frame::FLAG_FIN, data } if data.is_empty() => closed.push(stream_id),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(echoed, b"re:ping");
        closed.sort_unstable();
        assert_eq!(closed, [1, 3]);
        echo.await.expect("echo server");
        client.send(Frame::GoAway { last_good: 0, status: 0 }).await;
        tokio::time::timeout(std::time::Duration::from_secs(5), server).await.expect("session ends").expect("ok");
    }

    #[tokio::test]
    async fn uploads_reach_the_pod_and_a_fin_ends_its_input() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port().to_string();
        let counter = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut all = Vec::new();
            conn.read_to_end(&mut all).await.expect("read to EOF");
            conn.write_all(all.len().to_string().as_bytes()).await.expect("write");
            all
        });
        let (mut client, _server) = Client::start(loopback_target());
        client.send(open(1, headers("error", &port, "0"))).await;
        client.send(open(3, headers("data", &port, "0"))).await;
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in sent.chunks(7_000) {
            client.send(Frame::data(3, Bytes::copy_from_slice(chunk))).await;
        }
        client.send(Frame::fin(3)).await;
        let mut reply = Vec::new();
        let mut closed = 0;
        while closed < 2 {
            match client.next().await {
                Frame::SynReply { .. } => {}
                Frame::Data { stream_id: 3, flags: 0, data } => reply.extend_from_slice(&data),
                Frame::Data { flags: frame::FLAG_FIN, .. } => closed += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(reply, b"200000");
        assert_eq!(counter.await.expect("counter"), sent);
    }

    #[tokio::test]
    async fn a_refused_port_is_reported_on_the_error_stream() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port().to_string()
        };
        let (mut client, _server) = Client::start(loopback_target());
        client.send(open(1, headers("error", &port, "7"))).await;
        client.send(open(3, headers("data", &port, "7"))).await;
        let mut message = String::new();
        let mut closed = Vec::new();
        while closed.len() < 2 {
            match client.next().await {
                Frame::SynReply { .. } => {}
                Frame::Data { stream_id: 1, flags: 0, data } => message.push_str(&String::from_utf8_lossy(&data)),
                Frame::Data { stream_id, flags: frame::FLAG_FIN, .. } => closed.push(stream_id),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            message.starts_with(&format!("error forwarding port {port} to pod web_default, uid u1: dial tcp4")),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_bad_port_header_is_reported() {
        let (mut client, _server) = Client::start(loopback_target());
        client.send(open(1, headers("error", "http", "0"))).await;
        client.send(open(3, headers("data", "http", "0"))).await;
        loop {
            match client.next().await {
                Frame::SynReply { .. } => {}
                Frame::Data { stream_id: 1, flags: 0, data } => {
                    assert_eq!(&data[..], b"invalid port \"http\": ports must be 1 to 65535");
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_half_pair_times_out_with_a_message() {
        let (mut client, _server) = Client::start(loopback_target());
        client.send(open(1, headers("error", "80", "4"))).await;
        assert!(matches!(client.next().await, Frame::SynReply { stream_id: 1, .. }));
        let Frame::Data { stream_id: 1, flags: 0, data } = client.next().await else { panic!("an error message") };
        assert_eq!(&data[..], b"(request=4) timed out waiting for streams");
        assert_eq!(client.next().await, Frame::fin(1));
    }

    #[tokio::test]
    async fn streams_of_unknown_type_are_reset() {
        let (mut client, _server) = Client::start(loopback_target());
        client.send(open(1, headers("bogus", "80", "0"))).await;
        assert!(matches!(client.next().await, Frame::SynReply { stream_id: 1, .. }));
        assert_eq!(client.next().await, Frame::RstStream { stream_id: 1, status: frame::PROTOCOL_ERROR });
    }
}
