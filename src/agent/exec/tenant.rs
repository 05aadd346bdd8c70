//! `kubectl exec` processes start in a freshly executed, single-threaded
//! `kube container-exec` helper (for the reason in `runtime_start`: a clone
//! of the multi-threaded agent may inherit a held lock). The helper's stdin,
//! stdout and stderr are the process's (or /dev/null with a terminal, which
//! travels over the console socket instead); it reports `pid N` or
//! `error: …` on fd 3 and exits, and the process is reparented to the agent.

use super::ExecError;
use crate::agent::runtime_start::{pass_fds, reap_intermediates};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError, default};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The hidden subcommand's name.
pub const SUBCOMMAND: &str = "container-exec";
const REPORT_FD: i32 = 3;

/// `kube container-exec` (internal): start one process in a running container.
#[derive(clap::Args, Clone, Debug)]
pub struct TenantArgs {
    #[arg(long)]
    pub root: PathBuf,
    #[arg(long)]
    pub id: String,
    /// The OCI process spec (JSON file).
    #[arg(long)]
    pub process: PathBuf,
    /// With a terminal: where to send the pty master.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// The terminal's size (columns, rows).
    #[arg(long, num_args = 2)]
    pub terminal_size: Option<Vec<u16>>,
}

/// The process's stdio: stdin, stdout, stderr (without a terminal).
pub type Stdio3 = (OwnedFd, OwnedFd, OwnedFd);

/// Runs the helper for `args`; the started process's PID.
pub fn start(args: &TenantArgs, stdio: Option<Stdio3>) -> Result<i32, ExecError> {
    let failed = |message: String| ExecError::Spawn { container: args.id.clone(), message };
    let exe = crate::agent::runtime_start::SELF_EXE;
    let (mut report, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map(|(r, w)| (std::fs::File::from(r), w))
        .map_err(|err| failed(format!("cannot create a pipe: {err}")))?;
    let mut command = Command::new(exe);
    command.arg(SUBCOMMAND).arg("--root").arg(&args.root).args(["--id", &args.id]).arg("--process").arg(&args.process);
    if let Some(socket) = &args.console_socket {
        command.arg("--console-socket").arg(socket);
    }
    if let Some(size) = &args.terminal_size {
        command.arg("--terminal-size").args(size.iter().map(u16::to_string));
    }
    match stdio {
        Some((stdin, stdout, stderr)) => {
            command.stdin(Stdio::from(stdin)).stdout(Stdio::from(stdout)).stderr(Stdio::from(stderr));
        }
        None => {
            command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    pass_fds(&mut command, [(report_w.as_raw_fd(), REPORT_FD)]);
    let status = command.status().map_err(|err| failed(format!("cannot run kube {SUBCOMMAND}: {err}")))?;
    drop(command);
    drop(report_w);
    let mut said = String::new();
    let _ = report.read_to_string(&mut said);
    let said = said.trim();
    match said.strip_prefix("pid ").and_then(|pid| pid.parse().ok()) {
        Some(pid) if status.success() => Ok(pid),
        _ => Err(failed(said.strip_prefix("error: ").unwrap_or(said).to_string())),
    }
}

/// The helper's work: start the process; reports on fd 3.
pub fn run_helper(args: &TenantArgs) -> bool {
    // SAFETY: fd 3 was set up by `start` for this process alone.
    let mut report = unsafe { std::fs::File::from_raw_fd(REPORT_FD) };
    let said = match start_here(args) {
        Ok(pid) => format!("pid {pid}\n"),
        Err(err) => format!("error: {err}\n"),
    };
    use std::io::Write;
    report.write_all(said.as_bytes()).is_ok() && said.starts_with("pid ")
}

fn start_here(args: &TenantArgs) -> Result<i32, String> {
    let mut builder = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&args.root)
        .map_err(|err| err.to_string())?;
    let detach = args.console_socket.is_some();
    match &args.console_socket {
        Some(socket) => {
            builder = builder.with_console_socket(Some(socket));
            if let Some([width, height]) = args.terminal_size.as_deref() {
                builder = builder.with_executor(SizedTerminal { width: *width, height: *height });
            }
        }
        None => {
            let dup = |fd: i32| nix::unistd::dup(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) });
            let (stdin, stdout, stderr) = (dup(0), dup(1), dup(2));
            let (Ok(stdin), Ok(stdout), Ok(stderr)) = (stdin, stdout, stderr) else {
                return Err("cannot duplicate the process's stdio".into());
            };
            builder = builder.with_stdin(stdin).with_stdout(stdout).with_stderr(stderr);
        }
    }
    let pid = builder
        .as_tenant()
        .with_process(Some(&args.process))
        .with_detach(detach)
        .build()
        .map_err(|err| err.to_string())?
        .as_raw();
    reap_intermediates(pid);
    Ok(pid)
}

/// Runs the process like libcontainer's default executor, after giving its
/// terminal (already on stdin) the size kubectl's terminal has, so the
/// command never sees a 0x0 terminal.
#[derive(Clone)]
struct SizedTerminal {
    width: u16,
    height: u16,
}

impl Executor for SizedTerminal {
    fn exec(&self, spec: &libcontainer::oci_spec::runtime::Spec) -> Result<(), ExecutorError> {
        let winsize = libc::winsize { ws_row: self.height, ws_col: self.width, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call.
        unsafe { libc::ioctl(0, libc::TIOCSWINSZ, &winsize) };
        default::get_executor().exec(spec)
    }

    fn validate(&self, spec: &libcontainer::oci_spec::runtime::Spec) -> Result<(), ExecutorValidationError> {
        default::get_executor().validate(spec)
    }
}
