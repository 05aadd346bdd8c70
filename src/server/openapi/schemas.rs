//! The schema half of the documents: schemars generates the k8s-openapi
//! types under upstream's names (`io.k8s.api.core.v1.Pod`), and this file
//! adds what kubectl reads besides the shapes: `x-kubernetes-group-version-kind`
//! on kinds, list kinds, and strategic-merge-patch keys on lists.

use super::kinds;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ListMeta, Patch, Status};
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use schemars::transform::ReplaceBoolSchemas;
use serde_json::{Map, Value, json};

/// Which document the schemas go into; it decides where `$ref`s point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// OpenAPI 3.0: `#/components/schemas/...`, `$ref` siblings moved into `allOf`.
    V3,
    /// Swagger 2.0: `#/definitions/...`, `$ref` with a sibling `description` as upstream.
    V2,
}

/// The patch strategy upstream's Go struct tags give these list fields,
/// which kubectl's client-side apply reads from the schema (by schema, field).
const PATCH_STRATEGIES: &[(&str, &str, &str, Option<&str>)] = &[
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", "merge", None),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", "merge", Some("uid")),
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", Some("ip")),
    ("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", "merge", Some("topologyKey")),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", "merge,retainKeys", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", "merge", Some("name")),
    ("io.k8s.api.core.v1.Container", "ports", "merge", Some("containerPort")),
    ("io.k8s.api.core.v1.Container", "env", "merge", Some("name")),
    ("io.k8s.api.core.v1.Container", "volumeMounts", "merge", Some("mountPath")),
    ("io.k8s.api.core.v1.Container", "volumeDevices", "merge", Some("devicePath")),
    ("io.k8s.api.core.v1.EphemeralContainer", "ports", "merge", Some("containerPort")),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", "merge", Some("name")),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", "merge", Some("mountPath")),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", "merge", Some("devicePath")),
    ("io.k8s.api.core.v1.PodStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", Some("ip")),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", Some("ip")),
    ("io.k8s.api.core.v1.PodStatus", "resourceClaimStatuses", "merge,retainKeys", Some("name")),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", None),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", "merge", Some("type")),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", Some("port")),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", "merge", Some("name")),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.ReplicationControllerStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", "retainKeys", None),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", "conditions", "merge", Some("type")),
];

/// The schema name of a kind without a Rust type, as upstream names custom
/// resources: the group reversed, then version and kind (`com.example.v1.Widget`).
fn custom_name(group: &str, version: &str, kind: &str) -> String {
    let mut parts: Vec<&str> = group.split('.').filter(|p| !p.is_empty()).collect();
    parts.reverse();
    parts.push(version);
    parts.push(kind);
    parts.join(".")
}

/// `{group, version, kind}`, the value of `x-kubernetes-group-version-kind`.
pub fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// The schemas of one document, collected as paths ask for them.
pub struct SchemaSet {
    flavor: Flavor,
    generator: SchemaGenerator,
    /// Schemas built here rather than by schemars: lists and custom kinds.
    extra: Map<String, Value>,
    /// The group-version-kinds each schema stands for.
    kinds: Vec<(String, Value)>,
}

impl SchemaSet {
    pub fn new(flavor: Flavor) -> SchemaSet {
        let settings = match flavor {
            Flavor::V3 => SchemaSettings::openapi3().with(|s| s.meta_schema = None),
            Flavor::V2 => SchemaSettings::draft07().with(|s| {
                s.definitions_path = "/definitions".into();
                s.meta_schema = None;
                let mut bools = ReplaceBoolSchemas::default();
                bools.skip_additional_properties = true;
                s.transforms = vec![Box::new(bools)];
            }),
        };
        SchemaSet { flavor, generator: settings.into_generator(), extra: Map::new(), kinds: Vec::new() }
    }

    /// A `$ref` to the named schema.
    pub fn reference(&self, name: &str) -> Value {
        let prefix = match self.flavor {
            Flavor::V3 => "#/components/schemas/",
            Flavor::V2 => "#/definitions/",
        };
        json!({ "$ref": format!("{prefix}{name}") })
    }

    /// Adds the schema of a kind and returns its name.
    pub fn add_kind(&mut self, group: &str, version: &str, kind: &str) -> String {
        let name = match kinds::lookup(group, version, kind) {
            Some(typed) => {
                (typed.add)(&mut self.generator);
                (typed.schema_name)().into_owned()
            }
            None => {
                let name = custom_name(group, version, kind);
                self.extra.entry(name.clone()).or_insert_with(|| {
                    json!({
                        "description": format!("{kind} is a resource without a published schema."),
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": true,
                    })
                });
                name
            }
        };
        self.tag(&name, group, version, kind);
        name
    }

