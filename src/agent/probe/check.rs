//! One probe run: httpGet, tcpSocket, exec and grpc (grpc.health.v1)
//! checks. Sockets are opened from inside the pod's network namespace (a
//! short-lived thread `setns`es there; the socket stays in it) toward the pod
//! IP, or 127.0.0.1 while the pod has none.

use super::Action;
use crate::agent::exec::{self, ContainerStreams};
use bytes::Bytes;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a probe run went, with upstream-like wording for events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub success: bool,
    pub message: String,
}

impl Outcome {
    fn ok() -> Outcome {
        Outcome { success: true, message: String::new() }
    }
    fn failed(message: impl Into<String>) -> Outcome {
        Outcome { success: false, message: message.into() }
    }
}

/// Where the probed container lives.
#[derive(Clone)]
pub struct Target {
    pub streams: Arc<dyn ContainerStreams>,
    pub pod: Value,
    pub container: String,
    /// The pod's network namespace; `None` with hostNetwork.
    pub netns: Option<PathBuf>,
    pub pod_ip: Option<IpAddr>,
}

/// Bodies read for a message are cut here, as upstream does.
const MAX_BODY: usize = 10 * 1024;

pub async fn run(action: &Action, timeout: Duration, target: &Target) -> Outcome {
    let work = async {
        match action {
            Action::Http { https, host, path, port, headers } => http(target, *https, host, path, *port, headers).await,
            Action::Tcp { host, port } => match connect(target, host, *port, timeout).await {
                Ok(_) => Outcome::ok(),
                Err(message) => Outcome::failed(message),
            },
            Action::Exec { command } => exec_probe(target, command, timeout).await,
            Action::Grpc { port, service } => grpc(target, *port, service, timeout).await,
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::failed(format!("probe timed out after {}s", timeout.as_secs())),
    }
}

fn address(target: &Target, host: &Option<String>) -> String {
    host.clone().or_else(|| target.pod_ip.map(|ip| ip.to_string())).unwrap_or_else(|| "127.0.0.1".into())
}

/// A TCP connection from inside the pod's network namespace.
async fn connect(target: &Target, host: &Option<String>, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let host = address(target, host);
    let shown = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let dial = shown.clone();
    let resolve = move || match host.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, port)),
        Err(_) => (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("dial tcp {dial}: lookup {host}: no such host")),
    };
    exec::connect_in(target.netns.clone(), format!("dial tcp {shown}"), timeout, resolve).await
}

async fn http(
    target: &Target,
    https: bool,
    host: &Option<String>,
    path: &str,
    port: u16,
    headers: &[(String, String)],
) -> Outcome {
    let scheme = if https { "https" } else { "http" };
    let addr = address(target, host);
    let url =
        format!("{scheme}://{}:{port}{path}", if addr.contains(':') { format!("[{addr}]") } else { addr.clone() });
    let stream = match connect(target, host, port, Duration::from_secs(30)).await {
        Ok(stream) => stream,
        Err(message) => return Outcome::failed(format!("Get \"{url}\": {message}")),
    };
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if !has("host") {
        request.push_str(&format!("Host: {addr}:{port}\r\n"));
    }
    if !has("user-agent") {
        request.push_str("User-Agent: kube-probe/1.34\r\n");
    }
    if !has("accept") {
        request.push_str("Accept: */*\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let response = if https {
        match tls(stream, &addr).await {
            Ok(tls) => exchange(tls, request.as_bytes()).await,
            Err(message) => Err(message),
        }
    } else {
        exchange(stream, request.as_bytes()).await
    };
    let (code, body) = match response {
        Ok(answer) => answer,
        Err(message) => return Outcome::failed(format!("Get \"{url}\": {message}")),
    };
    if (200..400).contains(&code) {
        Outcome::ok()
    } else {
        let body = String::from_utf8_lossy(&body).into_owned();
        Outcome::failed(format!(
            "HTTP probe failed with statuscode: {code}{}",
            if body.is_empty() { String::new() } else { format!(", body: {body}") }
        ))
    }
}

/// Sends `request` and reads the status code and the start of the body.
async fn exchange(mut stream: impl AsyncRead + AsyncWrite + Unpin, request: &[u8]) -> Result<(u16, Vec<u8>), String> {
    stream.write_all(request).await.map_err(|e| e.to_string())?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(end) = find(&data, b"\r\n\r\n")
            && data.len() >= end + 4 + MAX_BODY
        {
            break;
        }
    }
    parse_response(&data)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The status code and (at most `MAX_BODY` of) the body of an HTTP/1 response.
pub fn parse_response(data: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let line_end = find(data, b"\r\n").ok_or("malformed HTTP response")?;
    let line = String::from_utf8_lossy(&data[..line_end]);
    let mut parts = line.split_whitespace();
    let code = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code.parse::<u16>().map_err(|_| "malformed HTTP status")?,
        _ => return Err(format!("malformed HTTP response {line:?}")),
    };
    let body = find(data, b"\r\n\r\n").map(|end| &data[end + 4..]).unwrap_or_default();
    Ok((code, body[..body.len().min(MAX_BODY)].to_vec()))
}

