//! A linearizability checker (Wing & Gong's search, with memoisation as in
//! Lowe's refinement) for histories of get / put / compare-and-swap on
//! registers. Keys are independent, so each key's history is checked alone.
//! Values are unique per write, so a compare on a mod revision is a compare
//! on the value that revision wrote; the model is a plain CAS register.

use std::collections::{BTreeMap, HashSet};

/// A register value: the id of the write that stored it; `None` is absent.
pub type Value = Option<u64>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    Put(u64),
    /// Store `new` if the register holds `expect`.
    Cas {
        expect: Value,
        new: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Get(Value),
    Put,
    Cas(bool),
}

/// One operation as a client saw it: when it was called and, if it
/// completed, when it returned and with what. An operation that failed or
/// timed out has `ret: None`: it may or may not have taken effect.
#[derive(Clone, Debug)]
pub struct Call {
    pub key: String,
    pub op: Op,
    pub call: u64,
    pub ret: Option<(u64, Output)>,
}

#[derive(Debug, thiserror::Error)]
#[error("the history of {key} is not linearizable ({ops} operations; at best {placed} could be ordered)")]
pub struct NotLinearizable {
    pub key: String,
    pub ops: usize,
    pub placed: usize,
}

/// The register after `op` with output `out` on `state`, or `None` if the
/// operation could not have answered `out` there.
fn step(state: Value, op: &Op, out: Option<&Output>) -> Option<Value> {
    match (op, out) {
        (Op::Get, Some(Output::Get(v))) => (*v == state).then_some(state),
        (Op::Get, _) => Some(state),
        (Op::Put(v), _) => Some(Some(*v)),
        (Op::Cas { expect, new }, Some(Output::Cas(true))) => (*expect == state).then_some(Some(*new)),
        (Op::Cas { expect, .. }, Some(Output::Cas(false))) => (*expect != state).then_some(state),
        // Unknown outcome: it succeeded if it could (else it changed nothing).
        (Op::Cas { expect, new }, _) => Some(if *expect == state { Some(*new) } else { state }),
    }
}

/// Checks every key's history; the first key that fails is reported.
pub fn check(history: &[Call]) -> Result<(), NotLinearizable> {
    let mut by_key: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
    for c in history {
        // A get that never answered says nothing.
        if c.op == Op::Get && c.ret.is_none() {
            continue;
        }
        by_key.entry(&c.key).or_default().push(c);
    }
    for (key, mut calls) in by_key {
        calls.sort_by_key(|c| c.call);
        let mut search = Search { calls: &calls, done: vec![false; calls.len()], seen: HashSet::new(), best: 0 };
        let required = calls.iter().filter(|c| c.ret.is_some()).count();
        if !search.run(None, 0, required) {
            return Err(NotLinearizable { key: key.to_string(), ops: calls.len(), placed: search.best });
        }
    }
    Ok(())
}

struct Search<'a> {
    calls: &'a [&'a Call],
    /// Which calls are linearized so far.
    done: Vec<bool>,
    /// (linearized set, register) configurations already known to fail.
    seen: HashSet<(Vec<bool>, Value)>,
    best: usize,
}

