//! The feeds of the index: for each kind, list, then watch from the list's
//! resourceVersion, resuming after a watch ends and listing again when the
//! history is gone (410 / an ERROR event) or a call fails. The loop is the
//! state machine `FeedState` moved by the pure `step`.

use super::error::DnsError;
use super::index::{Kind, SharedIndex};
use crate::server::client::Client;
use futures::{Stream, StreamExt};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A stream of watch events: (type, object).
pub type EventStream = Pin<Box<dyn Stream<Item = (String, Value)> + Send>>;

/// Where the objects come from: the in-process client of `kube server`, or
/// any other API client (the e2e test reads through `kubectl proxy`).
pub trait ApiSource: Clone + Send + Sync + 'static {
    /// GET of a list (the whole object, with `metadata.resourceVersion`).
    fn list(&self, uri: &str) -> impl Future<Output = Result<Value, DnsError>> + Send;
    /// GET with `watch=true`: the events until the server ends the stream.
    fn watch(&self, uri: &str) -> impl Future<Output = Result<EventStream, DnsError>> + Send;
}

impl ApiSource for Client {
    async fn list(&self, uri: &str) -> Result<Value, DnsError> {
        self.get(uri).await.map_err(|err| DnsError::Api { uri: uri.to_string(), code: err.code, message: err.message })
    }

    async fn watch(&self, uri: &str) -> Result<EventStream, DnsError> {
        match Client::watch(self, uri).await {
            Ok(stream) => Ok(Box::pin(stream)),
            Err(err) => Err(DnsError::Api { uri: uri.to_string(), code: err.code, message: err.message }),
        }
    }
}

/// Where a feed is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedState {
    Listing,
    Watching {
        resource_version: String,
    },
    /// After a failure: wait, then list again.
    Backoff,
}

/// What happened in a state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedEvent {
    Listed {
        resource_version: String,
    },
    ListFailed,
    /// The server closed the watch (its timeout); resume from the last version seen.
    WatchEnded {
        resource_version: String,
    },
    /// The version is too old (410 Gone, or an ERROR event): list again.
    WatchExpired,
    WatchFailed,
    BackoffDone,
}

pub fn step(state: &FeedState, event: FeedEvent) -> FeedState {
    match (state, event) {
        (_, FeedEvent::Listed { resource_version }) | (_, FeedEvent::WatchEnded { resource_version })
            if !resource_version.is_empty() =>
        {
            FeedState::Watching { resource_version }
        }
        (_, FeedEvent::Listed { .. } | FeedEvent::WatchEnded { .. } | FeedEvent::WatchExpired) => FeedState::Listing,
        (_, FeedEvent::ListFailed | FeedEvent::WatchFailed) => FeedState::Backoff,
        (_, FeedEvent::BackoffDone) => FeedState::Listing,
    }
}

fn resource_version(obj: &Value) -> String {
    obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Applies one watch event to the index; `None` when the watch must relist.
pub fn apply(index: &SharedIndex, kind: Kind, event_type: &str, obj: &Value) -> Option<String> {
    let mut index = index.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    match event_type {
        "ADDED" | "MODIFIED" => index.upsert(kind, obj),
        "DELETED" => index.remove(kind, obj),
        "BOOKMARK" => {}
        _ => return None,
    }
    Some(resource_version(obj))
}

/// Keeps the index's objects of `kind` in step with the API until `shutdown`.
pub async fn feed<S: ApiSource>(source: S, kind: Kind, index: SharedIndex, shutdown: CancellationToken) {
    let mut state = FeedState::Listing;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = run_state(&source, kind, &index, &state) => event,
        };
        state = step(&state, event);
    }
}

