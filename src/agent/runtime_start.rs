//! Containers are created and started in a freshly executed, single-threaded
//! `kube container-start` process, never in the agent itself: libcontainer
//! clones the container's processes, and a clone of a multi-threaded process
//! inherits whatever locks (malloc's, tracing's, …) other threads held at that
//! instant, so the container's init could block forever on one of them (seen
//! as `youki:[2:INIT]` waiting on a futex). The helper gets the container's
//! stdout/stderr as fds 3 and 4, prints the init's PID and exits; the init is
//! reparented to the agent, which is a child subreaper and reaps it by PID.

use super::error::{AgentError, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The running executable, even after its file was replaced by an upgrade.
pub const SELF_EXE: &str = "/proc/self/exe";

/// The hidden subcommand's name.
pub const SUBCOMMAND: &str = "container-start";
const STDOUT_FD: i32 = 3;
const STDERR_FD: i32 = 4;

/// `kube container-start` (internal): create and start one container.
#[derive(clap::Args, Clone, Debug)]
pub struct StartArgs {
    #[arg(long)]
    pub root: PathBuf,
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub bundle: PathBuf,
}

/// Makes this process the subreaper of its descendants, so that container
/// inits whose starter exited become its children.
pub fn become_subreaper() -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(AgentError::sys("become a child subreaper"))
}

/// Runs the helper `exe` for one container; the init's PID.
pub fn start(exe: &Path, root: &Path, id: &str, bundle: &Path, stdout: OwnedFd, stderr: OwnedFd) -> Result<i32> {
    let (out, err) = (stdout.as_raw_fd(), stderr.as_raw_fd());
    let mut command = Command::new(exe);
    command
        .arg(SUBCOMMAND)
        .arg("--root")
        .arg(root)
        .args(["--id", id])
        .arg("--bundle")
        .arg(bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    pass_fds(&mut command, [(out, STDOUT_FD), (err, STDERR_FD)]);
    let failed = |message: String| AgentError::Runtime { id: id.to_string(), message };
    let output = command.output().map_err(|err| failed(format!("cannot run {}: {err}", exe.display())))?;
    drop((stdout, stderr));
    if !output.status.success() {
        let reason = String::from_utf8_lossy(&output.stderr).trim().to_string();
        return Err(failed(if reason.is_empty() { format!("container start {}", output.status) } else { reason }));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim().parse().map_err(|_| failed(format!("the container starter printed {text:?}, not a PID")))
}

/// Makes the child of `command` get `fds` (ours, theirs) at the given numbers.
/// The caller keeps ours open until the child started.
pub(crate) fn pass_fds<const N: usize>(command: &mut Command, fds: [(i32, i32); N]) {
    // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // Above 10 first, so that no dup2 meets a source it already replaced.
            let mut high = [0; N];
            for (slot, (ours, _)) in high.iter_mut().zip(fds) {
                *slot = libc::fcntl(ours, libc::F_DUPFD, 10);
                if *slot < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (fd, (_, theirs)) in high.into_iter().zip(fds) {
                if libc::dup2(fd, theirs) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The helper's work: build and start the container; prints the init's PID.
pub fn run_helper(args: &StartArgs) -> std::result::Result<i32, String> {
    // SAFETY: fds 3 and 4 were set up by `start` for this process alone.
    let (stdout, stderr) = unsafe { (OwnedFd::from_raw_fd(STDOUT_FD), OwnedFd::from_raw_fd(STDERR_FD)) };
    let mut container = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&args.root)
        .map_err(|err| err.to_string())?
        .with_stdout(stdout)
        .with_stderr(stderr)
        .as_init(&args.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|err| err.to_string())?;
    let pid = container.pid().map(|p| p.as_raw()).ok_or("the container was created without a PID")?;
    if let Err(err) = container.start() {
        let _ = container.delete(true);
        return Err(err.to_string());
    }
    reap_intermediates(pid);
    Ok(pid)
}

/// Reaps this process's children other than the container's init (the
/// intermediate process libcontainer leaves as a zombie), waiting up to a
/// second for them to exit, so none is reparented to the agent unreaped.
pub(crate) fn reap_intermediates(init: i32) {
    let me = std::process::id();
    let children_file = format!("/proc/{me}/task/{me}/children");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let children: Vec<i32> = std::fs::read_to_string(&children_file)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .filter(|pid| *pid != init)
            .collect();
        if children.is_empty() || std::time::Instant::now() > deadline {
            return;
        }
        for child in children {
            let flags = Some(nix::sys::wait::WaitPidFlag::WNOHANG);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), flags);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}
