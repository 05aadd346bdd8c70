//! Listing objects: resource-version semantics (latest, any, exact, not older
//! than), pagination with continue tokens, label and field selectors.

use super::{Registry, decode, store_error};
use crate::server::catalog::ResourceInfo;
use crate::server::error::ApiError;
use crate::server::selectors::{FieldSelector, LabelSelector};
use crate::store::{RangeRequest, Revision};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

/// How a list reads, from its query parameters.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    /// `resourceVersion`: unset = latest (linearizable), 0 = any (may be stale).
    pub resource_version: Option<Revision>,
    /// `resourceVersionMatch=Exact` reads at exactly that revision.
    pub exact: bool,
}

pub struct ListResult {
    pub items: Vec<Value>,
    pub revision: Revision,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

/// A continue token: the revision of the first page and the next key.
fn encode_continue(revision: Revision, next_key: &str) -> String {
    B64.encode(json!({"v": "meta.k8s.io/v1", "rv": revision, "start": next_key}).to_string())
}

fn decode_continue(token: &str, prefix: &str) -> Result<(Revision, String), ApiError> {
    let invalid = || ApiError::bad_request("continue key is not valid: malformed token");
    let bytes = B64.decode(token).map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let revision = value.get("rv").and_then(Value::as_i64).ok_or_else(invalid)?;
    let start = value.get("start").and_then(Value::as_str).ok_or_else(invalid)?;
    if !start.starts_with(prefix) {
        return Err(ApiError::bad_request("continue key is not valid: it belongs to another list"));
    }
    Ok((revision, start.to_string()))
}

impl Registry {
    /// Lists `res` in `namespace` (all namespaces when `None`).
    pub async fn list(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListResult, ApiError> {
        let prefix = res.list_prefix(namespace);
        let (mut revision, mut start) = match &opts.continue_token {
            Some(token) => {
                let (rv, start) = decode_continue(token, &prefix)?;
                (Some(rv), Some(start))
            }
            None => match opts.resource_version {
                Some(rv) if opts.exact || rv > 0 => (Some(rv), None),
                _ => (None, None),
            },
        };
        // metadata.name pins a single key: read it alone.
        let single = opts.fields.exact("metadata.name").filter(|_| namespace.is_some() || !res.namespaced);
        let stale = opts.resource_version == Some(0) && !opts.exact && opts.continue_token.is_none();
        let mut items = Vec::new();
        let limit = opts.limit.filter(|l| *l > 0);
        loop {
            let request = RangeRequest {
                key: match single {
                    Some(name) => format!("{prefix}{name}"),
                    None => prefix.clone(),
                },
                prefix: single.is_none(),
                start: start.clone(),
                revision,
                limit: limit.map(|l| l.saturating_sub(items.len()).max(1)),
            };
            let response = if stale { self.store.range_stale(request).await } else { self.store.range(request).await }
                .map_err(store_error)?;
            revision = Some(response.revision);
            let last_key = response.kvs.last().map(|kv| kv.key.clone());
            for kv in &response.kvs {
                let obj = decode(kv)?;
                if opts.labels.matches(&obj) && opts.fields.matches(&obj) {
                    items.push(obj);
                }
            }
            let full = limit.is_some_and(|l| items.len() >= l);
            match (response.more, last_key) {
                (true, Some(last)) if full => {
                    let next = format!("{last}\u{0}");
                    let remaining = response.count.saturating_sub(response.kvs.len());
                    let token = encode_continue(response.revision, &next);
                    let remaining =
                        if opts.labels.is_empty() && opts.fields.is_empty() { Some(remaining) } else { None };
                    return Ok(ListResult {
                        items,
                        revision: response.revision,
                        continue_token: Some(token),
                        remaining,
                    });
                }
                (true, Some(last)) => start = Some(format!("{last}\u{0}")),
                _ => {
                    return Ok(ListResult {
                        items,
                        revision: response.revision,
                        continue_token: None,
                        remaining: None,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_stay_in_their_list() {
        let token = encode_continue(42, "/registry/core/pods/default/b\u{0}");
        assert_eq!(
            decode_continue(&token, "/registry/core/pods/").unwrap(),
            (42, "/registry/core/pods/default/b\u{0}".into())
        );
        assert_eq!(decode_continue(&token, "/registry/core/secrets/").unwrap_err().code, 400);
        assert_eq!(decode_continue("!!", "/").unwrap_err().code, 400);
    }
}
