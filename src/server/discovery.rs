//! API discovery: legacy (`/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`) and
//! aggregated (`apidiscovery.k8s.io/v2` when the client asks for it, as
//! kubectl 1.34 does), all built from the catalog.

use super::catalog::{Catalog, ResourceInfo};
use super::error::ApiError;
use super::state::ApiState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn wants_aggregated(headers: &HeaderMap) -> bool {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    accept.split(',').next().is_some_and(|first| first.contains("as=APIGroupDiscoveryList") && first.contains("v=v2"))
}

fn json_response(value: Value, content_type: &'static str) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], value.to_string()).into_response()
}

/// The kind and verbs of a subresource, as upstream serves them.
fn subresource_shape(res: &ResourceInfo, sub: &str) -> (String, String, String, Vec<&'static str>) {
    let same = (res.group.clone(), res.version.clone(), res.kind.clone());
    let (group, version, kind) = match sub {
        "scale" => ("autoscaling".into(), "v1".into(), "Scale".into()),
        "eviction" => ("policy".into(), "v1".into(), "Eviction".into()),
        "binding" => (String::new(), "v1".into(), "Binding".into()),
        "token" => ("authentication.k8s.io".into(), "v1".into(), "TokenRequest".into()),
        "exec" => (String::new(), "v1".into(), "PodExecOptions".into()),
        "attach" => (String::new(), "v1".into(), "PodAttachOptions".into()),
        "portforward" => (String::new(), "v1".into(), "PodPortForwardOptions".into()),
        "proxy" if res.kind == "Pod" => (String::new(), "v1".into(), "PodProxyOptions".into()),
        "proxy" if res.kind == "Node" => (String::new(), "v1".into(), "NodeProxyOptions".into()),
        "proxy" => (String::new(), "v1".into(), "ServiceProxyOptions".into()),
        _ => same,
    };
    let verbs = match sub {
        "log" => vec!["get"],
        "exec" | "attach" | "portforward" => vec!["create", "get"],
        "binding" | "eviction" | "token" => vec!["create"],
        "finalize" => vec!["update"],
        "proxy" => vec!["create", "delete", "get", "patch", "update"],
        _ => vec!["get", "patch", "update"],
    };
    (group, version, kind, verbs)
}

fn resource_list(catalog: &Catalog, group: &str, version: &str) -> Option<Value> {
    let resources: Vec<_> = catalog.all().into_iter().filter(|r| r.group == group && r.version == version).collect();
    if resources.is_empty() {
        return None;
    }
    let mut entries = Vec::new();
    for res in &resources {
        entries.push(json!({
            "name": res.plural, "singularName": res.singular, "namespaced": res.namespaced,
            "kind": res.kind, "verbs": res.verbs(), "shortNames": res.short_names, "categories": res.categories,
        }));
        for sub in &res.subresources {
            let (g, v, kind, verbs) = subresource_shape(res, sub);
            let mut entry = json!({"name": format!("{}/{sub}", res.plural), "singularName": "", "namespaced": res.namespaced,
                "kind": kind, "verbs": verbs});
            if g != res.group || v != res.version {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            entries.push(entry);
        }
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}))
}

fn discovery_resources(catalog: &Catalog, group: &str, version: &str) -> Vec<Value> {
    catalog
        .all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|res| {
            let subresources: Vec<Value> = res
                .subresources
                .iter()
                .map(|sub| {
                    let (g, v, kind, verbs) = subresource_shape(&res, sub);
                    json!({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": kind}, "verbs": verbs})
                })
                .collect();
            json!({
                "resource": res.plural,
                "responseKind": {"group": res.group, "version": res.version, "kind": res.kind},
                "scope": if res.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": res.singular,
                "verbs": res.verbs(),
                "shortNames": res.short_names,
                "categories": res.categories,
                "subresources": subresources,
            })
        })
        .collect()
}

fn aggregated(catalog: &Catalog, groups: Vec<(String, Vec<String>)>) -> Value {
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| json!({"version": v, "resources": discovery_resources(catalog, &group, v), "freshness": "Current"}))
                .collect();
            json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions.first().cloned().unwrap_or(Value::Null)})
}

/// `GET /api`
pub async fn core(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return json_response(aggregated(&state.catalog, vec![(String::new(), vec!["v1".into()])]), AGGREGATED);
    }
    let address = format!("{}:{}", state.config.advertise_address, state.config.listen.port());
    json_response(
        json!({"kind": "APIVersions", "versions": ["v1"],
               "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]}),
        "application/json",
    )
}

/// `GET /apis`
pub async fn groups(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let groups = state.catalog.groups();
    if wants_aggregated(&headers) {
        return json_response(aggregated(&state.catalog, groups), AGGREGATED);
    }
    let entries: Vec<Value> = groups.iter().map(|(g, v)| group_entry(g, v)).collect();
    json_response(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": entries}), "application/json")
}

/// `GET /api/v1`
pub async fn core_version(State(state): State<ApiState>, Path(version): Path<String>) -> Response {
    match resource_list(&state.catalog, "", &version) {
        Some(list) => json_response(list, "application/json"),
        None => ApiError::not_found_path().into_response(),
    }
}

/// `GET /apis/<group>`
pub async fn group(State(state): State<ApiState>, Path(group): Path<String>) -> Response {
    match state.catalog.groups().into_iter().find(|(g, _)| *g == group) {
        Some((g, versions)) => {
            let mut entry = group_entry(&g, &versions);
            entry["kind"] = json!("APIGroup");
            entry["apiVersion"] = json!("v1");
            json_response(entry, "application/json")
        }
        None => ApiError::not_found_path().into_response(),
    }
}

/// `GET /apis/<group>/<version>`
pub async fn group_version(State(state): State<ApiState>, Path((group, version)): Path<(String, String)>) -> Response {
    match resource_list(&state.catalog, &group, &version) {
        Some(list) => json_response(list, "application/json"),
        None => ApiError::not_found_path().into_response(),
    }
}
