//! What the agent knows about each container (persisted next to the pod so
//! a restarted agent can adopt it) and the pure computation of the pod's
//! `status` from the spec and those records, with upstream kubelet's rules.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: String,
    pub finished_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Waiting { reason: String, message: Option<String> },
    Running { started_at: String },
    Terminated(Terminated),
}

/// One container of the pod as the agent tracks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    pub init: bool,
    pub state: State,
    pub last: Option<Terminated>,
    pub restart_count: u32,
    /// The runtime's id of the current run (`<pod uid>-<name>-<restart>`).
    pub id: Option<String>,
    pub pid: Option<i32>,
    pub image: String,
    pub image_id: String,
    pub ready: bool,
    /// A startup probe has not succeeded yet for the current run.
    #[serde(default)]
    pub startup_pending: bool,
}

impl ContainerRecord {
    pub fn new(name: &str, init: bool, image: &str) -> ContainerRecord {
        ContainerRecord {
            name: name.into(),
            init,
            state: State::Waiting { reason: "ContainerCreating".into(), message: None },
            last: None,
            restart_count: 0,
            id: None,
            pid: None,
            image: image.into(),
            image_id: String::new(),
            ready: false,
            startup_pending: false,
        }
    }

    pub fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    pub fn terminated(&self) -> Option<&Terminated> {
        match &self.state {
            State::Terminated(t) => Some(t),
            _ => None,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.terminated().is_some_and(|t| t.exit_code == 0)
    }
}

/// The `terminated.reason` of a run, as containerd's CRI reports it: the
/// kernel OOM killer killing any process of the container's cgroup wins
/// (whatever the exit code), then `Completed` for 0, `Error` otherwise.
pub fn exit_reason(known: bool, exit_code: i32, oom_kills: u64) -> &'static str {
    if oom_kills > 0 {
        "OOMKilled"
    } else if !known {
        "Unknown"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

fn terminated_json(t: &Terminated, id: Option<&str>) -> Value {
    let mut v = json!({
        "exitCode": t.exit_code,
        "reason": t.reason,
        "startedAt": t.started_at,
        "finishedAt": t.finished_at,
    });
    if let Some(signal) = t.signal {
        v["signal"] = json!(signal);
    }
    if let Some(message) = &t.message {
        v["message"] = json!(message);
    }
    if let Some(id) = id {
        v["containerID"] = json!(format!("kube://{id}"));
    }
    v
}

/// One entry of containerStatuses / initContainerStatuses.
pub fn container_status(spec: &Value, record: Option<&ContainerRecord>) -> Value {
    let name = spec.get("name").and_then(Value::as_str).unwrap_or_default();
    let image = spec.get("image").and_then(Value::as_str).unwrap_or_default();
    let Some(record) = record else {
        return json!({
            "name": name, "image": image, "imageID": "", "ready": false, "restartCount": 0, "started": false,
            "state": {"waiting": {"reason": "ContainerCreating"}},
        });
    };
    let state = match &record.state {
        State::Waiting { reason, message } => {
            let mut w = json!({"reason": reason});
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            json!({"waiting": w})
        }
        State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
        State::Terminated(t) => json!({"terminated": terminated_json(t, record.id.as_deref())}),
    };
    let mut status = json!({
        "name": name,
        "image": image,
        "imageID": record.image_id,
        "ready": record.ready && record.running(),
        "restartCount": record.restart_count,
        "started": record.running() && !record.startup_pending,
        "state": state,
        "lastState": record.last.as_ref().map(|t| json!({"terminated": terminated_json(t, None)})).unwrap_or(json!({})),
    });
    if let Some(id) = &record.id {
        status["containerID"] = json!(format!("kube://{id}"));
    }
    status
}

/// Whether an init container is a sidecar (`restartPolicy: Always`, KEP-753).
pub fn is_sidecar(container: &Value) -> bool {
    container.get("restartPolicy").and_then(Value::as_str) == Some("Always")
}

/// The pod phase, by kubelet's `getPhase`: sidecars keep a pod Pending
/// until started and Running while they run; exited ones do not count.
pub fn phase(pod: &Value, records: &[ContainerRecord]) -> &'static str {
    let policy = pod.pointer("/spec/restartPolicy").and_then(Value::as_str).unwrap_or("Always");
    let find = |name: &str, init: bool| records.iter().find(|r| r.name == name && r.init == init);
    let names = |key: &str, sidecars: bool| -> Vec<String> {
        pod.pointer(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| is_sidecar(c) == sidecars)
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    let mut pending_init = false;
    for name in names("/spec/initContainers", false) {
        match find(&name, true) {
            Some(r) if r.succeeded() => {}
            Some(r) if policy == "Never" && r.terminated().is_some() => return "Failed",
            _ => pending_init = true,
        }
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for name in names("/spec/initContainers", true) {
        match find(&name, true) {
            Some(r) if r.running() => {
                pending_init |= r.startup_pending;
                running += 1;
            }
            Some(r) if r.terminated().is_some() || r.last.is_some() => {}
            _ => pending_init = true,
        }
    }
    if pending_init {
        return "Pending";
    }
    for name in names("/spec/containers", false) {
        match find(&name, false) {
            None => waiting += 1,
            Some(r) => match &r.state {
                State::Running { .. } => running += 1,
                State::Terminated(t) => {
                    stopped += 1;
                    if t.exit_code == 0 {
                        succeeded += 1;
                    }
                }
                State::Waiting { .. } if r.last.is_some() => stopped += 1,
                State::Waiting { .. } => waiting += 1,
            },
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

/// Facts about the pod that are not in the records.
pub struct PodFacts<'a> {
    pub host_ip: &'a str,
    pub pod_ip: Option<&'a str>,
    pub start_time: &'a str,
    pub now: &'a str,
    pub sandbox_ready: bool,
}

/// The whole `status` of the pod. Condition transition times are kept from
/// `previous` (the pod's current status) when a condition did not change.
pub fn pod_status(pod: &Value, records: &[ContainerRecord], facts: &PodFacts<'_>) -> Value {
    let previous = pod.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let spec_list = |key: &str| pod.pointer(key).and_then(Value::as_array).cloned().unwrap_or_default();
    let inits = spec_list("/spec/initContainers");
    let apps = spec_list("/spec/containers");
    let record = |c: &Value, init: bool| {
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        records.iter().find(|r| r.name == name && r.init == init)
    };
    let phase = phase(pod, records);
    // Regular init containers succeeded and sidecars started (or an app container ran).
    let apps_ran = apps.iter().any(|c| record(c, false).is_some_and(|r| r.id.is_some()));
    let initialized = apps_ran
        || inits.iter().all(|c| {
            record(c, true)
                .is_some_and(|r| if is_sidecar(c) { r.running() && !r.startup_pending } else { r.succeeded() })
        });
    let ready = |r: &ContainerRecord| r.ready && r.running();
    let all_ready = !apps.is_empty()
        && apps.iter().all(|c| record(c, false).is_some_and(ready))
        && inits.iter().filter(|c| is_sidecar(c)).all(|c| record(c, true).is_some_and(ready));
    let condition = |kind: &str, ok: bool, reason: Option<&str>| {
        let status = if ok { "True" } else { "False" };
        let since = previous
            .iter()
            .find(|c| {
                c.get("type").and_then(Value::as_str) == Some(kind)
                    && c.get("status").and_then(Value::as_str) == Some(status)
            })
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(facts.now));
        let mut c = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
        if let Some(reason) = reason.filter(|_| !ok) {
            c["reason"] = json!(reason);
        }
        c
    };
    let terminal = phase == "Succeeded" || phase == "Failed";
    let ready_reason = if terminal { Some("PodCompleted") } else { Some("ContainersNotReady") };
    let conditions = vec![
        condition("PodReadyToStartContainers", facts.sandbox_ready, None),
        condition("Initialized", initialized, Some(if terminal { "PodCompleted" } else { "ContainersNotInitialized" })),
        condition("Ready", all_ready, ready_reason),
        condition("ContainersReady", all_ready, ready_reason),
        condition("PodScheduled", true, None),
    ];
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": facts.host_ip,
        "hostIPs": [{"ip": facts.host_ip}],
        "startTime": facts.start_time,
        "qosClass": pod.pointer("/status/qosClass").cloned().unwrap_or(json!("BestEffort")),
        "containerStatuses": apps.iter().map(|c| container_status(c, record(c, false))).collect::<Vec<_>>(),
    });
    if !inits.is_empty() {
        status["initContainerStatuses"] = inits.iter().map(|c| container_status(c, record(c, true))).collect();
    }
    if let Some(ip) = facts.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: &str, inits: &[&str], apps: &[&str]) -> Value {
        let list = |names: &[&str]| names.iter().map(|n| json!({"name": n, "image": "busybox"})).collect::<Vec<_>>();
        json!({"spec": {"restartPolicy": policy, "initContainers": list(inits), "containers": list(apps)}})
    }

    fn rec(name: &str, init: bool, state: State) -> ContainerRecord {
        let mut r = ContainerRecord::new(name, init, "busybox");
        r.state = state;
        r
    }

    fn exited(code: i32) -> State {
        State::Terminated(Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: "t0".into(),
            finished_at: "t1".into(),
        })
    }

