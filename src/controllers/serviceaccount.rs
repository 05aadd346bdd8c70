//! Per-namespace defaults: every active namespace gets the `default`
//! ServiceAccount and the `kube-root-ca.crt` ConfigMap holding the cluster
//! CA (upstream's serviceaccounts and root-ca-cert-publisher controllers).

use super::Context;
use super::objects;
use super::queue::{self, Action, Key};
use crate::server::error::ApiError;
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(ctx: Context, shutdown: CancellationToken) {
    queue::run(ctx, shutdown, "serviceaccount", ("", "v1", "namespaces"), Duration::from_secs(300), reconcile).await;
}

async fn ensure(ctx: &Context, plural: &str, ns: &str, obj: serde_json::Value) -> Result<(), ApiError> {
    let gvr = ("", "v1", plural);
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
    if objects::get(ctx, gvr, ns, &name).await?.is_some() {
        return Ok(());
    }
    match ctx.client.create(&objects::path(ctx, gvr, Some(ns), None, None)?, obj).await {
        Ok(_) => Ok(()),
        // Already created, or the namespace started terminating meanwhile.
        Err(err) if err.code == 409 || err.code == 403 || err.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}

async fn reconcile(ctx: Context, (_, ns): Key) -> Result<Action, ApiError> {
    let Some(namespace) = objects::get(&ctx, ("", "v1", "namespaces"), "", &ns).await? else { return Ok(Action::Done) };
    if namespace.pointer("/metadata/deletionTimestamp").is_some() {
        return Ok(Action::Done);
    }
    ensure(
        &ctx,
        "serviceaccounts",
        &ns,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
    )
    .await?;
    let root_ca = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-root-ca.crt", "annotations": {"kubernetes.io/description":
            "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
        "data": {"ca.crt": ctx.ca_pem},
    });
    ensure(&ctx, "configmaps", &ns, root_ca).await?;
    Ok(Action::Done)
}
