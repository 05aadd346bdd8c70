//! The Rust types (from k8s-openapi) behind the catalog's built-in kinds, so
//! their schemas can be generated with schemars under upstream's names.

use k8s_openapi::api::{
    admissionregistration, apps, authentication, authorization, autoscaling, batch, certificates, coordination, core,
    discovery, events, networking, node, policy, rbac, scheduling, storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use std::borrow::Cow;

/// One kind with a Rust type: its group-version-kind and how to add its
/// schema (and everything it references) to a generator.
pub struct KindType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The schema's name, e.g. `io.k8s.api.core.v1.Pod`.
    pub schema_name: fn() -> Cow<'static, str>,
    /// Adds the schema to the generator's definitions and returns a `$ref` to it.
    pub add: fn(&mut SchemaGenerator) -> Schema,
}

fn add<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

macro_rules! kind_types {
    ($($ty:ty),* $(,)?) => {
        &[$(KindType {
            group: <$ty as k8s_openapi::Resource>::GROUP,
            version: <$ty as k8s_openapi::Resource>::VERSION,
            kind: <$ty as k8s_openapi::Resource>::KIND,
            schema_name: <$ty as JsonSchema>::schema_name,
            add: add::<$ty>,
        }),*]
    };
}

/// Every kind with a Rust type; kinds missing here get a permissive schema.
pub const KIND_TYPES: &[KindType] = kind_types![
    core::v1::Pod,
    core::v1::ComponentStatus,
    core::v1::Service,
    core::v1::Endpoints,
    core::v1::Namespace,
    core::v1::Node,
    core::v1::ConfigMap,
    core::v1::Secret,
    core::v1::ServiceAccount,
    core::v1::PersistentVolume,
    core::v1::PersistentVolumeClaim,
    core::v1::Event,
    events::v1::Event,
    core::v1::LimitRange,
    core::v1::ResourceQuota,
    core::v1::ReplicationController,
    core::v1::PodTemplate,
    core::v1::Binding,
    apps::v1::Deployment,
    apps::v1::ReplicaSet,
    apps::v1::StatefulSet,
    apps::v1::DaemonSet,
    apps::v1::ControllerRevision,
    batch::v1::Job,
    batch::v1::CronJob,
    autoscaling::v1::Scale,
    autoscaling::v1::HorizontalPodAutoscaler,
    autoscaling::v2::HorizontalPodAutoscaler,
    policy::v1::PodDisruptionBudget,
    policy::v1::Eviction,
    rbac::v1::Role,
    rbac::v1::RoleBinding,
    rbac::v1::ClusterRole,
    rbac::v1::ClusterRoleBinding,
    networking::v1::Ingress,
    networking::v1::IngressClass,
    networking::v1::NetworkPolicy,
    discovery::v1::EndpointSlice,
    coordination::v1::Lease,
    storage::v1::StorageClass,
    storage::v1::CSIDriver,
    storage::v1::CSINode,
    storage::v1::VolumeAttachment,
    scheduling::v1::PriorityClass,
    node::v1::RuntimeClass,
    certificates::v1::CertificateSigningRequest,
    apiextensions::v1::CustomResourceDefinition,
    admissionregistration::v1::MutatingWebhookConfiguration,
    admissionregistration::v1::ValidatingWebhookConfiguration,
    authentication::v1::TokenReview,
    authentication::v1::TokenRequest,
    authentication::v1::SelfSubjectReview,
    authorization::v1::SelfSubjectAccessReview,
    authorization::v1::SelfSubjectRulesReview,
    authorization::v1::SubjectAccessReview,
    authorization::v1::LocalSubjectAccessReview,
];

/// The Rust type of `group/version` `kind`, if there is one.
pub fn lookup(group: &str, version: &str, kind: &str) -> Option<&'static KindType> {
    KIND_TYPES.iter().find(|k| k.group == group && k.version == version && k.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_kind_has_a_type() {
        let catalog = crate::server::catalog::Catalog::builtin();
        // Resource metrics are computed views without a k8s-openapi type.
        for res in catalog.all().into_iter().filter(|r| r.group != crate::server::resource_metrics::GROUP) {
            assert!(lookup(&res.group, &res.version, &res.kind).is_some(), "{} has no Rust type", res.kind);
        }
    }

    #[test]
    fn names_follow_upstream() {
        let pod = lookup("", "v1", "Pod").map(|k| (k.schema_name)());
        assert_eq!(pod.as_deref(), Some("io.k8s.api.core.v1.Pod"));
        let deploy = lookup("apps", "v1", "Deployment").map(|k| (k.schema_name)());
        assert_eq!(deploy.as_deref(), Some("io.k8s.api.apps.v1.Deployment"));
    }
}
