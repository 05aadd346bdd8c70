//! PodTopologySpread: `DoNotSchedule` constraints filter (skew of matching
//! pods per topology domain ≤ maxSkew, minDomains, nodeAffinityPolicy /
//! nodeTaintsPolicy), `ScheduleAnyway` constraints — or, for pods without
//! constraints, upstream's default system spreading (zone 5, hostname 3) —
//! score. System defaults group pods by their controller (upstream uses the
//! selectors of the Services/ReplicaSets/StatefulSets selecting the pod).

use super::filters::{matches_node_selector, untolerated};
use super::framework::{Cycle, Failure, MAX_SCORE};
use super::info::{NodeInfo, PodInfo};
use crate::server::selectors::LabelSelector;
use serde_json::Value;
use std::collections::HashMap;

pub const NAME: &str = "PodTopologySpread";
const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";
const NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
const MISSING_LABEL: &str = "node(s) didn't match pod topology spread constraints (missing required label)";

/// Which pods a constraint counts.
#[derive(Clone, Debug)]
enum Selects {
    /// labelSelector plus matchLabelKeys (all must match); `None` matches nothing.
    Labels(Option<Vec<LabelSelector>>),
    /// Pods of the same controller (system default spreading).
    Owner(String),
}

#[derive(Clone, Debug)]
pub struct Constraint {
    max_skew: i64,
    topology_key: String,
    min_domains: usize,
    selects: Selects,
    honor_affinity: bool,
    honor_taints: bool,
}

impl Constraint {
    fn matches(&self, pod: &PodInfo) -> bool {
        match &self.selects {
            Selects::Labels(Some(selectors)) => selectors.iter().all(|s| s.matches(&pod.pod)),
            Selects::Labels(None) => false,
            Selects::Owner(uid) => pod.owner.as_deref() == Some(uid),
        }
    }

    /// Matching pods on a node, of the incoming pod's namespace, not terminating.
    fn count(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        match &self.selects {
            // Owners are namespaced objects: same uid, same namespace.
            Selects::Owner(uid) => {
                let owned = node.owners.get(uid).copied().unwrap_or(0) as i64;
                let terminating =
                    node.pods.iter().filter(|p| p.terminating && p.owner.as_deref() == Some(uid)).count() as i64;
                owned - terminating
            }
            Selects::Labels(_) => {
                node.pods.iter().filter(|p| !p.terminating && p.namespace == pod.namespace && self.matches(p)).count()
                    as i64
            }
        }
    }

    /// nodeAffinityPolicy (default Honor) and nodeTaintsPolicy (default Ignore).
    fn includes(&self, pod: &PodInfo, node: &NodeInfo) -> bool {
        (!self.honor_affinity || matches_node_selector(&pod.pod, node))
            && (!self.honor_taints || untolerated(&node.taints, pod.tolerations()).is_none())
    }
}

/// The pod's constraints with `whenUnsatisfiable` equal to `when`.
fn constraints(pod: &PodInfo, when: &str) -> Vec<Constraint> {
    let listed = pod.pod.pointer("/spec/topologySpreadConstraints").and_then(Value::as_array);
    listed
        .into_iter()
        .flatten()
        .filter(|c| c.get("whenUnsatisfiable").and_then(Value::as_str).unwrap_or("DoNotSchedule") == when)
        .map(|c| {
            let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
            let mut selectors = c
                .get("labelSelector")
                .filter(|s| !s.is_null())
                .and_then(|s| LabelSelector::from_label_selector_json(s).ok())
                .map(|s| vec![s]);
            if let Some(selectors) = &mut selectors {
                for key in c.get("matchLabelKeys").and_then(Value::as_array).into_iter().flatten() {
                    let key = key.as_str().unwrap_or_default();
                    let value = pod.pod.pointer("/metadata/labels").and_then(|l| l.get(key)).and_then(Value::as_str);
                    if let Some(value) = value
                        && let Ok(s) = LabelSelector::parse(&format!("{key}={value}"))
                    {
                        selectors.push(s);
                    }
                }
            }
            Constraint {
                max_skew: c.get("maxSkew").and_then(Value::as_i64).unwrap_or(1),
                topology_key: text("topologyKey").to_string(),
                min_domains: c.get("minDomains").and_then(Value::as_i64).unwrap_or(1).max(1) as usize,
                selects: Selects::Labels(selectors),
                honor_affinity: text("nodeAffinityPolicy") != "Ignore",
                honor_taints: text("nodeTaintsPolicy") == "Honor",
            }
        })
        .collect()
}

fn has_all_keys(node: &NodeInfo, constraints: &[Constraint]) -> bool {
    constraints.iter().all(|c| node.labels.contains_key(&c.topology_key))
}

