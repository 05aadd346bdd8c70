//! DefaultPreemption (PostFilter): when a pod fits nowhere, find the node
//! where evicting lower-priority pods makes it fit — as few and as
//! unimportant victims as possible, PodDisruptionBudgets respected where
//! another choice exists — or explain why preemption cannot help.

use super::framework::{Cycle, FitError, filter, histogram};
use super::info::{NodeInfo, PodInfo};
use crate::server::selectors::LabelSelector;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// A PodDisruptionBudget as preemption reads it.
#[derive(Clone, Debug)]
pub struct Budget {
    namespace: String,
    selector: LabelSelector,
    allowed: i64,
}

impl Budget {
    pub fn from_object(pdb: &Value) -> Option<Budget> {
        let selector = LabelSelector::from_label_selector_json(pdb.pointer("/spec/selector")?).ok()?;
        Some(Budget {
            namespace: pdb.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_string(),
            selector,
            allowed: pdb.pointer("/status/disruptionsAllowed").and_then(Value::as_i64).unwrap_or(0),
        })
    }
}

/// The chosen node and the pods to evict there.
#[derive(Debug)]
pub struct Plan {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
}

/// How victims on one node rank (lower is better), upstream's pickOneNodeForPreemption.
type Rank = (usize, i64, i128, usize);

/// DefaultPreemption's verdict: a plan, or the PostFilter message.
pub fn preempt(cycle: &Cycle, fit: &FitError, nodes: &[&NodeInfo], budgets: &[Budget]) -> Result<Plan, String> {
    let pod = &cycle.pod;
    if pod.preempt_never {
        return Err("preemption: not eligible due to preemptionPolicy=Never.".into());
    }
    let nominated = pod.pod.pointer("/status/nominatedNodeName").and_then(Value::as_str).unwrap_or_default();
    if let Some(node) = nodes.iter().find(|n| n.name == nominated)
        && fit.failures.get(nominated).is_some_and(|f| f.resolvable)
        && node.pods.iter().any(|p| p.terminating && p.priority < pod.priority)
    {
        return Err("preemption: not eligible due to a terminating pod on the nominated node.".into());
    }
    let mut reasons: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut best: Option<(Rank, Plan)> = None;
    for node in nodes {
        match fit.failures.get(&node.name) {
            Some(failure) if failure.resolvable => {}
            _ => {
                reasons.insert(&node.name, vec![NOT_HELPFUL.to_string()]);
                continue;
            }
        }
        match select_victims(cycle, node, budgets) {
            Ok((victims, violations)) => {
                let highest = victims.iter().map(|v| v.priority).max().unwrap_or(i64::MIN);
                let sum: i128 = victims.iter().map(|v| v.priority as i128 + (1i128 << 31)).sum();
                let rank = (violations, highest, sum, victims.len());
                if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                    best = Some((rank, Plan { node: node.name.clone(), victims }));
                }
            }
            Err(why) => {
                reasons.insert(&node.name, why);
            }
        }
    }
    match best {
        Some((_, plan)) => Ok(plan),
        None => Err(format!(
            "preemption: 0/{} nodes are available: {}.",
            nodes.len(),
            histogram(reasons.into_values().flatten())
        )),
    }
}

/// The pods to evict on `node` so the pod fits, with how many of them a
/// budget protects; or why none will do.
fn select_victims(
    cycle: &Cycle,
    node: &NodeInfo,
    budgets: &[Budget],
) -> Result<(Vec<Arc<PodInfo>>, usize), Vec<String>> {
    let pod = &cycle.pod;
    let mut candidates: Vec<Arc<PodInfo>> = node.pods.iter().filter(|p| p.priority < pod.priority).cloned().collect();
    if candidates.is_empty() {
        return Err(vec![NO_VICTIMS.to_string()]);
    }
    // A what-if copy of the node and of the cycle state without the candidates.
    let mut what_if = Cycle {
        pod: PodInfo::new(pod.pod.clone()),
        namespaces: cycle.namespaces,
        spread: cycle.spread.clone(),
        interpod: cycle.interpod.clone(),
    };
    let mut reduced = node.clone_with_pods();
    for victim in &candidates {
        reduced.remove_pod(&victim.uid);
        what_if.spread.update(pod, victim, node, -1);
        what_if.interpod.update(pod, victim, node, cycle.namespaces, -1);
    }
    if let Err(failure) = filter(&what_if, &reduced) {
        return Err(failure.reasons);
    }
    // Reprieve the most important pods first, budget-protected ones before the others.
    candidates.sort_by_key(|c| std::cmp::Reverse(c.priority));
    let mut remaining: Vec<Budget> = budgets.to_vec();
    let (protected, unprotected): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|victim| {
        let mut violates = false;
        for budget in
            remaining.iter_mut().filter(|b| b.namespace == victim.namespace && b.selector.matches(&victim.pod))
        {
            budget.allowed -= 1;
            violates |= budget.allowed < 0;
        }
        violates
    });
    let mut victims = Vec::new();
    let mut violations = 0;
    for (victim, is_protected) in
        protected.into_iter().map(|v| (v, true)).chain(unprotected.into_iter().map(|v| (v, false)))
    {
        reduced.add_pod(victim.clone());
        what_if.spread.update(pod, &victim, node, 1);
        what_if.interpod.update(pod, &victim, node, cycle.namespaces, 1);
        if filter(&what_if, &reduced).is_err() {
            reduced.remove_pod(&victim.uid);
            what_if.spread.update(pod, &victim, node, -1);
            what_if.interpod.update(pod, &victim, node, cycle.namespaces, -1);
            violations += usize::from(is_protected);
            victims.push(victim);
        }
    }
    Ok((victims, violations))
}

