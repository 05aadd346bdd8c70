//! Validation shared by every kind: object names (DNS-1123 and friends),
//! label and annotation syntax, and the `metadata` rules of create and update,
//! with upstream's messages (`k8s.io/apimachinery/pkg/util/validation` and
//! `pkg/api/validation/objectmeta.go`).

use super::NameRule;
use crate::server::error::FieldError;
use serde_json::Value;

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
/// Upstream's limit on the total size of an object's annotations.
pub const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn too_long(max: usize) -> String {
    format!("must be no more than {max} characters")
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.starts_with(is_lower_alnum)
        && s.ends_with(is_lower_alnum)
}

/// Problems of `s` as a DNS-1123 label (empty when valid).
pub fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errors.push(too_long(DNS1123_LABEL_MAX));
    }
    if !is_dns1123_label(s) {
        errors.push(DNS1123_LABEL_MSG.to_string());
    }
    errors
}

/// Problems of `s` as a DNS-1123 subdomain (empty when valid).
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errors.push(too_long(DNS1123_SUBDOMAIN_MAX));
    }
    if s.is_empty() || !s.split('.').all(is_dns1123_label) {
        errors.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    errors
}

/// Problems of `s` as a DNS-1035 label (empty when valid).
pub fn dns1035_label_errors(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errors.push(too_long(DNS1123_LABEL_MAX));
    }
    if !is_dns1123_label(s) || !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        errors.push(DNS1035_LABEL_MSG.to_string());
    }
    errors
}

/// Problems of `s` as a path segment name (RBAC kinds): not `.`/`..`, no `/` or `%`.
pub fn path_segment_errors(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    ["/", "%"].iter().filter(|bad| s.contains(**bad)).map(|bad| format!("may not contain '{bad}'")).collect()
}

/// Problems of `name` under the naming rule (empty when valid).
pub fn name_errors(rule: NameRule, name: &str) -> Vec<String> {
    match rule {
        NameRule::Dns1123Subdomain => dns1123_subdomain_errors(name),
        NameRule::Dns1123Label => dns1123_label_errors(name),
        NameRule::Dns1035Label => dns1035_label_errors(name),
        NameRule::PathSegment => path_segment_errors(name),
    }
}

fn is_qualified_name_part(s: &str) -> bool {
    let inner_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    !s.is_empty()
        && s.chars().all(inner_ok)
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Problems of a label or annotation key: `[prefix/]name` (empty when valid).
pub fn qualified_name_errors(key: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            errors.push("prefix part must be non-empty".to_string());
        } else {
            errors.extend(dns1123_subdomain_errors(prefix).into_iter().map(|e| format!("prefix part {e}")));
        }
        if name.contains('/') {
            errors.push(format!("a qualified name {QUALIFIED_NAME_MSG_SHORT}"));
            return errors;
        }
    }
    if name.is_empty() {
        errors.push("name part must be non-empty".to_string());
    } else {
        if name.len() > QUALIFIED_NAME_MAX {
            errors.push(format!("name part {}", too_long(QUALIFIED_NAME_MAX)));
        }
        if !is_qualified_name_part(name) {
            errors.push(QUALIFIED_NAME_MSG.to_string());
        }
    }
    errors
}

const QUALIFIED_NAME_MSG_SHORT: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";

/// Problems of a label value (empty when valid).
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > LABEL_VALUE_MAX {
        errors.push(too_long(LABEL_VALUE_MAX));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errors.push(LABEL_VALUE_MSG.to_string());
    }
    errors
}

/// Field errors of a `labels` map at `path` (e.g. `metadata.labels`).
pub fn validate_labels(labels: Option<&Value>, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(map) = labels.and_then(Value::as_object) else { return errors };
    for (key, value) in map {
        for e in qualified_name_errors(key) {
            errors.push(FieldError::invalid(path, &Value::String(key.clone()), &e));
        }
        let text = value.as_str().unwrap_or_default();
        for e in label_value_errors(text) {
            errors.push(FieldError::invalid(format!("{path}.{key}"), value, &e));
        }
    }
    errors
}

/// Field errors of `metadata.annotations`: key syntax and total size.
pub fn validate_annotations(annotations: Option<&Value>, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(map) = annotations.and_then(Value::as_object) else { return errors };
    let mut total = 0usize;
    for (key, value) in map {
        for e in qualified_name_errors(&key.to_ascii_lowercase()) {
            errors.push(FieldError::invalid(path, &Value::String(key.clone()), &e));
        }
        total += key.len() + value.as_str().map_or(0, str::len);
    }
    if total > ANNOTATIONS_MAX_BYTES {
        errors.push(FieldError {
            reason: "FieldValueTooLong".into(),
            field: path.to_string(),
            message: format!("Too long: may not be more than {ANNOTATIONS_MAX_BYTES} bytes"),
        });
    }
    errors
}