    /// Adds `<Kind>List` for the kind whose schema is `item` and returns its name.
    pub fn add_list(&mut self, group: &str, version: &str, kind: &str, item: &str) -> String {
        let list_meta = self.meta::<ListMeta>();
        let name = format!("{item}List");
        let list_kind = format!("{kind}List");
        let schema = json!({
            "description": format!("{list_kind} is a list of {kind} objects."),
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
                "items": {"description": format!("List of {kind} objects."), "type": "array", "items": self.reference(item)},
                "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
                "metadata": self.with_description(&list_meta, "Standard list metadata."),
            },
        });
        self.extra.insert(name.clone(), schema);
        self.tag(&name, group, version, &list_kind);
        name
    }

    /// The names of the `Status`, `DeleteOptions` and `Patch` schemas, added.
    pub fn add_common(&mut self) -> (String, String, String) {
        (self.meta::<Status>(), self.meta::<DeleteOptions>(), self.meta::<Patch>())
    }

    fn meta<T: schemars::JsonSchema>(&mut self) -> String {
        self.generator.subschema_for::<T>();
        T::schema_name().into_owned()
    }

    /// A reference with a description, in the shape each flavor wants.
    fn with_description(&self, name: &str, description: &str) -> Value {
        match self.flavor {
            Flavor::V3 => json!({"allOf": [self.reference(name)], "description": description}),
            Flavor::V2 => {
                let mut value = self.reference(name);
                if let Some(map) = value.as_object_mut() {
                    map.insert("description".into(), description.into());
                }
                value
            }
        }
    }

    fn tag(&mut self, name: &str, group: &str, version: &str, kind: &str) {
        let value = gvk(group, version, kind);
        if !self.kinds.iter().any(|(n, v)| n == name && *v == value) {
            self.kinds.push((name.to_string(), value));
        }
    }

    /// Every schema, by name, with the Kubernetes extensions added.
    pub fn finish(mut self) -> Map<String, Value> {
        let mut schemas = self.generator.take_definitions(true);
        schemas.extend(std::mem::take(&mut self.extra));
        for (name, value) in &self.kinds {
            let Some(schema) = schemas.get_mut(name).and_then(Value::as_object_mut) else { continue };
            // Upstream never marks `metadata` required; k8s-openapi does because it is not an Option.
            if let Some(Value::Array(required)) = schema.get_mut("required") {
                required.retain(|r| r != "metadata");
                if required.is_empty() {
                    schema.remove("required");
                }
            }
            let tags = schema.entry("x-kubernetes-group-version-kind").or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(tags) = tags {
                tags.push(value.clone());
            }
        }
        for &(schema, field, strategy, key) in PATCH_STRATEGIES {
            let Some(property) = schemas
                .get_mut(schema)
                .and_then(|s| s.get_mut("properties"))
                .and_then(|p| p.get_mut(field))
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            property.insert("x-kubernetes-patch-strategy".into(), strategy.into());
            if let Some(key) = key {
                property.insert("x-kubernetes-patch-merge-key".into(), key.into());
            }
        }
        schemas.sort_keys();
        schemas
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_carry_their_group_version_kind() {
        let mut set = SchemaSet::new(Flavor::V3);
        let name = set.add_kind("apps", "v1", "Deployment");
        let list = set.add_list("apps", "v1", "Deployment", &name);
        let schemas = set.finish();
        assert_eq!(schemas[&name]["x-kubernetes-group-version-kind"], json!([gvk("apps", "v1", "Deployment")]));
        assert_eq!(schemas[&list]["x-kubernetes-group-version-kind"][0]["kind"], "DeploymentList");
        assert!(schemas[&name].get("required").is_none());
        assert_eq!(
            schemas[&name]["properties"]["metadata"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
    }

    #[test]
    fn lists_of_containers_merge_by_name() {
        let mut set = SchemaSet::new(Flavor::V3);
        set.add_kind("", "v1", "Pod");
        let schemas = set.finish();
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    }

    #[test]
    fn kinds_without_a_type_are_permissive() {
        let mut set = SchemaSet::new(Flavor::V2);
        let name = set.add_kind("stable.example.com", "v1", "CronTab");
        assert_eq!(name, "com.example.stable.v1.CronTab");
        let schemas = set.finish();
        assert_eq!(schemas[&name]["x-kubernetes-preserve-unknown-fields"], true);
        assert_eq!(schemas[&name]["x-kubernetes-group-version-kind"][0]["group"], "stable.example.com");
    }
}
