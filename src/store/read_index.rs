//! Read-index coalescing. A linearizable read needs a read index obtained
//! after the read arrived: on the leader one `ensure_linearizable` heartbeat
//! round to a quorum, on a follower a ReadIndex call to the leader plus
//! catching up to it. Concurrent readers share rounds: whoever arrives while
//! a round is in flight waits for the next one, which starts after that
//! round ends, so every reader still gets an index from after its arrival.

use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

use super::error::StoreError;
use super::proposer::clone_error;

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// Shares read-index rounds among concurrent readers.
#[derive(Default)]
pub struct Coalescer {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A task is running rounds.
    running: bool,
    /// Readers waiting for the next round.
    waiting: Vec<Waiter>,
}

impl Coalescer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a round of `barrier` that started after this call.
    pub async fn wait<F, Fut>(self: &Arc<Self>, barrier: F) -> Result<(), StoreError>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), StoreError>> + Send,
    {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.lock();
            state.waiting.push(tx);
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            // A task of its own, so that a reader giving up never strands the others.
            let me = self.clone();
            tokio::spawn(async move { me.rounds(barrier).await });
        }
        rx.await.unwrap_or(Err(StoreError::ShuttingDown))
    }

    async fn rounds<F, Fut>(&self, barrier: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), StoreError>>,
    {
        loop {
            let batch = {
                let mut state = self.lock();
                if state.waiting.is_empty() {
                    state.running = false;
                    return;
                }
                std::mem::take(&mut state.waiting)
            };
            let result = barrier().await;
            for waiter in batch {
                let _ = waiter.send(result.as_ref().map(|_| ()).map_err(clone_error));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_readers_share_rounds_that_start_after_they_arrived() {
        let coalescer = Arc::new(Coalescer::default());
        let rounds = Arc::new(AtomicUsize::new(0));
        let barrier = {
            let rounds = rounds.clone();
            move || {
                let rounds = rounds.clone();
                async move {
                    rounds.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(())
                }
            }
        };
        let readers: Vec<_> = (0..50)
            .map(|_| {
                let (coalescer, barrier) = (coalescer.clone(), barrier.clone());
                tokio::spawn(async move { coalescer.wait(barrier).await })
            })
            .collect();
        for reader in readers {
            reader.await.unwrap().unwrap();
        }
        let shared = rounds.load(Ordering::SeqCst);
        assert!((1..=3).contains(&shared), "50 concurrent readers took {shared} rounds");

        // A reader arriving after the rounds ended gets a round of its own.
        coalescer.wait(barrier.clone()).await.unwrap();
        assert_eq!(rounds.load(Ordering::SeqCst), shared + 1);
        let failing = || async { Err(StoreError::NoLeader("no leader".into())) };
        assert!(matches!(coalescer.wait(failing).await, Err(StoreError::NoLeader(_))));
    }
}
