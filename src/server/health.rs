//! Health and version endpoints: `/healthz`, `/livez`, `/readyz` (with
//! `?verbose` and per-check paths, as upstream) and `/version`.

use super::state::ApiState;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::json;
use std::collections::HashMap;

/// The Kubernetes version this server implements.
pub const KUBERNETES_VERSION: &str = "v1.34.5";

async fn checks(state: &ApiState, ready: bool) -> Vec<(&'static str, Result<(), String>)> {
    let mut results = vec![("ping", Ok(()))];
    let store = state.registry.store().current_revision().await.map(|_| ()).map_err(|err| err.to_string());
    results.push(("etcd", store));
    if ready {
        let bootstrap = if state.is_bootstrapped() { Ok(()) } else { Err("bootstrap not finished".to_string()) };
        results.push(("poststarthook/bootstrap-controller", bootstrap));
    }
    results
}

async fn report(state: &ApiState, ready: bool, params: &HashMap<String, String>, name: &str) -> Response {
    let results = checks(state, ready).await;
    let healthy = results.iter().all(|(_, r)| r.is_ok());
    let status = if healthy { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    let text = if params.contains_key("verbose") || !healthy {
        let mut text = String::new();
        for (check, result) in &results {
            match result {
                Ok(()) => text.push_str(&format!("[+]{check} ok\n")),
                Err(reason) => {
                    tracing::warn!(check, reason, "{name} check failed");
                    text.push_str(&format!("[-]{check} failed: reason withheld\n"));
                }
            }
        }
        text.push_str(&if healthy { format!("{name} check passed\n") } else { format!("{name} check failed\n") });
        text
    } else {
        "ok".to_string()
    };
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

pub async fn healthz(State(state): State<ApiState>, Query(params): Query<HashMap<String, String>>) -> Response {
    report(&state, false, &params, "healthz").await
}

pub async fn livez(State(state): State<ApiState>, Query(params): Query<HashMap<String, String>>) -> Response {
    report(&state, false, &params, "livez").await
}

pub async fn readyz(State(state): State<ApiState>, Query(params): Query<HashMap<String, String>>) -> Response {
    report(&state, true, &params, "readyz").await
}

/// `GET /version`
pub async fn version() -> Response {
    let version = KUBERNETES_VERSION.trim_start_matches('v');
    let mut parts = version.split('.');
    let (major, minor) = (parts.next().unwrap_or("1"), parts.next().unwrap_or("0"));
    let body = json!({
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "gitVersion": format!("{KUBERNETES_VERSION}+kube"),
        "gitCommit": env!("CARGO_PKG_VERSION"),
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
