//! `POST /v1-kube/snapshots`: writes a snapshot of the store into this
//! server's snapshot folder and answers where. It sits behind the API's
//! authentication and RBAC like any non-resource path, so only admins
//! (`system:masters`, or a role granting `post` on the path) may call it.

use super::{ON_DEMAND, check_name, file_name, snapshot_dir, unix_now};
use crate::server::error::ApiError;
use crate::server::registry::store_error;
use crate::server::state::ApiState;
use axum::body::Bytes;
use axum::extract::{Json, State};
use serde::{Deserialize, Serialize};

pub const SNAPSHOTS_PATH: &str = "/v1-kube/snapshots";

/// What `kube snapshot save` asks for.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SaveRequest {
    /// Prefix of the file name (default `on-demand`).
    #[serde(default)]
    pub name: Option<String>,
}

/// The written snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct SaveResponse {
    /// File name (`<name>-<node>-<unix time>`).
    pub name: String,
    /// Where it is, on the server's disk.
    pub path: String,
    pub size: u64,
    /// The store revision it holds (every write up to it, none after).
    pub revision: i64,
}

/// Writes `<name>-<node>-<unix time>` into the snapshot folder.
pub async fn save_named(state: &ApiState, name: &str) -> Result<SaveResponse, ApiError> {
    check_name(name).map_err(|err| ApiError::bad_request(err.to_string()))?;
    let file = file_name(name, &state.config.node_name, unix_now());
    let path = snapshot_dir(&state.config.data_dir).join(&file);
    if path.exists() {
        return Err(ApiError::new(
            409,
            crate::server::error::Reason::AlreadyExists,
            format!("snapshot {file} already exists: retry in a second or pick another --name"),
        ));
    }
    let info = state.registry.store().save_snapshot(&path).await.map_err(|err| match err {
        crate::store::StoreError::Snapshot(err) => {
            tracing::error!(error = %err, snapshot = %path.display(), "writing a snapshot failed");
            ApiError::new(
                500,
                crate::server::error::Reason::InternalError,
                format!("cannot write the snapshot {}: see the server's log", path.display()),
            )
        }
        other => store_error(other),
    })?;
    tracing::info!(snapshot = %path.display(), revision = info.revision, bytes = info.size, "saved a snapshot");
    Ok(SaveResponse { name: file, path: path.display().to_string(), size: info.size, revision: info.revision })
}

/// The handler: an empty body or `{"name": …}`.
pub async fn save(State(state): State<ApiState>, body: Bytes) -> Result<Json<SaveResponse>, ApiError> {
    let request: SaveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SaveRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|err| ApiError::bad_request(format!("invalid snapshot request: {err}")))?
    };
    let name = request.name.unwrap_or_else(|| ON_DEMAND.to_string());
    save_named(&state, &name).await.map(Json)
}