/// PreFilter: matching pods per topology value, per DoNotSchedule constraint.
#[derive(Clone, Debug, Default)]
pub struct FilterState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
}

impl FilterState {
    pub fn new(pod: &PodInfo, nodes: &[&NodeInfo]) -> FilterState {
        let constraints = constraints(pod, "DoNotSchedule");
        let mut counts = vec![HashMap::new(); constraints.len()];
        if constraints.is_empty() {
            return FilterState::default();
        }
        for node in nodes.iter().filter(|n| has_all_keys(n, &constraints)) {
            for (i, c) in constraints.iter().enumerate() {
                if c.includes(pod, node) {
                    *counts[i].entry(node.labels[&c.topology_key].clone()).or_default() += c.count(pod, node);
                }
            }
        }
        FilterState { constraints, counts }
    }

    /// The global minimum of constraint `i` (0 while fewer than minDomains domains exist).
    fn min(&self, i: usize) -> i64 {
        if self.counts[i].len() < self.constraints[i].min_domains {
            return 0;
        }
        self.counts[i].values().copied().min().unwrap_or(i64::from(i32::MAX))
    }

    /// The state with `pod` counted on (`delta` 1) or removed from (−1) `node` (preemption's what-ifs).
    pub fn update(&mut self, incoming: &PodInfo, pod: &PodInfo, node: &NodeInfo, delta: i64) {
        if pod.namespace != incoming.namespace || pod.terminating || !has_all_keys(node, &self.constraints) {
            return;
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if c.matches(pod) && c.includes(incoming, node) {
                *self.counts[i].entry(node.labels[&c.topology_key].clone()).or_default() += delta;
            }
        }
    }
}

pub fn filter(cycle: &Cycle, node: &NodeInfo) -> Result<(), Failure> {
    let state = &cycle.spread;
    for (i, c) in state.constraints.iter().enumerate() {
        let Some(value) = node.labels.get(&c.topology_key) else {
            return Err(Failure::unresolvable(NAME, MISSING_LABEL));
        };
        let own = i64::from(c.matches(&cycle.pod));
        let skew = state.counts[i].get(value).copied().unwrap_or(0) + own - state.min(i);
        if skew > c.max_skew {
            return Err(Failure::new(NAME, NOT_MATCH));
        }
    }
    Ok(())
}

/// The ScheduleAnyway constraints, or the system defaults for a pod without any.
fn scoring_constraints(pod: &PodInfo) -> (Vec<Constraint>, bool) {
    let listed = pod.pod.pointer("/spec/topologySpreadConstraints").and_then(Value::as_array);
    if listed.is_some_and(|l| !l.is_empty()) {
        return (constraints(pod, "ScheduleAnyway"), true);
    }
    let Some(owner) = &pod.owner else { return (Vec::new(), false) };
    let system = |key: &str, max_skew| Constraint {
        max_skew,
        topology_key: key.to_string(),
        min_domains: 1,
        selects: Selects::Owner(owner.clone()),
        honor_affinity: true,
        honor_taints: false,
    };
    (vec![system(ZONE, 5), system(HOSTNAME, 3)], false)
}

