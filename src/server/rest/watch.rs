//! watch: a stream of `{"type": ..., "object": ...}` lines. Without a
//! resource version (or with 0) it starts with the current objects as ADDED
//! events; selectors turn objects entering or leaving the selection into
//! ADDED / DELETED, as upstream's watch cache does.

use super::read::list_options;
use super::{Call, Negotiated};
use crate::server::catalog::ResourceInfo;
use crate::server::error::ApiError;
use crate::server::registry::{ListOptions, ObjectEvent, ObjectWatch};
use crate::server::table;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{StatusCode, header};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// How long a watch without `timeoutSeconds` stays open.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct WatchStream {
    resource: Arc<ResourceInfo>,
    opts: ListOptions,
    negotiated: Negotiated,
    bookmarks: bool,
    initial: VecDeque<Value>,
    watch: ObjectWatch,
    deadline: tokio::time::Instant,
    done: bool,
}

impl WatchStream {
    fn matches(&self, obj: &Value) -> bool {
        self.opts.labels.matches(obj) && self.opts.fields.matches(obj)
    }

    fn line(&self, kind: &str, obj: Value) -> Bytes {
        let object = if self.negotiated.table && kind != "BOOKMARK" && kind != "ERROR" {
            let rv = obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
            table::render(&self.resource, std::slice::from_ref(&obj), json!({"resourceVersion": rv}))
        } else {
            obj
        };
        let mut text = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        text.push(b'\n');
        Bytes::from(text)
    }

    fn bookmark(&self, revision: i64, initial_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.resource.kind, "apiVersion": self.resource.api_version(), "metadata": metadata});
        self.line("BOOKMARK", obj)
    }

    /// The next line to send, or `None` when the watch ends.
    async fn next_line(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if let Some(obj) = self.initial.pop_front() {
            return Some(self.line("ADDED", obj));
        }
        loop {
            let event = tokio::select! {
                event = self.watch.next() => event,
                _ = tokio::time::sleep_until(self.deadline) => return None,
            };
            let event = match event {
                None => return None,
                Some(Err(err)) => {
                    self.done = true;
                    return Some(self.line("ERROR", err.to_json()));
                }
                Some(Ok(event)) => event,
            };
            match event {
                ObjectEvent::Added(obj) if self.matches(&obj) => return Some(self.line("ADDED", obj)),
                ObjectEvent::Modified(obj, prev) => {
                    let (now, before) = (self.matches(&obj), prev.as_ref().is_none_or(|p| self.matches(p)));
                    match (before, now) {
                        (true, true) => return Some(self.line("MODIFIED", obj)),
                        (false, true) => return Some(self.line("ADDED", obj)),
                        (true, false) => return Some(self.line("DELETED", obj)),
                        (false, false) => continue,
                    }
                }
                ObjectEvent::Deleted(obj) if self.matches(&obj) => return Some(self.line("DELETED", obj)),
                ObjectEvent::Progress(revision) if self.bookmarks => return Some(self.bookmark(revision, false)),
                _ => continue,
            }
        }
    }
}

pub async fn watch(call: Call) -> Result<Response, ApiError> {
    let opts = list_options(&call)?;
    let timeout = match call.param("timeoutSeconds") {
        Some(text) => Duration::from_secs(
            text.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {text:?}")))?,
        ),
        None => DEFAULT_TIMEOUT,
    };
    let bookmarks = call.param("allowWatchBookmarks") == Some("true");
    let send_initial = match call.param("sendInitialEvents") {
        Some("true") => true,
        Some("false") => false,
        _ => opts.resource_version.is_none_or(|rv| rv == 0),
    };
    let registry = &call.state.registry;
    let (initial, start) = if send_initial {
        let list_opts = ListOptions { limit: None, continue_token: None, ..opts.clone() };
        let list = registry.list(&call.resource, call.namespace(), &list_opts).await?;
        (list.items.into(), list.revision)
    } else {
        (VecDeque::new(), opts.resource_version.unwrap_or(0))
    };
    let watch = registry.watch(&call.resource, call.namespace(), start)?;
    let stream = WatchStream {
        resource: call.resource.clone(),
        opts,
        negotiated: call.negotiated,
        bookmarks,
        initial,
        watch,
        deadline: tokio::time::Instant::now() + timeout,
        done: false,
    };
    let initial_end = (send_initial && bookmarks && call.param("sendInitialEvents") == Some("true"))
        .then(|| stream.bookmark(start, true));
    let body = futures::stream::unfold((stream, initial_end), |(mut stream, mut initial_end)| async move {
        if stream.initial.is_empty()
            && let Some(line) = initial_end.take()
        {
            return Some((Ok::<Bytes, std::io::Error>(line), (stream, None)));
        }
        let line = stream.next_line().await?;
        Some((Ok(line), (stream, initial_end)))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(body))
        .map_err(|err| ApiError::internal("build the watch response", &err))
}
