//! Watches: replay of the event log from sled, then live events from the
//! broadcast channel fed by apply. The handoff subscribes first and replays up
//! to the revision seen at subscription, so nothing is lost or repeated; a
//! gap (lagging receiver, snapshot install) or compacted history ends the
//! watch with `Compacted`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};

use super::data::{RevisionEvents, SmData};
use super::error::StoreError;
use super::types::{Revision, WatchBatch};

/// How many events one replay step reads from sled.
const REPLAY_CHUNK: usize = 1024;

enum State {
    /// Replaying the event log from `next` up to `upto`, then live.
    Replay {
        next: Revision,
        upto: Revision,
    },
    /// Live; `last` is the last revision taken from the channel.
    Live {
        last: Revision,
    },
    /// Yield this error, then end.
    Failed(StoreError),
    Done,
}

/// A stream of [`WatchBatch`]es; ends with an error if the watch falls behind
/// the compacted history.
pub struct Watcher {
    data: Arc<SmData>,
    prefix: String,
    rx: broadcast::Receiver<Arc<RevisionEvents>>,
    state: State,
    buffered: VecDeque<WatchBatch>,
    progress: Option<tokio::time::Interval>,
}

fn batch(rev: &RevisionEvents, prefix: &str) -> Option<WatchBatch> {
    let events: Vec<_> = rev.events.iter().filter(|e| e.kv.key.starts_with(prefix)).cloned().collect();
    (!events.is_empty()).then_some(WatchBatch { revision: rev.revision, events })
}

impl Watcher {
    pub(super) fn new(data: Arc<SmData>, prefix: &str, after: Revision, progress_every: Option<Duration>) -> Watcher {
        let (rx, upto) = data.subscribe();
        let compacted = data.compacted();
        let start = after.max(0) + 1;
        let state = if start < compacted {
            State::Failed(StoreError::Compacted { requested: start, compacted })
        } else {
            State::Replay { next: start, upto }
        };
        let progress = progress_every.map(|every| {
            let mut iv = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            iv
        });
        Watcher { data, prefix: prefix.to_string(), rx, state, buffered: VecDeque::new(), progress }
    }

    fn fail(&mut self, requested: Revision) -> Option<Result<WatchBatch, StoreError>> {
        self.state = State::Done;
        Some(Err(StoreError::Compacted { requested, compacted: self.data.compacted() }))
    }

    /// The next batch of events, a progress notice, or the error that ends the watch.
    pub async fn next(&mut self) -> Option<Result<WatchBatch, StoreError>> {
        loop {
            if let Some(b) = self.buffered.pop_front() {
                return Some(Ok(b));
            }
            match std::mem::replace(&mut self.state, State::Done) {
                State::Done => return None,
                State::Failed(e) => return Some(Err(e)),
                // `next - 1` is `upto` after a replay, and the start when the
                // watch began past this member's applied revision (a lagging
                // follower): live events up to the start are not delivered.
                State::Replay { next, upto } if next > upto => {
                    self.state = State::Live { last: next - 1 };
                }
                State::Replay { next, upto } => {
                    let replayed = self.data.replay(&self.prefix, next, upto, REPLAY_CHUNK);
                    let (revs, scanned_to) = match replayed {
                        Ok(r) => r,
                        Err(e) => return Some(Err(e.into())),
                    };
                    // Checked after reading: a racing compaction sets the bound first.
                    if next < self.data.compacted() {
                        return self.fail(next);
                    }
                    self.buffered.extend(revs.iter().filter_map(|r| batch(r, &self.prefix)));
                    self.state = State::Replay { next: scanned_to + 1, upto };
                }
                State::Live { last } => {
                    self.state = State::Live { last };
                    let tick = async {
                        match self.progress.as_mut() {
                            Some(iv) => {
                                iv.tick().await;
                            }
                            None => std::future::pending::<()>().await,
                        }
                    };
                    let received = tokio::select! {
                        r = self.rx.recv() => Some(r),
                        _ = tick => None,
                    };
                    match received {
                        None => {
                            return Some(Ok(WatchBatch { revision: last, events: Vec::new() }));
                        }
                        Some(Ok(rev)) if rev.revision <= last => {}
                        Some(Ok(rev)) if rev.revision != last + 1 => return self.fail(last + 1),
                        Some(Ok(rev)) => {
                            self.state = State::Live { last: rev.revision };
                            if let Some(b) = batch(&rev, &self.prefix) {
                                return Some(Ok(b));
                            }
                        }
                        Some(Err(RecvError::Lagged(n))) => {
                            tracing::warn!(prefix = %self.prefix, missed = n, "watcher fell behind");
                            return self.fail(last + 1);
                        }
                        Some(Err(RecvError::Closed)) => {
                            self.state = State::Done;
                            return Some(Err(StoreError::ShuttingDown));
                        }
                    }
                }
            }
        }
    }
}
