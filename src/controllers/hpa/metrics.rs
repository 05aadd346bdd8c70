//! What the autoscaler reads about the target's pods: their usage from
//! `metrics.k8s.io` (summed over containers, milli-units) and, per pod, the
//! request and readiness the replica calculation needs ([`super::replicas::PodView`]).

use super::super::Context;
use super::super::objects::{self, PODS, deleting, str_at};
use super::replicas::{PodView, ReplicaError};
use crate::controllers::scheduler::quantity::milli_of;
use crate::server::error::ApiError;
use serde_json::Value;
use std::collections::BTreeMap;

/// Pods younger than this count for CPU only with a metric taken a window after readiness.
const CPU_INITIALIZATION_SECONDS: i64 = 300;
/// Readiness flips this soon after start are the initial one.
const INITIAL_READINESS_DELAY_SECONDS: i64 = 30;

/// One pod's usage: milli-units by resource, and the sample's time and window (seconds).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodUsage {
    pub milli: BTreeMap<String, i64>,
    pub timestamp: i64,
    pub window: f64,
}

pub fn seconds(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

fn window_seconds(text: &str) -> f64 {
    text.strip_suffix('s').and_then(|s| s.parse().ok()).unwrap_or(0.0)
}

/// The usage of every pod `selector` (a label selector string) picks in `ns`.
pub async fn pod_usage(ctx: &Context, ns: &str, selector: &str) -> Result<BTreeMap<String, PodUsage>, ApiError> {
    let query = serde_urlencoded::to_string([("labelSelector", selector)]).unwrap_or_default();
    let list = ctx.client.get(&format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?{query}")).await?;
    let mut usage = BTreeMap::new();
    for item in list.get("items").and_then(Value::as_array).into_iter().flatten() {
        let mut pod = PodUsage {
            timestamp: seconds(str_at(item, "/timestamp")).unwrap_or(0),
            window: window_seconds(str_at(item, "/window")),
            ..PodUsage::default()
        };
        for container in item.get("containers").and_then(Value::as_array).into_iter().flatten() {
            for (resource, quantity) in container.get("usage").and_then(Value::as_object).into_iter().flatten() {
                let milli = milli_of(quantity).and_then(|m| i64::try_from(m).ok()).unwrap_or(0);
                *pod.milli.entry(resource.clone()).or_default() += milli;
            }
        }
        usage.insert(str_at(item, "/metadata/name").to_string(), pod);
    }
    Ok(usage)
}

/// The pods of `ns` that `selector` picks.
pub async fn selected_pods(ctx: &Context, ns: &str, selector: &str) -> Result<Vec<Value>, ApiError> {
    let selector = crate::server::selectors::LabelSelector::parse(selector)
        .map_err(|err| ApiError::bad_request(format!("invalid selector of the scale target: {err}")))?;
    let pods = objects::list(ctx, PODS, Some(ns)).await?;
    Ok(pods.into_iter().filter(|p| selector.matches(p)).collect())
}

/// The summed request of `resource` over the pod's containers.
fn request(pod: &Value, resource: &str) -> Result<i64, ReplicaError> {
    let mut total = 0;
    for container in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
        let milli = container.pointer(&format!("/resources/requests/{resource}")).and_then(milli_of);
        match milli.and_then(|m| i64::try_from(m).ok()) {
            Some(m) => total += m,
            None => {
                return Err(ReplicaError::MissingRequest {
                    resource: resource.into(),
                    container: str_at(container, "/name").into(),
                    pod: objects::name(pod).into(),
                });
            }
        }
    }
    Ok(total)
}

/// Upstream's `groupPods` readiness rule for CPU metrics.
fn cpu_unready(pod: &Value, usage: Option<&PodUsage>, now: i64) -> bool {
    let ready = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| str_at(c, "/type") == "Ready"));
    let (Some(ready), Some(start)) = (ready, seconds(str_at(pod, "/status/startTime"))) else { return true };
    let transition = seconds(str_at(ready, "/lastTransitionTime")).unwrap_or(start);
    let not_ready = str_at(ready, "/status") == "False";
    if start + CPU_INITIALIZATION_SECONDS > now {
        let (timestamp, window) = usage.map(|u| (u.timestamp, u.window)).unwrap_or((0, 0.0));
        not_ready || (timestamp as f64) < transition as f64 + window
    } else {
        not_ready && start + INITIAL_READINESS_DELAY_SECONDS > transition
    }
}

/// The calculation's view of `pods` for `resource`.
pub fn views(pods: &[Value], usage: &BTreeMap<String, PodUsage>, resource: &str, now: i64) -> Vec<PodView> {
    pods.iter()
        .map(|pod| {
            let phase = str_at(pod, "/status/phase");
            let name = objects::name(pod).to_string();
            PodView {
                ignored: deleting(pod) || phase == "Failed" || phase == "Pending" || phase.is_empty(),
                unready: resource == "cpu" && cpu_unready(pod, usage.get(&name), now),
                request: request(pod, resource),
                name,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_sum_over_containers_or_name_the_missing_one() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m"}}},
            {"name": "b", "resources": {"requests": {"cpu": "0.2"}}}]}});
        assert_eq!(request(&pod, "cpu"), Ok(300));
        let err = request(&pod, "memory").unwrap_err();
        assert_eq!(err.to_string(), "missing request for memory in container a of Pod p");
    }

    #[test]
    fn fresh_pods_count_for_cpu_a_window_after_readiness() {
        let now = seconds("2026-01-01T00:02:00Z").unwrap();
        let pod = json!({"status": {"startTime": "2026-01-01T00:00:00Z", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:01:00Z"}]}});
        let early =
            PodUsage { timestamp: seconds("2026-01-01T00:01:05Z").unwrap(), window: 10.0, ..Default::default() };
        let later =
            PodUsage { timestamp: seconds("2026-01-01T00:01:30Z").unwrap(), window: 10.0, ..Default::default() };
        assert!(cpu_unready(&pod, Some(&early), now));
        assert!(!cpu_unready(&pod, Some(&later), now));
        assert!(cpu_unready(&json!({"status": {}}), Some(&later), now));
    }
}