#[cfg(test)]
mod tests {
    use super::super::framework::schedule;
    use super::super::framework::tests::{empty_namespaces, node, pod};
    use super::*;
    use serde_json::json;

    fn with_priority(uid: &str, priority: i64, cpu: &str) -> PodInfo {
        let mut p =
            pod(json!({"priority": priority, "containers": [{"name": "a", "resources": {"requests": {"cpu": cpu}}}]}));
        p["metadata"]["uid"] = json!(uid);
        p["metadata"]["labels"] = json!({"app": uid});
        PodInfo::new(p)
    }

    fn full_node(name: &str, pods: &[(&str, i64, &str)]) -> NodeInfo {
        let mut n = node(name, json!({}), "2");
        for (uid, priority, cpu) in pods {
            n.add_pod(Arc::new(with_priority(uid, *priority, cpu)));
        }
        n
    }

    fn attempt(incoming: PodInfo, nodes: &[NodeInfo], budgets: &[Budget]) -> Result<Plan, String> {
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        match schedule(incoming, &refs, empty_namespaces(), 0) {
            Ok(d) => panic!("fits on {}", d.node),
            Err(failed) => preempt(&failed.0, &failed.1, &refs, budgets),
        }
    }

    #[test]
    fn evicts_the_fewest_lowest_priority_pods() {
        let nodes = [
            full_node("a", &[("a-mid", 50, "2")]),
            full_node("b", &[("b-low1", 10, "1"), ("b-low2", 10, "1")]),
            full_node("c", &[("c-high", 1000, "2")]),
        ];
        let plan = attempt(with_priority("p", 100, "1"), &nodes, &[]).expect("a plan");
        // a and b each need one victim; b's is of lower priority (10 against 50), and one low pod is reprieved.
        assert_eq!(plan.node, "b");
        assert_eq!(plan.victims.len(), 1);
        assert_eq!(plan.victims[0].priority, 10);
    }

    #[test]
    fn budgets_steer_preemption_to_unprotected_pods() {
        let nodes = [full_node("a", &[("a-low", 10, "2")]), full_node("b", &[("b-low", 10, "2")])];
        let budget = Budget::from_object(&json!({"metadata": {"namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "a-low"}}}, "status": {"disruptionsAllowed": 0}}))
        .expect("budget");
        let plan = attempt(with_priority("p", 100, "1"), &nodes, &[budget]).expect("a plan");
        assert_eq!(plan.node, "b");
    }

    #[test]
    fn explains_why_preemption_cannot_help() {
        let nodes = [full_node("a", &[("a-high", 1000, "2")])];
        assert_eq!(
            attempt(with_priority("p", 100, "1"), &nodes, &[]).map(|p| p.node),
            Err("preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.".into())
        );
        let mut never = with_priority("p", 100, "1").pod;
        never["spec"]["preemptionPolicy"] = json!("Never");
        assert_eq!(
            attempt(PodInfo::new(never), &nodes, &[]).map(|p| p.node),
            Err("preemption: not eligible due to preemptionPolicy=Never.".into())
        );
        let mut pinned = with_priority("p", 100, "1").pod;
        pinned["spec"]["nodeSelector"] = json!({"disk": "ssd"});
        assert_eq!(
            attempt(PodInfo::new(pinned), &nodes, &[]).map(|p| p.node),
            Err("preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.".into())
        );
    }
}
