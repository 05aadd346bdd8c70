//! Watching objects: store watch events turned into ADDED / MODIFIED /
//! DELETED events of JSON objects, starting after a resource version.

use super::{Registry, decode, store_error};
use crate::server::catalog::ResourceInfo;
use crate::server::error::ApiError;
use crate::store::{EventKind, Revision, Watcher};
use serde_json::Value;

/// One change of an object.
#[derive(Clone, Debug)]
pub enum ObjectEvent {
    Added(Value),
    /// The new object and the previous one.
    Modified(Value, Option<Value>),
    /// The last state of the object (with the delete's resource version).
    Deleted(Value),
    /// No change, but the store reached this revision.
    Progress(Revision),
}

/// A stream of [`ObjectEvent`]s.
pub struct ObjectWatch {
    watcher: Watcher,
    /// The resource version the watch started after (named in a 410).
    after: Revision,
    pending: std::collections::VecDeque<ObjectEvent>,
}

impl ObjectWatch {
    /// The next event; `None` when the store ends the watch, an error when it
    /// fell out of the history window.
    pub async fn next(&mut self) -> Option<Result<ObjectEvent, ApiError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            let batch = match self.watcher.next().await? {
                Ok(batch) => batch,
                Err(crate::store::StoreError::Compacted { compacted, .. }) => {
                    return Some(Err(ApiError::expired(format!(
                        "too old resource version: {} ({compacted})",
                        self.after
                    ))));
                }
                Err(err) => return Some(Err(store_error(err))),
            };
            if batch.events.is_empty() {
                return Some(Ok(ObjectEvent::Progress(batch.revision)));
            }
            for event in batch.events {
                let converted = match event.kind {
                    EventKind::Put if event.kv.create_revision == event.kv.mod_revision => {
                        decode(&event.kv).map(ObjectEvent::Added)
                    }
                    EventKind::Put => {
                        let prev = event.prev.as_ref().map(decode).transpose();
                        decode(&event.kv).and_then(|obj| Ok(ObjectEvent::Modified(obj, prev?)))
                    }
                    EventKind::Delete => match &event.prev {
                        Some(prev) => decode(prev).map(|mut obj| {
                            super::set_resource_version(&mut obj, event.kv.mod_revision);
                            ObjectEvent::Deleted(obj)
                        }),
                        None => continue,
                    },
                };
                match converted {
                    Ok(event) => self.pending.push_back(event),
                    Err(err) => return Some(Err(err)),
                }
            }
        }
    }
}

impl Registry {
    /// Every change of `res` in `namespace` (all when `None`) after `after`.
    pub fn watch(&self, res: &ResourceInfo, namespace: Option<&str>, after: Revision) -> Result<ObjectWatch, ApiError> {
        let watcher = self.store.watch(&res.list_prefix(namespace), after).map_err(store_error)?;
        Ok(ObjectWatch { watcher, after, pending: Default::default() })
    }
}
