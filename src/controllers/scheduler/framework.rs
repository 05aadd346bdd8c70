//! The scheduling framework: a cycle's pre-computed state, the filter
//! plugins in upstream's order, the score plugins with upstream's default
//! weights, and the FitError message ("0/N nodes are available: …").

use super::info::{NodeInfo, PodInfo};
use super::{filters, interpod, scores, spread};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Upstream's MaxNodeScore.
pub const MAX_SCORE: i64 = 100;
/// upstream's minFeasibleNodesToFind / minFeasibleNodesPercentageToFind.
const MIN_FEASIBLE: usize = 100;
const MIN_FEASIBLE_PERCENT: usize = 5;

/// Why a node cannot take the pod. `resolvable` is upstream's `Unschedulable`
/// (preemption might help) as opposed to `UnschedulableAndUnresolvable`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub plugin: &'static str,
    pub reasons: Vec<String>,
    pub resolvable: bool,
}

impl Failure {
    pub fn new(plugin: &'static str, reason: &str) -> Failure {
        Failure { plugin, reasons: vec![reason.to_string()], resolvable: true }
    }

    pub fn unresolvable(plugin: &'static str, reason: &str) -> Failure {
        Failure { plugin, reasons: vec![reason.to_string()], resolvable: false }
    }
}

/// One scheduling cycle: the pod and what PreFilter computed over all nodes.
pub struct Cycle<'a> {
    pub pod: PodInfo,
    pub namespaces: &'a HashMap<String, Value>,
    pub spread: spread::FilterState,
    pub interpod: interpod::FilterState,
}

impl<'a> Cycle<'a> {
    /// PreFilter: the cluster-wide counts the filters need.
    pub fn new(pod: PodInfo, nodes: &[&NodeInfo], namespaces: &'a HashMap<String, Value>) -> Cycle<'a> {
        let spread = spread::FilterState::new(&pod, nodes);
        let interpod = interpod::FilterState::new(&pod, nodes, namespaces);
        Cycle { pod, namespaces, spread, interpod }
    }
}

type Filter = fn(&Cycle, &NodeInfo) -> Result<(), Failure>;

/// The default profile's filters in upstream's order.
pub const FILTERS: &[Filter] = &[
    filters::node_unschedulable,
    filters::node_name,
    filters::taint_toleration,
    filters::node_affinity,
    filters::node_ports,
    filters::resources_fit,
    spread::filter,
    interpod::filter,
];

pub use super::filters::tolerates;

/// Whether a pod passes the node-local filters on an empty `node` (every
/// filter but NodeResourcesFit): what the DaemonSet controller asks.
pub fn daemon_fits(pod: &Value, node: &Value) -> bool {
    let info = NodeInfo::new(node.clone());
    let namespaces = HashMap::new();
    let cycle = Cycle::new(PodInfo::new(pod.clone()), &[], &namespaces);
    [
        filters::node_unschedulable,
        filters::node_name,
        filters::taint_toleration,
        filters::node_affinity,
        filters::node_ports,
    ]
    .iter()
    .all(|f| f(&cycle, &info).is_ok())
}

/// Runs the filters on one node; the first failing plugin decides.
pub fn filter(cycle: &Cycle, node: &NodeInfo) -> Result<(), Failure> {
    FILTERS.iter().try_for_each(|f| f(cycle, node))
}

/// The pod fits nowhere: per node why (by the nodes' names).
#[derive(Debug)]
pub struct FitError {
    pub num_nodes: usize,
    pub failures: BTreeMap<String, Failure>,
}

impl FitError {
    /// upstream's FitError.Error(), with the PostFilter (preemption) message.
    pub fn message(&self, post_filter: &str) -> String {
        let mut message = format!("0/{} nodes are available:", self.num_nodes);
        message += &format!(" {}.", histogram(self.failures.values().flat_map(|f| f.reasons.iter().cloned())));
        if !post_filter.is_empty() {
            message += &format!(" {post_filter}");
            if !post_filter.ends_with('.') {
                message.push('.');
            }
        }
        message
    }

    /// The plugins that rejected some node (the queue moves the pod back on events they care about).
    pub fn plugins(&self) -> BTreeSet<&'static str> {
        self.failures.values().map(|f| f.plugin).collect()
    }
}

/// "2 Insufficient cpu, 1 node(s) …": counts per reason, sorted as strings like upstream.
pub fn histogram(reasons: impl Iterator<Item = String>) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for reason in reasons {
        *counts.entry(reason).or_default() += 1;
    }
    let mut parts: Vec<String> = counts.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
    parts.sort();
    parts.join(", ")
}

/// upstream's numFeasibleNodesToFind with the adaptive percentage.
pub fn feasible_nodes_to_find(all: usize) -> usize {
    if all < MIN_FEASIBLE {
        return all;
    }
    let percentage = 50usize.saturating_sub(all / 125).max(MIN_FEASIBLE_PERCENT);
    (all * percentage / 100).max(MIN_FEASIBLE)
}

/// The outcome of one scheduling attempt.
pub struct Decision<'a> {
    pub node: String,
    pub cycle: Cycle<'a>,
    /// How many nodes were looked at (upstream advances its start index by it).
    pub evaluated: usize,
}

