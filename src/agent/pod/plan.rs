//! Which containers of a pod should be (re)started now, by the kubelet's
//! rules including sidecars (KEP-753, restartable init containers): regular
//! init containers run one at a time to success; an init container with
//! `restartPolicy: Always` starts in init order, lets the next one start once
//! it has started, and is restarted whenever it exits; app containers start
//! once initialization is done. Pure functions over the spec and records.

use crate::agent::backoff;
use crate::agent::status::{ContainerRecord, State};
use serde_json::Value;

pub use crate::agent::status::is_sidecar;

fn name(container: &Value) -> &str {
    container.get("name").and_then(Value::as_str).unwrap_or_default()
}

fn list<'a>(pod: &'a Value, key: &str) -> &'a [Value] {
    pod.pointer(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn find<'a>(records: &'a [ContainerRecord], name: &str, init: bool) -> Option<&'a ContainerRecord> {
    records.iter().find(|r| r.name == name && r.init == init)
}

/// Whether a container in this state should be started under `policy`.
fn wants_start(record: Option<&ContainerRecord>, policy: &str) -> bool {
    match record {
        None => true,
        Some(r) => match &r.state {
            State::Running { .. } => false,
            State::Terminated(t) => backoff::should_restart(policy, t.exit_code),
            State::Waiting { .. } => true,
        },
    }
}

/// A sidecar counts as started once running with its startup probe passed.
pub fn started(record: Option<&ContainerRecord>) -> bool {
    record.is_some_and(|r| r.running() && !r.startup_pending)
}

/// Whether initialization is over: an app container was ever started.
pub fn initialized(pod: &Value, records: &[ContainerRecord]) -> bool {
    list(pod, "/spec/containers").iter().any(|c| find(records, name(c), false).is_some_and(|r| r.id.is_some()))
}

/// Whether the pod is done: every app container exited for good (restart
/// policy Never/OnFailure), or an init container failed under Never. Its
/// sidecars are then stopped and nothing starts any more.
pub fn done(pod: &Value, records: &[ContainerRecord]) -> bool {
    let policy = pod.pointer("/spec/restartPolicy").and_then(Value::as_str).unwrap_or("Always");
    if policy == "Always" {
        return false;
    }
    let init_failed = list(pod, "/spec/initContainers")
        .iter()
        .filter(|c| !is_sidecar(c))
        .any(|c| find(records, name(c), true).and_then(ContainerRecord::terminated).is_some_and(|t| t.exit_code != 0));
    if policy == "Never" && init_failed {
        return true;
    }
    let apps = list(pod, "/spec/containers");
    !apps.is_empty()
        && apps.iter().all(|c| {
            find(records, name(c), false)
                .and_then(ContainerRecord::terminated)
                .is_some_and(|t| !backoff::should_restart(policy, t.exit_code))
        })
}

/// The containers to (re)start now, in order, as (spec, is init); back-off
/// is the caller's business.
pub fn to_start(pod: &Value, records: &[ContainerRecord]) -> Vec<(Value, bool)> {
    if done(pod, records) {
        return Vec::new();
    }
    let policy = pod.pointer("/spec/restartPolicy").and_then(Value::as_str).unwrap_or("Always");
    // Regular init containers are retried on failure unless the policy is Never.
    let init_policy = if policy == "Never" { "Never" } else { "OnFailure" };
    let mut start = Vec::new();
    let initialized = initialized(pod, records);
    for container in list(pod, "/spec/initContainers") {
        let record = find(records, name(container), true);
        if is_sidecar(container) {
            if wants_start(record, "Always") {
                start.push((container.clone(), true));
            }
            if !initialized && !started(record) {
                return start;
            }
        } else if !initialized {
            if record.is_some_and(ContainerRecord::succeeded) {
                continue;
            }
            if wants_start(record, init_policy) {
                start.push((container.clone(), true));
            }
            return start;
        }
    }
    for container in list(pod, "/spec/containers") {
        if wants_start(find(records, name(container), false), policy) {
            start.push((container.clone(), false));
        }
    }
    start
}

