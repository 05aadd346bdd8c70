//! Automatic compaction on the leader: sample (time, revision) and compact,
//! through Raft, to the revision that was current `history_window` ago.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Store;
use super::types::Revision;

/// Remembers which revision was current when; pure, so it is unit-tested.
#[derive(Debug, Default)]
pub struct Sampler {
    samples: VecDeque<(Instant, Revision)>,
}

impl Sampler {
    /// Records `rev` at `now`; returns the revision that was current
    /// `window` ago, if a sample that old exists.
    pub fn record(&mut self, now: Instant, rev: Revision, window: Duration) -> Option<Revision> {
        self.samples.push_back((now, rev));
        let mut target = None;
        while let Some(&(at, r)) = self.samples.front() {
            if now.duration_since(at) >= window {
                target = Some(r);
                self.samples.pop_front();
            } else {
                break;
            }
        }
        target
    }

    pub fn clear(&mut self) {
        self.samples.clear();
    }
}

/// Runs until `cancel`: while this member leads, compacts history older than `window`.
pub async fn run(store: Store, window: Duration, cancel: CancellationToken) {
    let every = (window / 20).clamp(Duration::from_millis(50), Duration::from_secs(10));
    let mut sampler = Sampler::default();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if !store.is_leader() {
            sampler.clear();
            continue;
        }
        let data = store.data();
        if let Some(target) = sampler.record(Instant::now(), data.revision(), window)
            && target > data.compacted()
        {
            match store.compact(target).await {
                Ok(()) => tracing::debug!(revision = target, "automatic compaction"),
                Err(e) => tracing::warn!(revision = target, error = %e, "automatic compaction failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_returns_revision_current_a_window_ago() {
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        let mut s = Sampler::default();
        assert_eq!(s.record(t0, 5, w), None);
        assert_eq!(s.record(t0 + Duration::from_secs(5), 9, w), None);
        assert_eq!(s.record(t0 + Duration::from_secs(10), 12, w), Some(5));
        assert_eq!(s.record(t0 + Duration::from_secs(11), 13, w), None);
        assert_eq!(s.record(t0 + Duration::from_secs(21), 20, w), Some(13));
    }
}
