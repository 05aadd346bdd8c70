//! Server-side apply: the applied configuration is merged into the live
//! object, each field manager's set of fields is recorded in
//! `metadata.managedFields` (FieldsV1), fields a manager applied before but
//! no longer applies are removed, and changing a field another applier owns
//! is a conflict unless forced.

use super::strategic;
use crate::server::error::ApiError;
use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("Apply failed with {} conflict{}: {}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.join("; "))]
    Conflicts(Vec<String>),
}

impl ApplyError {
    pub fn into_api_error(self, group: &str, resource: &str, name: &str) -> ApiError {
        let message = self.to_string();
        ApiError::conflict(group, resource, name, "").with_message(message)
    }
}

/// The key of a list element for FieldsV1 (`k:{"name":"app"}`), if the list has a merge key.
fn element_key(list_field: &str, element: &Value, siblings: &[Value]) -> Option<String> {
    let key = strategic::merge_key_of(list_field, siblings)?;
    let id = element.get(key)?;
    let mut map = Map::new();
    map.insert(key.to_string(), id.clone());
    Some(format!("k:{}", Value::Object(map)))
}

/// The FieldsV1 set of an applied configuration.
pub fn fields_of(config: &Value) -> Value {
    let mut set = Map::new();
    if let Some(map) = config.as_object() {
        for (key, value) in map {
            if key == "apiVersion" || key == "kind" || key.starts_with('$') {
                continue;
            }
            set.insert(format!("f:{key}"), field_value(key, value));
        }
    }
    Value::Object(set)
}

fn field_value(key: &str, value: &Value) -> Value {
    match value {
        Value::Object(_) => fields_of(value),
        Value::Array(items) => {
            let mut set = Map::new();
            for item in items {
                if let Some(k) = element_key(key, item, items) {
                    let mut inner = fields_of(item);
                    if let Some(inner_map) = inner.as_object_mut() {
                        inner_map.insert(".".into(), json!({}));
                    }
                    set.insert(k, inner);
                }
            }
            Value::Object(set)
        }
        _ => json!({}),
    }
}

/// Every leaf path of a FieldsV1 set.
fn leaf_paths(set: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let Some(map) = set.as_object() else { return };
    let children: Vec<_> = map.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if children.is_empty() {
        out.push(prefix.clone());
        return;
    }
    for (key, child) in children {
        prefix.push(key.clone());
        leaf_paths(child, prefix, out);
        prefix.pop();
    }
}

fn contains_path(set: &Value, path: &[String]) -> bool {
    let mut node = set;
    for segment in path {
        match node.get(segment) {
            Some(next) => node = next,
            None => return false,
        }
    }
    true
}

/// Finds the value at a FieldsV1 path in an object.
fn lookup<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut node = obj;
    for segment in path {
        node = if let Some(field) = segment.strip_prefix("f:") {
            node.get(field)?
        } else if let Some(key) = segment.strip_prefix("k:") {
            let wanted: Value = serde_json::from_str(key).ok()?;
            let wanted = wanted.as_object()?;
            node.as_array()?.iter().find(|e| wanted.iter().all(|(k, v)| e.get(k) == Some(v)))?
        } else {
            return None;
        };
    }
    Some(node)
}

/// Removes the field at a FieldsV1 path, if present.
fn remove(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = obj;
    for segment in parents {
        let next = if let Some(field) = segment.strip_prefix("f:") {
            node.get_mut(field)
        } else if let Some(key) = segment.strip_prefix("k:") {
            let Ok(Value::Object(wanted)) = serde_json::from_str::<Value>(key) else { return };
            node.as_array_mut().and_then(|a| a.iter_mut().find(|e| wanted.iter().all(|(k, v)| e.get(k) == Some(v))))
        } else {
            None
        };
        match next {
            Some(next) => node = next,
            None => return,
        }
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Some(map) = node.as_object_mut() {
            map.remove(field);
        }
    } else if let Some(key) = last.strip_prefix("k:")
        && let Ok(Value::Object(wanted)) = serde_json::from_str::<Value>(key)
        && let Some(items) = node.as_array_mut()
    {
        items.retain(|e| !wanted.iter().all(|(k, v)| e.get(k) == Some(v)));
    }
}

