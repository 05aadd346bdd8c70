//! The OCI runtime spec (`config.json`) of one container, rendered from its
//! pod, the image config and the sandbox paths: a pure function.

use super::image::Image;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// A bind mount into the container (volumes, /etc/hosts, resolv.conf).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    pub destination: String,
    pub source: PathBuf,
    pub readonly: bool,
}

pub struct SpecInput<'a> {
    pub pod: &'a Value,
    pub container: &'a Value,
    pub image: &'a Image,
    /// What the pod gives the container's environment, in order ([`super::env::resolve`]).
    pub env: &'a [(String, String)],
    /// The pod's network namespace; `None` with hostNetwork.
    pub netns: Option<&'a Path>,
    pub cgroups_path: String,
    pub mounts: Vec<BindMount>,
}

/// Parses a Kubernetes quantity (`64Mi`, `1G`, `500m`, `2`) into a number of units
/// (bytes for memory, cores for cpu).
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        s if s.starts_with('e') || s.starts_with('E') => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

fn strings(value: Option<&Value>) -> Option<Vec<String>> {
    value.and_then(Value::as_array).map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
}

/// The process arguments, by Kubernetes' rules for command/args over the
/// image's Entrypoint/Cmd; the container's own command and args have their
/// `$(VAR)` references expanded from `vars` (the pod-given environment).
pub fn process_args(container: &Value, image: &Image, vars: &[(String, String)]) -> Vec<String> {
    let expanded = |key: &str| {
        strings(container.get(key)).map(|list| list.iter().map(|arg| expand(arg, vars)).collect::<Vec<_>>())
    };
    let command = expanded("command").filter(|c| !c.is_empty());
    let args = expanded("args").filter(|a| !a.is_empty());
    match (command, args) {
        (Some(mut command), args) => {
            command.extend(args.unwrap_or_default());
            command
        }
        (None, Some(args)) => {
            let mut all = image.entrypoint();
            all.extend(args);
            all
        }
        (None, None) => {
            let mut all = image.entrypoint();
            all.extend(image.cmd());
            all
        }
    }
}

