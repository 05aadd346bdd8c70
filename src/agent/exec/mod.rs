//! Commands run inside running containers, for `kubectl exec` and exec
//! probes: the [`ContainerStreams`] seam the API server hands `pods/exec` to,
//! and its local implementation that joins the container with libcontainer's
//! tenant builder (same namespaces, cgroup, user, env, working dir).

mod dial;
pub use dial::connect_in;
mod session;
mod spawn;
pub mod tenant;

pub use session::Session;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// What to run and which streams to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRequest {
    pub container: String,
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// A terminal: stdin, stdout and stderr share one pty (all output is stdout).
    pub tty: bool,
    /// The terminal's size when the process starts (with `tty`).
    pub terminal_size: Option<TerminalSize>,
}

/// A terminal size as kubectl sends it on the resize channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// A chunk of the process's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("container {container:?} of pod {pod} is not running")]
    NotRunning { pod: String, container: String },
    #[error("cannot exec in container {container:?}: {message}")]
    Spawn { container: String, message: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where containers' commands run: the local agent now, a remote node's
/// agent over HTTPS later. `pod` is the pod object as the API has it.
pub trait ContainerStreams: Send + Sync {
    fn exec(&self, pod: &Value, request: ExecRequest) -> BoxFuture<'static, Result<Session, ExecError>>;
    /// Checks, without running anything, that `container` of `pod` is running.
    fn check_running(&self, pod: &Value, container: &str) -> Result<(), ExecError>;
    /// A TCP connection to `port` of `pod`'s network (`kubectl port-forward`);
    /// the error is upstream-like text for the port-forward error stream.
    fn dial(&self, pod: &Value, port: u16) -> BoxFuture<'static, Result<tokio::net::TcpStream, String>>;
}

/// The `ContainerStreams` of this process's own agent: finds the container
/// from the records the pod workers keep under `<agent data-dir>/pods`.
#[derive(Clone, Debug)]
pub struct LocalStreams {
    data_dir: PathBuf,
}

impl LocalStreams {
    pub fn new(data_dir: PathBuf) -> LocalStreams {
        LocalStreams { data_dir }
    }

    pub fn shared(data_dir: PathBuf) -> Arc<dyn ContainerStreams> {
        Arc::new(LocalStreams::new(data_dir))
    }

    /// The runtime id of the running container `name` of pod `uid`.
    fn running_id(&self, pod_key: &str, uid: &str, name: &str) -> Result<String, ExecError> {
        let not_running = || ExecError::NotRunning { pod: pod_key.to_string(), container: name.to_string() };
        let path = self.data_dir.join("pods").join(uid).join("containers").join(format!("{name}.json"));
        let bytes = std::fs::read(&path).map_err(|_| not_running())?;
        let record: super::status::ContainerRecord = serde_json::from_slice(&bytes).map_err(|_| not_running())?;
        match (record.running(), record.id) {
            (true, Some(id)) if self.data_dir.join("run").join(&id).exists() => Ok(id),
            _ => Err(not_running()),
        }
    }
}

fn pod_identity(pod: &Value) -> (String, String) {
    let text = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
    let uid = crate::agent::static_pods::runtime_uid(pod).to_string();
    (format!("{}/{}", text("/metadata/namespace"), text("/metadata/name")), uid)
}

impl ContainerStreams for LocalStreams {
    fn exec(&self, pod: &Value, request: ExecRequest) -> BoxFuture<'static, Result<Session, ExecError>> {
        let (key, uid) = pod_identity(pod);
        let id = self.running_id(&key, &uid, &request.container);
        let root = self.data_dir.join("run");
        Box::pin(async move {
            let id = id?;
            let container = request.container.clone();
            let spawned = tokio::task::spawn_blocking(move || spawn::spawn(&root, &id, &request))
                .await
                .map_err(|err| ExecError::Spawn { container, message: err.to_string() })??;
            Ok(Session::start(spawned))
        })
    }

    fn check_running(&self, pod: &Value, container: &str) -> Result<(), ExecError> {
        let (key, uid) = pod_identity(pod);
        self.running_id(&key, &uid, container).map(|_| ())
    }

    fn dial(&self, pod: &Value, port: u16) -> BoxFuture<'static, Result<tokio::net::TcpStream, String>> {
        let (_, uid) = pod_identity(pod);
        let netns = (!super::sandbox::host_network(pod)).then(|| self.data_dir.join("netns").join(uid));
        let ip = pod.pointer("/status/podIP").and_then(Value::as_str).unwrap_or_default().to_string();
        Box::pin(dial::dial(netns, ip, port))
    }
}

/// Runs `command` in `container` of `pod` with no stdin and collects its
/// output until it exits or `timeout` passes (then it is killed). Returns
/// the exit code (`None` on timeout) and stdout followed by stderr.
pub async fn run_to_end(
    streams: &dyn ContainerStreams,
    pod: &Value,
    container: &str,
    command: Vec<String>,
    timeout: std::time::Duration,
) -> Result<(Option<i32>, Vec<u8>), ExecError> {
    let request = ExecRequest {
        container: container.to_string(),
        command,
        stdin: false,
        stdout: true,
        stderr: true,
        tty: false,
        terminal_size: None,
    };
    let mut session = streams.exec(pod, request).await?;
    let collect = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(chunk) = session.output.recv().await {
            match chunk {
                Output::Stdout(b) => out.extend_from_slice(&b),
                Output::Stderr(b) => err.extend_from_slice(&b),
            }
        }
        let code = (&mut session.exit).await.ok();
        out.extend_from_slice(&err);
        (code, out)
    };
    match tokio::time::timeout(timeout, collect).await {
        Ok((code, out)) => Ok((code, out)),
        Err(_) => Ok((None, Vec::new())),
    }
}
