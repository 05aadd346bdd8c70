//! Scheduled snapshots (`--snapshot-interval`, `--snapshot-retention`): every
//! interval the Raft leader writes `scheduled-<node>-<unix time>` and deletes
//! its oldest scheduled snapshots beyond the retention; on-demand ones are
//! never touched. Followers skip the tick, so a group writes one per interval.

use super::{SCHEDULED, api, prune, snapshot_dir};
use crate::server::state::ApiState;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// When and how many scheduled snapshots to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub every: Duration,
    pub retention: usize,
}

/// What one tick does, given whether this server leads the store.
#[derive(Debug, PartialEq, Eq)]
pub enum Tick {
    Skip,
    SaveAndPrune,
}

pub fn tick(leader: bool) -> Tick {
    if leader { Tick::SaveAndPrune } else { Tick::Skip }
}

/// Runs until `shutdown`; the first snapshot is taken one interval after start.
pub async fn run(state: ApiState, schedule: Schedule, shutdown: CancellationToken) {
    tracing::info!(every = ?schedule.every, retention = schedule.retention, "scheduled snapshots on");
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + schedule.every, schedule.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if tick(state.registry.store().is_leader()) == Tick::Skip {
            tracing::debug!("not the store leader: no scheduled snapshot");
            continue;
        }
        match api::save_named(&state, SCHEDULED).await {
            Ok(saved) => tracing::info!(snapshot = %saved.path, revision = saved.revision, "scheduled snapshot saved"),
            Err(err) => {
                tracing::warn!(error = %err.message, "scheduled snapshot failed");
                continue;
            }
        }
        match prune(&snapshot_dir(&state.config.data_dir), SCHEDULED, schedule.retention) {
            Ok(pruned) => {
                for entry in pruned {
                    tracing::info!(snapshot = %entry.path.display(), "pruned a scheduled snapshot beyond retention");
                }
            }
            Err(err) => tracing::warn!(error = %err, "pruning scheduled snapshots failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_leader_saves() {
        assert_eq!(tick(true), Tick::SaveAndPrune);
        assert_eq!(tick(false), Tick::Skip);
    }
}
