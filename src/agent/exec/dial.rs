//! TCP connections into a pod, for `kubectl port-forward` and probes: a short-lived
//! thread `setns`es into the pod's network namespace and connects to
//! 127.0.0.1:<port> there (the socket stays in that namespace), as
//! upstream's runtimes do; hostNetwork pods are dialled on the node.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `127.0.0.1:port` inside `netns` (the node's own namespace
/// for `None`). Errors read like containerd's: `failed to connect to
/// localhost:<port> inside namespace "<ns>", IP: <ip>: dial tcp4 ...`.
pub async fn dial(netns: Option<PathBuf>, pod_ip: String, port: u16) -> Result<TcpStream, String> {
    let name = netns
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "host".into());
    let context = format!("failed to connect to localhost:{port} inside namespace {name:?}, IP: {pod_ip}");
    let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
    connect_in(netns, format!("dial tcp4 {addr}"), CONNECT_TIMEOUT, move || Ok(addr))
        .await
        .map_err(|e| format!("{context}: {e}"))
}

/// Connects from inside `netns` (the node's namespace for `None`) to the
/// address `resolve` gives there: a short-lived thread `setns`es into the
/// namespace, and the socket stays in it. `shown` (`dial tcp host:port`)
/// starts the connect error, worded like Go's.
pub async fn connect_in(
    netns: Option<PathBuf>,
    shown: String,
    timeout: Duration,
    resolve: impl FnOnce() -> Result<SocketAddr, String> + Send + 'static,
) -> Result<TcpStream, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let dial = shown.clone();
    std::thread::spawn(move || {
        let result = (|| -> Result<std::net::TcpStream, String> {
            if let Some(path) = netns {
                let file = std::fs::File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("enter the pod network namespace: {e}"))?;
            }
            let addr = resolve()?;
            let stream = std::net::TcpStream::connect_timeout(&addr, timeout)
                .map_err(|e| format!("{dial}: connect: {}", describe(&e)))?;
            stream.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(stream)
        })();
        let _ = tx.send(result);
    });
    let stream = rx.await.map_err(|_| "the dialling thread failed".to_string())??;
    TcpStream::from_std(stream).map_err(|e| format!("{shown}: {e}"))
}

fn describe(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "i/o timeout".into(),
        _ => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dials_the_node_for_host_network_and_says_why_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        dial(None, "10.0.0.1".into(), port).await.expect("connects");
        drop(listener);
        let err = dial(None, "10.0.0.1".into(), port).await.expect_err("refused");
        assert_eq!(
            err,
            format!(
                "failed to connect to localhost:{port} inside namespace \"host\", IP: 10.0.0.1: dial tcp4 127.0.0.1:{port}: connect: connection refused"
            )
        );
    }
}
