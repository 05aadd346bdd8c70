//! The replica count one resource metric asks for, upstream's
//! `ReplicaCalculator`: `ceil(ready pods × usage / target)`, unchanged within
//! the 10 % tolerance; pods without metrics count as 100 % of their request
//! on a scale-down and 0 % on a scale-up, unready pods as 0 % on a scale-up,
//! and a change the fallbacks would reverse is not made.

use std::collections::BTreeMap;

/// Ratios this close to 1 leave the replica count alone (`--horizontal-pod-autoscaler-tolerance`).
pub const TOLERANCE: f64 = 0.1;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplicaError {
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetrics,
    #[error("missing request for {resource} in container {container} of Pod {pod}")]
    MissingRequest { resource: String, container: String, pod: String },
    #[error("no metrics returned matched known pods")]
    NoMatch,
}

/// What the calculation needs of one pod the target selects.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    pub name: String,
    /// Being deleted, failed or pending: left out entirely.
    pub ignored: bool,
    /// Not ready (or too fresh a metric) for a CPU metric.
    pub unready: bool,
    /// The summed request of the resource in milli-units, when every container has one.
    pub request: Result<i64, ReplicaError>,
}

/// The result for one metric: replicas, utilisation (percent of request,
/// `None` for average values) and the average raw usage in milli-units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Proposal {
    pub replicas: i64,
    pub utilization: Option<i64>,
    pub average_milli: i64,
}

fn utilization_ratio(
    metrics: &BTreeMap<String, i64>,
    requests: &BTreeMap<String, i64>,
    target: i64,
) -> Result<(f64, i64, i64), ReplicaError> {
    let (mut used, mut requested, mut entries) = (0i64, 0i64, 0i64);
    for (pod, value) in metrics {
        if let Some(request) = requests.get(pod) {
            used += value;
            requested += request;
            entries += 1;
        }
    }
    if requested == 0 {
        return Err(ReplicaError::NoMatch);
    }
    let utilization = used * 100 / requested;
    Ok((utilization as f64 / target as f64, utilization, used / entries))
}

fn average_ratio(metrics: &BTreeMap<String, i64>, target_milli: i64) -> (f64, i64) {
    let total: i64 = metrics.values().sum();
    let average = total / (metrics.len() as i64).max(1);
    (average as f64 / target_milli as f64, average)
}

/// How the usage of a set of pods compares to the target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i64),
    /// Milli-units per pod.
    AverageMilli(i64),
}

