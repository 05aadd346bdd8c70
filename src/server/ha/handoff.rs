//! The serving side of a server join, outside the API's authentication and
//! authorized only by the server token's secret (never a bootstrap token:
//! those let agents join, not servers). `POST /v1-kube/server-bootstrap`
//! hands over the cluster's shared keys ([`super::SHARED_FILES`]);
//! `POST /v1-kube/server-members` adds the caller's store as a voter (the
//! store forwards it to the Raft leader), `GET` lists the members and
//! `DELETE …/server-members/<id>` removes one (`kube server --remove`).

use super::SHARED_FILES;
use crate::server::error::{ApiError, Reason};
use crate::server::join::{basic_secret, same_secret};
use crate::server::state::ApiState;
use crate::store::MembershipChange;
use axum::Router;
use axum::extract::Path;
use axum::extract::{Extension, Json, State};
use axum::http::HeaderMap;
use axum::routing::{delete, post};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

pub const BOOTSTRAP_PATH: &str = "/v1-kube/server-bootstrap";
pub const MEMBERS_PATH: &str = "/v1-kube/server-members";

/// What the handoff endpoints need: the server token's secret and the TLS folder.
pub struct Handoff {
    pub token_secret: String,
    pub tls_dir: PathBuf,
}

/// The shared keys, by file name, PEM.
#[derive(Debug, Serialize, Deserialize)]
pub struct BootstrapFiles {
    pub files: BTreeMap<String, String>,
}

/// A joining server's store member.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberRequest {
    pub id: u64,
    /// `host:port` of its Raft listener.
    pub peer_address: String,
    /// Its node name (for the logs).
    pub name: String,
}

/// The group as the answering server sees it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Members {
    pub leader: Option<u64>,
    pub voters: Vec<u64>,
    pub members: BTreeMap<u64, String>,
}

/// The routes; they need `Extension(Arc<Handoff>)` and sit outside authentication.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(BOOTSTRAP_PATH, post(bootstrap))
        .route(MEMBERS_PATH, post(add_member).get(list_members))
        .route(&format!("{MEMBERS_PATH}/{{id}}"), delete(remove_member))
}

fn authorize(handoff: &Option<Extension<Arc<Handoff>>>, headers: &HeaderMap) -> Result<Arc<Handoff>, ApiError> {
    let Some(Extension(handoff)) = handoff else {
        return Err(ApiError::new(503, Reason::ServiceUnavailable, "this server does not accept joining servers"));
    };
    let secret = basic_secret(headers).unwrap_or_default();
    if secret.is_empty() || !same_secret(&secret, &handoff.token_secret) {
        tracing::warn!("server join refused: wrong or missing server token");
        return Err(ApiError::new(401, Reason::Unauthorized, "the server token is not valid for this cluster"));
    }
    Ok(handoff.clone())
}

fn members_of(state: &ApiState) -> Members {
    let store = state.registry.store();
    Members { leader: store.leader(), voters: store.voters().into_iter().collect(), members: store.members() }
}

async fn bootstrap(
    handoff: Option<Extension<Arc<Handoff>>>,
    headers: HeaderMap,
) -> Result<Json<BootstrapFiles>, ApiError> {
    let handoff = authorize(&handoff, &headers)?;
    let mut files = BTreeMap::new();
    for name in SHARED_FILES {
        let path = handoff.tls_dir.join(name);
        let text = crate::server::pki::read(&path).map_err(|err| ApiError::internal("read a shared key", &err))?;
        files.insert(name.to_string(), text);
    }
    tracing::info!("handed the cluster keys to a joining server");
    Ok(Json(BootstrapFiles { files }))
}

async fn add_member(
    State(state): State<ApiState>,
    handoff: Option<Extension<Arc<Handoff>>>,
    headers: HeaderMap,
    Json(request): Json<MemberRequest>,
) -> Result<Json<Members>, ApiError> {
    authorize(&handoff, &headers)?;
    if request.id < 2 || request.peer_address.parse::<std::net::SocketAddr>().is_err() {
        return Err(ApiError::bad_request(format!(
            "invalid member {} at {:?}: expected an id above 1 and an IP:port",
            request.id, request.peer_address
        )));
    }
    let store = state.registry.store();
    if store.members().get(&store.id()).is_some_and(String::is_empty) {
        return Err(ApiError::new(
            503,
            Reason::ServiceUnavailable,
            "this server's store does not listen for peers: restart it with --cluster-init",
        ));
    }
    tracing::info!(name = %request.name, id = request.id, addr = %request.peer_address, "adding a server to the store");
    let change = MembershipChange::AddVoter { id: request.id, addr: request.peer_address.clone() };
    store.change_members(change).await.map_err(|err| {
        tracing::warn!(name = %request.name, error = %err, "adding a server failed");
        ApiError::new(503, Reason::ServiceUnavailable, format!("cannot add the server to the store: {err}"))
    })?;
    tracing::info!(name = %request.name, id = request.id, "server added as a voter");
    Ok(Json(members_of(&state)))
}

async fn list_members(
    State(state): State<ApiState>,
    handoff: Option<Extension<Arc<Handoff>>>,
    headers: HeaderMap,
) -> Result<Json<Members>, ApiError> {
    authorize(&handoff, &headers)?;
    Ok(Json(members_of(&state)))
}

async fn remove_member(
    State(state): State<ApiState>,
    handoff: Option<Extension<Arc<Handoff>>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<Members>, ApiError> {
    authorize(&handoff, &headers)?;
    let store = state.registry.store();
    if !store.members().contains_key(&id) {
        return Err(ApiError::new(404, Reason::NotFound, format!("store member {id} is not in the group")));
    }
    tracing::info!(id, "removing a server from the store");
    super::removal::remove_member(store, id).await.map_err(|err| {
        tracing::warn!(id, error = %err, "removing a server failed");
        ApiError::new(503, Reason::ServiceUnavailable, format!("cannot remove member {id}: {err}"))
    })?;
    tracing::info!(id, "server removed from the store");
    Ok(Json(members_of(&state)))
}
