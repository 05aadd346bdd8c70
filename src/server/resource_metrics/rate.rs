//! The sample history behind `metrics.k8s.io`: cumulative CPU counters per
//! series (a node, or one container of a pod) kept for a couple of minutes,
//! and the CPU rate between the newest sample and an older one, the window
//! (about [`PREFERRED_WINDOW`], never under [`MIN_WINDOW`]), as metrics-server
//! does between two scrapes.

use crate::agent::stats::{Summary, Usage};
use std::collections::{HashMap, VecDeque};

const SECOND: i64 = 1_000_000_000;
/// The window a rate is computed over when samples that old exist.
pub const PREFERRED_WINDOW: i64 = 10 * SECOND;
/// The shortest window a rate is computed over.
pub const MIN_WINDOW: i64 = SECOND;
/// Samples older than this (relative to the newest) are dropped.
const RETAIN: i64 = 120 * SECOND;

/// One reading of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub time_nanos: i64,
    pub usage: Usage,
}

/// A series: `(node, "", "")` for a node, `(node, pod uid, container)` for a container.
pub type SeriesKey = (String, String, String);

/// CPU rate and memory of a series at its newest sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub nanocores: u64,
    pub memory_working_set: u64,
    pub time_nanos: i64,
    pub window_nanos: i64,
}

#[derive(Default)]
pub struct History {
    series: HashMap<SeriesKey, VecDeque<Sample>>,
}

/// The older sample to compute the rate against: the newest one at least
/// [`PREFERRED_WINDOW`] older than the newest sample, else the oldest one
/// at least [`MIN_WINDOW`] older.
pub fn baseline(samples: &VecDeque<Sample>) -> Option<&Sample> {
    let latest = samples.back()?;
    let age = |s: &Sample| latest.time_nanos - s.time_nanos;
    samples.iter().rev().find(|s| age(s) >= PREFERRED_WINDOW).or_else(|| samples.iter().find(|s| age(s) >= MIN_WINDOW))
}

/// The CPU rate between `old` and `new` in nanocores; `None` when the
/// counter went backwards (a restarted container) or no time passed.
pub fn cpu_rate(old: &Sample, new: &Sample) -> Option<u64> {
    let window = u128::try_from(new.time_nanos - old.time_nanos).ok().filter(|w| *w > 0)?;
    let used = u128::from(new.usage.cpu_nanos.checked_sub(old.usage.cpu_nanos)?);
    u64::try_from(used * 1_000_000_000 / window).ok()
}

impl History {
    fn push(&mut self, key: SeriesKey, sample: Sample) {
        let samples = self.series.entry(key).or_default();
        if let Some(last) = samples.back() {
            if last.time_nanos >= sample.time_nanos {
                return;
            }
            // A counter that went backwards is a new container run: start over.
            if sample.usage.cpu_nanos < last.usage.cpu_nanos {
                samples.clear();
            }
        }
        samples.push_back(sample);
        while samples.front().is_some_and(|s| sample.time_nanos - s.time_nanos > RETAIN) {
            samples.pop_front();
        }
    }

    /// Adds the samples of one node's summary; series of that node that the
    /// summary no longer has (deleted pods) are forgotten.
    pub fn record(&mut self, summary: &Summary) {
        let node = summary.node_name.clone();
        let time_nanos = summary.time_nanos;
        self.push((node.clone(), String::new(), String::new()), Sample { time_nanos, usage: summary.node });
        for pod in &summary.pods {
            for container in &pod.containers {
                let key = (node.clone(), pod.pod_ref.uid.clone(), container.name.clone());
                self.push(key, Sample { time_nanos, usage: container.usage });
            }
        }
        self.series
            .retain(|(n, _, _), samples| *n != node || samples.back().is_some_and(|s| s.time_nanos == time_nanos));
    }

    /// The rate of one series, when it has a baseline.
    pub fn rate(&self, key: &SeriesKey) -> Option<Rate> {
        let samples = self.series.get(key)?;
        let (old, new) = (baseline(samples)?, samples.back()?);
        Some(Rate {
            nanocores: cpu_rate(old, new)?,
            memory_working_set: new.usage.memory_working_set,
            time_nanos: new.time_nanos,
            window_nanos: new.time_nanos - old.time_nanos,
        })
    }

