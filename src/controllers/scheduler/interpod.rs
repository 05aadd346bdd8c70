//! InterPodAffinity: required pod affinity / anti-affinity of the incoming
//! pod, existing pods' required anti-affinity against it (filter), and the
//! preferred terms of both sides (score), per topology domain
//! (`topologyKey`), with namespaces and namespaceSelector.

use super::framework::{Cycle, Failure, MAX_SCORE};
use super::info::{NodeInfo, PodInfo};
use serde_json::Value;
use std::collections::HashMap;

pub const NAME: &str = "InterPodAffinity";
const AFFINITY: &str = "node(s) didn't match pod affinity rules";
const ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
const EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
/// upstream's hardPodAffinityWeight default.
const HARD_WEIGHT: i64 = 1;

type Pair = (String, String);

/// PreFilter: matching pods per (topologyKey, value).
#[derive(Clone, Debug, Default)]
pub struct FilterState {
    /// Domains where an existing pod's required anti-affinity selects the incoming pod.
    existing_anti: HashMap<Pair, i64>,
    /// Per required affinity / anti-affinity term of the incoming pod: domains with matching pods.
    affinity: HashMap<Pair, i64>,
    anti: HashMap<Pair, i64>,
}

impl FilterState {
    pub fn new(pod: &PodInfo, nodes: &[&NodeInfo], namespaces: &HashMap<String, Value>) -> FilterState {
        let mut state = FilterState::default();
        let own_terms = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        for node in nodes {
            if !own_terms && node.with_required_anti_affinity == 0 {
                continue;
            }
            for existing in &node.pods {
                state.update(pod, existing, node, namespaces, 1);
            }
        }
        state
    }

    /// Counts `existing` on `node` (`delta` 1) or uncounts it (−1).
    pub fn update(
        &mut self,
        pod: &PodInfo,
        existing: &PodInfo,
        node: &NodeInfo,
        namespaces: &HashMap<String, Value>,
        delta: i64,
    ) {
        let add = |map: &mut HashMap<Pair, i64>, key: &str| {
            if let Some(value) = node.labels.get(key) {
                *map.entry((key.to_string(), value.clone())).or_default() += delta;
            }
        };
        for term in &existing.required_anti_affinity {
            if term.matches(pod, namespaces) {
                add(&mut self.existing_anti, &term.topology_key);
            }
        }
        for term in &pod.required_affinity {
            if term.matches(existing, namespaces) {
                add(&mut self.affinity, &term.topology_key);
            }
        }
        for term in &pod.required_anti_affinity {
            if term.matches(existing, namespaces) {
                add(&mut self.anti, &term.topology_key);
            }
        }
    }
}

fn count(map: &HashMap<Pair, i64>, node: &NodeInfo, key: &str) -> Option<i64> {
    let value = node.labels.get(key)?;
    Some(map.get(&(key.to_string(), value.clone())).copied().unwrap_or(0))
}

pub fn filter(cycle: &Cycle, node: &NodeInfo) -> Result<(), Failure> {
    let (pod, state) = (&cycle.pod, &cycle.interpod);
    // Required affinity: every term has a matching pod in the node's domain ...
    let satisfied =
        pod.required_affinity.iter().all(|t| count(&state.affinity, node, &t.topology_key).is_some_and(|n| n > 0));
    if !satisfied {
        // ... unless no pod matches anywhere and the pod matches its own terms (the first of a group).
        let first = state.affinity.values().all(|n| *n <= 0)
            && pod
                .required_affinity
                .iter()
                .all(|t| t.matches(pod, cycle.namespaces) && node.labels.contains_key(&t.topology_key));
        if !first {
            return Err(Failure::unresolvable(NAME, AFFINITY));
        }
    }
    if pod.required_anti_affinity.iter().any(|t| count(&state.anti, node, &t.topology_key).is_some_and(|n| n > 0)) {
        return Err(Failure::new(NAME, ANTI_AFFINITY));
    }
    let existing =
        node.labels.iter().any(|(k, v)| state.existing_anti.get(&(k.clone(), v.clone())).is_some_and(|n| *n > 0));
    if existing {
        return Err(Failure::new(NAME, EXISTING_ANTI_AFFINITY));
    }
    Ok(())
}

/// Preferred terms of the incoming pod and of existing pods, summed per
/// domain, min–max normalised.
pub fn score(cycle: &Cycle, feasible: &[&NodeInfo], all: &[&NodeInfo]) -> Vec<i64> {
    let pod = &cycle.pod;
    let ns = cycle.namespaces;
    let own = !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
    if !own && all.iter().all(|n| n.with_affinity == 0) {
        return vec![0; feasible.len()];
    }
    let mut domains: HashMap<Pair, i64> = HashMap::new();
    for node in all {
        if !own && node.with_affinity == 0 {
            continue;
        }
        for existing in &node.pods {
            let mut add = |key: &str, weight: i64| {
                if let Some(value) = node.labels.get(key) {
                    *domains.entry((key.to_string(), value.clone())).or_default() += weight;
                }
            };
            for (weight, term) in &pod.preferred_affinity {
                if term.matches(existing, ns) {
                    add(&term.topology_key, *weight);
                }
            }
            for (weight, term) in &pod.preferred_anti_affinity {
                if term.matches(existing, ns) {
                    add(&term.topology_key, -weight);
                }
            }
            for term in &existing.required_affinity {
                if term.matches(pod, ns) {
                    add(&term.topology_key, HARD_WEIGHT);
                }
            }
            for (weight, term) in &existing.preferred_affinity {
                if term.matches(pod, ns) {
                    add(&term.topology_key, *weight);
                }
            }
            for (weight, term) in &existing.preferred_anti_affinity {
                if term.matches(pod, ns) {
                    add(&term.topology_key, -weight);
                }
            }
        }
    }
    let raw: Vec<i64> = feasible
        .iter()
        .map(|node| domains.iter().filter(|((k, v), _)| node.labels.get(k) == Some(v)).map(|(_, score)| *score).sum())
        .collect();
    let min = raw.iter().copied().min().unwrap_or(0);
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.iter().map(|s| if max > min { MAX_SCORE * (s - min) / (max - min) } else { 0 }).collect()
}