/// Fewer matching pods in a node's domains score higher (upstream's PreScore, Score, NormalizeScore).
pub fn score(cycle: &Cycle, feasible: &[&NodeInfo], all: &[&NodeInfo]) -> Vec<i64> {
    let pod = &cycle.pod;
    let (constraints, require_all) = scoring_constraints(pod);
    if constraints.is_empty() {
        return vec![0; feasible.len()];
    }
    let ignored: Vec<bool> = feasible.iter().map(|n| require_all && !has_all_keys(n, &constraints)).collect();
    // Domains of the feasible nodes, counted over all nodes.
    let mut pairs: Vec<HashMap<&str, i64>> = vec![HashMap::new(); constraints.len()];
    for (node, _) in feasible.iter().zip(&ignored).filter(|(_, ignored)| !**ignored) {
        for (i, c) in constraints.iter().enumerate() {
            if c.topology_key != HOSTNAME
                && let Some(value) = node.labels.get(&c.topology_key)
            {
                pairs[i].entry(value.as_str()).or_default();
            }
        }
    }
    for node in all.iter().filter(|n| !require_all || has_all_keys(n, &constraints)) {
        for (i, c) in constraints.iter().enumerate() {
            if let Some(value) = node.labels.get(&c.topology_key)
                && let Some(count) = pairs[i].get_mut(value.as_str())
                && c.includes(pod, node)
            {
                *count += c.count(pod, node);
            }
        }
    }
    let considered = ignored.iter().filter(|i| !**i).count();
    let weights: Vec<f64> = constraints
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let size = if c.topology_key == HOSTNAME { considered } else { pairs[i].len() };
            ((size + 2) as f64).ln()
        })
        .collect();
    let raw: Vec<Option<i64>> = feasible
        .iter()
        .zip(&ignored)
        .map(|(node, ignored)| {
            if *ignored {
                return None;
            }
            let mut score = 0.0;
            for (i, c) in constraints.iter().enumerate() {
                if let Some(value) = node.labels.get(&c.topology_key) {
                    let count = if c.topology_key == HOSTNAME {
                        c.count(pod, node)
                    } else {
                        pairs[i].get(value.as_str()).copied().unwrap_or(0)
                    };
                    score += count as f64 * weights[i] + (c.max_skew - 1) as f64;
                }
            }
            Some(score.round() as i64)
        })
        .collect();
    let min = raw.iter().flatten().copied().min().unwrap_or(0);
    let max = raw.iter().flatten().copied().max().unwrap_or(0);
    raw.iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max == 0 => MAX_SCORE,
            Some(s) => MAX_SCORE * (max + min - s) / max,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::framework::tests::{cycle_for, node, pod};
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn zone_node(name: &str, zone: &str, pods: usize) -> NodeInfo {
        let mut n = node(name, json!({"zone": zone, "kubernetes.io/hostname": name}), "8");
        for i in 0..pods {
            let mut p = pod(json!({}));
            p["metadata"]["uid"] = json!(format!("{name}-{i}"));
            n.add_pod(Arc::new(PodInfo::new(p)));
        }
        n
    }

    fn spread_pod(max_skew: i64, extra: Value) -> Value {
        let mut constraint = json!({"maxSkew": max_skew, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}}});
        constraint.as_object_mut().into_iter().for_each(|o| {
            extra.as_object().into_iter().flatten().for_each(|(k, v)| {
                o.insert(k.clone(), v.clone());
            })
        });
        pod(json!({"topologySpreadConstraints": [constraint]}))
    }

    #[test]
    fn skew_above_max_skew_is_filtered_and_missing_labels_are_unresolvable() {
        let a = zone_node("a", "z1", 2);
        let b = zone_node("b", "z2", 0);
        let bare = node("c", json!({}), "8");
        let nodes = [&a, &b, &bare];
        let p = spread_pod(1, json!({}));
        let cycle = cycle_for(&p, &nodes);
        assert_eq!(filter(&cycle, &a), Err(Failure::new(NAME, NOT_MATCH)));
        assert!(filter(&cycle, &b).is_ok());
        assert_eq!(filter(&cycle, &bare), Err(Failure::unresolvable(NAME, MISSING_LABEL)));
        // maxSkew 3 allows 2 + 1 − 0.
        assert!(filter(&cycle_for(&spread_pod(3, json!({})), &nodes), &a).is_ok());
    }

    #[test]
    fn min_domains_treats_the_global_minimum_as_zero() {
        let a = zone_node("a", "z1", 1);
        let b = zone_node("b", "z2", 1);
        let nodes = [&a, &b];
        assert!(filter(&cycle_for(&spread_pod(1, json!({})), &nodes), &a).is_ok());
        let p = spread_pod(1, json!({"minDomains": 3}));
        assert_eq!(filter(&cycle_for(&p, &nodes), &a), Err(Failure::new(NAME, NOT_MATCH)));
    }

    #[test]
    fn node_affinity_policy_honor_skips_nodes_the_pod_cannot_use() {
        let a = zone_node("a", "z1", 0);
        let b = zone_node("b", "z2", 3);
        let mut p = spread_pod(1, json!({}));
        p["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": "a"});
        // z2 is not counted: only z1 is a domain, so a's skew is 0 + 1 − 0.
        assert!(filter(&cycle_for(&p, &[&a, &b]), &a).is_ok());
        let mut ignore = spread_pod(1, json!({"nodeAffinityPolicy": "Ignore"}));
        ignore["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": "a"});
        assert!(filter(&cycle_for(&ignore, &[&a, &b]), &a).is_ok());
        // Ignored, b's domain counts: z1 4, z2 3, so c's skew is 4 + 1 − 3.
        let c = zone_node("c", "z1", 4);
        ignore["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": "c"});
        assert_eq!(filter(&cycle_for(&ignore, &[&c, &b]), &c), Err(Failure::new(NAME, NOT_MATCH)));
    }

    #[test]
    fn system_default_spreading_prefers_nodes_with_fewer_siblings() {
        let busy = zone_node("a", "z1", 2);
        let idle = zone_node("b", "z1", 0);
        let p = pod(json!({}));
        let cycle = cycle_for(&p, &[]);
        let scores = score(&cycle, &[&busy, &idle], &[&busy, &idle]);
        assert!(scores[1] > scores[0], "{scores:?}");
        assert_eq!(scores[1], MAX_SCORE);
    }
}