    fn running() -> State {
        State::Running { started_at: "t0".into() }
    }

    #[test]
    fn exit_reasons() {
        assert_eq!(exit_reason(true, 137, 1), "OOMKilled");
        assert_eq!(exit_reason(true, 0, 0), "Completed");
        assert_eq!(exit_reason(true, 137, 0), "Error");
        assert_eq!(exit_reason(false, 255, 0), "Unknown");
    }

    #[test]
    fn phases() {
        assert_eq!(phase(&pod("Always", &[], &["a"]), &[]), "Pending");
        assert_eq!(phase(&pod("Always", &[], &["a"]), &[rec("a", false, running())]), "Running");
        assert_eq!(phase(&pod("Never", &[], &["a"]), &[rec("a", false, exited(1))]), "Failed");
        assert_eq!(phase(&pod("Never", &[], &["a"]), &[rec("a", false, exited(0))]), "Succeeded");
        assert_eq!(phase(&pod("OnFailure", &[], &["a"]), &[rec("a", false, exited(1))]), "Running");
        assert_eq!(phase(&pod("Always", &[], &["a"]), &[rec("a", false, exited(0))]), "Running");
        let mut backoff = rec("a", false, State::Waiting { reason: "CrashLoopBackOff".into(), message: None });
        backoff.last = exited(1).clone().terminated_owned();
        assert_eq!(phase(&pod("Always", &[], &["a"]), &[backoff]), "Running");
    }