/// Upstream's `GetResourceReplicas` (utilisation) and `calcPlainMetricReplicas`
/// (average value) over the pods' `metrics` (milli-units by pod name).
pub fn replicas(
    current: i64,
    pods: &[PodView],
    mut metrics: BTreeMap<String, i64>,
    target: Target,
) -> Result<Proposal, ReplicaError> {
    if pods.is_empty() {
        return Err(ReplicaError::NoPods);
    }
    let (mut ready, mut unready, mut missing) = (0i64, Vec::new(), Vec::new());
    for pod in pods {
        if pod.ignored {
            metrics.remove(&pod.name);
        } else if !metrics.contains_key(&pod.name) {
            missing.push(pod.name.clone());
        } else if pod.unready {
            metrics.remove(&pod.name);
            unready.push(pod.name.clone());
        } else {
            ready += 1;
        }
    }
    let mut requests = BTreeMap::new();
    if let Target::Utilization(_) = target {
        for pod in pods {
            requests.insert(pod.name.clone(), pod.request.clone()?);
        }
    }
    if metrics.is_empty() {
        return Err(ReplicaError::NoMetrics);
    }
    let ratio = |metrics: &BTreeMap<String, i64>| -> Result<(f64, Option<i64>, i64), ReplicaError> {
        match target {
            Target::Utilization(percent) => {
                utilization_ratio(metrics, &requests, percent).map(|(r, u, avg)| (r, Some(u), avg))
            }
            Target::AverageMilli(milli) => {
                let (r, avg) = average_ratio(metrics, milli);
                Ok((r, None, avg))
            }
        }
    };
    let (usage_ratio, utilization, average_milli) = ratio(&metrics)?;
    let keep = Proposal { replicas: current, utilization, average_milli };
    let scale_up_with_unready = !unready.is_empty() && usage_ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - usage_ratio).abs() <= TOLERANCE {
            return Ok(keep);
        }
        return Ok(Proposal { replicas: (usage_ratio * ready as f64).ceil() as i64, ..keep });
    }
    if !missing.is_empty() {
        for pod in &missing {
            let fallback = match target {
                Target::Utilization(percent) if usage_ratio < 1.0 => {
                    requests.get(pod).copied().unwrap_or(0) * percent.max(100) / 100
                }
                Target::AverageMilli(milli) if usage_ratio < 1.0 => milli,
                _ => 0,
            };
            if usage_ratio != 1.0 {
                metrics.insert(pod.clone(), fallback);
            }
        }
    }
    if scale_up_with_unready {
        for pod in &unready {
            metrics.insert(pod.clone(), 0);
        }
    }
    let (new_ratio, _, _) = ratio(&metrics)?;
    if (1.0 - new_ratio).abs() <= TOLERANCE
        || (usage_ratio < 1.0 && new_ratio > 1.0)
        || (usage_ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(keep);
    }
    let proposed = (new_ratio * metrics.len() as f64).ceil() as i64;
    if (new_ratio < 1.0 && proposed > current) || (new_ratio > 1.0 && proposed < current) {
        return Ok(keep);
    }
    Ok(Proposal { replicas: proposed, ..keep })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, request: i64) -> PodView {
        PodView { name: name.into(), ignored: false, unready: false, request: Ok(request) }
    }

    fn metrics(values: &[(&str, i64)]) -> BTreeMap<String, i64> {
        values.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn scales_by_the_usage_ratio() {
        // 200m used of 100m requested, target 50 %: 400 % → ceil(1 × 4).
        let proposal = replicas(1, &[pod("a", 100)], metrics(&[("a", 200)]), Target::Utilization(50)).unwrap();
        assert_eq!(proposal, Proposal { replicas: 4, utilization: Some(200), average_milli: 200 });
        // Below target: 10 % of 50 % → ceil(3 × 0.2) = 1.
        let pods = [pod("a", 100), pod("b", 100), pod("c", 100)];
        let low = metrics(&[("a", 10), ("b", 10), ("c", 10)]);
        assert_eq!(replicas(3, &pods, low, Target::Utilization(50)).unwrap().replicas, 1);
    }

    #[test]
    fn tolerance_keeps_the_count() {
        let proposal =
            replicas(2, &[pod("a", 100), pod("b", 100)], metrics(&[("a", 54), ("b", 54)]), Target::Utilization(50));
        assert_eq!(proposal.unwrap().replicas, 2);
        let over =
            replicas(2, &[pod("a", 100), pod("b", 100)], metrics(&[("a", 56), ("b", 56)]), Target::Utilization(50));
        assert_eq!(over.unwrap().replicas, 3);
    }

    #[test]
    fn missing_metrics_damp_the_change() {
        // Scale-down with a pod lacking metrics: it counts as 100 % of its request.
        let pods = [pod("a", 100), pod("b", 100)];
        let proposal = replicas(2, &pods, metrics(&[("a", 10)]), Target::Utilization(50)).unwrap();
        // (10 + 100) / 200 = 55 % of 50 % → ratio 1.1, within tolerance: keep.
        assert_eq!(proposal.replicas, 2);
        // Scale-up with a pod lacking metrics: it counts as 0 %.
        let up = replicas(2, &pods, metrics(&[("a", 300)]), Target::Utilization(50)).unwrap();
        // 300 / 200 = 150 % → ratio 3 → ceil(3 × 2) = 6.
        assert_eq!(up.replicas, 6);
    }

    #[test]
    fn unready_pods_count_as_idle_on_a_scale_up() {
        let mut fresh = pod("b", 100);
        fresh.unready = true;
        let proposal =
            replicas(2, &[pod("a", 100), fresh], metrics(&[("a", 200), ("b", 200)]), Target::Utilization(50));
        // Only a's 200 over both requests: 100 % of 50 % → 2 × 2 = 4.
        assert_eq!(proposal.unwrap().replicas, 4);
    }

    #[test]
    fn errors_for_no_pods_no_metrics_or_missing_requests() {
        assert_eq!(replicas(1, &[], metrics(&[]), Target::Utilization(50)), Err(ReplicaError::NoPods));
        assert_eq!(replicas(1, &[pod("a", 100)], metrics(&[]), Target::Utilization(50)), Err(ReplicaError::NoMetrics));
        let missing = ReplicaError::MissingRequest { resource: "cpu".into(), container: "c".into(), pod: "a".into() };
        let no_request = PodView { request: Err(missing.clone()), ..pod("a", 0) };
        assert_eq!(replicas(1, &[no_request], metrics(&[("a", 5)]), Target::Utilization(50)), Err(missing));
    }

    #[test]
    fn average_value_targets_ignore_requests() {
        let pods = [pod("a", 0), pod("b", 0)];
        let proposal = replicas(2, &pods, metrics(&[("a", 300_000), ("b", 100_000)]), Target::AverageMilli(100_000));
        assert_eq!(proposal.unwrap(), Proposal { replicas: 4, utilization: None, average_milli: 200_000 });
    }
}
