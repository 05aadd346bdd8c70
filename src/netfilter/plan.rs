//! What the table should hold, and the one transaction that gets it there:
//! a full rebuild (add table; delete table; add everything) or an
//! incremental one whose size follows the change (only the changed
//! Services' chains, sets and map elements). Pure: no `nft` runs here.

use super::TABLE;
use super::base::{self, HOOK_CHAINS};
use super::expr::{self, Expr, Stmt};
use super::model::ServiceKey;
use super::render::{AffinitySet, ElementKey, Fragment, MapName, Target};
use nftables::expr::{Expression, Verdict};
use nftables::schema::{
    Chain, Element, FlushObject, NfCmd, NfListObject, Rule, Set, SetFlag, SetType, SetTypeValue, Table,
};
use nftables::types::{NfChainPolicy, NfFamily};
use serde::Serialize;
use serde_json::json;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// One command of a transaction. Verdict maps are written as plain JSON:
/// the crate's set types have no `verdict`.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Command {
    Nft(NfCmd<'static>),
    Raw(serde_json::Value),
}

/// One atomic `nft -j -f -` transaction, kept in the order nft needs:
/// references are removed before what they point at, and created after.
#[derive(Clone, Debug, Default)]
pub struct Transaction {
    pub full: bool,
    prelude: Vec<Command>,
    delete_elements: Vec<Command>,
    flush_chains: Vec<Command>,
    delete_sets: Vec<Command>,
    delete_chains: Vec<Command>,
    add_sets: Vec<Command>,
    add_chains: Vec<Command>,
    add_rules: Vec<Command>,
    add_elements: Vec<Command>,
}

#[derive(Serialize)]
struct Document<'a> {
    nftables: Vec<&'a Command>,
}

impl Transaction {
    pub fn commands(&self) -> impl Iterator<Item = &Command> {
        self.prelude
            .iter()
            .chain(&self.delete_elements)
            .chain(&self.flush_chains)
            .chain(&self.delete_sets)
            .chain(&self.delete_chains)
            .chain(&self.add_sets)
            .chain(&self.add_chains)
            .chain(&self.add_rules)
            .chain(&self.add_elements)
    }

    pub fn is_empty(&self) -> bool {
        self.commands().next().is_none()
    }

    pub fn len(&self) -> usize {
        self.commands().count()
    }

    /// The `{"nftables": [...]}` document `nft -j -f -` reads.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(&Document { nftables: self.commands().collect() })
    }

    pub fn to_json_pretty(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(&Document { nftables: self.commands().collect() })
    }

    fn add_chain(&mut self, name: &str, rules: &[Vec<Stmt>]) {
        self.add_chains.push(add(NfListObject::Chain(chain(name))));
        self.add_chain_rules(name, rules);
    }

    fn add_chain_rules(&mut self, name: &str, rules: &[Vec<Stmt>]) {
        for rule in rules {
            self.add_rules.push(add(NfListObject::Rule(Rule {
                family: NfFamily::INet,
                table: Cow::Borrowed(TABLE),
                chain: Cow::Owned(name.to_string()),
                expr: Cow::Owned(rule.clone()),
                handle: None,
                index: None,
                comment: None,
            })));
        }
    }

    fn flush_chain(&mut self, name: &str) {
        self.flush_chains.push(Command::Nft(NfCmd::Flush(FlushObject::Chain(chain(name)))));
    }

    fn delete_chain(&mut self, name: &str) {
        self.flush_chain(name);
        self.delete_chains.push(Command::Nft(NfCmd::Delete(NfListObject::Chain(chain(name)))));
    }

    fn add_set(&mut self, name: &str, spec: &AffinitySet) {
        self.add_sets.push(add(NfListObject::Set(Box::new(affinity_set(name, spec)))));
    }

    fn delete_set(&mut self, name: &str, spec: &AffinitySet) {
        self.delete_sets.push(Command::Nft(NfCmd::Delete(NfListObject::Set(Box::new(affinity_set(name, spec))))));
    }
}

fn add(object: NfListObject<'static>) -> Command {
    Command::Nft(NfCmd::Add(object))
}

