//! Patch formats: JSON patch (RFC 6902), JSON merge patch (RFC 7386),
//! strategic merge patch (kubectl's default) and the merge used by
//! server-side apply.

pub mod apply;
pub mod strategic;

use serde_json::Value;

/// The patch formats of upstream's PATCH verb, by content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(content_type: &str) -> Option<PatchKind> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            "application/apply-patch+yaml" => Some(PatchKind::Apply),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("the JSON patch is malformed: {0}")]
    MalformedJsonPatch(String),
    #[error("the JSON patch could not be applied: {0}")]
    JsonPatchFailed(String),
    #[error("the patch must be a JSON object")]
    NotAnObject,
}

/// Applies `patch` of `kind` to `current`, returning the patched object.
pub fn apply(kind: PatchKind, current: &Value, patch: &Value) -> Result<Value, PatchError> {
    let mut doc = current.clone();
    match kind {
        PatchKind::Json => {
            let ops: json_patch::Patch =
                serde_json::from_value(patch.clone()).map_err(|err| PatchError::MalformedJsonPatch(err.to_string()))?;
            json_patch::patch(&mut doc, &ops).map_err(|err| PatchError::JsonPatchFailed(err.to_string()))?;
        }
        PatchKind::Merge => {
            if !patch.is_object() {
                return Err(PatchError::NotAnObject);
            }
            json_patch::merge(&mut doc, patch);
        }
        PatchKind::Strategic | PatchKind::Apply => {
            if !patch.is_object() {
                return Err(PatchError::NotAnObject);
            }
            strategic::merge(&mut doc, patch);
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_and_merge_patches() {
        let obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let merged = apply(PatchKind::Merge, &obj, &json!({"metadata": {"labels": {"a": null, "c": "3"}}})).unwrap();
        assert_eq!(merged, json!({"metadata": {"labels": {"b": "2", "c": "3"}}}));
        let patched =
            apply(PatchKind::Json, &obj, &json!([{"op": "replace", "path": "/metadata/labels/a", "value": "9"}]))
                .unwrap();
        assert_eq!(patched["metadata"]["labels"]["a"], "9");
        let failed = apply(PatchKind::Json, &obj, &json!([{"op": "test", "path": "/metadata/labels/a", "value": "0"}]));
        assert!(matches!(failed, Err(PatchError::JsonPatchFailed(_))));
        assert!(matches!(apply(PatchKind::Json, &obj, &json!({"op": 1})), Err(PatchError::MalformedJsonPatch(_))));
    }
}
