//! The HTTP routes of the API server; testable without sockets by calling
//! the router with `oneshot` and a user in the request extensions.

use super::state::ApiState;
use super::{authn, authz, discovery, health, impersonation, openapi, rest};
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// Anonymous requests get 401 everywhere, as with `--anonymous-auth=false`;
/// non-resource paths (health, version, discovery, OpenAPI) are authorized
/// here, resource paths by the REST layer.
async fn require_user(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let user = match authn::authenticate(&parts) {
        Ok(user) => user,
        Err(err) => return err.into_response(),
    };
    if let Err(err) = authn::bound_objects::check(&state, &user).await {
        return err.into_response();
    }
    let user = match impersonation::effective_user(&state, user, &parts.headers).await {
        Ok(user) => user,
        Err(err) => return err.into_response(),
    };
    parts.extensions.insert(authn::Authenticated(user.clone()));
    if is_non_resource(parts.uri.path())
        && let Err(err) = authz::authorize_path(&state, &user, &parts.method, parts.uri.path()).await
    {
        return err.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// Paths that are not `/api/<version>/...` or `/apis/<group>/<version>/...` resources.
fn is_non_resource(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    !matches!(segments.as_slice(), ["api", _, _, ..] | ["apis", _, _, _, ..])
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/version", get(health::version))
        .route("/metrics", get(super::metrics::serve))
        .route("/api", get(discovery::core))
        .route("/api/{version}", get(discovery::core_version))
        .route("/apis", get(discovery::groups))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::group_version))
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::v3_root))
        .route("/openapi/v3/{*path}", get(openapi::v3_group_version))
        .route(super::snapshot::api::SNAPSHOTS_PATH, post(super::snapshot::api::save))
        .fallback(rest::handle)
        .layer(middleware::from_fn_with_state(state.clone(), require_user))
        // After the layer: the join endpoints authenticate on their own.
        .merge(super::join::routes())
        .merge(super::ha::handoff::routes())
        .layer(middleware::from_fn(super::metrics::count_requests))
        .with_state(state)
}
