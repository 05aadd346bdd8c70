//! Label and field selectors, parsed from `labelSelector=` / `fieldSelector=`
//! and matched against JSON objects, with upstream's syntax and messages.

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

fn parse_set(key: &str, rest: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("{key}: expected a parenthesised set of values")))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

fn check_key(key: &str) -> Result<String, SelectorError> {
    let errors = crate::server::kinds::meta::qualified_name_errors(key);
    if errors.is_empty() { Ok(key.to_string()) } else { Err(SelectorError(format!("{key}: {}", errors.join("; ")))) }
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let requirement = if let Some(key) = part.strip_prefix('!') {
                LabelRequirement::NotExists(check_key(key.trim())?)
            } else if let Some((key, value)) = part.split_once("!=") {
                LabelRequirement::NotEquals(check_key(key.trim())?, value.trim().to_string())
            } else if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
                LabelRequirement::Equals(check_key(key.trim())?, value.trim().to_string())
            } else if let Some((key, rest)) = part.split_once(" notin ") {
                LabelRequirement::NotIn(check_key(key.trim())?, parse_set(key, rest)?)
            } else if let Some((key, rest)) = part.split_once(" in ") {
                LabelRequirement::In(check_key(key.trim())?, parse_set(key, rest)?)
            } else {
                LabelRequirement::Exists(check_key(part)?)
            };
            requirements.push(requirement);
        }
        Ok(LabelSelector { requirements })
    }

    /// A selector from `matchLabels` / `matchExpressions` of a workload's `spec.selector`.
    pub fn from_label_selector_json(selector: &Value) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (key, value) in labels {
                requirements
                    .push(LabelRequirement::Equals(key.clone(), value.as_str().unwrap_or_default().to_string()));
            }
        }
        for expr in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
            let key = expr.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
            let values: Vec<String> = expr
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            requirements.push(match expr.get("operator").and_then(Value::as_str) {
                Some("In") => LabelRequirement::In(key, values),
                Some("NotIn") => LabelRequirement::NotIn(key, values),
                Some("Exists") => LabelRequirement::Exists(key),
                Some("DoesNotExist") => LabelRequirement::NotExists(key),
                other => return Err(SelectorError(format!("{other:?} is not a valid label selector operator"))),
            });
        }
        Ok(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.requirements.iter().all(|requirement| match requirement {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::NotExists(k) => label(k).is_none(),
        })
    }
}

/// A parsed field selector: `path=value`, `path==value`, `path!=value`, comma-joined.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<(String, bool, String)>,
}

impl FieldSelector {
    pub fn parse(text: &str) -> Result<FieldSelector, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let (path, equal, value) = if let Some((p, v)) = part.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (p, true, v)
            } else {
                return Err(SelectorError(format!("invalid field selector: '{part}': expected an operator")));
            };
            requirements.push((path.trim().to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value the selector pins `path` to with `=`, if any (e.g. `metadata.name`).
    pub fn exact(&self, path: &str) -> Option<&str> {
        self.requirements.iter().find(|(p, equal, _)| p == path && *equal).map(|(_, _, v)| v.as_str())
    }

    /// Whether the object's fields (dotted paths, missing = empty string) match.
    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|(path, equal, value)| {
            let pointer = format!("/{}", path.replace('.', "/"));
            let actual = match obj.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_syntax() {
        let pod = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        for (selector, expected) in [
            ("", true),
            ("app=web", true),
            ("app==web,tier=front", true),
            ("app!=web", false),
            ("app in (web, api)", true),
            ("tier notin (front)", false),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("missing notin (x)", true),
        ] {
            assert_eq!(LabelSelector::parse(selector).unwrap().matches(&pod), expected, "{selector}");
        }
        assert!(LabelSelector::parse("bad key!=x").is_err());
    }

    #[test]
    fn field_selector_paths() {
        let pod = json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"nodeName": "nas"}});
        assert!(FieldSelector::parse("metadata.name=web").unwrap().matches(&pod));
        assert!(FieldSelector::parse("spec.nodeName!=other,metadata.namespace==default").unwrap().matches(&pod));
        assert!(!FieldSelector::parse("status.phase=Running").unwrap().matches(&pod));
        assert!(FieldSelector::parse("status.phase!=Running").unwrap().matches(&pod));
        assert_eq!(FieldSelector::parse("metadata.name=web").unwrap().exact("metadata.name"), Some("web"));
        assert!(FieldSelector::parse("nonsense").is_err());
    }

    #[test]
    fn workload_selectors() {
        let selector =
            json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]});
        let selector = LabelSelector::from_label_selector_json(&selector).unwrap();
        assert!(selector.matches(&json!({"metadata": {"labels": {"app": "web", "tier": "x"}}})));
        assert!(!selector.matches(&json!({"metadata": {"labels": {"app": "web"}}})));
    }
}
