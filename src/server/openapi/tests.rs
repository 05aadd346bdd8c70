//! Tests of the documents as kubectl and helm read them.

use super::document::{self, GroupVersionDoc};
use super::*;
use crate::server::catalog::ResourceInfo;
use serde_json::{Value, json};

fn builtin_docs() -> Vec<GroupVersionDoc> {
    document::group_version_docs(&Catalog::builtin().all()).expect("documents")
}

fn parse(doc: &GroupVersionDoc) -> Value {
    serde_json::from_slice(&doc.body).expect("json")
}

fn doc(key: &str) -> Value {
    builtin_docs().iter().find(|d| d.key == key).map(parse).expect("group-version document")
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(target)) => out.push(target),
                    _ => refs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, out)),
        _ => {}
    }
}

fn assert_refs_resolve(document: &Value, prefix: &str, definitions: &Value) {
    let mut found = Vec::new();
    refs(document, &mut found);
    assert!(!found.is_empty());
    for target in found {
        let name = target.strip_prefix(prefix).unwrap_or_else(|| panic!("{target} does not start with {prefix}"));
        assert!(definitions.get(name).is_some(), "{target} is not defined");
    }
}

/// kubectl's `supportsQueryParamV3` (cli-runtime `query_param_verifier_v3.go`):
/// the first PATCH operation of the kind decides.
fn supports_field_validation(doc: &Value, gvk: &Value) -> Option<bool> {
    let paths = doc["paths"].as_object()?;
    for item in paths.values() {
        let Some(patch) = item.get("patch") else { continue };
        if patch["x-kubernetes-group-version-kind"] != *gvk {
            continue;
        }
        let params = patch["parameters"].as_array()?;
        return Some(params.iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
    }
    None
}

#[test]
fn deployments_can_be_patched_with_field_validation() {
    let apps = doc("apis/apps/v1");
    assert_eq!(apps["openapi"], "3.0.0");
    let patch = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "version": "v1", "kind": "Deployment"})
    );
    assert_eq!(patch["x-kubernetes-action"], "patch");
    assert_eq!(patch["operationId"], "patchAppsV1NamespacedDeployment");
    let params = patch["parameters"].as_array().expect("parameters");
    for name in ["fieldValidation", "fieldManager", "dryRun", "force"] {
        assert!(params.iter().any(|p| p["name"] == name && p["in"] == "query"), "no {name}");
    }
    let content = &patch["requestBody"]["content"];
    for media in [
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
    ] {
        assert!(content.get(media).is_some(), "no {media}");
    }
    let schema = &apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        schema["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
    );
}

#[test]
fn every_stored_kind_supports_field_validation() {
    let docs = builtin_docs();
    for res in Catalog::builtin().all().iter().filter(|r| r.stored) {
        let gv = docs.iter().find(|d| d.key == document::key(&res.group, &res.version)).map(parse).expect("doc");
        let gvk = json!({"group": res.group, "version": res.version, "kind": res.kind});
        assert_eq!(supports_field_validation(&gv, &gvk), Some(true), "{}", res.kind);
    }
}

#[test]
fn every_v3_reference_resolves() {
    for doc in builtin_docs() {
        let value = parse(&doc);
        assert_refs_resolve(&value, "#/components/schemas/", &value["components"]["schemas"]);
    }
}

