//! Running netlink work inside a network namespace. A netlink socket stays
//! bound to the namespace of the thread that opened it, so each piece of
//! work gets a fresh thread that `setns`es into the namespace (or stays in
//! the caller's), opens an rtnetlink connection on a small current-thread
//! runtime, runs, and ends: no other work ever runs in that namespace.

use super::error::{CniError, Result};
use std::future::Future;
use std::path::{Path, PathBuf};

/// Runs `work` with an rtnetlink handle of the namespace pinned at `netns`
/// (`None`: the caller's namespace), on its own thread; blocks until done.
pub fn run<T, F, Fut>(netns: Option<&Path>, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let netns: Option<PathBuf> = netns.map(Path::to_path_buf);
    let thread = std::thread::Builder::new()
        .name("kube-netns".into())
        .spawn(move || -> Result<T> {
            if let Some(path) = &netns {
                enter(path)?;
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(CniError::io("start a netlink runtime for", netns.clone().unwrap_or_default()))?;
            runtime.block_on(async move {
                let (connection, handle, _) = rtnetlink::new_connection()
                    .map_err(CniError::io("open a netlink socket in", netns.clone().unwrap_or_default()))?;
                let driver = tokio::spawn(connection);
                let result = work(handle).await;
                driver.abort();
                result
            })
        })
        .map_err(CniError::io("start a netns thread", "/proc/thread-self"))?;
    thread.join().map_err(|_| CniError::Host("a netns thread panicked".into()))?
}

/// Moves the calling thread into the network namespace pinned at `path`.
pub fn enter(path: &Path) -> Result<()> {
    let file = std::fs::File::open(path).map_err(CniError::io("open network namespace", path))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(CniError::sys(format!("enter network namespace {}", path.display())))
}

/// Writes a sysctl of the calling thread's network namespace
/// (`net/ipv4/ip_forward` → `/proc/sys/net/ipv4/ip_forward`).
pub fn write_sysctl(name: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(name);
    std::fs::write(&path, value).map_err(CniError::io("write sysctl", &path))
}
