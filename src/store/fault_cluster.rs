//! Test harness: an in-process three-member cluster whose members can be
//! stopped and restarted from their data directories while clients run.

use std::sync::Mutex;
use std::time::Duration;

use super::cluster_tests::{member, three_members};
use super::tests::wait_until;
use super::tls::test_ca::TestCa;
use super::*;

pub(super) struct FaultCluster {
    pub dir: tempfile::TempDir,
    ca: TestCa,
    pub ports: Vec<u16>,
    /// `None` while a member is stopped.
    slots: Vec<Mutex<Option<Store>>>,
}

impl FaultCluster {
    pub async fn start() -> FaultCluster {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let (stores, ports) = three_members(dir.path(), &ca).await;
        let slots = stores.into_iter().map(|s| Mutex::new(Some(s))).collect();
        FaultCluster { dir, ca, ports, slots }
    }

    /// Member `i` (0-based), if running.
    pub fn get(&self, i: usize) -> Option<Store> {
        self.slots[i].lock().unwrap().clone()
    }

    /// The running members.
    pub fn running(&self) -> Vec<Store> {
        (0..self.slots.len()).filter_map(|i| self.get(i)).collect()
    }

    /// Waits until the running members agree on a leader among them; its index.
    pub async fn leader(&self) -> usize {
        let mut found = None;
        wait_until(Duration::from_secs(20), "an agreed leader", || {
            let running = self.running();
            let leaders: Vec<_> = running.iter().map(|s| s.leader()).collect();
            let agreed = leaders.first().copied().flatten().filter(|l| leaders.iter().all(|x| *x == Some(*l)));
            found = agreed.filter(|l| running.iter().any(|s| s.id() == *l));
            async move { found.is_some() }
        })
        .await;
        found.map(|id| id as usize - 1).unwrap()
    }

    /// Stops member `i` (clients holding its handle get errors).
    pub async fn stop(&self, i: usize) {
        let store = self.slots[i].lock().unwrap().take().expect("member running");
        store.shutdown().await.unwrap();
        drop(store);
        let path = self.dir.path().join(format!("m{}", i + 1));
        wait_until(Duration::from_secs(10), "the stopped member's lock released", || {
            let p = path.clone();
            async move { !super::in_use(&p) }
        })
        .await;
    }

    /// Restarts member `i` from its data directory.
    pub async fn restart(&self, i: usize) {
        let c = member(self.dir.path(), i as NodeId + 1, self.ports[i], &self.ca, true);
        let store = Store::open(c).await.unwrap();
        *self.slots[i].lock().unwrap() = Some(store);
    }

    pub async fn shutdown(&self) {
        for s in self.running() {
            let _ = s.shutdown().await;
        }
    }
}
