//! Parsing of the cgroup and procfs files resource metrics come from: CPU
//! usage (cumulative nanoseconds) and memory working set (usage minus
//! inactive file pages, as cAdvisor and metrics-server count it), for cgroup
//! v1 (`cpuacct.usage`, `memory.usage_in_bytes`, `memory.stat`
//! `total_inactive_file`) and v2 (`cpu.stat` `usage_usec`, `memory.current`,
//! `memory.stat` `inactive_file`), and the node's `/proc/stat` and `/proc/meminfo`.

use super::{StatsError, Usage};
use std::path::{Path, PathBuf};

/// The cgroup layout of the host: where a container's cgroup `relative`
/// (e.g. `kubepods/pod<uid>/<name>`) keeps its CPU and memory files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One hierarchy per controller: `<root>/cpuacct/<rel>`, `<root>/memory/<rel>`.
    V1 { root: PathBuf },
    /// The unified hierarchy: `<root>/<rel>`.
    V2 { root: PathBuf },
}

impl Layout {
    /// The layout of the cgroup file system mounted at `root` (`/sys/fs/cgroup`):
    /// unified when the root itself is cgroup2, per-controller otherwise (hybrid
    /// hosts run containers in the v1 hierarchies, as libcontainer does).
    pub fn detect(root: &Path) -> Layout {
        if root.join("cgroup.controllers").exists() {
            Layout::V2 { root: root.to_path_buf() }
        } else {
            Layout::V1 { root: root.to_path_buf() }
        }
    }

    /// The folder holding the pods' cgroups (`kubepods`) in the CPU hierarchy.
    pub fn pods_dir(&self) -> PathBuf {
        match self {
            Layout::V1 { root } => root.join("cpuacct").join("kubepods"),
            Layout::V2 { root } => root.join("kubepods"),
        }
    }

    /// The usage of the cgroup `relative`.
    pub fn usage(&self, relative: &str) -> Result<Usage, StatsError> {
        match self {
            Layout::V1 { root } => {
                let cpu = read(&root.join("cpuacct").join(relative).join("cpuacct.usage"))?;
                let memory = root.join("memory").join(relative);
                let usage = read(&memory.join("memory.usage_in_bytes"))?;
                let stat = read(&memory.join("memory.stat"))?;
                Ok(Usage {
                    cpu_nanos: parse_number(&cpu, &root.join(relative))?,
                    memory_working_set: working_set(parse_number(&usage, &memory)?, &stat, "total_inactive_file"),
                })
            }
            Layout::V2 { root } => {
                let dir = root.join(relative);
                let cpu = read(&dir.join("cpu.stat"))?;
                let usage = read(&dir.join("memory.current"))?;
                let stat = read(&dir.join("memory.stat"))?;
                let usec = stat_field(&cpu, "usage_usec")
                    .ok_or_else(|| StatsError::Parse { path: dir.join("cpu.stat"), what: "usage_usec" })?;
                Ok(Usage {
                    cpu_nanos: usec.saturating_mul(1000),
                    memory_working_set: working_set(parse_number(&usage, &dir)?, &stat, "inactive_file"),
                })
            }
        }
    }
}

impl Layout {
    /// How many processes of cgroup `relative` the kernel OOM killer killed:
    /// v2 `memory.events` `oom_kill`; v1 `memory.oom_control` `oom_kill`, or
    /// on kernels without that counter `memory.failcnt` (times the limit was
    /// hit). `None` when the cgroup is gone or unreadable.
    pub fn oom_kills(&self, relative: &str) -> Option<u64> {
        match self {
            Layout::V1 { root } => {
                let dir = root.join("memory").join(relative);
                let control = std::fs::read_to_string(dir.join("memory.oom_control")).ok()?;
                stat_field(&control, "oom_kill").or_else(|| {
                    let failcnt = std::fs::read_to_string(dir.join("memory.failcnt")).ok()?;
                    failcnt.trim().parse().ok()
                })
            }
            Layout::V2 { root } => {
                let events = std::fs::read_to_string(root.join(relative).join("memory.events")).ok()?;
                stat_field(&events, "oom_kill")
            }
        }
    }
}

fn read(path: &Path) -> Result<String, StatsError> {
    std::fs::read_to_string(path).map_err(|source| StatsError::Read { path: path.to_path_buf(), source })
}

fn parse_number(text: &str, path: &Path) -> Result<u64, StatsError> {
    text.trim().parse().map_err(|_| StatsError::Parse { path: path.to_path_buf(), what: "a number" })
}

/// The value of `key` in a `key value` per line file (`memory.stat`, `cpu.stat`).
pub fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Usage minus inactive file pages, never below zero (cAdvisor's working set).
pub fn working_set(usage: u64, stat: &str, inactive_key: &str) -> u64 {
    usage.saturating_sub(stat_field(stat, inactive_key).unwrap_or(0))
}

/// Clock ticks per second of `/proc/stat` (USER_HZ, 100 on Linux).
const USER_HZ: u64 = 100;

/// The node's busy CPU time in nanoseconds from `/proc/stat`'s `cpu` line:
/// every column but idle and iowait (guest time is already in user).
pub fn node_cpu_nanos(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let busy: u64 = fields.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    Some(busy.saturating_mul(1_000_000_000 / USER_HZ))
}

/// The node's memory working set from `/proc/meminfo`: used memory
/// (MemTotal − MemFree) minus inactive file pages, like the root cgroup's.
pub fn node_memory_working_set(meminfo: &str) -> Option<u64> {
    let field = |key: &str| {
        meminfo.lines().find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok().map(|kib| kib * 1024)
        })
    };
    let used = field("MemTotal")?.saturating_sub(field("MemFree")?);
    Some(used.saturating_sub(field("Inactive(file)").unwrap_or(0)))
}

