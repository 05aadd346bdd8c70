//! Network namespaces for root-only tests, so nothing touches the root
//! namespace's network: a [`Lan`] is a namespace holding a bridge that
//! stands for the LAN; each [`Netns`] node added to it gets a veth `eth0`
//! with an address of the LAN (192.168.77.0/24). Everything is named `kt-…`
//! (scripts/clean-test.sh removes leftovers) and is removed on drop: the
//! processes still inside (by PID), then the namespace.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The LAN's subnet (/24); node `n` gets `.10 + n`.
pub const LAN_PREFIX: &str = "192.168.77";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A short unique tag for this process's namespaces (`kt-<pid><n>`).
pub fn unique(tag: &str) -> String {
    format!("kt-{}{}{tag}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Runs `ip` with `args`; panics with its stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// One network namespace of the test, pinned at /run/netns/<name>.
pub struct Netns {
    pub name: String,
    /// Its LAN address, when it is a node on a [`Lan`].
    pub lan_ip: Option<String>,
}

impl Netns {
    /// A fresh namespace with loopback up.
    pub fn new(name: &str) -> Netns {
        ip(&["netns", "add", name]);
        let ns = Netns { name: name.to_string(), lan_ip: None };
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip netns exec <name> <program> <args>` (a new mount namespace for it,
    /// so only for short-lived commands that mount nothing).
    pub fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// `nsenter --net=<path> <program>`: only the network namespace changes,
    /// so mounts the program makes (the agent's) stay in the caller's mount
    /// namespace, where the test can see and remove them.
    pub fn enter(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net={}", self.path().display())).arg("--").arg(program);
        command
    }

    /// Whether a TCP connection to `addr` from inside the namespace succeeds.
    pub fn connects(&self, addr: &str) -> bool {
        let (path, addr) = (self.path(), addr.to_string());
        std::thread::spawn(move || {
            let Ok(file) = std::fs::File::open(&path) else { return false };
            if nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                return false;
            }
            let Ok(addr) = addr.parse() else { return false };
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).is_ok()
        })
        .join()
        .unwrap_or(false)
    }

    /// The PIDs of processes inside the namespace.
    pub fn pids(&self) -> Vec<i32> {
        let out = Command::new("ip").args(["netns", "pids", &self.name]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        let out = Command::new("ip").args(["netns", "delete", &self.name]).output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("WARNING: could not delete netns {}", self.name);
        }
    }
}

/// A namespace with a bridge `lan` standing for the LAN between nodes.
pub struct Lan {
    pub ns: Netns,
    prefix: String,
    nodes: AtomicU32,
}

impl Lan {
    pub fn new(tag: &str) -> Lan {
        let ns = Netns::new(&unique(&format!("{tag}-lan")));
        ip(&["-n", &ns.name, "link", "add", "lan", "type", "bridge"]);
        ip(&["-n", &ns.name, "link", "set", "lan", "up"]);
        Lan { prefix: ns.name.trim_end_matches("-lan").to_string(), ns, nodes: AtomicU32::new(0) }
    }

    /// A new node namespace on the LAN: `eth0` with 192.168.77.<10+n>/24, up.
    pub fn add_node(&self) -> Netns {
        let n = self.nodes.fetch_add(1, Ordering::Relaxed) + 1;
        let mut node = Netns::new(&format!("{}-n{n}", self.prefix));
        let port = format!("p{n}");
        ip(&["-n", &self.ns.name, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &node.name]);
        ip(&["-n", &self.ns.name, "link", "set", &port, "master", "lan", "up"]);
        let address = format!("{LAN_PREFIX}.{}", 10 + n);
        ip(&["-n", &node.name, "addr", "add", &format!("{address}/24"), "dev", "eth0"]);
        ip(&["-n", &node.name, "link", "set", "eth0", "up"]);
        node.lan_ip = Some(address);
        node
    }
}