fn table() -> NfListObject<'static> {
    NfListObject::Table(Table { family: NfFamily::INet, name: Cow::Borrowed(TABLE), handle: None })
}

/// A chain object; hook chains carry their hook, type and priority.
fn chain(name: &str) -> Chain<'static> {
    let hook = base::hook_of(name);
    Chain {
        family: NfFamily::INet,
        table: Cow::Borrowed(TABLE),
        name: Cow::Owned(name.to_string()),
        _type: hook.map(|h| h.kind),
        hook: hook.map(|h| h.hook),
        prio: hook.map(|h| h.priority),
        policy: hook.map(|_| NfChainPolicy::Accept),
        ..Chain::default()
    }
}

fn affinity_set(name: &str, spec: &AffinitySet) -> Set<'static> {
    Set {
        family: NfFamily::INet,
        table: Cow::Borrowed(TABLE),
        name: Cow::Owned(name.to_string()),
        set_type: SetTypeValue::Single(SetType::Ipv4Addr),
        flags: Some(HashSet::from([SetFlag::Timeout])),
        timeout: Some(spec.timeout),
        ..Set::default()
    }
}

fn map_declaration(map: MapName) -> Command {
    let key = if map.has_address() {
        json!(["ipv4_addr", "inet_proto", "inet_service"])
    } else {
        json!(["inet_proto", "inet_service"])
    };
    Command::Raw(
        json!({"add": {"map": {"family": "inet", "table": TABLE, "name": map.nft(), "type": key, "map": "verdict"}}}),
    )
}

fn element_key(key: &ElementKey) -> Expr {
    let mut parts = Vec::with_capacity(3);
    if let Some(ip) = key.ip {
        parts.push(expr::text(ip.to_string()));
    }
    parts.push(expr::text(key.protocol.nft()));
    parts.push(expr::number(key.port));
    expr::concat(parts)
}

fn target_verdict(target: &Target) -> Expr {
    match target {
        Target::Goto(chain) => expr::goto_verdict(chain),
        Target::Drop => Expression::Verdict(Verdict::Drop),
    }
}

/// One `add element` / `delete element` command per map.
fn element_commands(elements: BTreeMap<MapName, Vec<Expr>>, delete: bool) -> Vec<Command> {
    elements
        .into_iter()
        .map(|(map, elem)| {
            let element = NfListObject::Element(Element {
                family: NfFamily::INet,
                table: Cow::Borrowed(TABLE),
                name: Cow::Borrowed(map.nft()),
                elem: Cow::Owned(elem),
            });
            Command::Nft(if delete { NfCmd::Delete(element) } else { NfCmd::Add(element) })
        })
        .collect()
}

/// The table as it should be: the fixed part, each Service's fragment, and
/// for every map key the Services claiming it (the first one, in key order,
/// wins, so two Services sharing an external IP and port never collide).
#[derive(Debug, Default)]
pub struct Desired {
    base: Fragment,
    services: HashMap<ServiceKey, Fragment>,
    claims: HashMap<ElementKey, BTreeMap<ServiceKey, Target>>,
}

impl Desired {
    pub fn new(base: Fragment) -> Desired {
        Desired { base, ..Desired::default() }
    }

