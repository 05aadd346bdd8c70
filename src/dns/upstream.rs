//! The node's upstream resolvers: read from resolv.conf (skipping loopback
//! resolvers such as systemd-resolved's 127.0.0.53, as k3s does, which would
//! loop back or mean nothing inside a pod's network), and the exchange of
//! one raw DNS message with them over UDP or TCP, with a deadline.

use super::error::DnsError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The files upstreams are read from, in order: the first one naming a
/// non-loopback resolver wins (systemd-resolved's real list comes second).
pub const RESOLV_CONF_PATHS: [&str; 2] = ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"];

/// The `nameserver` addresses of a resolv.conf text, in order.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            words.next()?.parse().ok()
        })
        .collect()
}

/// The upstream resolvers of the first of `paths` that names a non-loopback
/// one, and that file; empty when none does.
pub fn upstreams_from(paths: &[PathBuf]) -> (Vec<SocketAddr>, Option<PathBuf>) {
    for path in paths {
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        let servers: Vec<SocketAddr> = parse_resolv_conf(&text)
            .into_iter()
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect();
        if !servers.is_empty() {
            return (servers, Some(path.clone()));
        }
    }
    (Vec::new(), None)
}

/// The node's upstream resolvers (see [`RESOLV_CONF_PATHS`]).
pub fn system_upstreams() -> Vec<SocketAddr> {
    let paths: Vec<PathBuf> = RESOLV_CONF_PATHS.iter().map(PathBuf::from).collect();
    let (servers, from) = upstreams_from(&paths);
    match from {
        Some(path) => tracing::info!(upstreams = ?servers, file = %path.display(), "DNS upstream resolvers"),
        None => tracing::warn!(
            files = ?RESOLV_CONF_PATHS,
            "no upstream DNS resolver: these files name none besides loopback ones; names outside the cluster will get SERVFAIL"
        ),
    }
    servers
}

/// Sends raw DNS messages to the upstreams in turn until one answers.
#[derive(Clone, Debug)]
pub struct Upstreams {
    pub servers: Vec<SocketAddr>,
    /// How long one upstream gets to answer before the next is tried.
    pub timeout: Duration,
}

impl Upstreams {
    pub fn new(servers: Vec<SocketAddr>) -> Upstreams {
        Upstreams { servers, timeout: Duration::from_secs(2) }
    }

    /// The answer to `query` (a whole DNS message) from the first upstream
    /// that gives one; over TCP when `tcp`, else UDP (a truncated UDP answer
    /// is passed on as it is: the client retries over TCP).
    pub async fn exchange(&self, query: &[u8], tcp: bool) -> Result<Vec<u8>, DnsError> {
        let Some(first) = self.servers.first() else {
            return Err(DnsError::upstream(SocketAddr::from(([0, 0, 0, 0], 53)), "no upstream resolver configured"));
        };
        if query.len() < 12 {
            return Err(DnsError::upstream(*first, "query shorter than a DNS header"));
        }
        let mut last = None;
        for server in &self.servers {
            // A fresh ID per exchange, so a stray answer cannot pass for ours.
            let id: u16 = rand::random();
            let mut message = query.to_vec();
            message[..2].copy_from_slice(&id.to_be_bytes());
            let attempt = async {
                if tcp { exchange_tcp(*server, &message).await } else { exchange_udp(*server, &message, id).await }
            };
            match tokio::time::timeout(self.timeout, attempt).await {
                Ok(Ok(mut answer)) if answer.len() >= 12 && answer[..2] == id.to_be_bytes() => {
                    answer[..2].copy_from_slice(&query[..2]);
                    return Ok(answer);
                }
                Ok(Ok(_)) => last = Some(DnsError::upstream(*server, "answer with a wrong ID or too short")),
                Ok(Err(err)) => last = Some(err),
                Err(_) => last = Some(DnsError::upstream(*server, format!("no answer within {:?}", self.timeout))),
            }
        }
        Err(last.unwrap_or_else(|| DnsError::upstream(*first, "no answer")))
    }
}

/// A local address to send from: loopback for loopback servers.
fn local_for(server: SocketAddr) -> SocketAddr {
    let ip = match (server.ip(), server.ip().is_loopback()) {
        (IpAddr::V4(_), true) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (IpAddr::V6(_), true) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (IpAddr::V4(_), false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (IpAddr::V6(_), false) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

async fn exchange_udp(server: SocketAddr, message: &[u8], id: u16) -> Result<Vec<u8>, DnsError> {
    let socket = UdpSocket::bind(local_for(server)).await.map_err(DnsError::socket("bind a UDP socket for", server))?;
    socket.connect(server).await.map_err(DnsError::socket("connect to", server))?;
    socket.send(message).await.map_err(DnsError::socket("send to", server))?;
    let mut buffer = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buffer).await.map_err(DnsError::socket("receive from", server))?;
        if n >= 2 && buffer[..2] == id.to_be_bytes() {
            buffer.truncate(n);
            return Ok(buffer);
        }
    }
}

async fn exchange_tcp(server: SocketAddr, message: &[u8]) -> Result<Vec<u8>, DnsError> {
    let mut stream = TcpStream::connect(server).await.map_err(DnsError::socket("connect to", server))?;
    let length = u16::try_from(message.len()).map_err(|_| DnsError::upstream(server, "query too long"))?;
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    stream.write_all(&framed).await.map_err(DnsError::socket("send to", server))?;
    let length = stream.read_u16().await.map_err(DnsError::socket("receive from", server))?;
    let mut answer = vec![0u8; usize::from(length)];
    stream.read_exact(&mut answer).await.map_err(DnsError::socket("receive from", server))?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_read_in_order() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver  fd00::53 \nnameserver bogus\noptions ndots:2\n";
        let expected: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap(), "fd00::53".parse().unwrap()];
        assert_eq!(parse_resolv_conf(text), expected);
    }

    #[test]
    fn loopback_resolvers_are_skipped_for_the_next_file() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("resolv.conf");
        let systemd = dir.path().join("systemd-resolv.conf");
        std::fs::write(&etc, "nameserver 127.0.0.53\noptions edns0\n").unwrap();
        std::fs::write(&systemd, "nameserver 192.0.2.1\nnameserver ::1\n").unwrap();
        let (servers, from) = upstreams_from(&[etc.clone(), systemd.clone()]);
        assert_eq!(servers, vec![SocketAddr::from(([192, 0, 2, 1], 53))]);
        assert_eq!(from, Some(systemd));
        let (servers, from) = upstreams_from(&[etc, dir.path().join("missing")]);
        assert!(servers.is_empty() && from.is_none());
    }

    #[tokio::test]
    async fn no_upstreams_is_an_error_not_a_hang() {
        let err = Upstreams::new(Vec::new()).exchange(&[0; 12], false).await.unwrap_err();
        assert!(err.to_string().contains("no upstream resolver"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_upstream_times_out() {
        // A bound socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut upstreams = Upstreams::new(vec![silent.local_addr().unwrap()]);
        upstreams.timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let err = upstreams.exchange(&[0; 12], false).await.unwrap_err();
        assert!(err.to_string().contains("no answer within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
