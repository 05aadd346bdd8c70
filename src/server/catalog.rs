//! The catalog of served resources: for each one its group, version, kind,
//! plural and singular names, scope, short names, categories and
//! subresources. Discovery, routing, storage keys and tables all read it.

use std::sync::{Arc, RwLock};

/// One served resource (a built-in kind or, later, a custom resource).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The URL segment: `pods`, `deployments`.
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// `status`, `scale`, `log`, `exec`, `binding`, `eviction`, …
    pub subresources: Vec<String>,
    /// Whether objects are kept in the store (reviews are computed, never stored).
    pub stored: bool,
}

impl ResourceInfo {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// Whether objects are kept under this resource's own keys: stored, and not
    /// a view converted from another resource (`server::conversion`).
    pub fn holds_objects(&self) -> bool {
        self.stored && super::conversion::of(&self.group, &self.version, &self.plural).is_none()
    }

    /// `deployments.apps`, or `pods` for the core group: the name in messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// `v1 componentstatuses`, computed by `server::component_status`.
    pub fn is_component_status(&self) -> bool {
        self.group.is_empty() && self.plural == "componentstatuses"
    }

    /// The verbs of the resource itself, as discovery lists them.
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.group == super::resource_metrics::GROUP || self.is_component_status() {
            return vec!["get", "list"];
        }
        if !self.stored {
            return vec!["create"];
        }
        vec!["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    }

    /// The store prefix of all objects: `/registry/<group>/<plural>/`.
    pub fn key_prefix(&self) -> String {
        let group = if self.group.is_empty() { "core" } else { &self.group };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// The store prefix of one namespace's objects, or of all when `None`.
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/", self.key_prefix()),
            _ => self.key_prefix(),
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/{name}", self.key_prefix()),
            _ => format!("{}{name}", self.key_prefix()),
        }
    }
}

/// Every served resource; custom resources are added and removed at run time.
#[derive(Clone, Default)]
pub struct Catalog {
    resources: Arc<RwLock<Vec<Arc<ResourceInfo>>>>,
}

/// The built-in resources: (group, version, kind, plural, namespaced, short names, categories, subresources).
type Builtin = (&'static str, &'static str, &'static str, &'static str, bool, &'static str, &'static str, &'static str);

const BUILTINS: &[Builtin] = &[
    (
        "",
        "v1",
        "Pod",
        "pods",
        true,
        "po",
        "all",
        "status,log,exec,attach,portforward,binding,eviction,ephemeralcontainers,resize",
    ),
    ("", "v1", "Service", "services", true, "svc", "all", "status,proxy"),
    ("", "v1", "Endpoints", "endpoints", true, "ep", "", ""),
    ("", "v1", "Namespace", "namespaces", false, "ns", "", "status,finalize"),
    ("", "v1", "Node", "nodes", false, "no", "", "status,proxy"),
    ("", "v1", "ConfigMap", "configmaps", true, "cm", "", ""),
    ("", "v1", "Secret", "secrets", true, "", "", ""),
    ("", "v1", "ServiceAccount", "serviceaccounts", true, "sa", "", "token"),
    ("", "v1", "PersistentVolume", "persistentvolumes", false, "pv", "", "status"),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, "pvc", "", "status"),
    ("", "v1", "Event", "events", true, "ev", "", ""),
    ("", "v1", "LimitRange", "limitranges", true, "limits", "", ""),
    ("", "v1", "ResourceQuota", "resourcequotas", true, "quota", "", "status"),
    ("", "v1", "ReplicationController", "replicationcontrollers", true, "rc", "all", "status,scale"),
    ("", "v1", "PodTemplate", "podtemplates", true, "", "", ""),
    ("apps", "v1", "Deployment", "deployments", true, "deploy", "all", "status,scale"),
    ("apps", "v1", "ReplicaSet", "replicasets", true, "rs", "all", "status,scale"),
    ("apps", "v1", "StatefulSet", "statefulsets", true, "sts", "all", "status,scale"),
    ("apps", "v1", "DaemonSet", "daemonsets", true, "ds", "all", "status"),
    ("apps", "v1", "ControllerRevision", "controllerrevisions", true, "", "", ""),
    ("batch", "v1", "Job", "jobs", true, "", "all", "status"),
    ("batch", "v1", "CronJob", "cronjobs", true, "cj", "all", "status"),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true, "hpa", "all", "status"),
    // Served from the v2 objects through `server::conversion`.
    ("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true, "hpa", "all", "status"),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true, "pdb", "", "status"),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", true, "", "", ""),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, "", "", ""),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, "", "", ""),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false, "", "", ""),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", true, "ing", "", "status"),
    ("networking.k8s.io", "v1", "IngressClass", "ingressclasses", false, "", "", ""),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true, "netpol", "", ""),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true, "", "", ""),
    ("coordination.k8s.io", "v1", "Lease", "leases", true, "", "", ""),
    // Served from the core v1 Events through `server::conversion`.
    ("events.k8s.io", "v1", "Event", "events", true, "", "", ""),
    ("storage.k8s.io", "v1", "StorageClass", "storageclasses", false, "sc", "", ""),
    ("storage.k8s.io", "v1", "CSIDriver", "csidrivers", false, "", "", ""),
    ("storage.k8s.io", "v1", "CSINode", "csinodes", false, "", "", ""),
    ("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", false, "", "", "status"),
    ("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", false, "pc", "", ""),
    ("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", false, "", "", ""),
    (
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        false,
        "csr",
        "",
        "status,approval",
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        "crd,crds",
        "api-extensions",
        "status",
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
        "",
        "api-extensions",
        "",
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
        "",
        "api-extensions",
        "",
    ),
];