/// The running sidecars to stop now that the pod is done: the last one in
/// spec order first (reverse order), one at a time.
pub fn sidecar_to_stop(pod: &Value, records: &[ContainerRecord]) -> Option<String> {
    if !done(pod, records) {
        return None;
    }
    list(pod, "/spec/initContainers")
        .iter()
        .rev()
        .filter(|c| is_sidecar(c))
        .find(|c| find(records, name(c), true).is_some_and(ContainerRecord::running))
        .map(|c| name(c).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::status::Terminated;
    use serde_json::json;

    fn pod(policy: &str, sidecars: &[&str], inits: &[&str], apps: &[&str]) -> Value {
        let mut init: Vec<Value> =
            sidecars.iter().map(|n| json!({"name": n, "image": "b", "restartPolicy": "Always"})).collect();
        init.extend(inits.iter().map(|n| json!({"name": n, "image": "b"})));
        let apps: Vec<Value> = apps.iter().map(|n| json!({"name": n, "image": "b"})).collect();
        json!({"spec": {"restartPolicy": policy, "initContainers": init, "containers": apps}})
    }

    fn rec(name: &str, init: bool, state: State) -> ContainerRecord {
        let mut r = ContainerRecord::new(name, init, "b");
        r.state = state;
        r.id = Some(format!("u-{name}-0"));
        r
    }

    fn running() -> State {
        State::Running { started_at: "t".into() }
    }

    fn exited(code: i32) -> State {
        State::Terminated(Terminated {
            exit_code: code,
            signal: None,
            reason: "Error".into(),
            message: None,
            started_at: "t".into(),
            finished_at: "t".into(),
        })
    }

    fn names(start: Vec<(Value, bool)>) -> Vec<String> {
        start.into_iter().map(|(c, _)| name(&c).to_string()).collect()
    }

    #[test]
    fn a_sidecar_gates_the_next_init_container_until_started() {
        let p = pod("Never", &["side"], &["init"], &["app"]);
        assert_eq!(names(to_start(&p, &[])), ["side"]);
        let mut side = rec("side", true, running());
        side.startup_pending = true;
        assert!(names(to_start(&p, std::slice::from_ref(&side))).is_empty());
        side.startup_pending = false;
        assert_eq!(names(to_start(&p, std::slice::from_ref(&side))), ["init"]);
        let init = rec("init", true, exited(0));
        assert_eq!(names(to_start(&p, &[side.clone(), init.clone()])), ["app"]);
        assert!(initialized(&p, &[side, init, rec("app", false, running())]));
    }

    #[test]
    fn a_sidecar_restarts_after_initialization_without_blocking_apps() {
        let p = pod("Never", &["side"], &["init"], &["app"]);
        let records = [rec("side", true, exited(1)), rec("init", true, exited(0)), rec("app", false, running())];
        assert_eq!(names(to_start(&p, &records)), ["side"]);
        let records = [rec("side", true, exited(0)), rec("init", true, exited(0)), rec("app", false, exited(1))];
        // The app is done under Never: the sidecar is not restarted.
        assert!(done(&p, &records));
        assert!(to_start(&p, &records).is_empty());
    }

    #[test]
    fn sidecars_stop_in_reverse_order_once_the_apps_are_done() {
        let p = pod("OnFailure", &["a", "b"], &[], &["app"]);
        let mut records = vec![rec("a", true, running()), rec("b", true, running()), rec("app", false, running())];
        assert_eq!(sidecar_to_stop(&p, &records), None);
        records[2].state = exited(0);
        assert_eq!(sidecar_to_stop(&p, &records).as_deref(), Some("b"));
        records[1].state = exited(143);
        assert_eq!(sidecar_to_stop(&p, &records).as_deref(), Some("a"));
        // OnFailure restarts a failed app: not done.
        records[2].state = exited(2);
        assert!(!done(&p, &records));
        assert!(!done(&pod("Always", &["a"], &[], &["app"]), &[rec("app", false, exited(0))]));
    }

    #[test]
    fn regular_init_containers_keep_their_rules() {
        let p = pod("Always", &[], &["i", "j"], &["app"]);
        assert_eq!(names(to_start(&p, &[rec("i", true, exited(1))])), ["i"]);
        assert_eq!(names(to_start(&p, &[rec("i", true, exited(0))])), ["j"]);
        assert!(names(to_start(&p, &[rec("i", true, running())])).is_empty());
        let p = pod("Never", &[], &["i"], &["app"]);
        assert!(done(&p, &[rec("i", true, exited(1))]));
    }
}