/// The node's usage from procfs mounted at `proc`.
pub fn node_usage(proc: &Path) -> Result<Usage, StatsError> {
    let stat_path = proc.join("stat");
    let meminfo_path = proc.join("meminfo");
    let cpu_nanos =
        node_cpu_nanos(&read(&stat_path)?).ok_or(StatsError::Parse { path: stat_path, what: "the cpu line" })?;
    let memory_working_set = node_memory_working_set(&read(&meminfo_path)?)
        .ok_or(StatsError::Parse { path: meminfo_path, what: "MemTotal and MemFree" })?;
    Ok(Usage { cpu_nanos, memory_working_set })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_STAT: &str =
        "cache 12689408\nrss 4341760\ninactive_file 73728\ntotal_cache 1000\ntotal_inactive_file 4096\n";
    const V2_CPU: &str = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 0\n";
    const V2_MEM: &str = "anon 4096\nfile 8192\nactive_file 4096\ninactive_file 8192\n";

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::create_dir_all(dir).expect("dir");
        std::fs::write(dir.join(file), text).expect("write");
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kube-stats-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn v1_usage_reads_cpuacct_and_memory_hierarchies() {
        let root = temp("v1");
        write(&root.join("cpuacct/kubepods/podu/c"), "cpuacct.usage", "123456789\n");
        write(&root.join("memory/kubepods/podu/c"), "memory.usage_in_bytes", "1048576\n");
        write(&root.join("memory/kubepods/podu/c"), "memory.stat", V1_STAT);
        let layout = Layout::detect(&root);
        assert_eq!(layout, Layout::V1 { root: root.clone() });
        let usage = layout.usage("kubepods/podu/c").expect("usage");
        // total_inactive_file (hierarchical), not the cgroup's own inactive_file.
        assert_eq!(usage, Usage { cpu_nanos: 123_456_789, memory_working_set: 1_048_576 - 4096 });
        assert_eq!(layout.pods_dir(), root.join("cpuacct/kubepods"));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn v2_usage_reads_the_unified_hierarchy() {
        let root = temp("v2");
        write(&root, "cgroup.controllers", "cpu memory\n");
        let dir = root.join("kubepods/podu/c");
        write(&dir, "cpu.stat", V2_CPU);
        write(&dir, "memory.current", "65536\n");
        write(&dir, "memory.stat", V2_MEM);
        let layout = Layout::detect(&root);
        assert_eq!(layout, Layout::V2 { root: root.clone() });
        let usage = layout.usage("kubepods/podu/c").expect("usage");
        assert_eq!(usage, Usage { cpu_nanos: 2_500_000_000, memory_working_set: 65536 - 8192 });
        assert!(matches!(layout.usage("kubepods/podu/gone"), Err(StatsError::Read { .. })));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn oom_kills_per_layout() {
        let root = temp("oom1");
        write(
            &root.join("memory/kubepods/podu/c"),
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        write(&root.join("memory/kubepods/podu/old"), "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n");
        write(&root.join("memory/kubepods/podu/old"), "memory.failcnt", "7\n");
        let v1 = Layout::detect(&root);
        assert_eq!(v1.oom_kills("kubepods/podu/c"), Some(2));
        assert_eq!(v1.oom_kills("kubepods/podu/old"), Some(7));
        assert_eq!(v1.oom_kills("kubepods/podu/gone"), None);
        let _ = std::fs::remove_dir_all(&root);
        let root = temp("oom2");
        write(&root, "cgroup.controllers", "cpu memory\n");
        write(&root.join("kubepods/podu/c"), "memory.events", "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n");
        assert_eq!(Layout::detect(&root).oom_kills("kubepods/podu/c"), Some(1));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn working_set_never_goes_below_zero() {
        assert_eq!(working_set(100, "inactive_file 4096\n", "inactive_file"), 0);
        assert_eq!(working_set(100, "", "inactive_file"), 100);
    }

    #[test]
    fn node_cpu_counts_busy_ticks() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nintr 1 2\n";
        // user + nice + system + irq + softirq + steal = 161 ticks of 10 ms.
        assert_eq!(node_cpu_nanos(stat), Some(161 * 10_000_000));
        assert_eq!(node_cpu_nanos("intr 1\n"), None);
    }

    #[test]
    fn node_memory_is_used_minus_inactive_file() {
        let meminfo =
            "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    600 kB\nInactive(file):  300 kB\n";
        assert_eq!(node_memory_working_set(meminfo), Some(500 * 1024));
        assert_eq!(node_memory_working_set("MemFree: 1 kB\n"), None);
    }
}