impl Search<'_> {
    /// Whether the calls not yet `done` can be ordered from `state`, given
    /// that `placed` completed calls are done and `required` must be.
    fn run(&mut self, state: Value, placed: usize, required: usize) -> bool {
        self.best = self.best.max(placed);
        if placed == required {
            return true;
        }
        if !self.seen.insert((self.done.clone(), state)) {
            return false;
        }
        // A call may go next only if it was called before every pending
        // completed call returned.
        let horizon = self
            .calls
            .iter()
            .zip(&self.done)
            .filter(|(_, d)| !**d)
            .filter_map(|(c, _)| c.ret.as_ref().map(|(t, _)| *t))
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..self.calls.len() {
            let c = self.calls[i];
            if c.call > horizon {
                break;
            }
            if self.done[i] {
                continue;
            }
            let Some(next) = step(state, &c.op, c.ret.as_ref().map(|(_, o)| o)) else {
                continue;
            };
            self.done[i] = true;
            let completed = usize::from(c.ret.is_some());
            if self.run(next, placed + completed, required) {
                return true;
            }
            self.done[i] = false;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(op: Op, call: u64, ret: Option<(u64, Output)>) -> Call {
        Call { key: "k".into(), op, call, ret }
    }
    fn get(v: Value, t: u64, r: u64) -> Call {
        call(Op::Get, t, Some((r, Output::Get(v))))
    }
    fn put(v: u64, t: u64, r: u64) -> Call {
        call(Op::Put(v), t, Some((r, Output::Put)))
    }
    fn cas(expect: Value, new: u64, ok: bool, t: u64, r: u64) -> Call {
        call(Op::Cas { expect, new }, t, Some((r, Output::Cas(ok))))
    }

    #[test]
    fn sequential_and_overlapping_histories_pass() {
        check(&[get(None, 0, 1), put(1, 2, 3), get(Some(1), 4, 5), cas(Some(1), 2, true, 6, 7)]).unwrap();
        // A read overlapping a write may see either value...
        check(&[put(1, 0, 1), put(2, 2, 10), get(Some(1), 3, 4), get(Some(2), 5, 6)]).unwrap();
        // ...and concurrent writes may land in either order.
        check(&[put(1, 0, 10), put(2, 0, 10), get(Some(1), 11, 12)]).unwrap();
        check(&[put(1, 0, 10), put(2, 0, 10), get(Some(2), 11, 12)]).unwrap();
        // Two racing CASes from the same value: one wins.
        check(&[put(1, 0, 1), cas(Some(1), 2, true, 2, 9), cas(Some(1), 3, false, 2, 9), get(Some(2), 10, 11)])
            .unwrap();
    }

    #[test]
    fn writes_of_unknown_outcome_may_or_may_not_apply() {
        let lost = call(Op::Put(7), 2, None);
        check(&[put(1, 0, 1), lost.clone(), get(Some(1), 3, 4)]).unwrap();
        check(&[put(1, 0, 1), lost, get(Some(7), 30, 40), get(Some(7), 50, 60)]).unwrap();
        let unknown_cas = call(Op::Cas { expect: Some(1), new: 8 }, 2, None);
        check(&[put(1, 0, 1), unknown_cas, get(Some(8), 5, 6)]).unwrap();
    }

    #[test]
    fn stale_reads_lost_writes_and_double_cas_fail() {
        // A read after a completed write sees the old value.
        let e = check(&[put(1, 0, 1), put(2, 2, 3), get(Some(1), 4, 5)]).unwrap_err();
        assert_eq!(e.key, "k");
        // Once a read saw the new value, a later read cannot go back.
        check(&[put(1, 0, 1), put(2, 2, 20), get(Some(2), 3, 4), get(Some(1), 5, 6)]).unwrap_err();
        // A value nobody wrote.
        check(&[put(1, 0, 1), get(Some(9), 2, 3)]).unwrap_err();
        // Two CASes from the same value both succeeding.
        check(&[put(1, 0, 1), cas(Some(1), 2, true, 2, 9), cas(Some(1), 3, true, 2, 9)]).unwrap_err();
        // A CAS that failed although the register held its expected value.
        check(&[put(1, 0, 1), cas(Some(1), 2, false, 2, 3), get(Some(1), 4, 5)]).unwrap_err();
        // A write of unknown outcome cannot be seen before it was called.
        check(&[put(1, 0, 1), get(Some(7), 2, 3), call(Op::Put(7), 4, None)]).unwrap_err();
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut other = put(5, 0, 1);
        other.key = "other".into();
        let mut stale = get(None, 2, 3);
        stale.key = "other".into();
        let e = check(&[put(1, 0, 1), get(Some(1), 2, 3), other, stale]).unwrap_err();
        assert_eq!(e.key, "other");
    }
}
