//! The score plugins with upstream's default weights, each normalised to
//! 0–100 over the feasible nodes: NodeResourcesFit (LeastAllocated, 1),
//! NodeResourcesBalancedAllocation (1), NodeAffinity (preferred, 2),
//! TaintToleration (PreferNoSchedule, 3), PodTopologySpread (2),
//! InterPodAffinity (2).

use super::filters::{term_matches, tolerates};
use super::framework::{Cycle, MAX_SCORE};
use super::info::NodeInfo;
use super::{interpod, spread};
use serde_json::Value;

/// The weighted sum of every plugin's normalised score, per feasible node.
pub fn score(cycle: &Cycle, feasible: &[&NodeInfo], all: &[&NodeInfo]) -> Vec<i64> {
    let mut totals = vec![0i64; feasible.len()];
    let mut add = |weight: i64, scores: Vec<i64>| {
        for (total, score) in totals.iter_mut().zip(scores) {
            *total += weight * score;
        }
    };
    add(1, feasible.iter().map(|n| least_allocated(cycle, n)).collect());
    add(1, balanced_allocation(cycle, feasible));
    add(2, node_affinity(cycle, feasible));
    add(3, taint_toleration(cycle, feasible));
    add(2, spread::score(cycle, feasible, all));
    add(2, interpod::score(cycle, feasible, all));
    totals
}

/// upstream's DefaultNormalizeScore: scales to 0..=100 by the maximum (or reversed).
pub fn normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_SCORE * *s / max;
        if reverse {
            *s = MAX_SCORE - *s;
        }
    }
}

/// LeastAllocated over CPU and memory (weights 1 and 1), non-zero requests.
pub fn least_allocated(cycle: &Cycle, node: &NodeInfo) -> i64 {
    let mut sum = 0i64;
    for i in 0..2 {
        let capacity = node.allocatable[i];
        let requested = node.non_zero_requested[i] + cycle.pod.non_zero[i];
        if capacity > 0 && requested <= capacity {
            sum += ((capacity - requested) * MAX_SCORE as i128 / capacity) as i64;
        }
    }
    sum / 2
}

/// BalancedAllocation: 100 × (1 − the standard deviation of the CPU and
/// memory fractions); skipped for pods that request neither.
pub fn balanced_allocation(cycle: &Cycle, nodes: &[&NodeInfo]) -> Vec<i64> {
    if cycle.pod.requests[0] == 0 && cycle.pod.requests[1] == 0 {
        return vec![0; nodes.len()];
    }
    nodes
        .iter()
        .map(|node| {
            let fraction = |i: usize| {
                let capacity = node.allocatable[i];
                if capacity == 0 {
                    return 1.0;
                }
                ((node.requested[i] + cycle.pod.requests[i]) as f64 / capacity as f64).min(1.0)
            };
            let std = (fraction(0) - fraction(1)).abs() / 2.0;
            ((1.0 - std) * MAX_SCORE as f64) as i64
        })
        .collect()
}

/// The summed weights of the preferred node affinity terms a node matches.
pub fn node_affinity(cycle: &Cycle, nodes: &[&NodeInfo]) -> Vec<i64> {
    let terms = cycle
        .pod
        .pod
        .pointer("/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution")
        .and_then(Value::as_array);
    let Some(terms) = terms.filter(|t| !t.is_empty()) else { return vec![0; nodes.len()] };
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|node| {
            terms
                .iter()
                .filter(|t| t.get("preference").is_some_and(|p| term_matches(p, node)))
                .map(|t| t.get("weight").and_then(Value::as_i64).unwrap_or(0))
                .sum()
        })
        .collect();
    normalize(&mut scores, false);
    scores
}

/// Fewer untolerated PreferNoSchedule taints score higher.
pub fn taint_toleration(cycle: &Cycle, nodes: &[&NodeInfo]) -> Vec<i64> {
    let tolerations: Vec<&Value> = cycle
        .pod
        .tolerations()
        .iter()
        .filter(|t| matches!(t.get("effect").and_then(Value::as_str).unwrap_or_default(), "" | "PreferNoSchedule"))
        .collect();
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|node| {
            node.taints
                .iter()
                .filter(|t| t.get("effect").and_then(Value::as_str) == Some("PreferNoSchedule"))
                .filter(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
                .count() as i64
        })
        .collect();
    normalize(&mut scores, true);
    scores
}

#[cfg(test)]
mod tests {
    use super::super::framework::tests::{cycle_for, node, pod, run};
    use super::super::info::PodInfo;
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn least_allocated_and_balanced_prefer_emptier_even_nodes() {
        let p = pod(json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}));
        let mut busy = node("a-busy", json!({}), "4");
        busy.add_pod(Arc::new(PodInfo::new(pod(
            json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "2"}}}]}),
        ))));
        let idle = node("b-idle", json!({}), "4");
        let cycle = cycle_for(&p, &[]);
        // idle: cpu (4-1)/4 = 75, memory (4-1)/4 = 75.
        assert_eq!(least_allocated(&cycle, &idle), 75);
        // busy: cpu (4-3)/4 = 25; memory counts the other pod's default 200Mi: 70 → 47.
        assert_eq!(least_allocated(&cycle, &busy), 47);
        // idle: fractions 0.25 and 0.25 → 100; busy: 0.75 and 0.25 → 75.
        assert_eq!(balanced_allocation(&cycle, &[&idle, &busy]), [100, 75]);
        assert_eq!(run(&p, &[busy, idle]), Ok("b-idle".into()));
    }

    #[test]
    fn preferred_node_affinity_and_prefer_no_schedule_taints_are_normalised() {
        let p = pod(json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
            {"weight": 30, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}]}}}));
        let both = node("n1", json!({"disk": "ssd", "zone": "a"}), "1");
        let one = node("n2", json!({"disk": "ssd"}), "1");
        let none = node("n3", json!({}), "1");
        let cycle = cycle_for(&p, &[]);
        assert_eq!(node_affinity(&cycle, &[&both, &one, &none]), [100, 25, 0]);
        let mut tainted = node("n4", json!({}), "1");
        let mut obj = tainted.node.clone();
        obj["spec"] =
            json!({"taints": [{"key": "a", "effect": "PreferNoSchedule"}, {"key": "b", "effect": "PreferNoSchedule"}]});
        tainted.set_node(obj);
        let tolerant = pod(json!({"tolerations": [{"key": "a", "operator": "Exists"}]}));
        let mut once = node("n5", json!({}), "1");
        let mut obj = once.node.clone();
        obj["spec"] = json!({"taints": [{"key": "b", "effect": "PreferNoSchedule"}]});
        once.set_node(obj);
        assert_eq!(taint_toleration(&cycle, &[&none, &once, &tainted]), [100, 50, 0]);
        assert_eq!(taint_toleration(&cycle_for(&tolerant, &[]), &[&none, &once, &tainted]), [100, 0, 0]);
    }
}
