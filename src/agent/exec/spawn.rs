//! Starts one process inside a running container with libcontainer's tenant
//! builder (as `youki exec` does, in the `tenant` helper process): the
//! container's own process spec (user,
//! capabilities, env, cwd) with the requested command, stdio on pipes, or on
//! a pty made inside the container and handed back over a console socket.

use super::{ExecError, ExecRequest};
use libcontainer::container::Container;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use serde_json::{Value, json};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Our ends of a started process's streams.
pub struct Spawned {
    pub pid: i32,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// The pty master, with a TTY.
    pub pty: Option<OwnedFd>,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExecError {
    let what = what.into();
    move |source| ExecError::Io { what, source }
}

/// The container's process spec with `request`'s command and terminal flag.
pub fn process_spec(config: &Value, request: &ExecRequest) -> Value {
    let mut process =
        config.get("process").cloned().unwrap_or_else(|| json!({"cwd": "/", "user": {"uid": 0, "gid": 0}}));
    process["args"] = json!(request.command);
    process["terminal"] = json!(request.tty);
    if request.tty {
        let env = process["env"].as_array().cloned().unwrap_or_default();
        if !env.iter().any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM="))) {
            let mut env = env;
            env.push(json!("TERM=xterm"));
            process["env"] = json!(env);
        }
    }
    process
}

/// Removes a file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), ExecError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|err| ExecError::Io { what: "create a pipe".into(), source: err.into() })
}

fn dev_null(write: bool) -> Result<OwnedFd, ExecError> {
    let file = std::fs::OpenOptions::new().read(!write).write(write).open("/dev/null");
    file.map(OwnedFd::from).map_err(io_err("open /dev/null"))
}

/// Runs `request` in the running container `id` (state under `runtime_root`).
/// Blocks until the process was started (or failed to start).
pub fn spawn(runtime_root: &Path, id: &str, request: &ExecRequest) -> Result<Spawned, ExecError> {
    let spawn_err = |message: String| ExecError::Spawn { container: request.container.clone(), message };
    if request.command.is_empty() {
        return Err(spawn_err("no command given".into()));
    }
    let container = Container::load(runtime_root.join(id)).map_err(|err| spawn_err(err.to_string()))?;
    let config_path = container.bundle().join("config.json");
    let config: Value = std::fs::read(&config_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| spawn_err(format!("cannot read {}", config_path.display())))?;
    let unique = format!("{}-{}", std::process::id(), fastrand_suffix());
    let process_path = TempFile(runtime_root.join(id).join(format!("exec-{unique}.json")));
    std::fs::write(&process_path.0, serde_json::to_vec(&process_spec(&config, request)).unwrap_or_default())
        .map_err(io_err(format!("write {}", process_path.0.display())))?;

    let mut args = super::tenant::TenantArgs {
        root: runtime_root.to_path_buf(),
        id: id.to_string(),
        process: process_path.0.clone(),
        console_socket: None,
        terminal_size: None,
    };
    let mut ours = Spawned { pid: 0, stdin: None, stdout: None, stderr: None, pty: None };
    // A short path: unix socket paths are limited to 108 bytes.
    let (console, stdio) = if request.tty {
        let path = std::env::temp_dir().join(format!("kube-exec-{unique}.sock"));
        let listener = UnixListener::bind(&path).map_err(io_err(format!("listen on {}", path.display())))?;
        args.console_socket = Some(path.clone());
        args.terminal_size = request.terminal_size.map(|size| vec![size.width, size.height]);
        (Some((listener, TempFile(path))), None)
    } else {
        let (stdin, theirs) = if request.stdin {
            let (r, w) = pipe()?;
            (Some(w), r)
        } else {
            (None, dev_null(false)?)
        };
        let output = |wanted: bool| -> Result<(Option<OwnedFd>, OwnedFd), ExecError> {
            if wanted {
                let (r, w) = pipe()?;
                Ok((Some(r), w))
            } else {
                Ok((None, dev_null(true)?))
            }
        };
        let (stdout, out_w) = output(request.stdout)?;
        let (stderr, err_w) = output(request.stderr)?;
        ours.stdin = stdin;
        ours.stdout = stdout;
        ours.stderr = stderr;
        (None, Some((theirs, out_w, err_w)))
    };
    ours.pid = super::tenant::start(&args, stdio)?;
    if let Some((listener, _path)) = console {
        match receive_pty(&listener) {
            Ok(master) => ours.pty = Some(master),
            Err(err) => {
                let pid = nix::unistd::Pid::from_raw(ours.pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
                return Err(err);
            }
        }
    }
    Ok(ours)
}

fn fastrand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or_default();
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{count:x}{nanos:x}")
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Receives the pty master the container's process sent (SCM_RIGHTS).
fn receive_pty(listener: &UnixListener) -> Result<OwnedFd, ExecError> {
    listener.set_nonblocking(false).map_err(io_err("console socket"))?;
    let (stream, _) = listener.accept().map_err(io_err("accept on the console socket"))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).map_err(io_err("console socket"))?;
    let mut name = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let message = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|err| ExecError::Io { what: "receive the pty".into(), source: err.into() })?;
    for cmsg in message.cmsgs().map_err(|err| ExecError::Io { what: "receive the pty".into(), source: err.into() })? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err(ExecError::Io { what: "receive the pty".into(), source: std::io::Error::other("no descriptor sent") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(tty: bool) -> ExecRequest {
        ExecRequest {
            container: "c".into(),
            command: vec!["sh".into(), "-c".into(), "hostname".into()],
            stdin: false,
            stdout: true,
            stderr: !tty,
            tty,
            terminal_size: None,
        }
    }

    #[test]
    fn exec_keeps_the_container_process_settings() {
        let config = json!({"process": {"args": ["sleep", "1d"], "cwd": "/work", "env": ["PATH=/bin"],
            "user": {"uid": 1000, "gid": 1000}, "terminal": false}});
        let process = process_spec(&config, &request(false));
        assert_eq!(process["args"], json!(["sh", "-c", "hostname"]));
        assert_eq!(process["cwd"], "/work");
        assert_eq!(process["user"]["uid"], 1000);
        assert_eq!(process["env"], json!(["PATH=/bin"]));
        let process = process_spec(&config, &request(true));
        assert_eq!(process["terminal"], true);
        assert_eq!(process["env"], json!(["PATH=/bin", "TERM=xterm"]));
    }
}