    pub fn base(&self) -> &Fragment {
        &self.base
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Replaces the fixed part (a config change); only a full rebuild applies it.
    pub fn set_base(&mut self, base: Fragment) {
        self.base = base;
    }

    fn effective(&self, key: &ElementKey) -> Option<&Target> {
        self.claims.get(key).and_then(|owners| owners.values().next())
    }

    /// The whole table from scratch, in one transaction.
    pub fn full_transaction(&self) -> Transaction {
        let mut tx = Transaction { full: true, ..Transaction::default() };
        tx.prelude.push(add(table()));
        tx.prelude.push(Command::Nft(NfCmd::Delete(table())));
        tx.prelude.push(add(table()));
        tx.prelude.extend(MapName::ALL.into_iter().map(map_declaration));
        // Hook chains first, then the rest: chains must exist before rules jump to them.
        for hook in &HOOK_CHAINS {
            tx.add_chains.push(add(NfListObject::Chain(chain(hook.name))));
        }
        let mut fragments: Vec<(&ServiceKey, &Fragment)> = self.services.iter().collect();
        fragments.sort_by(|a, b| a.0.cmp(b.0));
        for fragment in std::iter::once(&self.base).chain(fragments.iter().map(|(_, f)| *f)) {
            for (name, rules) in &fragment.chains {
                if base::hook_of(name).is_some() {
                    tx.add_chain_rules(name, rules);
                } else {
                    tx.add_chain(name, rules);
                }
            }
            for (name, spec) in &fragment.sets {
                tx.add_set(name, spec);
            }
        }
        let mut elements: BTreeMap<MapName, Vec<Expr>> = BTreeMap::new();
        let mut keys: Vec<&ElementKey> = self.claims.keys().collect();
        keys.sort();
        for key in keys {
            if let Some(target) = self.effective(key) {
                elements
                    .entry(key.map)
                    .or_default()
                    .push(Expression::List(vec![element_key(key), target_verdict(target)]));
            }
        }
        tx.add_elements = element_commands(elements, false);
        tx
    }

    /// Sets one Service's fragment (`None`: the Service is gone) and adds
    /// the commands that take the table from the old fragment to the new
    /// one to `tx`.
    pub fn replace_service(&mut self, key: &ServiceKey, new: Option<Fragment>, tx: &mut Transaction) {
        let old = self.services.remove(key).unwrap_or_default();
        let new = new.unwrap_or_default();
        diff_chains_and_sets(&old, &new, tx);

        let touched: BTreeSet<ElementKey> = old.elements.keys().chain(new.elements.keys()).cloned().collect();
        let before: Vec<Option<Target>> = touched.iter().map(|k| self.effective(k).cloned()).collect();
        for element in old.elements.keys() {
            if let Some(owners) = self.claims.get_mut(element) {
                owners.remove(key);
                if owners.is_empty() {
                    self.claims.remove(element);
                }
            }
        }
        for (element, target) in &new.elements {
            self.claims.entry(element.clone()).or_default().insert(key.clone(), target.clone());
        }
        let mut deletes: BTreeMap<MapName, Vec<Expr>> = BTreeMap::new();
        let mut adds: BTreeMap<MapName, Vec<Expr>> = BTreeMap::new();
        for (element, before) in touched.iter().zip(before) {
            let after = self.effective(element);
            if before.as_ref() == after {
                continue;
            }
            if before.is_some() {
                deletes.entry(element.map).or_default().push(element_key(element));
            }
            if let Some(after) = after {
                adds.entry(element.map)
                    .or_default()
                    .push(Expression::List(vec![element_key(element), target_verdict(after)]));
            }
        }
        tx.delete_elements.extend(element_commands(deletes, true));
        tx.add_elements.extend(element_commands(adds, false));
        if new != Fragment::default() {
            self.services.insert(key.clone(), new);
        }
    }
}

/// Chains: removed ones are flushed and deleted, new ones added, changed
/// ones flushed and refilled. A set whose timeout changed is deleted and
/// added again, so every chain of the Service is refilled (nothing may
/// reference the old set when it goes).
fn diff_chains_and_sets(old: &Fragment, new: &Fragment, tx: &mut Transaction) {
    let sets_respecified = old.sets.iter().any(|(name, spec)| new.sets.get(name).is_some_and(|s| s != spec));
    for (name, rules) in &old.chains {
        match new.chains.get(name) {
            None => tx.delete_chain(name),
            Some(new_rules) if sets_respecified || new_rules != rules => {
                tx.flush_chain(name);
                tx.add_chain_rules(name, new_rules);
            }
            Some(_) => {}
        }
    }
    for (name, rules) in &new.chains {
        if !old.chains.contains_key(name) {
            tx.add_chain(name, rules);
        }
    }
    for (name, spec) in &old.sets {
        match new.sets.get(name) {
            Some(new_spec) if new_spec == spec => {}
            _ => tx.delete_set(name, spec),
        }
    }
    for (name, spec) in &new.sets {
        if old.sets.get(name) != Some(spec) {
            tx.add_set(name, spec);
        }
    }
}