/// Resources that are computed per request and never stored.
const REVIEWS: &[(&str, &str, &str, &str, bool)] = &[
    ("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", false),
    ("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", false),
    ("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", false),
    ("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", false),
    ("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", false),
    ("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", true),
];

/// Resources computed per request from the agents' usage (`server::resource_metrics`).
const RESOURCE_METRICS: &[(&str, &str, &str, &str, bool)] = &[
    ("metrics.k8s.io", "v1beta1", "NodeMetrics", "nodes", false),
    ("metrics.k8s.io", "v1beta1", "PodMetrics", "pods", true),
];

/// One built-in resource; the array holds the comma-separated short names, categories and subresources.
fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    [short, categories, subresources]: [&str; 3],
    stored: bool,
) -> Arc<ResourceInfo> {
    Arc::new(ResourceInfo {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: split(short),
        categories: split(categories),
        subresources: split(subresources),
        stored,
    })
}

fn split(list: &str) -> Vec<String> {
    list.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

impl Catalog {
    /// The catalog of built-in resources.
    pub fn builtin() -> Catalog {
        let stored =
            BUILTINS.iter().map(|&(group, version, kind, plural, namespaced, short, categories, subresources)| {
                builtin(group, version, kind, plural, namespaced, [short, categories, subresources], true)
            });
        let reviews = REVIEWS.iter().chain(RESOURCE_METRICS).map(|&(group, version, kind, plural, namespaced)| {
            builtin(group, version, kind, plural, namespaced, ["", "", ""], false)
        });
        // Health of the control plane, computed per request (`server::component_status`).
        let component_statuses =
            builtin("", "v1", "ComponentStatus", "componentstatuses", false, ["cs", "", ""], false);
        let resources: Vec<Arc<ResourceInfo>> =
            stored.chain(reviews).chain(std::iter::once(component_statuses)).collect();
        Catalog { resources: Arc::new(RwLock::new(resources)) }
    }

    /// Every resource, in serving order.
    pub fn all(&self) -> Vec<Arc<ResourceInfo>> {
        self.resources.read().map(|r| r.clone()).unwrap_or_default()
    }

    /// The resource `plural` of `group/version`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        let resources = self.resources.read().ok()?;
        resources.iter().find(|r| r.group == group && r.version == version && r.plural == plural).cloned()
    }

    /// The resource serving `kind` in `group/version`.
    pub fn lookup_kind(&self, group: &str, version: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        let resources = self.resources.read().ok()?;
        resources.iter().find(|r| r.group == group && r.version == version && r.kind == kind).cloned()
    }

    /// The groups with their versions, in serving order (core group excluded).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for resource in self.all().iter().filter(|r| !r.group.is_empty()) {
            match groups.iter_mut().find(|(g, _)| *g == resource.group) {
                Some((_, versions)) if !versions.contains(&resource.version) => versions.push(resource.version.clone()),
                Some(_) => {}
                None => groups.push((resource.group.clone(), vec![resource.version.clone()])),
            }
        }
        groups
    }

    /// Adds or replaces resources (custom resources of one CRD).
    pub fn upsert(&self, info: ResourceInfo) {
        if let Ok(mut resources) = self.resources.write() {
            resources.retain(|r| !(r.group == info.group && r.version == info.version && r.plural == info.plural));
            resources.push(Arc::new(info));
        }
    }

    /// Removes every version of `plural.group` (a deleted CRD).
    pub fn remove(&self, group: &str, plural: &str) {
        if let Ok(mut resources) = self.resources.write() {
            resources.retain(|r| !(r.group == group && r.plural == plural));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_registry_layout() {
        let catalog = Catalog::builtin();
        let pods = catalog.lookup("", "v1", "pods").unwrap();
        assert_eq!(pods.key(Some("default"), "web"), "/registry/core/pods/default/web");
        assert_eq!(pods.list_prefix(None), "/registry/core/pods/");
        let nodes = catalog.lookup("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key(Some("ignored"), "nas"), "/registry/core/nodes/nas");
        let deploy = catalog.lookup_kind("apps", "v1", "Deployment").unwrap();
        assert_eq!(deploy.qualified_plural(), "deployments.apps");
        assert_eq!(deploy.short_names, vec!["deploy"]);
    }

    #[test]
    fn groups_list_each_group_once() {
        let groups = Catalog::builtin().groups();
        assert_eq!(groups.iter().filter(|(g, _)| g == "apps").count(), 1);
        assert!(groups.iter().all(|(g, _)| !g.is_empty()));
    }

    #[test]
    fn resource_metrics_are_read_only_and_computed() {
        let catalog = Catalog::builtin();
        let pods = catalog.lookup("metrics.k8s.io", "v1beta1", "pods").unwrap();
        assert_eq!((pods.kind.as_str(), pods.namespaced, pods.stored), ("PodMetrics", true, false));
        assert_eq!(pods.verbs(), vec!["get", "list"]);
        let nodes = catalog.lookup_kind("metrics.k8s.io", "v1beta1", "NodeMetrics").unwrap();
        assert!(!nodes.namespaced);
    }
}
