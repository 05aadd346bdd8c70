//! Host effects of pod sandboxes behind one narrow trait: network
//! namespaces, overlay mounts and cgroup folders. `RealHost` does them;
//! `FakeHost` records them for unit tests.

use super::error::{AgentError, Result};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub trait Host: Send + Sync {
    /// Creates a network namespace pinned at `path` with loopback up.
    fn create_netns(&self, path: &Path) -> Result<()>;
    fn remove_netns(&self, path: &Path) -> Result<()>;
    fn mount_overlay(&self, lower: &Path, upper: &Path, work: &Path, target: &Path) -> Result<()>;
    fn unmount(&self, target: &Path) -> Result<()>;
    /// Removes the (empty) cgroup folder `relative` (e.g. `kubepods/pod<uid>`) of every hierarchy.
    fn remove_cgroup(&self, relative: &str) -> Result<()>;
    /// How many processes of cgroup `relative` the OOM killer killed (0 when unknown).
    fn oom_kills(&self, relative: &str) -> u64;
}

pub struct RealHost;

fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain socket and ioctl calls on a zeroed ifreq we own.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut result = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req);
        if result == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            result = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(sock);
        if result < 0 { Err(err) } else { Ok(()) }
    }
}

impl Host for RealHost {
    fn create_netns(&self, path: &Path) -> Result<()> {
        let target = path.to_path_buf();
        // A fresh thread enters the new namespace and pins it; the thread then
        // ends, so no other work ever runs inside it.
        let handle = std::thread::spawn(move || -> Result<()> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(AgentError::sys("unshare a network namespace"))?;
            loopback_up().map_err(AgentError::io("bring loopback up in", &target))?;
            std::fs::File::create(&target).map_err(AgentError::io("create netns file", &target))?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(AgentError::sys(format!("bind the network namespace to {}", target.display())))
        });
        handle.join().map_err(|_| AgentError::Sandbox {
            pod: path.display().to_string(),
            message: "netns thread panicked".into(),
        })?
    }

    fn remove_netns(&self, path: &Path) -> Result<()> {
        if !path.exists() {
            return Ok(());
        }
        let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
        std::fs::remove_file(path).map_err(AgentError::io("remove netns file", path))
    }

    fn mount_overlay(&self, lower: &Path, upper: &Path, work: &Path, target: &Path) -> Result<()> {
        let options = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(AgentError::sys(format!("mount overlay on {}", target.display())))
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
            Err(err) => Err(AgentError::Sys { what: format!("unmount {}", target.display()), source: err }),
        }
    }

    fn remove_cgroup(&self, relative: &str) -> Result<()> {
        let root = Path::new("/sys/fs/cgroup");
        for hierarchy in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let dir = hierarchy.path().join(relative);
            if !dir.is_dir() {
                continue;
            }
            // Children first (containers left behind), then the folder itself.
            for child in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if child.path().is_dir() {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
            if let Err(err) = std::fs::remove_dir(&dir) {
                tracing::debug!(dir = %dir.display(), error = %err, "cgroup folder not removed");
            }
        }
        Ok(())
    }

    fn oom_kills(&self, relative: &str) -> u64 {
        super::stats::cgroup::Layout::detect(Path::new("/sys/fs/cgroup")).oom_kills(relative).unwrap_or(0)
    }
}

/// A recorded host call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostCall {
    CreateNetns(PathBuf),
    RemoveNetns(PathBuf),
    MountOverlay { lower: PathBuf, target: PathBuf },
    Unmount(PathBuf),
    RemoveCgroup(String),
}

/// Records calls; fails `create_netns` when told to.
#[derive(Default)]
pub struct FakeHost {
    pub calls: Mutex<Vec<HostCall>>,
    pub fail_netns: bool,
    /// OOM kills reported per cgroup.
    pub oom_kills: Mutex<std::collections::HashMap<String, u64>>,
}

impl FakeHost {
    pub fn calls(&self) -> Vec<HostCall> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
    fn record(&self, call: HostCall) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }
}

impl Host for FakeHost {
    fn create_netns(&self, path: &Path) -> Result<()> {
        self.record(HostCall::CreateNetns(path.into()));
        if self.fail_netns {
            return Err(AgentError::Sandbox { pod: path.display().to_string(), message: "injected failure".into() });
        }
        Ok(())
    }
    fn remove_netns(&self, path: &Path) -> Result<()> {
        self.record(HostCall::RemoveNetns(path.into()));
        Ok(())
    }
    fn mount_overlay(&self, lower: &Path, _upper: &Path, _work: &Path, target: &Path) -> Result<()> {
        self.record(HostCall::MountOverlay { lower: lower.into(), target: target.into() });
        Ok(())
    }
    fn unmount(&self, target: &Path) -> Result<()> {
        self.record(HostCall::Unmount(target.into()));
        Ok(())
    }
    fn remove_cgroup(&self, relative: &str) -> Result<()> {
        self.record(HostCall::RemoveCgroup(relative.into()));
        Ok(())
    }
    fn oom_kills(&self, relative: &str) -> u64 {
        self.oom_kills.lock().ok().and_then(|m| m.get(relative).copied()).unwrap_or(0)
    }
}
