//! `metrics.k8s.io/v1beta1`, as metrics-server serves it: NodeMetrics and
//! PodMetrics (get and list, label and field selectors), computed per
//! request from the agents' `/stats/summary` (this server's own agent
//! in-process, others over the kubelet port). CPU is a rate over the window
//! between two samples ([`rate`]), memory the working set at the newest one.

mod format;
pub mod rate;

use super::error::ApiError;
use super::registry::ListOptions;
use super::rest::{Call, respond};
use super::selectors::{FieldSelector, LabelSelector};
use super::state::ApiState;
use crate::agent::stats::Summary;
use axum::response::Response;
use http::StatusCode;
use rate::History;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

pub const GROUP: &str = "metrics.k8s.io";

/// The samples every metrics request adds to and reads from.
#[derive(Default)]
pub struct ResourceMetrics {
    history: tokio::sync::Mutex<History>,
}

/// One node's summary: in-process for this server's agent, else from its agent.
async fn fetch(state: &ApiState, node: &str) -> Result<Summary, ApiError> {
    match super::rest::node_proxy::agent_address(state, node).await? {
        Some(addr) => super::rest::node_proxy::stats_summary(state, addr).await,
        None => {
            let logs = crate::agent::AgentConfig::for_server(&state.config).data_dir.join("logs");
            let node = node.to_string();
            tokio::task::spawn_blocking(move || crate::agent::stats::collect_host(&node, &logs))
                .await
                .map_err(|err| ApiError::internal("collect resource usage", &err))?
                .map_err(|err| ApiError::internal("collect resource usage", &err))
        }
    }
}

/// Samples `nodes` (in parallel) into the history; nodes with a series that
/// has no older sample yet are sampled once more after [`rate::MIN_WINDOW`].
/// Nodes that cannot be read are logged and left out, as metrics-server does.
async fn refresh(state: &ApiState, nodes: &BTreeSet<String>) {
    let metrics = state.resource_metrics.clone();
    let mut pending: Vec<String> = nodes.iter().cloned().collect();
    for round in 0..2 {
        let summaries = futures::future::join_all(pending.iter().map(|node| fetch(state, node))).await;
        let mut history = metrics.history.lock().await;
        let mut incomplete = Vec::new();
        for (node, summary) in pending.iter().zip(summaries) {
            match summary {
                Ok(summary) => {
                    history.record(&summary);
                    if !history.complete(&summary) {
                        incomplete.push(node.clone());
                    }
                }
                Err(err) => tracing::warn!(%node, error = %err.message, "no resource usage from the node"),
            }
        }
        drop(history);
        if incomplete.is_empty() || round == 1 {
            return;
        }
        pending = incomplete;
        tokio::time::sleep(Duration::from_nanos(rate::MIN_WINDOW as u64)).await;
    }
}

fn selectors(call: &Call) -> Result<ListOptions, ApiError> {
    let bad = |err: super::selectors::SelectorError| ApiError::bad_request(err.to_string());
    let labels = call.param("labelSelector").map(LabelSelector::parse).transpose().map_err(bad)?.unwrap_or_default();
    let mut fields =
        call.param("fieldSelector").map(FieldSelector::parse).transpose().map_err(bad)?.unwrap_or_default();
    if let Some(name) = call.info.name.as_deref() {
        fields = FieldSelector::parse(&format!("metadata.name={name}")).map_err(bad)?;
    }
    Ok(ListOptions { labels, fields, ..ListOptions::default() })
}

/// Serves `get` and `list` of `nodes` and `pods` in `metrics.k8s.io`.
pub async fn handle(call: Call) -> Result<Response, ApiError> {
    if !matches!(call.info.verb, "get" | "list") || call.info.subresource.is_some() {
        return Err(ApiError::method_not_allowed(format!(
            "{} only supports get and list",
            call.resource.qualified_plural()
        )));
    }
    let opts = selectors(&call)?;
    let source = if call.resource.plural == "nodes" { ("", "v1", "nodes") } else { ("", "v1", "pods") };
    let res = call.state.catalog.lookup(source.0, source.1, source.2).ok_or_else(ApiError::not_found_path)?;
    let namespace = call.namespace().map(str::to_string);
    let objects = call.state.registry.list(&res, namespace.as_deref(), &opts).await?.items;
    let objects: Vec<Value> =
        objects.into_iter().filter(|o| opts.labels.matches(o) && opts.fields.matches(o)).collect();
    let node_of = |o: &Value| -> String {
        let pointer = if call.resource.plural == "nodes" { "/metadata/name" } else { "/spec/nodeName" };
        o.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string()
    };
    let nodes: BTreeSet<String> = objects.iter().map(node_of).filter(|n| !n.is_empty()).collect();
    refresh(&call.state, &nodes).await;
    let history = call.state.resource_metrics.history.lock().await;
    let items: Vec<Value> = objects
        .iter()
        .filter_map(|o| match call.resource.plural.as_str() {
            "nodes" => format::node_metrics(o, &history),
            _ => format::pod_metrics(o, &history),
        })
        .collect();
    drop(history);
    let kind = call.resource.kind.clone();
    if call.info.verb == "get" {
        let name = call.name().to_string();
        let item = items.into_iter().next().ok_or_else(|| ApiError::not_found(GROUP, &call.resource.plural, &name))?;
        return Ok(respond(StatusCode::OK, &item, call.negotiated));
    }
    Ok(respond(StatusCode::OK, &format::list(&kind, items), call.negotiated))
}
