//! One running exec process: threads that move bytes between its pipes (or
//! its pty) and channels, a thread that waits for its exit, and a guard that
//! kills it when the session is dropped before it exited.

use super::spawn::Spawned;
use super::{Output, TerminalSize};
use bytes::Bytes;
use nix::sys::wait::{Id, WaitPidFlag, waitid, waitpid};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// The streams of a running exec process.
pub struct Session {
    /// Bytes for the process's stdin; dropping it closes stdin. `None` without stdin.
    pub stdin: Option<mpsc::Sender<Bytes>>,
    /// Terminal size changes; `None` without a TTY.
    pub resize: Option<mpsc::Sender<TerminalSize>>,
    /// stdout and stderr chunks; closed once every output stream reached its end.
    pub output: mpsc::Receiver<Output>,
    /// The exit code (128 + signal when killed by one).
    pub exit: oneshot::Receiver<i32>,
    guard: KillGuard,
}

impl Session {
    pub fn pid(&self) -> i32 {
        self.guard.pid
    }

    /// Kills the process now (also done when the session is dropped before it exited).
    pub fn kill(&self) {
        self.guard.kill();
    }

    pub(super) fn start(spawned: Spawned) -> Session {
        let Spawned { pid, stdin, stdout, stderr, pty } = spawned;
        let exited = Arc::new(Mutex::new(false));
        let (output_tx, output) = mpsc::channel(64);
        let (exit_tx, exit) = oneshot::channel();
        let mut stdin_tx = None;
        let mut resize = None;
        if let Some(master) = pty {
            let master = Arc::new(master);
            if let Ok(writer) = master.try_clone() {
                stdin_tx = Some(pump_in(writer));
            }
            if let Ok(reader) = master.try_clone() {
                pump_out(reader, output_tx.clone(), Output::Stdout);
            }
            resize = Some(resizer(master));
        } else {
            stdin_tx = stdin.map(pump_in);
            if let Some(fd) = stdout {
                pump_out(fd, output_tx.clone(), Output::Stdout);
            }
            if let Some(fd) = stderr {
                pump_out(fd, output_tx.clone(), Output::Stderr);
            }
        }
        drop(output_tx);
        let flag = exited.clone();
        std::thread::spawn(move || {
            let target = Pid::from_raw(pid);
            // Wait without reaping first, so the guard never signals a reused PID.
            let _ = waitid(Id::Pid(target), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT);
            if let Ok(mut done) = flag.lock() {
                *done = true;
            }
            let code = match waitpid(target, None) {
                Ok(status) => crate::agent::reaper::Exit::from_status(status).map_or(255, |e| e.code),
                Err(_) => 255,
            };
            let _ = exit_tx.send(code);
        });
        Session { stdin: stdin_tx, resize, output, exit, guard: KillGuard { pid, exited } }
    }
}

struct KillGuard {
    pid: i32,
    exited: Arc<Mutex<bool>>,
}

impl KillGuard {
    fn kill(&self) {
        if let Ok(done) = self.exited.lock()
            && !*done
        {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A thread writing what arrives on the returned channel to `fd`; the fd is
/// closed (EOF for the process) when the sender is dropped.
fn pump_in(fd: OwnedFd) -> mpsc::Sender<Bytes> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    std::thread::spawn(move || {
        let mut file = std::fs::File::from(fd);
        while let Some(bytes) = rx.blocking_recv() {
            if file.write_all(&bytes).is_err() {
                return;
            }
        }
    });
    tx
}

/// A thread reading `fd` until its end (EIO on a pty whose other side closed).
fn pump_out(fd: OwnedFd, tx: mpsc::Sender<Output>, wrap: fn(Bytes) -> Output) {
    std::thread::spawn(move || {
        let mut file = std::fs::File::from(fd);
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(wrap(Bytes::copy_from_slice(&buf[..n]))).is_err() {
                        return;
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
}

/// Applies terminal sizes to the pty (the kernel then sends SIGWINCH).
fn resizer(master: Arc<OwnedFd>) -> mpsc::Sender<TerminalSize> {
    let (tx, mut rx) = mpsc::channel::<TerminalSize>(4);
    tokio::spawn(async move {
        while let Some(size) = rx.recv().await {
            set_size(&master, size);
        }
    });
    tx
}

pub(super) fn set_size(master: &OwnedFd, size: TerminalSize) {
    let winsize = libc::winsize { ws_row: size.height, ws_col: size.width, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &winsize) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot resize the exec terminal");
    }
}