async fn run_state<S: ApiSource>(source: &S, kind: Kind, index: &SharedIndex, state: &FeedState) -> FeedEvent {
    match state {
        FeedState::Backoff => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            FeedEvent::BackoffDone
        }
        FeedState::Listing => match source.list(kind.path()).await {
            Ok(list) => {
                let items = list.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
                index.write().unwrap_or_else(|poisoned| poisoned.into_inner()).replace(kind, &items);
                tracing::debug!(kind = kind.path(), count = items.len(), "DNS index listed");
                FeedEvent::Listed { resource_version: resource_version(&list) }
            }
            Err(err) => {
                tracing::warn!(error = %err, "DNS cannot list; retrying");
                FeedEvent::ListFailed
            }
        },
        FeedState::Watching { resource_version } => {
            let uri = format!(
                "{}?watch=true&allowWatchBookmarks=true&resourceVersion={resource_version}&timeoutSeconds=300",
                kind.path()
            );
            let mut events = match source.watch(&uri).await {
                Ok(events) => events,
                Err(DnsError::Api { code: 410, .. }) => return FeedEvent::WatchExpired,
                Err(err) => {
                    tracing::warn!(error = %err, "DNS cannot watch; listing again");
                    return FeedEvent::WatchFailed;
                }
            };
            let mut last = resource_version.clone();
            while let Some((event_type, obj)) = events.next().await {
                match apply(index, kind, &event_type, &obj) {
                    Some(version) if !version.is_empty() => last = version,
                    Some(_) => {}
                    None => return FeedEvent::WatchExpired,
                }
            }
            FeedEvent::WatchEnded { resource_version: last }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::index::Index;
    use serde_json::json;

    fn rv(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn a_list_starts_a_watch_at_its_version() {
        let next = step(&FeedState::Listing, FeedEvent::Listed { resource_version: rv("7") });
        assert_eq!(next, FeedState::Watching { resource_version: rv("7") });
    }

    #[test]
    fn an_ended_watch_resumes_from_the_last_version() {
        let state = FeedState::Watching { resource_version: rv("7") };
        let next = step(&state, FeedEvent::WatchEnded { resource_version: rv("12") });
        assert_eq!(next, FeedState::Watching { resource_version: rv("12") });
    }

    #[test]
    fn expired_history_lists_again() {
        let state = FeedState::Watching { resource_version: rv("7") };
        assert_eq!(step(&state, FeedEvent::WatchExpired), FeedState::Listing);
        // A list without a version cannot be watched from: list again.
        assert_eq!(step(&FeedState::Listing, FeedEvent::Listed { resource_version: rv("") }), FeedState::Listing);
    }

    #[test]
    fn failures_back_off_then_list() {
        assert_eq!(step(&FeedState::Listing, FeedEvent::ListFailed), FeedState::Backoff);
        let state = FeedState::Watching { resource_version: rv("7") };
        assert_eq!(step(&state, FeedEvent::WatchFailed), FeedState::Backoff);
        assert_eq!(step(&FeedState::Backoff, FeedEvent::BackoffDone), FeedState::Listing);
    }

    #[test]
    fn events_change_the_index_and_errors_ask_for_a_relist() {
        let index = Index::shared();
        index.write().unwrap().replace(Kind::Services, &[]);
        index.write().unwrap().replace(Kind::EndpointSlices, &[]);
        let svc = json!({"metadata": {"namespace": "a", "name": "s", "resourceVersion": "9"}, "spec": {"clusterIP": "10.43.0.9"}});
        assert_eq!(apply(&index, Kind::Services, "ADDED", &svc), Some(rv("9")));
        assert!(index.read().unwrap().service("a", "s").is_some());
        assert_eq!(apply(&index, Kind::Services, "DELETED", &svc), Some(rv("9")));
        assert!(index.read().unwrap().service("a", "s").is_none());
        let bookmark = json!({"metadata": {"resourceVersion": "15"}});
        assert_eq!(apply(&index, Kind::Services, "BOOKMARK", &bookmark), Some(rv("15")));
        assert_eq!(apply(&index, Kind::Services, "ERROR", &json!({"code": 410})), None);
    }
}
