//! SelfSubjectRulesReview (`kubectl auth can-i --list`): the RBAC rules that
//! apply to the requesting user in `spec.namespace`, split into resource and
//! non-resource rules as upstream. For node identities the list is marked
//! incomplete, as upstream's Node authorizer cannot enumerate its rules.

use crate::server::authn::UserInfo;
use crate::server::authz::{self, node};
use crate::server::error::ApiError;
use crate::server::state::ApiState;
use serde_json::{Map, Value, json};

pub async fn review(state: &ApiState, user: &UserInfo, mut review: Value) -> Result<Value, ApiError> {
    let namespace = review.pointer("/spec/namespace").and_then(Value::as_str).unwrap_or_default().to_string();
    let (resource_rules, non_resource_rules) = split(authz::rules(state, user, &namespace).await?);
    let mut status =
        json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false});
    if node::node_of(user).is_some() {
        status["incomplete"] = json!(true);
        status["evaluationError"] = json!("node authorizer does not support user rule resolution");
    }
    review["status"] = status;
    if review.get("metadata").is_none() {
        review["metadata"] = json!({"creationTimestamp": null});
    }
    Ok(review)
}

/// PolicyRules as (ResourceRule, NonResourceRule) lists: a rule naming
/// nonResourceURLs is a non-resource rule; the rest keep their verbs, groups,
/// resources and names.
fn split(rules: Vec<Value>) -> (Vec<Value>, Vec<Value>) {
    let (mut resource_rules, mut non_resource_rules) = (Vec::new(), Vec::new());
    for rule in rules {
        let field = |key: &str| rule.get(key).filter(|v| v.as_array().is_some_and(|a| !a.is_empty())).cloned();
        let mut out = Map::new();
        out.insert("verbs".into(), field("verbs").unwrap_or(json!([])));
        if let Some(urls) = field("nonResourceURLs") {
            out.insert("nonResourceURLs".into(), urls);
            non_resource_rules.push(Value::Object(out));
            continue;
        }
        for key in ["apiGroups", "resources", "resourceNames"] {
            if let Some(value) = field(key) {
                out.insert(key.into(), value);
            }
        }
        resource_rules.push(Value::Object(out));
    }
    (resource_rules, non_resource_rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_split_into_resource_and_non_resource_ones() {
        let rules = vec![
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"], "resourceNames": []}),
            json!({"nonResourceURLs": ["/healthz"], "verbs": ["get"]}),
        ];
        let (resources, urls) = split(rules);
        assert_eq!(resources, vec![json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]})]);
        assert_eq!(urls, vec![json!({"verbs": ["get"], "nonResourceURLs": ["/healthz"]})]);
    }
}