/// TLS without verification, as upstream's HTTPS probes.
async fn tls(stream: TcpStream, host: &str) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| rustls::pki_types::ServerName::from(std::net::Ipv4Addr::LOCALHOST));
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, stream).await.map_err(|e| e.to_string())
}

#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

async fn exec_probe(target: &Target, command: &[String], timeout: Duration) -> Outcome {
    match exec::run_to_end(target.streams.as_ref(), &target.pod, &target.container, command.to_vec(), timeout).await {
        Ok((Some(0), _)) => Outcome::ok(),
        Ok((Some(code), output)) => {
            let output = String::from_utf8_lossy(&output[..output.len().min(MAX_BODY)]).trim_end().to_string();
            Outcome::failed(if output.is_empty() { format!("command {command:?} exited with {code}") } else { output })
        }
        Ok((None, _)) => {
            Outcome::failed(format!("command timed out: {command:?} timed out after {}s", timeout.as_secs()))
        }
        Err(err) => Outcome::failed(err.to_string()),
    }
}

/// `grpc.health.v1.Health/Check` over cleartext HTTP/2.
async fn grpc(target: &Target, port: u16, service: &str, timeout: Duration) -> Outcome {
    let addr = format!("{}:{port}", address(target, &None));
    let stream = match connect(target, &None, port, timeout).await {
        Ok(stream) => stream,
        Err(message) => {
            return Outcome::failed(format!(
                "timeout: failed to connect service {addr:?} within {}s: {message}",
                timeout.as_secs()
            ));
        }
    };
    match grpc_check(stream, &addr, service).await {
        Ok(1) => Outcome::ok(),
        Ok(status) => Outcome::failed(format!("service unhealthy (responded with {:?})", serving_status(status))),
        Err(message) => Outcome::failed(message),
    }
}

fn serving_status(code: u64) -> &'static str {
    match code {
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

/// A `HealthCheckRequest { service }` as a length-prefixed gRPC message.
pub fn grpc_request(service: &str) -> Vec<u8> {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    framed
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The `status` field of a framed `HealthCheckResponse` (0 when absent).
pub fn grpc_response_status(framed: &[u8]) -> Option<u64> {
    let length = u32::from_be_bytes(framed.get(1..5)?.try_into().ok()?) as usize;
    let message = framed.get(5..5 + length)?;
    let mut i = 0;
    while i < message.len() {
        let key = message[i];
        i += 1;
        let (field, wire) = (key >> 3, key & 7);
        let mut value = 0u64;
        let mut shift = 0;
        if wire != 0 {
            return Some(0);
        }
        loop {
            let byte = *message.get(i)?;
            i += 1;
            value |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        if field == 1 {
            return Some(value);
        }
    }
    Some(0)
}

async fn grpc_check(stream: TcpStream, authority: &str, service: &str) -> Result<u64, String> {
    use http_body_util::BodyExt;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
        .await
        .map_err(|e| format!("failed to connect service {authority:?}: {e}"))?;
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{authority}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "kube-probe/1.34")
        .body(http_body_util::Full::new(Bytes::from(grpc_request(service))))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| format!("health rpc failed: {e}"))?;
    let header_status = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_string);
    let collected = response.into_body().collect().await.map_err(|e| format!("health rpc failed: {e}"))?;
    let trailer_status =
        collected.trailers().and_then(|t| t.get("grpc-status")).and_then(|v| v.to_str().ok()).map(str::to_string);
    match trailer_status.or(header_status).as_deref() {
        Some("0") => grpc_response_status(&collected.to_bytes()).ok_or_else(|| "malformed health response".into()),
        Some(code) => Err(format!("health rpc failed with grpc-status {code}")),
        None => Err("health rpc failed: no grpc-status".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_http_status_lines() {
        assert_eq!(parse_response(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nhello"), Ok((200, b"hello".to_vec())));
        assert_eq!(parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n").map(|r| r.0), Ok(404));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"SSH-2.0\r\n").is_err());
    }

    #[test]
    fn grpc_health_messages() {
        assert_eq!(grpc_request(""), vec![0, 0, 0, 0, 0]);
        assert_eq!(grpc_request("db"), vec![0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']);
        assert_eq!(grpc_response_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(grpc_response_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(grpc_response_status(&[0, 0, 0, 0, 0]), Some(0));
        assert_eq!(grpc_response_status(&[0, 0, 0]), None);
    }
}
