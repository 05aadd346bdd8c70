//! openraft's storage conformance suite run against the sled log store and
//! state machine, each test in a fresh temporary directory.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};

use super::command::{StorageError, TypeConfig};
use super::data::SmData;
use super::log_store::{Health, LogStore};
use super::state_machine::StateMachineStore;

struct SledBuilder;

fn io(e: impl std::error::Error + 'static) -> StorageError {
    StorageError::IO { source: openraft::StorageIOError::write(&e) }
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(io)?;
        let db = sled::Config::new().path(dir.path().join("sled")).open().map_err(io)?;
        let (log, _flusher) = LogStore::open(&db, Health::default()).map_err(io)?;
        let data = Arc::new(SmData::open(&db, 16).map_err(io)?);
        let sm = StateMachineStore::new(&db, data).map_err(io)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(SledBuilder).unwrap();
}