    #[test]
    fn sidecars_in_phase_and_conditions() {
        let mut p = pod("Never", &["side"], &["a"]);
        p["spec"]["initContainers"][0]["restartPolicy"] = json!("Always");
        let mut side = rec("side", true, running());
        side.startup_pending = true;
        assert_eq!(phase(&p, std::slice::from_ref(&side)), "Pending");
        side.startup_pending = false;
        side.ready = true;
        let mut app = rec("a", false, running());
        app.ready = true;
        app.id = Some("u-a-0".into());
        assert_eq!(phase(&p, &[side.clone(), app.clone()]), "Running");
        let facts = PodFacts { host_ip: "h", pod_ip: None, start_time: "t0", now: "t1", sandbox_ready: true };
        let condition = |status: &Value, kind: &str| {
            status["conditions"].as_array().expect("c").iter().find(|c| c["type"] == kind).expect("condition")["status"]
                .clone()
        };
        let status = pod_status(&p, &[side.clone(), app.clone()], &facts);
        assert_eq!(condition(&status, "Initialized"), "True");
        assert_eq!(condition(&status, "Ready"), "True");
        assert_eq!(status["initContainerStatuses"][0]["started"], true);
        side.ready = false;
        assert_eq!(condition(&pod_status(&p, &[side.clone(), app.clone()], &facts), "Ready"), "False");
        // The app done and the sidecar stopped: Succeeded, whatever the sidecar's exit code.
        app.state = exited(0);
        assert_eq!(phase(&p, &[side.clone(), app.clone()]), "Running");
        side.state = exited(143);
        assert_eq!(phase(&p, &[side, app]), "Succeeded");
    }

    #[test]
    fn init_containers_gate_the_pod() {
        let p = pod("Never", &["i"], &["a"]);
        assert_eq!(phase(&p, &[rec("i", true, running())]), "Pending");
        assert_eq!(phase(&p, &[rec("i", true, exited(2))]), "Failed");
        assert_eq!(phase(&p, &[rec("i", true, exited(0)), rec("a", false, running())]), "Running");
        let p = pod("Always", &["i"], &["a"]);
        assert_eq!(phase(&p, &[rec("i", true, exited(2))]), "Pending");
    }

    #[test]
    fn status_reports_ready_and_exit_codes() {
        let p = pod("Never", &[], &["a", "b"]);
        let mut a = rec("a", false, running());
        a.ready = true;
        a.id = Some("u-a-0".into());
        let b = rec("b", false, exited(1));
        let facts = PodFacts { host_ip: "10.0.0.1", pod_ip: None, start_time: "t0", now: "t2", sandbox_ready: true };
        let status = pod_status(&p, &[a.clone(), b], &facts);
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["containerStatuses"][0]["ready"], true);
        assert_eq!(status["containerStatuses"][0]["containerID"], "kube://u-a-0");
        assert_eq!(status["containerStatuses"][1]["state"]["terminated"]["exitCode"], 1);
        let ready = status["conditions"].as_array().expect("conditions").iter().find(|c| c["type"] == "Ready").cloned();
        assert_eq!(ready.expect("Ready")["status"], "False");
        let status = pod_status(&pod("Never", &[], &["a"]), &[a], &facts);
        let ready = status["conditions"].as_array().expect("conditions").iter().find(|c| c["type"] == "Ready").cloned();
        assert_eq!(ready.expect("Ready")["status"], "True");
        assert!(status.get("podIP").is_none());
    }

    #[test]
    fn transition_times_are_kept() {
        let mut p = pod("Always", &[], &["a"]);
        p["status"] = json!({"conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "old"}]});
        let facts = PodFacts { host_ip: "h", pod_ip: Some("h"), start_time: "t0", now: "new", sandbox_ready: true };
        let status = pod_status(&p, &[], &facts);
        let scheduled =
            status["conditions"].as_array().expect("c").iter().find(|c| c["type"] == "PodScheduled").cloned();
        assert_eq!(scheduled.expect("PodScheduled")["lastTransitionTime"], "old");
        assert_eq!(status["podIP"], "h");
    }

    impl State {
        fn terminated_owned(self) -> Option<Terminated> {
            match self {
                State::Terminated(t) => Some(t),
                _ => None,
            }
        }
    }
}
