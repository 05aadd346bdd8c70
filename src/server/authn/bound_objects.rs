//! A service-account token stays valid only while what it names exists:
//! the service account (same UID) and, for pod-bound tokens, the pod (same
//! UID), as upstream's service-account token validator checks. Deleting
//! either revokes every token issued for it.

use super::UserInfo;
use crate::server::error::ApiError;
use crate::server::state::ApiState;
use serde_json::Value;

const PREFIX: &str = "system:serviceaccount:";
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";

fn uid_of(obj: &Value) -> &str {
    obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default()
}

/// Whether `uid` names the object at `plural`/`namespace`/`name` now.
async fn still_there(state: &ApiState, plural: &str, namespace: &str, name: &str, uid: &str) -> Result<bool, ApiError> {
    let Some(res) = state.catalog.lookup("", "v1", plural) else { return Ok(false) };
    Ok(state.registry.try_get(&res, Some(namespace), name).await?.is_some_and(|obj| uid_of(&obj) == uid))
}

/// 401 when `user` came from a service-account token whose service account
/// or pod is gone (or was recreated under the same name). Other users pass.
pub async fn check(state: &ApiState, user: &UserInfo) -> Result<(), ApiError> {
    let Some((namespace, name)) = user.name.strip_prefix(PREFIX).and_then(|rest| rest.split_once(':')) else {
        return Ok(());
    };
    if user.uid.is_empty() {
        // Not a token this server issued (e.g. a client certificate with that name).
        return Ok(());
    }
    if !still_there(state, "serviceaccounts", namespace, name, &user.uid).await? {
        tracing::debug!(user = %user.name, "token rejected: its service account no longer exists");
        return Err(ApiError::unauthorized());
    }
    let first = |key: &str| user.extra.get(key).and_then(|values| values.first()).cloned();
    if let (Some(pod), Some(pod_uid)) = (first(POD_NAME), first(POD_UID))
        && !still_there(state, "pods", namespace, &pod, &pod_uid).await?
    {
        tracing::debug!(user = %user.name, pod, "token rejected: the pod it is bound to no longer exists");
        return Err(ApiError::unauthorized());
    }
    Ok(())
}
