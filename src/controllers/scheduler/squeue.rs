//! The scheduling queue (upstream's `PriorityQueue`): an active queue by
//! priority then age, a backoff queue (1 s doubling to 10 s per attempt)
//! and an unschedulable pool that cluster events move back — only the pods
//! whose failing plugins the event could satisfy — or a 5 minute flush.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// upstream's podInitialBackoffSeconds / podMaxBackoffSeconds.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// upstream's podMaxInUnschedulablePodsDuration.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Active,
    Backoff(Instant),
    Unschedulable {
        since: Instant,
        plugins: BTreeSet<&'static str>,
    },
    /// Being scheduled; `moves` is the move counter when it was popped.
    InFlight {
        moves: u64,
    },
}

#[derive(Debug)]
struct Entry<T> {
    item: T,
    priority: i64,
    attempts: u32,
    seq: u64,
    state: State,
}

/// Pods waiting to be scheduled, keyed by uid, carrying `T` (the pod).
pub struct SchedulingQueue<T> {
    entries: HashMap<String, Entry<T>>,
    active: BinaryHeap<(i64, Reverse<u64>, String)>,
    seq: u64,
    /// How many move requests happened (a pod failing after one goes to backoff).
    moves: u64,
}

impl<T> Default for SchedulingQueue<T> {
    fn default() -> Self {
        SchedulingQueue { entries: HashMap::new(), active: BinaryHeap::new(), seq: 0, moves: 0 }
    }
}

/// The backoff after `attempts` failed attempts.
pub fn backoff(attempts: u32) -> Duration {
    let doubled = INITIAL_BACKOFF.saturating_mul(1u32 << attempts.saturating_sub(1).min(16));
    doubled.min(MAX_BACKOFF)
}

