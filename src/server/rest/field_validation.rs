//! `fieldValidation` (Strict / Warn / Ignore): fields of a request body that
//! the kind's schema does not know are an error under Strict (what kubectl
//! sends), a `Warning` header under Warn (the default), ignored otherwise.

use super::Call;
use crate::server::error::ApiError;
use crate::server::openapi::schemas::{Flavor, SchemaSet};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Directive {
    Strict,
    Warn,
    Ignore,
}

pub fn directive(call: &Call) -> Result<Directive, ApiError> {
    match call.param("fieldValidation") {
        None | Some("Warn") => Ok(Directive::Warn),
        Some("Strict") => Ok(Directive::Strict),
        Some("Ignore") => Ok(Directive::Ignore),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
        ))),
    }
}

/// The schemas of one kind: its own name and every schema it refers to.
struct KindSchemas {
    root: String,
    schemas: Map<String, Value>,
}

fn schemas_for(group: &str, version: &str, kind: &str) -> Option<Arc<KindSchemas>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Arc<KindSchemas>>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = format!("{group}/{version}/{kind}");
    if let Some(found) = cache.lock().ok()?.get(&key) {
        return found.clone();
    }
    let built = crate::server::openapi::kinds::lookup(group, version, kind).map(|_| {
        let mut set = SchemaSet::new(Flavor::V3);
        let root = set.add_kind(group, version, kind);
        Arc::new(KindSchemas { root, schemas: set.finish() })
    });
    cache.lock().ok()?.insert(key, built.clone());
    built
}

impl KindSchemas {
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let mut current = schema;
        for _ in 0..8 {
            let reference = current.get("$ref").or_else(|| {
                current.get("allOf").and_then(Value::as_array).and_then(|a| a.first()).and_then(|f| f.get("$ref"))
            });
            match reference.and_then(Value::as_str).and_then(|r| r.rsplit('/').next()).and_then(|n| self.schemas.get(n))
            {
                Some(next) => current = next,
                None => break,
            }
        }
        current
    }

    fn walk(&self, value: &Value, schema: &Value, path: &str, unknown: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true) {
            return;
        }
        match value {
            Value::Object(map) => {
                let properties = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties").filter(|a| a.is_object());
                for (key, child) in map {
                    let child_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                    match (properties.and_then(|p| p.get(key)), additional) {
                        (Some(child_schema), _) => self.walk(child, child_schema, &child_path, unknown),
                        (None, Some(values)) => self.walk(child, values, &child_path, unknown),
                        // A schema without properties (IntOrString, RawExtension, …) accepts anything.
                        (None, None) if properties.is_none() => {}
                        (None, None) => unknown.push(child_path),
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.walk(item, item_schema, &format!("{path}[{i}]"), unknown);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The unknown field paths of `obj` (`spec.replica`), empty for kinds without a schema.
pub fn unknown_fields(group: &str, version: &str, kind: &str, obj: &Value) -> Vec<String> {
    let Some(kind_schemas) = schemas_for(group, version, kind) else { return Vec::new() };
    let Some(root) = kind_schemas.schemas.get(&kind_schemas.root) else { return Vec::new() };
    let mut unknown = Vec::new();
    kind_schemas.walk(obj, root, "", &mut unknown);
    unknown
}

/// Checks a body: Strict fails on unknown fields, Warn returns warnings.
pub fn check(call: &Call, obj: &Value) -> Result<Vec<String>, ApiError> {
    let directive = directive(call)?;
    if directive == Directive::Ignore {
        return Ok(Vec::new());
    }
    let res = &call.resource;
    let unknown = unknown_fields(&res.group, &res.version, &res.kind, obj);
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let messages: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
    if directive == Directive::Strict {
        return Err(ApiError::bad_request(format!("strict decoding error: {}", messages.join(", "))));
    }
    Ok(messages)
}

/// Adds `Warning: 299 - "..."` headers to a response.
pub fn with_warnings(mut response: axum::response::Response, warnings: &[String]) -> axum::response::Response {
    for warning in warnings {
        let text = format!("299 - \"{}\"", warning.replace('"', "\\\""));
        if let Ok(value) = http::HeaderValue::from_str(&text) {
            response.headers_mut().append("warning", value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields_at_any_depth() {
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "labels": {"a": "b"}},
            "spec": {"replica": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i", "imagePolicy": "x",
                "resources": {"limits": {"cpu": "1"}}, "ports": [{"containerPort": 80}]}]}}}});
        assert_eq!(
            unknown_fields("apps", "v1", "Deployment", &deploy),
            ["spec.replica", "spec.template.spec.containers[0].imagePolicy"]
        );
        let service = json!({"spec": {"ports": [{"port": 80, "targetPort": "http"}]}});
        assert!(unknown_fields("", "v1", "Service", &service).is_empty());
        assert!(unknown_fields("example.com", "v1", "Widget", &json!({"anything": 1})).is_empty());
    }
}