/// Field errors of `metadata` of a new object of a kind with the given naming
/// rule and scope. `generateName` alone is accepted (the name is filled in later).
pub fn validate_object_meta_create(obj: &Value, rule: NameRule, namespaced: bool) -> Vec<FieldError> {
    let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
    let mut errors = Vec::new();
    let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
    let generate_name = meta.get("generateName").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() {
        if generate_name.is_empty() {
            errors.push(FieldError::required("metadata.name", "name or generateName is required"));
        } else {
            // A generated name gets a 5-character suffix; validate the prefix like upstream.
            let candidate = format!("{generate_name}a");
            for e in name_errors(rule, &candidate) {
                errors.push(FieldError::invalid("metadata.generateName", &Value::String(generate_name.into()), &e));
            }
        }
    } else {
        for e in name_errors(rule, name) {
            errors.push(FieldError::invalid("metadata.name", &Value::String(name.into()), &e));
        }
    }
    let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or_default();
    if namespaced {
        if namespace.is_empty() {
            errors.push(FieldError::required("metadata.namespace", ""));
        } else {
            for e in dns1123_label_errors(namespace) {
                errors.push(FieldError::invalid("metadata.namespace", &Value::String(namespace.into()), &e));
            }
        }
    } else if !namespace.is_empty() {
        errors.push(FieldError::forbidden("metadata.namespace", "not allowed on this type"));
    }
    errors.extend(validate_labels(meta.get("labels"), "metadata.labels"));
    errors.extend(validate_annotations(meta.get("annotations"), "metadata.annotations"));
    errors.extend(validate_finalizers(&meta));
    errors.extend(validate_owner_references(&meta));
    errors
}

fn validate_finalizers(meta: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, finalizer) in meta.get("finalizers").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let text = finalizer.as_str().unwrap_or_default();
        for e in qualified_name_errors(text) {
            errors.push(FieldError::invalid(format!("metadata.finalizers[{i}]"), finalizer, &e));
        }
    }
    errors
}

fn validate_owner_references(meta: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut controllers = 0;
    for (i, owner) in meta.get("ownerReferences").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let path = format!("metadata.ownerReferences[{i}]");
        for field in ["apiVersion", "kind", "name", "uid"] {
            if owner.get(field).and_then(Value::as_str).unwrap_or_default().is_empty() {
                errors.push(FieldError::invalid(
                    format!("{path}.{field}"),
                    &Value::String(String::new()),
                    &format!("{field} must not be empty"),
                ));
            }
        }
        if owner.get("controller").and_then(Value::as_bool) == Some(true) {
            controllers += 1;
        }
    }
    if controllers > 1 {
        errors.push(FieldError::invalid(
            "metadata.ownerReferences",
            meta.get("ownerReferences").unwrap_or(&Value::Null),
            "Only one reference can have Controller set to true",
        ));
    }
    errors
}

