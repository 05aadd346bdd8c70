//! Resource usage of the node and its pods' containers, read from the
//! cgroups the runtime creates (`kubepods/pod<uid>/<container>`) and from
//! procfs: the `/stats/summary` of the agent's API, which the API server's
//! `metrics.k8s.io` turns into rates (`server::resource_metrics`).

pub mod cgroup;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not hold {what}")]
    Parse { path: PathBuf, what: &'static str },
}

/// Cumulative CPU time and current memory working set of one cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    #[serde(rename = "usageCoreNanoSeconds")]
    pub cpu_nanos: u64,
    #[serde(rename = "workingSetBytes")]
    pub memory_working_set: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStats {
    pub name: String,
    pub usage: Usage,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodRef,
    pub containers: Vec<ContainerStats>,
}

/// One sample of the node: every value read at `time_nanos` (Unix nanoseconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub node_name: String,
    pub time_nanos: i64,
    pub node: Usage,
    pub pods: Vec<PodStats>,
}

/// The pods of this agent: its log folders `<namespace>_<name>_<uid>`.
fn agent_pods(logs_root: &Path) -> Vec<PodRef> {
    let entries = std::fs::read_dir(logs_root).into_iter().flatten().flatten();
    entries
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let mut parts = name.splitn(3, '_');
            let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
            Some(PodRef { namespace: namespace.into(), name: pod.into(), uid: uid.into() })
        })
        .collect()
}

/// Reads the node and every running container of the pods whose logs are
/// under `logs_root` (containers without a cgroup are not running: skipped).
pub fn collect(node_name: &str, logs_root: &Path, cgroup_root: &Path, proc: &Path) -> Result<Summary, StatsError> {
    let layout = cgroup::Layout::detect(cgroup_root);
    let node = cgroup::node_usage(proc)?;
    let time_nanos = i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX);
    let mut pods = Vec::new();
    for pod_ref in agent_pods(logs_root) {
        let pod_dir = layout.pods_dir().join(format!("pod{}", pod_ref.uid));
        let mut containers = Vec::new();
        for entry in std::fs::read_dir(&pod_dir).into_iter().flatten().flatten() {
            let Ok(name) = entry.file_name().into_string() else { continue };
            if !entry.path().is_dir() {
                continue;
            }
            match layout.usage(&format!("kubepods/pod{}/{name}", pod_ref.uid)) {
                Ok(usage) => containers.push(ContainerStats { name, usage }),
                Err(err) => tracing::debug!(pod = %pod_ref.name, container = %name, error = %err, "no usage"),
            }
        }
        if !containers.is_empty() {
            containers.sort_by(|a, b| a.name.cmp(&b.name));
            pods.push(PodStats { pod_ref, containers });
        }
    }
    Ok(Summary { node_name: node_name.into(), time_nanos, node, pods })
}

/// [`collect`] for this host (`/sys/fs/cgroup`, `/proc`).
pub fn collect_host(node_name: &str, logs_root: &Path) -> Result<Summary, StatsError> {
    collect(node_name, logs_root, Path::new("/sys/fs/cgroup"), Path::new("/proc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_the_agents_pods_only() {
        let root = std::env::temp_dir().join(format!("kube-stats-collect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (logs, cg, proc) = (root.join("logs"), root.join("cg"), root.join("proc"));
        std::fs::create_dir_all(logs.join("default_web_u1")).expect("logs");
        std::fs::create_dir_all(&proc).expect("proc");
        std::fs::write(proc.join("stat"), "cpu  1 0 1 5 0 0 0 0 0 0\n").expect("stat");
        std::fs::write(proc.join("meminfo"), "MemTotal: 10 kB\nMemFree: 4 kB\n").expect("meminfo");
        for uid in ["u1", "other"] {
            let cpu = cg.join(format!("cpuacct/kubepods/pod{uid}/main"));
            let mem = cg.join(format!("memory/kubepods/pod{uid}/main"));
            std::fs::create_dir_all(&cpu).expect("cpu");
            std::fs::create_dir_all(&mem).expect("mem");
            std::fs::write(cpu.join("cpuacct.usage"), "42\n").expect("usage");
            std::fs::write(mem.join("memory.usage_in_bytes"), "2048\n").expect("mem usage");
            std::fs::write(mem.join("memory.stat"), "total_inactive_file 1024\n").expect("mem stat");
        }
        let summary = collect("n1", &logs, &cg, &proc).expect("summary");
        assert_eq!(summary.node, Usage { cpu_nanos: 2 * 10_000_000, memory_working_set: 6 * 1024 });
        assert_eq!(summary.pods.len(), 1);
        let pod = &summary.pods[0];
        assert_eq!(pod.pod_ref, PodRef { namespace: "default".into(), name: "web".into(), uid: "u1".into() });
        assert_eq!(
            pod.containers,
            vec![ContainerStats { name: "main".into(), usage: Usage { cpu_nanos: 42, memory_working_set: 1024 } }]
        );
        let json = serde_json::to_value(&summary).expect("json");
        assert_eq!(json["pods"][0]["containers"][0]["usage"]["usageCoreNanoSeconds"], 42);
        let _ = std::fs::remove_dir_all(&root);
    }
}
