//! RBAC evaluation, as upstream's RBAC authorizer: a request is allowed when
//! a ClusterRoleBinding, or a RoleBinding in the request's namespace, binds a
//! subject the user matches to a role with a rule covering the request.

use crate::server::authn::UserInfo;
use serde_json::Value;

/// What a request asks to do, for matching against rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attributes<'a> {
    Resource {
        verb: &'a str,
        group: &'a str,
        /// `pods`, or `pods/log` for a subresource.
        resource: &'a str,
        namespace: Option<&'a str>,
        name: Option<&'a str>,
    },
    NonResource {
        verb: &'a str,
        path: &'a str,
    },
}

impl Attributes<'_> {
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Attributes::Resource { namespace, .. } => *namespace,
            Attributes::NonResource { .. } => None,
        }
    }
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    value.and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn covers(list: &[&str], wanted: &str) -> bool {
    list.iter().any(|item| *item == "*" || *item == wanted)
}

/// Whether one PolicyRule allows the request.
pub fn rule_allows(rule: &Value, attrs: &Attributes<'_>) -> bool {
    let verbs = strings(rule.get("verbs"));
    match attrs {
        Attributes::Resource { verb, group, resource, name, .. } => {
            if !covers(&verbs, verb) || !covers(&strings(rule.get("apiGroups")), group) {
                return false;
            }
            let resources = strings(rule.get("resources"));
            let resource_ok = resources.iter().any(|r| {
                *r == "*"
                    || r == resource
                    || r.strip_prefix("*/").is_some_and(|sub| resource.split_once('/').is_some_and(|(_, s)| s == sub))
            });
            if !resource_ok {
                return false;
            }
            let names = strings(rule.get("resourceNames"));
            names.is_empty() || name.is_some_and(|n| names.contains(&n))
        }
        Attributes::NonResource { verb, path } => {
            covers(&verbs, verb)
                && strings(rule.get("nonResourceURLs")).iter().any(|url| {
                    *url == "*" || url == path || url.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix))
                })
        }
    }
}

/// Whether a binding's subjects include the user. RoleBindings' ServiceAccount
/// subjects default to the binding's namespace.
pub fn binding_matches(binding: &Value, user: &UserInfo) -> bool {
    let binding_ns = binding.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    binding.get("subjects").and_then(Value::as_array).into_iter().flatten().any(|subject| {
        let name = subject.get("name").and_then(Value::as_str).unwrap_or_default();
        match subject.get("kind").and_then(Value::as_str) {
            Some("User") => user.name == name,
            Some("Group") => user.groups.iter().any(|g| g == name),
            Some("ServiceAccount") => {
                let ns =
                    subject.get("namespace").and_then(Value::as_str).filter(|n| !n.is_empty()).unwrap_or(binding_ns);
                user.name == format!("system:serviceaccount:{ns}:{name}")
            }
            _ => false,
        }
    })
}

/// The role a binding refers to: (kind, name).
pub fn role_ref(binding: &Value) -> Option<(&str, &str)> {
    let kind = binding.pointer("/roleRef/kind").and_then(Value::as_str)?;
    let name = binding.pointer("/roleRef/name").and_then(Value::as_str)?;
    Some((kind, name))
}

/// Whether any rule of a role allows the request.
pub fn role_allows(role: &Value, attrs: &Attributes<'_>) -> bool {
    role.get("rules").and_then(Value::as_array).into_iter().flatten().any(|rule| rule_allows(rule, attrs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods(verb: &'static str, resource: &'static str, name: Option<&'static str>) -> Attributes<'static> {
        Attributes::Resource { verb, group: "", resource, namespace: Some("default"), name }
    }

    #[test]
    fn rules_match_verbs_groups_resources_and_names() {
        let rule = json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]});
        assert!(rule_allows(&rule, &pods("get", "pods", None)));
        assert!(rule_allows(&rule, &pods("get", "pods/log", None)));
        assert!(!rule_allows(&rule, &pods("delete", "pods", None)));
        assert!(!rule_allows(&rule, &pods("get", "pods/exec", None)));
        let named = json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"], "resourceNames": ["web"]});
        assert!(rule_allows(&named, &pods("update", "pods/status", Some("web"))));
        assert!(!rule_allows(&named, &pods("update", "pods/status", Some("db"))));
        assert!(!rule_allows(&named, &pods("update", "pods", Some("web"))));
        let urls = json!({"nonResourceURLs": ["/healthz", "/api/*"], "verbs": ["get"]});
        assert!(rule_allows(&urls, &Attributes::NonResource { verb: "get", path: "/api/v1" }));
        assert!(!rule_allows(&urls, &Attributes::NonResource { verb: "get", path: "/metrics" }));
    }

    #[test]
    fn subjects_match_users_groups_and_service_accounts() {
        let sa = UserInfo::new("system:serviceaccount:ci:builder", ["system:serviceaccounts".to_string()]);
        let binding =
            json!({"metadata": {"namespace": "ci"}, "subjects": [{"kind": "ServiceAccount", "name": "builder"}]});
        assert!(binding_matches(&binding, &sa));
        let group = json!({"subjects": [{"kind": "Group", "name": "system:authenticated"}]});
        assert!(binding_matches(&group, &sa));
        let user = json!({"subjects": [{"kind": "User", "name": "alice"}]});
        assert!(!binding_matches(&user, &sa));
    }
}