#[test]
fn every_v2_reference_resolves() {
    let v2 = document::v2_value(&Catalog::builtin().all());
    assert_eq!(v2["swagger"], "2.0");
    assert_refs_resolve(&v2, "#/definitions/", &v2["definitions"]);
    let pod = &v2["definitions"]["io.k8s.api.core.v1.Pod"];
    assert_eq!(pod["x-kubernetes-group-version-kind"], json!([{"group": "", "version": "v1", "kind": "Pod"}]));
    let patch = &v2["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
    assert!(patch["parameters"].as_array().expect("params").iter().any(|p| p["name"] == "fieldValidation"));
}

#[test]
fn the_index_points_at_every_group_version_with_its_hash() {
    let docs = builtin_docs();
    let root: Value = serde_json::from_slice(&document::root(&docs).expect("root")).expect("json");
    let paths = root["paths"].as_object().expect("paths");
    assert_eq!(paths.len(), docs.len());
    let core = docs.iter().find(|d| d.key == "api/v1").expect("core");
    assert_eq!(paths["api/v1"]["serverRelativeURL"], format!("/openapi/v3/api/v1?hash={}", core.hash));
    assert!(paths.contains_key("apis/apps/v1"));
    assert!(paths.contains_key("apis/rbac.authorization.k8s.io/v1"));
}

#[test]
fn kinds_without_a_type_get_a_permissive_schema() {
    let catalog = Catalog::builtin();
    catalog.upsert(ResourceInfo {
        group: "stable.example.com".into(),
        version: "v1".into(),
        kind: "CronTab".into(),
        plural: "crontabs".into(),
        singular: "crontab".into(),
        namespaced: true,
        short_names: vec![],
        categories: vec![],
        subresources: vec![],
        stored: true,
    });
    let docs = document::group_version_docs(&catalog.all()).expect("documents");
    let gv = docs.iter().find(|d| d.key == "apis/stable.example.com/v1").map(parse).expect("doc");
    let schema = &gv["components"]["schemas"]["com.example.stable.v1.CronTab"];
    assert_eq!(schema["x-kubernetes-preserve-unknown-fields"], true);
    let patch = &gv["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"]["patch"];
    assert!(patch["requestBody"]["content"].get("application/strategic-merge-patch+json").is_none());
    assert_refs_resolve(&gv, "#/components/schemas/", &gv["components"]["schemas"]);
}

fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(name.clone(), HeaderValue::from_str(value).expect("header"));
    }
    map
}

#[test]
fn responses_negotiate_and_cache() {
    let catalog = Catalog::builtin();
    let json_accept = headers(&[(header::ACCEPT, "application/json")]);
    let root = v3_root_response(&catalog, &json_accept).expect("root");
    assert_eq!(root.status(), StatusCode::OK);

    let docs = builtin_docs();
    let core = docs.iter().find(|d| d.key == "api/v1").expect("core");
    let query = format!("hash={}", core.hash);
    let ok = v3_group_version_response(&catalog, "api/v1", Some(&query), &json_accept).expect("doc");
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()[header::CACHE_CONTROL], "public, immutable");
    let etag = ok.headers()[header::ETAG].to_str().expect("etag").to_string();
    assert_eq!(etag, format!("\"{}\"", core.hash));

    let again = headers(&[(header::IF_NONE_MATCH, &etag)]);
    let cached = v3_group_version_response(&catalog, "api/v1", None, &again).expect("304");
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);

    let missing = v3_group_version_response(&catalog, "apis/nothing/v9", None, &json_accept);
    assert_eq!(missing.err().map(|e| e.code), Some(404));

    let protobuf = headers(&[(header::ACCEPT, "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")]);
    let response = v2_response(&catalog, &protobuf).expect("protobuf v2");
    assert_eq!(
        response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        Some("application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
    );
    let json_only = headers(&[(header::ACCEPT, "application/json")]);
    let response = v2_response(&catalog, &json_only).expect("json v2");
    assert_eq!(response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()), Some("application/json"));
    let neither = headers(&[(header::ACCEPT, "application/vnd.kubernetes.protobuf")]);
    assert_eq!(v2_response(&catalog, &neither).err().map(|e| e.code), Some(406));
}

/// Not an assertion: prints what building the documents costs
/// (`cargo test openapi::tests::cost -- --nocapture`).
#[test]
fn cost() {
    let resources = Catalog::builtin().all();
    let started = Instant::now();
    let docs = document::group_version_docs(&resources).expect("documents");
    let v3_time = started.elapsed();
    let started = Instant::now();
    let v2 = document::v2(&resources).expect("v2");
    let v2_time = started.elapsed();
    let total: usize = docs.iter().map(|d| d.body.len()).sum();
    println!("v3: {} documents, {total} bytes, {v3_time:?}; v2: {} bytes, {v2_time:?}", docs.len(), v2.len());
    for d in &docs {
        println!("  {}: {} bytes", d.key, d.body.len());
    }
    // OPENAPI_DUMP=<dir> writes the documents there, to feed them to real clients.
    if let Ok(dir) = std::env::var("OPENAPI_DUMP") {
        for d in &docs {
            std::fs::write(format!("{dir}/{}.json", d.key.replace('/', "_")), &d.body).expect("write");
        }
        std::fs::write(format!("{dir}/v2.json"), &v2).expect("write");
    }
}