impl<T> SchedulingQueue<T> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.entries.contains_key(uid)
    }

    pub fn get(&self, uid: &str) -> Option<&T> {
        self.entries.get(uid).map(|e| &e.item)
    }

    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    fn push_active(&mut self, uid: &str) {
        if let Some(entry) = self.entries.get_mut(uid) {
            entry.state = State::Active;
            self.active.push((entry.priority, Reverse(entry.seq), uid.to_string()));
        }
    }

    /// A new pod, or a newer version of a queued one. `changed` says the
    /// update could make it schedulable (spec or labels), which moves it
    /// out of the unschedulable pool.
    pub fn add_or_update(&mut self, uid: &str, priority: i64, item: T, changed: bool, now: Instant) {
        match self.entries.get_mut(uid) {
            Some(entry) => {
                entry.item = item;
                if changed && matches!(entry.state, State::Unschedulable { .. }) {
                    self.move_one(uid, now);
                }
            }
            None => {
                self.seq += 1;
                let entry = Entry { item, priority, attempts: 0, seq: self.seq, state: State::Active };
                self.entries.insert(uid.to_string(), entry);
                self.push_active(uid);
            }
        }
    }

    pub fn delete(&mut self, uid: &str) -> Option<T> {
        self.entries.remove(uid).map(|e| e.item)
    }

    /// The next pod to schedule (highest priority, oldest first).
    pub fn pop(&mut self) -> Option<(String, &T)> {
        while let Some((_, Reverse(seq), uid)) = self.active.pop() {
            let moves = self.moves;
            if let Some(entry) = self.entries.get_mut(&uid)
                && entry.state == State::Active
                && entry.seq == seq
            {
                entry.state = State::InFlight { moves };
                entry.attempts += 1;
                let entry = &self.entries[&uid];
                return Some((uid, &entry.item));
            }
        }
        None
    }

    /// The pod fit nowhere because of `plugins`: unschedulable until an
    /// event moves it — or backoff when an event already came meanwhile.
    pub fn unschedulable(&mut self, uid: &str, plugins: BTreeSet<&'static str>, now: Instant) {
        let moves = self.moves;
        let Some(entry) = self.entries.get_mut(uid) else { return };
        match entry.state {
            State::InFlight { moves: popped } if popped != moves => {
                entry.state = State::Backoff(now + backoff(entry.attempts));
            }
            _ => entry.state = State::Unschedulable { since: now, plugins },
        }
    }

    /// Scheduling failed for another reason (an API error): retry after backoff.
    pub fn error(&mut self, uid: &str, now: Instant) {
        if let Some(entry) = self.entries.get_mut(uid) {
            entry.state = State::Backoff(now + backoff(entry.attempts));
        }
    }

    /// The pod was bound (or assumed): it leaves the queue.
    pub fn done(&mut self, uid: &str) {
        self.entries.remove(uid);
    }

    fn move_one(&mut self, uid: &str, now: Instant) {
        let Some(entry) = self.entries.get_mut(uid) else { return };
        let backoff_until = match &entry.state {
            State::Unschedulable { since, .. } => *since + backoff(entry.attempts),
            _ => now,
        };
        if backoff_until > now {
            entry.state = State::Backoff(backoff_until);
        } else {
            self.push_active(uid);
        }
    }

    /// A cluster event: unschedulable pods that failed on a plugin `relevant`
    /// accepts go back to the active (or backoff) queue.
    pub fn move_unschedulable(&mut self, relevant: impl Fn(&'static str) -> bool, now: Instant) {
        self.moves += 1;
        let moving: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| match &e.state {
                State::Unschedulable { plugins, .. } => plugins.is_empty() || plugins.iter().any(|p| relevant(p)),
                _ => false,
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in moving {
            self.move_one(&uid, now);
        }
    }

    /// Moves pods whose backoff ended, and unschedulable ones waiting too long.
    pub fn flush(&mut self, now: Instant) {
        let due: Vec<(String, bool)> = self
            .entries
            .iter()
            .filter_map(|(uid, e)| match &e.state {
                State::Backoff(until) if *until <= now => Some((uid.clone(), false)),
                State::Unschedulable { since, .. } if *since + MAX_UNSCHEDULABLE <= now => Some((uid.clone(), true)),
                _ => None,
            })
            .collect();
        for (uid, unschedulable) in due {
            if unschedulable {
                self.move_one(&uid, now);
            } else {
                self.push_active(&uid);
            }
        }
    }

    /// When [`SchedulingQueue::flush`] next has something to do.
    pub fn next_wake(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| match &e.state {
                State::Backoff(until) => Some(*until),
                State::Unschedulable { since, .. } => Some(*since + MAX_UNSCHEDULABLE),
                _ => None,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugins(names: &[&'static str]) -> BTreeSet<&'static str> {
        names.iter().copied().collect()
    }

    #[test]
    fn backoff_doubles_from_one_to_ten_seconds() {
        let secs: Vec<u64> = (1..=6).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn pops_by_priority_then_age() {
        let now = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add_or_update("low", 0, "low", false, now);
        q.add_or_update("high", 100, "high", false, now);
        q.add_or_update("low2", 0, "low2", false, now);
        let order: Vec<String> = std::iter::from_fn(|| q.pop().map(|(uid, _)| uid)).collect();
        assert_eq!(order, ["high", "low", "low2"]);
    }

    #[test]
    fn unschedulable_pods_move_back_on_relevant_events_after_backoff() {
        let now = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add_or_update("p", 0, (), false, now);
        assert!(q.pop().is_some());
        q.unschedulable("p", plugins(&["NodeResourcesFit"]), now);
        assert!(q.pop().is_none());
        // An irrelevant event leaves it alone.
        q.move_unschedulable(|p| p == "InterPodAffinity", now);
        assert!(!q.has_active());
        assert_eq!(q.next_wake(), Some(now + MAX_UNSCHEDULABLE));
        // A relevant one moves it to backoff (1 s after the first attempt) ...
        q.move_unschedulable(|p| p == "NodeResourcesFit", now);
        assert!(!q.has_active());
        assert_eq!(q.next_wake(), Some(now + Duration::from_secs(1)));
        // ... and then to the active queue.
        q.flush(now + Duration::from_secs(1));
        assert_eq!(q.pop().map(|(uid, _)| uid), Some("p".to_string()));
        // A second failure backs off 2 s; an event during the attempt means backoff, not the pool.
        q.move_unschedulable(|_| true, now);
        q.unschedulable("p", plugins(&["NodeResourcesFit"]), now);
        assert_eq!(q.next_wake(), Some(now + Duration::from_secs(2)));
        q.flush(now + Duration::from_secs(2));
        assert!(q.pop().is_some());
        q.done("p");
        assert!(q.is_empty());
    }
}