fn managed_entries(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn applied_by(entry: &Value, manager: &str) -> bool {
    entry.get("manager").and_then(Value::as_str) == Some(manager)
        && entry.get("operation").and_then(Value::as_str) == Some("Apply")
}

/// Applies `config` of `manager` to the live object `current`.
pub fn apply(current: &Value, config: &Value, manager: &str, force: bool) -> Result<Value, ApplyError> {
    let new_set = fields_of(config);
    let entries = managed_entries(current);
    let mut new_paths = Vec::new();
    leaf_paths(&new_set, &mut Vec::new(), &mut new_paths);
    let mut conflicts = Vec::new();
    for entry in entries.iter().filter(|e| !applied_by(e, manager)) {
        if entry.get("operation").and_then(Value::as_str) != Some("Apply") {
            continue;
        }
        let owner = entry.get("manager").and_then(Value::as_str).unwrap_or_default();
        let Some(owned) = entry.get("fieldsV1") else { continue };
        for path in &new_paths {
            if contains_path(owned, path) && lookup(current, path) != lookup(config, path) {
                let pretty: Vec<&str> = path.iter().map(|s| s.trim_start_matches("f:")).collect();
                conflicts.push(format!("conflict with \"{owner}\": .{}", pretty.join(".")));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflicts(conflicts));
    }
    let mut result = current.clone();
    if let Some(previous) = entries.iter().find(|e| applied_by(e, manager)).and_then(|e| e.get("fieldsV1")) {
        let mut old_paths = Vec::new();
        leaf_paths(previous, &mut Vec::new(), &mut old_paths);
        let others: Vec<&Value> =
            entries.iter().filter(|e| !applied_by(e, manager)).filter_map(|e| e.get("fieldsV1")).collect();
        for path in old_paths {
            if !contains_path(&new_set, &path) && !others.iter().any(|set| contains_path(set, &path)) {
                remove(&mut result, &path);
            }
        }
    }
    strategic::merge(&mut result, config);
    Ok(result)
}

/// Records `manager`'s applied fields in `obj.metadata.managedFields`; with
/// `force`, other appliers lose the fields this one now owns.
pub fn record(obj: &mut Value, _current: Option<&Value>, config: &Value, manager: &str, api_version: &str) {
    let mut entries: Vec<Value> = managed_entries(obj).into_iter().filter(|e| !applied_by(e, manager)).collect();
    entries.push(json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": crate::server::rest::now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_of(config),
    }));
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("managedFields".into(), Value::Array(entries));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reapply_removes_fields_the_manager_dropped() {
        let first = json!({"metadata": {"name": "x", "labels": {"a": "1", "b": "2"}}, "data": {"k": "v"}});
        let mut live = apply(&json!({"metadata": {"name": "x"}}), &first, "helm", false).unwrap();
        record(&mut live, None, &first, "helm", "v1");
        let second = json!({"metadata": {"name": "x", "labels": {"a": "1"}}, "data": {"k": "w"}});
        let live = apply(&live, &second, "helm", false).unwrap();
        assert_eq!(live["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(live["data"], json!({"k": "w"}));
    }

    #[test]
    fn another_applier_conflicts_unless_forced() {
        let config = json!({"data": {"k": "v"}});
        let mut live = apply(&json!({"metadata": {"name": "x"}}), &config, "one", false).unwrap();
        record(&mut live, None, &config, "one", "v1");
        let other = json!({"data": {"k": "changed"}});
        let err = apply(&live, &other, "two", false).unwrap_err();
        assert!(err.to_string().contains("conflict with \"one\": .data.k"), "{err}");
        assert_eq!(apply(&live, &other, "two", true).unwrap()["data"]["k"], "changed");
        // Applying the same value is shared ownership, not a conflict.
        assert!(apply(&live, &config, "two", false).is_ok());
    }

    #[test]
    fn list_elements_are_keyed_by_merge_key() {
        let set = fields_of(&json!({"spec": {"containers": [{"name": "app", "image": "a"}]}}));
        assert!(set.pointer("/f:spec/f:containers/k:{\"name\":\"app\"}/f:image").is_some());
    }
}
