//! The default ClusterRoles and ClusterRoleBindings every cluster starts
//! with (upstream's bootstrap policy): cluster-admin for `system:masters`,
//! discovery and self-review for every authenticated user, the user-facing
//! admin / edit / view roles, and the node role for agents.

use serde_json::{Value, json};

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

fn role(name: &str, rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                     "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "rules": rules,
    })
}

fn binding(name: &str, role: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> =
        groups.iter().map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g})).collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                     "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

/// Namespaced resources users work with, by API group.
fn workload_rules(verbs: &[&str], with_secrets: bool) -> Vec<Value> {
    let mut core = vec![
        "pods",
        "pods/log",
        "pods/status",
        "services",
        "services/status",
        "endpoints",
        "configmaps",
        "persistentvolumeclaims",
        "persistentvolumeclaims/status",
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "replicationcontrollers/status",
        "serviceaccounts",
        "events",
        "limitranges",
        "resourcequotas",
        "resourcequotas/status",
        "podtemplates",
    ];
    if with_secrets {
        core.push("secrets");
    }
    vec![
        rule(&[""], &core, verbs),
        rule(
            &["apps"],
            &[
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
                "daemonsets",
                "daemonsets/status",
                "controllerrevisions",
            ],
            verbs,
        ),
        rule(&["batch"], &["jobs", "jobs/status", "cronjobs", "cronjobs/status"], verbs),
        rule(&["autoscaling"], &["horizontalpodautoscalers", "horizontalpodautoscalers/status"], verbs),
        rule(&["policy"], &["poddisruptionbudgets", "poddisruptionbudgets/status"], verbs),
        rule(&["networking.k8s.io"], &["ingresses", "ingresses/status", "networkpolicies"], verbs),
        rule(&["discovery.k8s.io"], &["endpointslices"], verbs),
        rule(&["coordination.k8s.io"], &["leases"], verbs),
    ]
}

/// Every default ClusterRole and ClusterRoleBinding.
pub fn objects() -> (Vec<Value>, Vec<Value>) {
    let mut view = workload_rules(READ, false);
    view.push(rule(&[""], &["namespaces", "namespaces/status"], READ));
    let mut edit = workload_rules(READ, true);
    edit.extend(workload_rules(WRITE, true));
    edit.push(rule(
        &[""],
        &["pods/exec", "pods/attach", "pods/portforward", "pods/eviction", "serviceaccounts/token"],
        &["create", "get"],
    ));
    edit.push(rule(&[""], &["namespaces"], READ));
    let mut admin = edit.clone();
    admin.push(rule(
        &["rbac.authorization.k8s.io"],
        &["roles", "rolebindings"],
        &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
    ));
    admin.push(rule(&["authorization.k8s.io"], &["localsubjectaccessreviews"], &["create"]));
    // metrics-server's `system:aggregated-metrics-reader`, aggregated to view, edit and admin.
    let metrics = rule(&["metrics.k8s.io"], &["pods", "nodes"], &["get", "list", "watch"]);
    for role in [&mut view, &mut edit, &mut admin] {
        role.push(metrics.clone());
    }
    let roles = vec![
        role("cluster-admin", vec![rule(&["*"], &["*"], &["*"]), json!({"nonResourceURLs": ["*"], "verbs": ["*"]})]),
        role(
            "system:discovery",
            vec![json!({"nonResourceURLs": [
            "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz",
            "/version", "/version/"], "verbs": ["get"]})],
        ),
        role(
            "system:public-info-viewer",
            vec![json!({"nonResourceURLs": [
            "/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]})],
        ),
        role(
            "system:basic-user",
            vec![
                rule(&["authorization.k8s.io"], &["selfsubjectaccessreviews", "selfsubjectrulesreviews"], &["create"]),
                rule(&["authentication.k8s.io"], &["selfsubjectreviews"], &["create"]),
            ],
        ),
        role("admin", admin),
        role("edit", edit),
        role("view", view),
        role(
            "system:node",
            vec![
                rule(&[""], &["nodes"], &["create", "get", "list", "watch", "patch", "update", "delete"]),
                rule(&[""], &["nodes/status"], &["patch", "update"]),
                rule(&[""], &["pods"], &["get", "list", "watch", "create", "delete"]),
                rule(&[""], &["pods/status"], &["patch", "update"]),
                rule(&[""], &["pods/eviction"], &["create"]),
                rule(&[""], &["events"], &["create", "patch", "update"]),
                // Only `get` for what pods reference by name, as upstream: a node
                // cannot list the cluster's secrets.
                rule(&[""], &["configmaps", "secrets"], &["get"]),
                rule(&[""], &["services", "endpoints", "persistentvolumeclaims", "persistentvolumes"], READ),
                rule(&[""], &["serviceaccounts/token"], &["create"]),
                rule(&["discovery.k8s.io"], &["endpointslices"], READ),
                // The agent is also the service proxy and enforces NetworkPolicies
                // (k3s's agent does this under its own controller identity).
                rule(&[""], &["namespaces"], READ),
                rule(&["networking.k8s.io"], &["networkpolicies"], READ),
                rule(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["create", "delete", "get", "patch", "update", "list", "watch"],
                ),
                rule(&["certificates.k8s.io"], &["certificatesigningrequests"], &["create", "get", "list", "watch"]),
                rule(&["storage.k8s.io"], &["csidrivers", "csinodes", "volumeattachments"], READ),
                rule(&["node.k8s.io"], &["runtimeclasses"], READ),
            ],
        ),
    ];
    let bindings = vec![
        binding("cluster-admin", "cluster-admin", &["system:masters"]),
        binding("system:discovery", "system:discovery", &["system:authenticated"]),
        binding("system:basic-user", "system:basic-user", &["system:authenticated"]),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
        binding("system:node", "system:node", &["system:nodes"]),
    ];
    (roles, bindings)
}

#[cfg(test)]
mod tests {
    use super::super::rbac::{Attributes, role_allows};
    use super::*;

    fn find<'a>(roles: &'a [Value], name: &str) -> &'a Value {
        roles.iter().find(|r| r["metadata"]["name"] == name).unwrap()
    }

    #[test]
    fn view_reads_but_never_secrets_and_edit_writes() {
        let (roles, bindings) = objects();
        let get =
            |resource| Attributes::Resource { verb: "get", group: "", resource, namespace: Some("x"), name: None };
        assert!(role_allows(find(&roles, "view"), &get("pods")));
        assert!(!role_allows(find(&roles, "view"), &get("secrets")));
        let create = Attributes::Resource {
            verb: "create",
            group: "apps",
            resource: "deployments",
            namespace: Some("x"),
            name: None,
        };
        assert!(role_allows(find(&roles, "edit"), &create));
        assert!(!role_allows(find(&roles, "view"), &create));
        assert!(role_allows(
            find(&roles, "system:discovery"),
            &Attributes::NonResource { verb: "get", path: "/apis/apps/v1" }
        ));
        assert_eq!(bindings.len(), 5);
    }

    #[test]
    fn view_edit_and_admin_read_resource_metrics() {
        let (roles, _) = objects();
        let list = Attributes::Resource {
            verb: "list",
            group: "metrics.k8s.io",
            resource: "pods",
            namespace: Some("x"),
            name: None,
        };
        for role in ["view", "edit", "admin"] {
            assert!(role_allows(find(&roles, role), &list), "{role}");
        }
    }
}