/// `$(VAR)` references expanded from `vars`; `$$` escapes.
pub fn expand(text: &str, vars: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some((_, value)) = vars.iter().rev().find(|(k, _)| k == &inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The environment: image Env, HOSTNAME, then what the pod gives the
/// container ([`super::env::resolve`]); later entries win.
pub fn environment(pod: &Value, image: &Image, given: &[(String, String)]) -> Vec<String> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut set = |k: String, v: String| {
        vars.retain(|(name, _)| name != &k);
        vars.push((k, v));
    };
    for entry in image.env() {
        if let Some((k, v)) = entry.split_once('=') {
            set(k.to_string(), v.to_string());
        }
    }
    let hostname = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    set("HOSTNAME".into(), hostname.to_string());
    for (k, v) in given {
        set(k.clone(), v.clone());
    }
    vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The container's `config.json`.
pub fn render(input: &SpecInput<'_>) -> Value {
    let container = input.container;
    let security = container.get("securityContext");
    let pod_security = input.pod.pointer("/spec/securityContext");
    let id = |key: &str| {
        security.and_then(|s| s.get(key)).or_else(|| pod_security.and_then(|s| s.get(key))).and_then(Value::as_u64)
    };
    let (image_uid, image_gid) = input
        .image
        .config
        .get("User")
        .and_then(Value::as_str)
        .map(|u| {
            let mut parts = u.splitn(2, ':');
            let uid = parts.next().and_then(|p| p.parse::<u64>().ok());
            let gid = parts.next().and_then(|p| p.parse::<u64>().ok());
            (uid, gid)
        })
        .unwrap_or((None, None));
    let uid = id("runAsUser").or(image_uid).unwrap_or(0);
    let gid = id("runAsGroup").or(image_gid).unwrap_or(0);
    let privileged = security.and_then(|s| s.get("privileged")).and_then(Value::as_bool).unwrap_or(false);
    let cwd = container
        .get("workingDir")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| input.image.working_dir())
        .unwrap_or_else(|| "/".into());
    let caps: Vec<&str> = CAPABILITIES.to_vec();
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    for mount in &input.mounts {
        let mut options = vec!["rbind", "rprivate"];
        if mount.readonly {
            options.push("ro");
        }
        mounts.push(
            json!({"destination": mount.destination, "type": "bind", "source": mount.source, "options": options}),
        );
    }
    let mut namespaces =
        vec![json!({"type": "pid"}), json!({"type": "ipc"}), json!({"type": "uts"}), json!({"type": "mount"})];
    if let Some(netns) = input.netns {
        namespaces.push(json!({"type": "network", "path": netns}));
    }
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    let limits = container.pointer("/resources/limits");
    if let Some(memory) = limits.and_then(|l| l.get("memory")).and_then(Value::as_str).and_then(parse_quantity) {
        resources["memory"] = json!({"limit": memory as i64});
    }
    let mut cpu = json!({});
    if let Some(cores) = limits.and_then(|l| l.get("cpu")).and_then(Value::as_str).and_then(parse_quantity) {
        cpu["quota"] = json!(((cores * 100_000.0) as i64).max(1000));
        cpu["period"] = json!(100_000);
    }
    if let Some(cores) = container.pointer("/resources/requests/cpu").and_then(Value::as_str).and_then(parse_quantity) {
        cpu["shares"] = json!(((cores * 1024.0) as u64).max(2));
    }
    if cpu.as_object().is_some_and(|c| !c.is_empty()) {
        resources["cpu"] = cpu;
    }
    let hostname = input
        .pod
        .pointer("/spec/hostname")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| input.pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("pod"));
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": input.cgroups_path,
        "resources": resources,
    });
    if !privileged {
        linux["maskedPaths"] = json!([
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi"
        ]);
        linux["readonlyPaths"] = json!(["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]);
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": process_args(container, input.image, input.env),
            "env": environment(input.pod, input.image, input.env),
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": !privileged && !security.and_then(|s| s.get("allowPrivilegeEscalation")).and_then(Value::as_bool).unwrap_or(true),
        },
        "root": {"path": "rootfs", "readonly": security.and_then(|s| s.get("readOnlyRootFilesystem")).and_then(Value::as_bool).unwrap_or(false)},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Image {
        Image {
            reference: "127.0.0.1:5000/busybox:latest".into(),
            image_id: "127.0.0.1:5000/busybox@sha256:1".into(),
            config_digest: "sha256:2".into(),
            config: json!({"Env": ["PATH=/bin", "A=image"], "Cmd": ["sh"], "WorkingDir": "/"}),
            rootfs: "/x".into(),
            layers: Vec::new(),
            size: 0,
            last_used: 0,
        }
    }

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"nodeName": "nas", "containers": [{
                "name": "c", "image": "busybox",
                "command": ["sh", "-c"], "args": ["echo $(A) $$HOME; sleep 1"],
                "env": [{"name": "A", "value": "pod"}, {"name": "B", "value": "x$(A)"},
                        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                "workingDir": "/tmp",
                "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}
            }]}
        })
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("64Mi"), Some(67_108_864.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1x"), None);
    }

    #[test]
    fn command_args_and_image_defaults() {
        let image = image();
        assert_eq!(process_args(&json!({"command": ["a"], "args": ["b"]}), &image, &[]), ["a", "b"]);
        assert_eq!(process_args(&json!({"args": ["-c", "x"]}), &image, &[]), ["-c", "x"]);
        assert_eq!(process_args(&json!({}), &image, &[]), ["sh"]);
        let vars = [("A".to_string(), "pod".to_string())];
        let expanded = process_args(&json!({"args": ["echo $(A) $$(A) $(B)"]}), &image, &vars);
        assert_eq!(expanded, ["echo pod $(A) $(B)"], "references expand, $$ escapes, unknown ones stay");
    }

    #[test]
    fn renders_a_valid_runtime_spec() {
        let pod = pod();
        let container = &pod["spec"]["containers"][0];
        let image = image();
        let given: Vec<(String, String)> =
            [("A", "pod"), ("B", "xpod"), ("NS", "default")].map(|(k, v)| (k.to_string(), v.to_string())).to_vec();
        let spec = render(&SpecInput {
            pod: &pod,
            container,
            image: &image,
            env: &given,
            netns: Some(Path::new("/data/netns/u1")),
            cgroups_path: "/kubepods/podu1/c".into(),
            mounts: vec![BindMount { destination: "/data".into(), source: "/host/vol".into(), readonly: true }],
        });
        let parsed: libcontainer::oci_spec::runtime::Spec =
            serde_json::from_value(spec.clone()).expect("a valid OCI runtime spec");
        assert_eq!(parsed.hostname().as_deref(), Some("web"));
        assert_eq!(spec["process"]["args"], json!(["sh", "-c", "echo pod $HOME; sleep 1"]));
        let env: Vec<&str> = spec["process"]["env"].as_array().expect("env").iter().filter_map(Value::as_str).collect();
        assert!(env.contains(&"A=pod"));
        assert!(env.contains(&"B=xpod"));
        assert!(env.contains(&"NS=default"));
        assert!(env.contains(&"PATH=/bin"));
        assert!(env.contains(&"HOSTNAME=web"));
        assert_eq!(spec["process"]["cwd"], "/tmp");
        assert_eq!(spec["linux"]["cgroupsPath"], "/kubepods/podu1/c");
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 67_108_864);
        assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert!(
            spec["linux"]["namespaces"]
                .as_array()
                .expect("ns")
                .contains(&json!({"type": "network", "path": "/data/netns/u1"}))
        );
        let last = spec["mounts"].as_array().expect("mounts").last().cloned().expect("mount");
        assert_eq!(
            last,
            json!({"destination": "/data", "type": "bind", "source": "/host/vol", "options": ["rbind", "rprivate", "ro"]})
        );
    }

    #[test]
    fn host_network_shares_the_host_namespace() {
        let pod = pod();
        let image = image();
        let spec = render(&SpecInput {
            pod: &pod,
            container: &pod["spec"]["containers"][0],
            image: &image,
            env: &[],
            netns: None,
            cgroups_path: String::new(),
            mounts: Vec::new(),
        });
        assert!(!spec["linux"]["namespaces"].as_array().expect("ns").iter().any(|n| n["type"] == "network"));
    }
}
