//! The access reviews: SelfSubjectAccessReview (`kubectl auth can-i`), and
//! SubjectAccessReview / LocalSubjectAccessReview, which ask the same
//! question for another user (delegated authorization). The answer comes from
//! the same authorizers every request goes through: RBAC, then the node
//! restriction.

use crate::server::authn::UserInfo;
use crate::server::authz::{self, node, rbac::Attributes};
use crate::server::error::{ApiError, FieldError};
use crate::server::state::ApiState;
use serde_json::{Value, json};

/// The user a (Local)SubjectAccessReview asks about: `spec.user`, `.groups`,
/// `.uid` and `.extra`, taken as given (no `system:authenticated` added).
pub fn subject(review: &Value) -> UserInfo {
    let spec = &review["spec"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect()).unwrap_or_default()
    };
    UserInfo {
        name: spec["user"].as_str().unwrap_or_default().to_string(),
        uid: spec["uid"].as_str().unwrap_or_default().to_string(),
        groups: strings(&spec["groups"]),
        extra: spec["extra"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), strings(v))).collect())
            .unwrap_or_default(),
    }
}

/// Answers an access review for `user`. `local_namespace` is the namespace
/// of a LocalSubjectAccessReview's path, which the review must match.
pub async fn review(
    state: &ApiState,
    user: &UserInfo,
    mut review: Value,
    local_namespace: Option<&str>,
) -> Result<Value, ApiError> {
    let kind = review["kind"].as_str().unwrap_or("SubjectAccessReview").to_string();
    validate(&kind, &review, local_namespace)?;
    let spec = &review["spec"];
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_string();
    let allowed = if let Some(attrs) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        let (verb, group, namespace, name) =
            (text(attrs, "verb"), text(attrs, "group"), text(attrs, "namespace"), text(attrs, "name"));
        let resource = match (text(attrs, "resource"), text(attrs, "subresource")) {
            (resource, sub) if sub.is_empty() => resource,
            (resource, sub) => format!("{resource}/{sub}"),
        };
        let attrs = Attributes::Resource {
            verb: &verb,
            group: &group,
            resource: &resource,
            namespace: Some(namespace.as_str()).filter(|n| !n.is_empty()),
            name: Some(name.as_str()).filter(|n| !n.is_empty()),
        };
        decide(state, user, &attrs).await?
    } else {
        let attrs = &spec["nonResourceAttributes"];
        let (verb, path) = (text(attrs, "verb"), text(attrs, "path"));
        decide(state, user, &Attributes::NonResource { verb: &verb, path: &path }).await?
    };
    review["status"] = json!({"allowed": allowed});
    if review.get("metadata").is_none() {
        review["metadata"] = json!({"creationTimestamp": null});
    }
    Ok(review)
}

async fn decide(state: &ApiState, user: &UserInfo, attrs: &Attributes<'_>) -> Result<bool, ApiError> {
    Ok(authz::allowed(state, user, attrs).await? && node::restrict(state, user, attrs).await.is_ok())
}

/// Upstream's validation of the review's spec: exactly one kind of
/// attributes, a subject for the non-self reviews, a matching namespace for
/// the local one.
fn validate(kind: &str, review: &Value, local_namespace: Option<&str>) -> Result<(), ApiError> {
    let spec = &review["spec"];
    let present = |key: &str| spec.get(key).is_some_and(Value::is_object);
    let mut causes = Vec::new();
    match (present("resourceAttributes"), present("nonResourceAttributes")) {
        (true, true) => causes.push(FieldError::invalid(
            "spec.nonResourceAttributes",
            &spec["nonResourceAttributes"],
            "cannot be specified in combination with resourceAttributes",
        )),
        (false, false) => causes.push(FieldError::invalid(
            "spec.resourceAttributes",
            &Value::Null,
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
        _ => {}
    }
    if kind != "SelfSubjectAccessReview"
        && spec["user"].as_str().unwrap_or_default().is_empty()
        && spec["groups"].as_array().is_none_or(Vec::is_empty)
    {
        causes.push(FieldError::invalid("spec.user", &Value::Null, "at least one of user or group must be specified"));
    }
    if let Some(namespace) = local_namespace {
        if present("nonResourceAttributes") {
            causes.push(FieldError::invalid(
                "spec.nonResourceAttributes",
                &spec["nonResourceAttributes"],
                "disallowed on this kind of request",
            ));
        }
        let asked = spec.pointer("/resourceAttributes/namespace").and_then(Value::as_str).unwrap_or_default();
        if present("resourceAttributes") && asked != namespace {
            causes.push(FieldError::invalid(
                "spec.resourceAttributes.namespace",
                &json!(asked),
                "must match metadata.namespace",
            ));
        }
    }
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid("authorization.k8s.io", kind, "", causes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_comes_from_the_spec_as_given() {
        let review = json!({"spec": {"user": "alice", "groups": ["dev"], "extra": {"scopes": ["a", "b"]}}});
        let user = subject(&review);
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, vec!["dev".to_string()]);
        assert_eq!(user.extra["scopes"], vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn reviews_need_exactly_one_kind_of_attributes_and_a_subject() {
        let none = json!({"spec": {"user": "alice"}});
        let err = validate("SubjectAccessReview", &none, None).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(err.message.contains("exactly one of nonResourceAttributes or resourceAttributes"), "{}", err.message);
        let nobody = json!({"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}});
        let err = validate("SubjectAccessReview", &nobody, None).unwrap_err();
        assert!(err.message.contains("at least one of user or group"), "{}", err.message);
        assert!(validate("SelfSubjectAccessReview", &nobody, None).is_ok());
    }

    #[test]
    fn a_local_review_must_ask_about_its_own_namespace() {
        let other = json!({"spec": {"user": "a", "resourceAttributes": {"namespace": "prod", "verb": "get", "resource": "pods"}}});
        let err = validate("LocalSubjectAccessReview", &other, Some("dev")).unwrap_err();
        assert!(err.message.contains("must match metadata.namespace"), "{}", err.message);
        let same = json!({"spec": {"user": "a", "resourceAttributes": {"namespace": "dev", "verb": "get", "resource": "pods"}}});
        assert!(validate("LocalSubjectAccessReview", &same, Some("dev")).is_ok());
    }
}