/// Field errors of `metadata` on update: the create rules for what may change,
/// plus upstream's immutable fields.
pub fn validate_object_meta_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let new_meta = new.get("metadata").cloned().unwrap_or(Value::Null);
    let old_meta = old.get("metadata").cloned().unwrap_or(Value::Null);
    for field in ["name", "namespace", "uid", "creationTimestamp"] {
        let before = old_meta.get(field).unwrap_or(&Value::Null);
        let after = new_meta.get(field).unwrap_or(&Value::Null);
        if before != after {
            errors.push(FieldError::invalid(format!("metadata.{field}"), after, "field is immutable"));
        }
    }
    if old_meta.get("deletionTimestamp").is_some()
        && old_meta.get("deletionTimestamp") != new_meta.get("deletionTimestamp")
    {
        let after = new_meta.get("deletionTimestamp").unwrap_or(&Value::Null);
        errors.push(FieldError::invalid(
            "metadata.deletionTimestamp",
            after,
            "field is immutable; may only be changed via deletion",
        ));
    }
    errors.extend(validate_labels(new_meta.get("labels"), "metadata.labels"));
    errors.extend(validate_annotations(new_meta.get("annotations"), "metadata.annotations"));
    errors.extend(validate_finalizers(&new_meta));
    errors.extend(validate_owner_references(&new_meta));
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dns_names() {
        assert!(dns1123_subdomain_errors("web.example-1").is_empty());
        assert!(!dns1123_subdomain_errors("Web").is_empty());
        assert!(!dns1123_subdomain_errors("-web").is_empty());
        assert!(!dns1123_subdomain_errors("").is_empty());
        assert_eq!(dns1123_subdomain_errors(&"a".repeat(254)).len(), 1);
        assert!(dns1123_label_errors("kube-system").is_empty());
        assert!(!dns1123_label_errors("a.b").is_empty());
        assert_eq!(dns1123_label_errors(&"a".repeat(64)), vec![too_long(63)]);
        assert!(dns1035_label_errors("web").is_empty());
        assert!(!dns1035_label_errors("1web").is_empty());
        assert!(path_segment_errors("system:controller:foo").is_empty());
        assert_eq!(path_segment_errors("a/b"), vec!["may not contain '/'".to_string()]);
        assert_eq!(path_segment_errors(".."), vec!["may not be '..'".to_string()]);
    }

    #[test]
    fn label_keys_and_values() {
        assert!(qualified_name_errors("app.kubernetes.io/name").is_empty());
        assert!(qualified_name_errors("Tier_1").is_empty());
        assert!(!qualified_name_errors("/name").is_empty());
        assert!(!qualified_name_errors("Example.com/name").is_empty());
        assert!(!qualified_name_errors("a/b/c").is_empty());
        assert!(!qualified_name_errors("-x").is_empty());
        assert!(label_value_errors("").is_empty());
        assert!(label_value_errors("v1.2_3-x").is_empty());
        assert!(!label_value_errors("a b").is_empty());
    }

    #[test]
    fn create_requires_a_name_and_namespace() {
        let errors = validate_object_meta_create(&json!({"metadata": {}}), NameRule::Dns1123Subdomain, true);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["metadata.name", "metadata.namespace"]);
        assert_eq!(errors[0].message, "Required value: name or generateName is required");
    }

    #[test]
    fn create_rejects_bad_names_labels_and_cluster_scoped_namespace() {
        let obj = json!({"metadata": {"name": "Web", "namespace": "default", "labels": {"ok": "x", "bad key": "y", "k": "no way"}}});
        let errors = validate_object_meta_create(&obj, NameRule::Dns1123Subdomain, false);
        let texts: Vec<String> = errors.iter().map(|e| e.to_text()).collect();
        assert!(
            texts[0].starts_with("metadata.name: Invalid value: \"Web\": a lowercase RFC 1123 subdomain"),
            "{texts:?}"
        );
        assert!(texts.iter().any(|t| t == "metadata.namespace: Forbidden: not allowed on this type"), "{texts:?}");
        assert!(texts.iter().any(|t| t.starts_with("metadata.labels: Invalid value: \"bad key\"")), "{texts:?}");
        assert!(texts.iter().any(|t| t.starts_with("metadata.labels.k: Invalid value: \"no way\"")), "{texts:?}");
    }

    #[test]
    fn generate_name_alone_is_enough() {
        let obj = json!({"metadata": {"generateName": "web-", "namespace": "default"}});
        assert!(validate_object_meta_create(&obj, NameRule::Dns1123Subdomain, true).is_empty());
    }

    #[test]
    fn annotations_have_a_total_size_limit() {
        let big = "x".repeat(ANNOTATIONS_MAX_BYTES);
        let obj = json!({"metadata": {"name": "a", "annotations": {"note": big}}});
        let errors = validate_object_meta_create(&obj, NameRule::Dns1123Subdomain, false);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].reason, "FieldValueTooLong");
    }

    #[test]
    fn update_keeps_identity_fields_immutable() {
        let old = json!({"metadata": {"name": "a", "uid": "1", "creationTimestamp": "2026-01-01T00:00:00Z"}});
        let new = json!({"metadata": {"name": "a", "uid": "2", "creationTimestamp": "2026-01-01T00:00:00Z"}});
        let errors = validate_object_meta_update(&new, &old);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].to_text(), "metadata.uid: Invalid value: \"2\": field is immutable");
    }

    #[test]
    fn only_one_controller_owner() {
        let owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "u", "controller": true});
        let obj = json!({"metadata": {"name": "a", "namespace": "d", "ownerReferences": [owner, owner]}});
        let errors = validate_object_meta_create(&obj, NameRule::Dns1123Subdomain, true);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("Only one reference can have Controller set to true"));
    }
}
