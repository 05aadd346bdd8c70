//! Strategic merge patch: like a JSON merge patch, but lists of objects
//! with a merge key (containers by `name`, ports by `containerPort`, …) are
//! merged element by element, with the `$patch`, `$setElementOrder`,
//! `$retainKeys` and `$deleteFromPrimitiveList` directives kubectl sends.

use serde_json::{Map, Value};

/// The merge key of a list field, by field name (upstream's `patchMergeKey`).
fn merge_key(field: &str, elements: &[Value]) -> Option<&'static str> {
    let has = |key: &str| elements.iter().all(|e| e.get(key).is_some());
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "readinessGates" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "ports" if has("containerPort") => Some("containerPort"),
        "ports" => Some("port"),
        "conditions" => Some("type"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "ownerReferences" => Some("uid"),
        "taints" => Some("key"),
        _ => None,
    }
}

/// The merge key of a list field, for server-side apply's element keys.
pub fn merge_key_of(field: &str, elements: &[Value]) -> Option<&'static str> {
    merge_key(field, elements)
}

/// Primitive lists that merge as sets instead of being replaced.
fn merges_primitives(field: &str) -> bool {
    field == "finalizers"
}

/// Merges `patch` into `target` in place.
pub fn merge(target: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch_map.clone();
        replacement.remove("$patch");
        *target = Value::Object(strip_directives(replacement));
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(target_map) = target.as_object_mut() else { return };
    for (key, value) in patch_map {
        if let Some(list_field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(remove)) = (target_map.get_mut(list_field), value.as_array()) {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                target_map.remove(key);
            }
            Value::Array(items) => {
                let existing = target_map.remove(key);
                target_map.insert(key.clone(), merge_list(existing, items, key));
            }
            Value::Object(_) => {
                let entry = target_map.entry(key.clone()).or_insert(Value::Null);
                merge(entry, value);
            }
            other => {
                target_map.insert(key.clone(), other.clone());
            }
        }
    }
}

fn strip_directives(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter().filter(|(k, _)| !k.starts_with('$')).collect()
}

fn merge_list(existing: Option<Value>, patch: &[Value], field: &str) -> Value {
    let mut current = match existing {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    if merges_primitives(field) {
        for item in patch {
            if !current.contains(item) {
                current.push(item.clone());
            }
        }
        return Value::Array(current);
    }
    let Some(key) = merge_key(field, patch).or_else(|| merge_key(field, &current)) else {
        let cleaned = patch
            .iter()
            .filter(|e| e.get("$patch").is_none())
            .map(|e| match e {
                Value::Object(m) => Value::Object(strip_directives(m.clone())),
                other => other.clone(),
            })
            .collect();
        return Value::Array(cleaned);
    };
    for element in patch {
        let id = element.get(key);
        let position = current.iter().position(|c| c.get(key) == id && id.is_some());
        match (element.get("$patch").and_then(Value::as_str), position) {
            (Some("delete"), Some(index)) => {
                current.remove(index);
            }
            (Some("delete"), None) => {}
            (_, Some(index)) => merge(&mut current[index], element),
            (_, None) => {
                let mut fresh = Value::Null;
                merge(&mut fresh, element);
                current.push(fresh);
            }
        }
    }
    Value::Array(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name_and_env_by_name() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "side", "image": "s:1"}
        ]}});
        let patch = json!({"spec": {"containers": [
            {"name": "app", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
            {"name": "side", "$patch": "delete"}
        ], "$setElementOrder/containers": [{"name": "app"}]}});
        merge(&mut pod, &patch);
        assert_eq!(
            pod,
            json!({"spec": {"containers": [
                {"name": "app", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}
            ]}})
        );
    }

    #[test]
    fn null_deletes_lists_without_keys_replace_and_finalizers_merge() {
        let mut obj = json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x"]}, "spec": {"args": ["1", "2"]}});
        merge(&mut obj, &json!({"metadata": {"labels": {"a": null}, "finalizers": ["y"]}, "spec": {"args": ["3"]}}));
        assert_eq!(obj, json!({"metadata": {"labels": {}, "finalizers": ["x", "y"]}, "spec": {"args": ["3"]}}));
        merge(&mut obj, &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}));
        assert_eq!(obj["metadata"]["finalizers"], json!(["y"]));
    }
}
