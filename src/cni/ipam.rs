//! Host-local IPAM, like the reference `host-local` CNI plugin: addresses of
//! the node's pod subnet handed out one by one, one file per allocated
//! address (named after it, holding the owner's pod uid) in a state folder.
//! `create_new` on that file is what makes an address taken, so two callers
//! (threads or processes) never get the same one. Owners are pod uids: an
//! owner asking again gets its address back (agent restarts), and
//! [`Ipam::release_unknown`] frees what a crashed agent never released.

use super::error::{CniError, Result};
use super::subnet::Subnet;
use std::collections::HashSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file remembering the last address handed out (allocation goes round-robin).
const LAST_RESERVED: &str = "last_reserved_ip";
/// How many candidates one allocation tries at most (bounds huge IPv6 subnets).
const MAX_ATTEMPTS: u128 = 1 << 20;

pub struct Ipam {
    dir: PathBuf,
    subnet: Subnet,
    lock: Mutex<()>,
}

impl Ipam {
    /// The IPAM of `subnet` with its state in `dir` (created if missing).
    pub fn open(dir: &Path, subnet: Subnet) -> Result<Ipam> {
        std::fs::create_dir_all(dir).map_err(CniError::io("create IPAM folder", dir))?;
        Ok(Ipam { dir: dir.to_path_buf(), subnet, lock: Mutex::new(()) })
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The range handed out: after the network address and the gateway, up to
    /// (for IPv4, not including) the broadcast address.
    fn range(&self) -> (u128, u128) {
        let last = if self.subnet.is_ipv4() { self.subnet.size().saturating_sub(2) } else { self.subnet.size() - 1 };
        (2, last)
    }

    /// Every allocated address of this subnet and its owner.
    pub fn allocations(&self) -> Vec<(IpAddr, String)> {
        let mut found: Vec<(IpAddr, String)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let ip: IpAddr = entry.file_name().to_str()?.parse().ok()?;
                let owner = std::fs::read_to_string(entry.path()).ok()?;
                Some((ip, owner.lines().next().unwrap_or_default().trim().to_string()))
            })
            .filter(|(ip, _)| self.subnet.contains(*ip))
            .collect();
        found.sort();
        found
    }

    /// The address `owner` holds, if any.
    pub fn lookup(&self, owner: &str) -> Option<IpAddr> {
        self.allocations().into_iter().find(|(_, o)| o == owner).map(|(ip, _)| ip)
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An address for `owner`: the one it already has, or the next free one.
    pub fn allocate(&self, owner: &str) -> Result<IpAddr> {
        let _guard = self.guard();
        if let Some(ip) = self.lookup(owner) {
            return Ok(ip);
        }
        let (first, last) = self.range();
        if last < first {
            return Err(CniError::Exhausted { subnet: self.subnet.to_string() });
        }
        let span = last - first + 1;
        let last_path = self.dir.join(LAST_RESERVED);
        let start = std::fs::read_to_string(&last_path)
            .ok()
            .and_then(|text| text.trim().parse::<IpAddr>().ok())
            .and_then(|ip| self.subnet.index_of(ip))
            .filter(|i| (first..=last).contains(i))
            .map_or(0, |i| i - first + 1);
        for step in 0..span.min(MAX_ATTEMPTS) {
            let index = first + (start + step) % span;
            let Some(ip) = self.subnet.nth(index) else { continue };
            let path = self.dir.join(ip.to_string());
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(format!("{owner}\n").as_bytes()).map_err(CniError::io("write", &path))?;
                    std::fs::write(&last_path, ip.to_string()).map_err(CniError::io("write", &last_path))?;
                    return Ok(ip);
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(CniError::io("reserve address file", &path)(err)),
            }
        }
        Err(CniError::Exhausted { subnet: self.subnet.to_string() })
    }

    fn remove(&self, ip: IpAddr) -> Result<()> {
        let path = self.dir.join(ip.to_string());
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(CniError::io("release address file", &path)(err)),
        }
    }

    /// Frees every address `owner` holds; returns them.
    pub fn release(&self, owner: &str) -> Result<Vec<IpAddr>> {
        let _guard = self.guard();
        let mine: Vec<IpAddr> = self.allocations().into_iter().filter(|(_, o)| o == owner).map(|(ip, _)| ip).collect();
        for ip in &mine {
            self.remove(*ip)?;
        }
        Ok(mine)
    }

    /// Frees every address whose owner is not in `live`; returns them.
    pub fn release_unknown(&self, live: &HashSet<String>) -> Result<Vec<IpAddr>> {
        let _guard = self.guard();
        let stale: Vec<IpAddr> =
            self.allocations().into_iter().filter(|(_, o)| !live.contains(o)).map(|(ip, _)| ip).collect();
        for ip in &stale {
            self.remove(*ip)?;
        }
        Ok(stale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ipam(dir: &Path, subnet: &str) -> Ipam {
        Ipam::open(dir, Subnet::parse(subnet).expect("subnet")).expect("open")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn hands_out_after_the_gateway_and_keeps_owners() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = ipam(dir.path(), "10.42.0.0/24");
        assert_eq!(ipam.allocate("pod-a").expect("a"), ip("10.42.0.2"));
        assert_eq!(ipam.allocate("pod-b").expect("b"), ip("10.42.0.3"));
        assert_eq!(ipam.allocate("pod-a").expect("a again"), ip("10.42.0.2"), "an owner keeps its address");
        assert_eq!(std::fs::read_to_string(dir.path().join("10.42.0.3")).expect("file"), "pod-b\n");
        assert_eq!(ipam.lookup("pod-b"), Some(ip("10.42.0.3")));
        assert_eq!(ipam.release("pod-a").expect("release"), vec![ip("10.42.0.2")]);
        assert_eq!(ipam.lookup("pod-a"), None);
        // Round-robin: the next address is handed out before a freed one is reused.
        assert_eq!(ipam.allocate("pod-c").expect("c"), ip("10.42.0.4"));
        // A new IPAM on the same folder (an agent restart) sees the same state.
        let again = super::Ipam::open(dir.path(), Subnet::parse("10.42.0.0/24").expect("s")).expect("open");
        assert_eq!(again.lookup("pod-c"), Some(ip("10.42.0.4")));
    }

    #[test]
    fn exhaustion_is_an_error_and_wraps_around() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = ipam(dir.path(), "10.42.0.0/29"); // .2 ... .6
        let got: Vec<IpAddr> = (0..5).map(|i| ipam.allocate(&format!("p{i}")).expect("alloc")).collect();
        assert_eq!(got.last(), Some(&ip("10.42.0.6")));
        let err = ipam.allocate("p5").expect_err("full");
        assert!(err.to_string().contains("10.42.0.0/29"), "{err}");
        ipam.release("p1").expect("release");
        assert_eq!(ipam.allocate("p5").expect("reuse"), ip("10.42.0.3"));
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Two IPAMs on one folder stand for two processes; each has 4 threads.
        let a = Arc::new(ipam(dir.path(), "10.42.0.0/24"));
        let b = Arc::new(ipam(dir.path(), "10.42.0.0/24"));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let ipam = if t % 2 == 0 { a.clone() } else { b.clone() };
                std::thread::spawn(move || {
                    (0..20).map(|i| ipam.allocate(&format!("t{t}-{i}")).expect("alloc")).collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<IpAddr> = threads.into_iter().flat_map(|t| t.join().expect("thread")).collect();
        let unique: HashSet<IpAddr> = all.iter().copied().collect();
        assert_eq!(all.len(), 160);
        assert_eq!(unique.len(), 160, "duplicate addresses handed out");
        assert_eq!(a.allocations().len(), 160);
    }

    #[test]
    fn release_unknown_frees_what_no_live_pod_owns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = ipam(dir.path(), "10.42.1.0/24");
        let kept = ipam.allocate("alive").expect("alive");
        let lost = ipam.allocate("crashed").expect("crashed");
        let live: HashSet<String> = ["alive".to_string()].into();
        assert_eq!(ipam.release_unknown(&live).expect("sweep"), vec![lost]);
        assert_eq!(ipam.allocations(), vec![(kept, "alive".to_string())]);
    }

    #[test]
    fn ipv6_subnets_work_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = ipam(dir.path(), "fd00:42::/120");
        assert_eq!(ipam.allocate("a").expect("a"), ip("fd00:42::2"));
        assert_eq!(ipam.allocate("b").expect("b"), ip("fd00:42::3"));
    }
}