    /// Whether every series of `node` in `summary` already has a rate.
    pub fn complete(&self, summary: &Summary) -> bool {
        let node = (summary.node_name.clone(), String::new(), String::new());
        self.rate(&node).is_some()
            && summary.pods.iter().all(|pod| {
                pod.containers
                    .iter()
                    .all(|c| self.rate(&(summary.node_name.clone(), pod.pod_ref.uid.clone(), c.name.clone())).is_some())
            })
    }

    /// The time of the newest sample of `node`, if any.
    pub fn newest(&self, node: &str) -> Option<i64> {
        self.series.get(&(node.to_string(), String::new(), String::new()))?.back().map(|s| s.time_nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::stats::{ContainerStats, PodRef, PodStats};

    fn sample(seconds: i64, cpu_nanos: u64) -> Sample {
        Sample { time_nanos: seconds * SECOND, usage: Usage { cpu_nanos, memory_working_set: 7 } }
    }

    fn summary(seconds: i64, node_cpu: u64, container_cpu: Option<u64>) -> Summary {
        let pods = container_cpu
            .map(|cpu| PodStats {
                pod_ref: PodRef { namespace: "default".into(), name: "web".into(), uid: "u1".into() },
                containers: vec![ContainerStats {
                    name: "main".into(),
                    usage: Usage { cpu_nanos: cpu, memory_working_set: 1024 },
                }],
            })
            .into_iter()
            .collect();
        Summary {
            node_name: "n1".into(),
            time_nanos: seconds * SECOND,
            node: Usage { cpu_nanos: node_cpu, memory_working_set: 2048 },
            pods,
        }
    }

    #[test]
    fn cpu_rate_is_nanocores_over_the_window() {
        // Half a core: 1 s of CPU over 2 s.
        assert_eq!(cpu_rate(&sample(0, 0), &sample(2, SECOND as u64)), Some(500_000_000));
        assert_eq!(cpu_rate(&sample(0, 100), &sample(2, 50)), None);
        assert_eq!(cpu_rate(&sample(2, 0), &sample(2, 50)), None);
    }

    #[test]
    fn baseline_prefers_ten_seconds_and_needs_one() {
        let samples: VecDeque<Sample> = [0, 5, 12, 20, 21].iter().map(|s| sample(*s, 0)).collect();
        assert_eq!(baseline(&samples).map(|s| s.time_nanos), Some(5 * SECOND));
        let young: VecDeque<Sample> = [18, 19, 20].iter().map(|s| sample(*s, 0)).collect();
        assert_eq!(baseline(&young).map(|s| s.time_nanos), Some(18 * SECOND));
        let fresh: VecDeque<Sample> = [sample(20, 0)].into_iter().collect();
        assert_eq!(baseline(&fresh), None);
    }

    #[test]
    fn history_rates_nodes_and_containers_and_forgets_gone_pods() {
        let mut history = History::default();
        history.record(&summary(0, 0, Some(0)));
        assert!(!history.complete(&summary(0, 0, Some(0))));
        let second = summary(2, 2 * SECOND as u64, Some(SECOND as u64 / 10));
        history.record(&second);
        assert!(history.complete(&second));
        let container = ("n1".to_string(), "u1".to_string(), "main".to_string());
        let rate = history.rate(&container).expect("rate");
        assert_eq!(
            rate,
            Rate { nanocores: 50_000_000, memory_working_set: 1024, time_nanos: 2 * SECOND, window_nanos: 2 * SECOND }
        );
        let node = history.rate(&("n1".into(), String::new(), String::new())).expect("node rate");
        assert_eq!(node.nanocores, SECOND as u64);
        // A restarted container starts a new series.
        history.record(&summary(3, 3 * SECOND as u64, Some(5)));
        assert_eq!(history.rate(&container), None);
        // The pod went away: its series is dropped.
        history.record(&summary(4, 4 * SECOND as u64, None));
        assert_eq!(history.rate(&container), None);
        assert_eq!(history.newest("n1"), Some(4 * SECOND));
        assert!(history.series.keys().all(|(_, uid, _)| uid.is_empty()));
    }
}