/// Filters the nodes (from `start`, round robin, until enough fit), scores
/// the feasible ones and picks the best; or explains why none fits.
pub fn schedule<'a>(
    pod: PodInfo,
    nodes: &[&NodeInfo],
    namespaces: &'a HashMap<String, Value>,
    start: usize,
) -> Result<Decision<'a>, Box<(Cycle<'a>, FitError)>> {
    let cycle = Cycle::new(pod, nodes, namespaces);
    if nodes.is_empty() {
        return Err(Box::new((cycle, FitError { num_nodes: 0, failures: BTreeMap::new() })));
    }
    // The node a preemption freed is tried first (upstream's evaluateNominatedNode).
    let nominated = cycle.pod.pod.pointer("/status/nominatedNodeName").and_then(Value::as_str).unwrap_or_default();
    if !nominated.is_empty()
        && let Some(node) = nodes.iter().find(|n| n.name == nominated)
        && filter(&cycle, node).is_ok()
    {
        return Ok(Decision { node: nominated.to_string(), cycle, evaluated: 0 });
    }
    let wanted = feasible_nodes_to_find(nodes.len());
    let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(wanted);
    let mut failures = BTreeMap::new();
    let mut evaluated = 0;
    for i in 0..nodes.len() {
        let node = nodes[(start + i) % nodes.len()];
        evaluated += 1;
        match filter(&cycle, node) {
            Ok(()) => {
                feasible.push(node);
                if feasible.len() >= wanted {
                    break;
                }
            }
            Err(failure) => {
                failures.insert(node.name.clone(), failure);
            }
        }
    }
    if feasible.is_empty() {
        return Err(Box::new((cycle, FitError { num_nodes: nodes.len(), failures })));
    }
    let node = if feasible.len() == 1 {
        feasible[0].name.clone()
    } else {
        let totals = scores::score(&cycle, &feasible, nodes);
        select_host(&feasible, &totals)
    };
    Ok(Decision { node, cycle, evaluated })
}

/// The highest total; ties broken at random, like upstream's selectHost.
fn select_host(nodes: &[&NodeInfo], totals: &[i64]) -> String {
    let best = totals.iter().copied().max().unwrap_or(0);
    let tied: Vec<usize> = (0..nodes.len()).filter(|i| totals[*i] == best).collect();
    let pick = tied[rand::random_range(0..tied.len())];
    nodes[pick].name.clone()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use serde_json::json;

    pub fn node(name: &str, labels: Value, cpu: &str) -> NodeInfo {
        NodeInfo::new(json!({"metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]}}))
    }

    pub fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default", "uid": "p-uid", "labels": {"app": "web"},
            "ownerReferences": [{"uid": "rs", "controller": true}]}, "spec": spec})
    }

    pub fn empty_namespaces() -> &'static HashMap<String, Value> {
        Box::leak(Box::new(HashMap::new()))
    }

    pub fn cycle_for(pod: &Value, nodes: &[&NodeInfo]) -> Cycle<'static> {
        Cycle::new(PodInfo::new(pod.clone()), nodes, empty_namespaces())
    }

    pub fn run(pod: &Value, nodes: &[NodeInfo]) -> Result<String, String> {
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        match schedule(PodInfo::new(pod.clone()), &refs, empty_namespaces(), 0) {
            Ok(decision) => Ok(decision.node),
            Err(failed) => Err(failed.1.message("")),
        }
    }

    #[test]
    fn node_selector_mismatch_has_upstreams_message() {
        let p = pod(json!({"nodeSelector": {"disk": "ssd"}, "containers": [{"name": "a"}]}));
        let nodes = [node("n1", json!({"disk": "hdd"}), "2")];
        assert_eq!(
            run(&p, &nodes),
            Err("0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.".into())
        );
        let nodes = [node("n1", json!({"disk": "hdd"}), "2"), node("n2", json!({"disk": "ssd"}), "2")];
        assert_eq!(run(&p, &nodes), Ok("n2".into()));
    }

    #[test]
    fn the_message_sorts_reason_counts_as_strings_and_appends_preemption() {
        let fit = FitError {
            num_nodes: 12,
            failures: [
                ("a", Failure::new("NodeResourcesFit", "Insufficient cpu")),
                ("b", Failure::new("NodeResourcesFit", "Insufficient cpu")),
                ("c", Failure::unresolvable("NodeAffinity", "node(s) didn't match Pod's node affinity/selector")),
            ]
            .into_iter()
            .map(|(n, f)| (n.to_string(), f))
            .collect(),
        };
        assert_eq!(
            fit.message("preemption: 0/12 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod"),
            "0/12 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu. preemption: 0/12 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
        );
        assert_eq!(histogram(["b", "a", "b"].iter().map(|s| s.to_string())), "1 a, 2 b");
    }

    #[test]
    fn a_fraction_of_large_clusters_is_enough() {
        assert_eq!(feasible_nodes_to_find(50), 50);
        assert_eq!(feasible_nodes_to_find(200), 100);
        assert_eq!(feasible_nodes_to_find(1000), 420);
        assert_eq!(feasible_nodes_to_find(5000), 500);
    }
}
