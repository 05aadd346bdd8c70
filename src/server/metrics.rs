//! `GET /metrics` in the Prometheus text format: API request counts by verb
//! and code (as upstream's `apiserver_request_total`) and the store's
//! replication state (as etcd's `etcd_server_*` gauges), so a scrape shows
//! which server leads and whether the group has a leader at all.

use super::state::ApiState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::LazyLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    code: String,
}

/// Requests served since start, by HTTP method and status code.
static REQUESTS: LazyLock<Family<RequestLabels, Counter>> = LazyLock::new(Family::default);

/// Counts every request the API answers.
pub async fn count_requests(request: Request, next: Next) -> Response {
    let verb = request.method().as_str().to_string();
    let response = next.run(request).await;
    let labels = RequestLabels { verb, code: response.status().as_u16().to_string() };
    REQUESTS.get_or_create(&labels).inc();
    response
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let gauge: Gauge = Gauge::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

/// The current figures, as text.
pub fn render(state: &ApiState) -> String {
    let mut registry = Registry::default();
    registry.register("apiserver_request", "Requests answered, by HTTP verb and status code", REQUESTS.clone());
    let store = state.registry.store();
    let leader = store.leader();
    gauge(&mut registry, "kube_store_member_id", "This server's store member id", store.id() as i64);
    gauge(
        &mut registry,
        "kube_store_has_leader",
        "Whether the store's group has a leader (1) or not (0)",
        i64::from(leader.is_some()),
    );
    gauge(
        &mut registry,
        "kube_store_is_leader",
        "Whether this member leads the group",
        i64::from(leader == Some(store.id())),
    );
    gauge(&mut registry, "kube_store_leader_id", "The leader's member id (0: none)", leader.unwrap_or(0) as i64);
    gauge(&mut registry, "kube_store_voters", "Voting members of the group", store.voters().len() as i64);
    gauge(
        &mut registry,
        "kube_store_members",
        "Members of the group, voters and learners",
        store.members().len() as i64,
    );
    gauge(&mut registry, "kube_store_compacted_revision", "Oldest revision still readable", store.compacted_revision());
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::warn!(error = %err, "encoding the metrics failed");
    }
    text
}

/// `GET /metrics`
pub async fn serve(State(state): State<ApiState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(&state)).into_response()
}
