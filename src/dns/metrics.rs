//! Query counters of the DNS server, by outcome (logged at shutdown, read by
//! tests and the benchmark).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from the index (records, NODATA or NXDOMAIN).
    Cluster,
    /// Answered by an upstream resolver.
    Forwarded,
    /// The upstreams failed or timed out: SERVFAIL.
    UpstreamFailed,
    /// Asked before the first list of the API: SERVFAIL.
    NotSynced,
}

#[derive(Debug, Default)]
pub struct Metrics {
    cluster: AtomicU64,
    forwarded: AtomicU64,
    upstream_failed: AtomicU64,
    not_synced: AtomicU64,
}

impl Metrics {
    pub fn count(&self, outcome: Outcome) {
        self.counter(outcome).fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, outcome: Outcome) -> u64 {
        self.counter(outcome).load(Ordering::Relaxed)
    }

    fn counter(&self, outcome: Outcome) -> &AtomicU64 {
        match outcome {
            Outcome::Cluster => &self.cluster,
            Outcome::Forwarded => &self.forwarded,
            Outcome::UpstreamFailed => &self.upstream_failed,
            Outcome::NotSynced => &self.not_synced,
        }
    }
}
