//! The HTTP routes of the API server; testable without sockets by calling
//! the router with `oneshot` and a user in the request extensions.

use super::state::ApiState;
use super::{authn, discovery, health, openapi, rest};
use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Anonymous requests get 401 everywhere, as with `--anonymous-auth=false`.
async fn require_user(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(err) = authn::authenticate(&parts) {
        return err.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/version", get(health::version))
        .route("/api", get(discovery::core))
        .route("/api/{version}", get(discovery::core_version))
        .route("/apis", get(discovery::groups))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::group_version))
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::v3_root))
        .route("/openapi/v3/{*path}", get(openapi::v3_group_version))
        .fallback(rest::handle)
        .layer(middleware::from_fn(require_user))
        .with_state(state)
}