#[cfg(test)]
mod tests {
    use super::super::framework::tests::{cycle_for, node, pod, run};
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn host(name: &str, zone: &str) -> NodeInfo {
        node(name, json!({"kubernetes.io/hostname": name, "zone": zone}), "8")
    }

    fn labelled(uid: &str, app: &str, ns: &str, spec: Value) -> Arc<PodInfo> {
        let mut p = pod(spec);
        p["metadata"]["uid"] = json!(uid);
        p["metadata"]["namespace"] = json!(ns);
        p["metadata"]["labels"] = json!({"app": app});
        Arc::new(PodInfo::new(p))
    }

    fn anti(key: &str) -> Value {
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": key}]}}})
    }

    #[test]
    fn required_anti_affinity_spreads_one_per_domain() {
        let mut a = host("a", "z1");
        a.add_pod(labelled("w1", "web", "default", json!({})));
        let b = host("b", "z1");
        let c = host("c", "z2");
        let nodes = [&a, &b, &c];
        let p = pod(anti("kubernetes.io/hostname"));
        let cycle = cycle_for(&p, &nodes);
        assert_eq!(filter(&cycle, &a), Err(Failure::new(NAME, ANTI_AFFINITY)));
        assert!(filter(&cycle, &b).is_ok());
        let zonal = cycle_for(&pod(anti("zone")), &nodes);
        assert!(filter(&zonal, &b).is_err());
        assert!(filter(&zonal, &c).is_ok());
        // Another namespace does not count unless the term names it.
        let mut other = host("d", "z3");
        other.add_pod(labelled("w2", "web", "other", json!({})));
        assert!(filter(&cycle_for(&p, &[&other]), &other).is_ok());
        let mut named = anti("kubernetes.io/hostname");
        named["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["namespaces"] =
            json!(["other"]);
        let p = pod(named);
        assert!(filter(&cycle_for(&p, &[&other]), &other).is_err());
        let mut all = anti("kubernetes.io/hostname");
        all["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["namespaceSelector"] =
            json!({});
        assert!(filter(&cycle_for(&pod(all), &[&other]), &other).is_err());
    }

    #[test]
    fn existing_pods_anti_affinity_keeps_matching_pods_away() {
        let mut a = host("a", "z1");
        a.add_pod(labelled("db", "db", "default", anti("kubernetes.io/hostname")));
        let b = host("b", "z1");
        let p = pod(json!({}));
        let cycle = cycle_for(&p, &[&a, &b]);
        assert_eq!(filter(&cycle, &a), Err(Failure::new(NAME, EXISTING_ANTI_AFFINITY)));
        assert!(filter(&cycle, &b).is_ok());
        let nodes = [a, b];
        assert_eq!(
            run(&p, &nodes[..1]),
            Err("0/1 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules.".into())
        );
    }

    #[test]
    fn required_affinity_follows_matching_pods_or_admits_the_first_of_a_group() {
        let affinity = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}]}}});
        let mut a = host("a", "z1");
        a.add_pod(labelled("c1", "cache", "default", json!({})));
        let b = host("b", "z1");
        let c = host("c", "z2");
        let p = pod(affinity.clone());
        let cycle = cycle_for(&p, &[&a, &b, &c]);
        assert!(filter(&cycle, &b).is_ok(), "same zone as the cache pod");
        assert_eq!(filter(&cycle, &c), Err(Failure::unresolvable(NAME, AFFINITY)));
        // No cache pod anywhere: a pod labelled app=cache may start the group, others may not.
        let lonely = [&b, &c];
        assert!(filter(&cycle_for(&p, &lonely), &c).is_err());
        let mut first = pod(affinity);
        first["metadata"]["labels"] = json!({"app": "cache"});
        assert!(filter(&cycle_for(&first, &lonely), &c).is_ok());
    }

    #[test]
    fn preferred_terms_score_domains() {
        let preferred = json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}}]}}});
        let mut a = host("a", "z1");
        a.add_pod(labelled("c1", "cache", "default", json!({})));
        let b = host("b", "z1");
        let c = host("c", "z2");
        let nodes = [&a, &b, &c];
        let cycle = cycle_for(&pod(preferred), &nodes);
        assert_eq!(score(&cycle, &nodes, &nodes), [100, 100, 0]);
    }
}
