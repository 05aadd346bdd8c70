//! Turns a resource request's method and path into what it addresses
//! (group, version, namespace, resource, name, subresource) and its verb,
//! as upstream's RequestInfoResolver does.

use http::Method;

/// What an API request addresses.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RequestInfo {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: &'static str,
}

/// Parses `/api/v1/...` and `/apis/<group>/<version>/...`; `None` for paths
/// that are not resource paths (discovery, health, unknown).
pub fn parse(method: &Method, path: &str, query_watch: bool) -> Option<RequestInfo> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, mut rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let mut legacy_watch = false;
    if rest.first() == Some(&"watch") {
        legacy_watch = true;
        rest = &rest[1..];
    }
    if rest.is_empty() || rest.iter().any(|s| s.is_empty()) {
        return None;
    }
    let (namespace, rest) = match rest {
        ["namespaces", ns, resource, tail @ ..] => (Some(ns.to_string()), {
            let mut v = vec![*resource];
            v.extend_from_slice(tail);
            v
        }),
        _ => (None, rest.to_vec()),
    };
    let (namespace, resource, name, subresource) = match (namespace, rest.as_slice()) {
        // `/api/v1/namespaces/<name>[/status]` addresses the namespace itself.
        (None, ["namespaces", name, tail @ ..]) if tail.len() <= 1 => {
            (None, "namespaces", Some(*name), tail.first().copied())
        }
        (ns, [resource]) => (ns, *resource, None, None),
        (ns, [resource, name]) => (ns, *resource, Some(*name), None),
        (ns, [resource, name, sub]) => (ns, *resource, Some(*name), Some(*sub)),
        _ => return None,
    };
    // `/api/v1/namespaces/<ns>/status` first parses as a namespaced `status` list:
    let (namespace, resource, name, subresource) = match (namespace, resource, name, subresource) {
        (Some(ns), sub @ ("status" | "finalize"), None, None) => (None, "namespaces", Some(ns), Some(sub.to_string())),
        (ns, resource, name, sub) => (ns, resource, name.map(str::to_string), sub.map(str::to_string)),
    };
    let verb = match *method {
        Method::GET | Method::HEAD if legacy_watch || (query_watch && subresource.is_none()) => "watch",
        Method::GET | Method::HEAD if name.is_some() => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => return None,
    };
    Some(RequestInfo {
        group: group.to_string(),
        version: version.to_string(),
        namespace,
        resource: resource.to_string(),
        name,
        subresource,
        verb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: Method, path: &str) -> RequestInfo {
        parse(&method, path, false).unwrap()
    }

    #[test]
    fn namespaced_and_cluster_paths() {
        let pod = info(Method::GET, "/api/v1/namespaces/default/pods/web");
        assert_eq!(
            (pod.namespace.as_deref(), pod.resource.as_str(), pod.name.as_deref()),
            (Some("default"), "pods", Some("web"))
        );
        assert_eq!(pod.verb, "get");
        let list = info(Method::GET, "/apis/apps/v1/deployments");
        assert_eq!((list.group.as_str(), list.verb, list.namespace), ("apps", "list", None));
        let log = info(Method::GET, "/api/v1/namespaces/default/pods/web/log");
        assert_eq!(log.subresource.as_deref(), Some("log"));
        assert_eq!(info(Method::DELETE, "/api/v1/namespaces/default/pods").verb, "deletecollection");
        assert_eq!(info(Method::PATCH, "/api/v1/nodes/nas/status").subresource.as_deref(), Some("status"));
    }

    #[test]
    fn namespaces_address_themselves() {
        let ns = info(Method::GET, "/api/v1/namespaces/kube-system");
        assert_eq!((ns.resource.as_str(), ns.name.as_deref(), ns.namespace), ("namespaces", Some("kube-system"), None));
        let finalize = info(Method::PUT, "/api/v1/namespaces/demo/finalize");
        assert_eq!((finalize.name.as_deref(), finalize.subresource.as_deref()), (Some("demo"), Some("finalize")));
        assert_eq!(info(Method::GET, "/api/v1/namespaces").verb, "list");
    }

    #[test]
    fn watch_by_query_or_legacy_prefix() {
        assert_eq!(parse(&Method::GET, "/api/v1/namespaces/default/pods", true).unwrap().verb, "watch");
        let legacy = info(Method::GET, "/api/v1/watch/namespaces/default/pods");
        assert_eq!((legacy.verb, legacy.namespace.as_deref()), ("watch", Some("default")));
        assert!(parse(&Method::GET, "/apis/apps", false).is_none());
        assert!(parse(&Method::GET, "/healthz", false).is_none());
    }
}
