//! ControllerRevisions of StatefulSets and DaemonSets: one per pod template
//! (`<owner>-<hash>`, numbered like upstream, renumbered when an old
//! template comes back), pruned beyond `revisionHistoryLimit`; what
//! `kubectl rollout history` / `undo` read.

use super::Context;
use super::objects::{self, int_at, name, str_at};
use super::rollout::template_hash;
use crate::server::error::ApiError;
use serde_json::{Value, json};

const REVISIONS: (&str, &str, &str) = ("apps", "v1", "controllerrevisions");
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The revisions `owner` controls.
pub async fn owned(ctx: &Context, owner: &Value) -> Result<Vec<Value>, ApiError> {
    let ns = str_at(owner, "/metadata/namespace");
    Ok(objects::list(ctx, REVISIONS, Some(ns))
        .await?
        .into_iter()
        .filter(|r| objects::controller_uid(r) == Some(objects::uid(owner)))
        .collect())
}

/// The hash of the owner's current pod template.
pub fn current_hash(owner: &Value) -> String {
    let template = owner.pointer("/spec/template").cloned().unwrap_or(json!({}));
    template_hash(&template, int_at(owner, "/status/collisionCount").filter(|c| *c > 0))
}

/// Ensures the revision of the owner's current template and that it is the
/// newest; returns its name (`<owner>-<hash>`).
pub async fn ensure(ctx: &Context, owner: &Value, kind: &str, revisions: &[Value]) -> Result<String, ApiError> {
    let ns = str_at(owner, "/metadata/namespace");
    let hash = current_hash(owner);
    let revision_name = format!("{}-{hash}", name(owner));
    let newest = revisions.iter().filter_map(|r| int_at(r, "/revision")).max().unwrap_or(0);
    if let Some(existing) = revisions.iter().find(|r| name(r) == revision_name) {
        // A template that came back (a rollback) becomes the newest revision again.
        if int_at(existing, "/revision").unwrap_or(0) < newest {
            let path = objects::path(ctx, REVISIONS, Some(ns), Some(&revision_name), None)?;
            let patch = json!({"metadata": {"resourceVersion": str_at(existing, "/metadata/resourceVersion")},
                "revision": newest + 1});
            objects::ignore_gone(ctx.client.merge_patch(&path, patch).await)?;
        }
        return Ok(revision_name);
    }
    let mut labels = owner.pointer("/spec/selector/matchLabels").cloned().unwrap_or(json!({}));
    labels[REVISION_LABEL] = json!(hash);
    let template = owner.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let revision = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": revision_name, "namespace": ns, "labels": labels,
            "ownerReferences": [objects::controller_ref(owner, "apps/v1", kind)]},
        "data": {"spec": {"template": template}}, "revision": newest + 1});
    match ctx.client.create(&objects::path(ctx, REVISIONS, Some(ns), None, None)?, revision).await {
        Ok(_) | Err(ApiError { code: 409, .. }) => Ok(revision_name),
        Err(err) => Err(err),
    }
}

/// Deletes the oldest revisions beyond `revisionHistoryLimit`, never those in `keep`.
pub async fn prune(ctx: &Context, owner: &Value, revisions: &[Value], keep: &[&str]) -> Result<(), ApiError> {
    let limit = int_at(owner, "/spec/revisionHistoryLimit").unwrap_or(10).max(0) as usize;
    let mut old: Vec<&Value> = revisions.iter().filter(|r| !keep.contains(&name(r))).collect();
    old.sort_by_key(|r| int_at(r, "/revision").unwrap_or(0));
    let excess = old.len().saturating_sub(limit);
    let ns = str_at(owner, "/metadata/namespace");
    for revision in old.into_iter().take(excess) {
        let path = objects::path(ctx, REVISIONS, Some(ns), Some(name(revision)), None)?;
        objects::ignore_gone(ctx.client.delete(&path, None).await)?;
    }
    Ok(())
}
