//! Per-kind behaviour of built-in resources, as upstream's registry strategies:
//! defaulting, create/update preparation (status and generation handling) and
//! validation. The REST layer calls these through [`strategy`]; each API group
//! has its own file.
//!
//! Order of use, as upstream: decode → [`KindStrategy::default`] →
//! `prepare_for_*` → mutating admission → `validate_*` → store.

pub mod admissionregistration;
pub mod apiextensions;
pub mod apps;
pub mod autoscaling;
pub mod batch;
pub mod certificates;
pub mod coordination;
pub mod core;
pub mod defaults;
pub mod discovery;
pub mod events;
pub mod meta;
pub mod networking;
pub mod node;
pub mod pod_admission;
pub mod policy;
pub mod rbac;
pub mod scheduling;
pub mod storage;

use crate::server::error::FieldError;
use serde_json::Value;

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// The object itself: spec and metadata change, status is kept from the old object.
    Main,
    /// `/status`: only status (and metadata labels/annotations) change.
    Status,
}

/// The naming rule for `metadata.name` of a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// Most kinds: a DNS-1123 subdomain (253 characters).
    Dns1123Subdomain,
    /// Namespaces and a few others: a DNS-1123 label (63 characters).
    Dns1123Label,
    /// Services: a DNS-1035 label (starts with a letter).
    Dns1035Label,
    /// RBAC kinds and a few others: any path segment (no `/`, `%`, `.` or `..`).
    PathSegment,
}

/// The behaviour of one built-in kind. Implementations work on JSON values (the
/// stored form) and usually go through the k8s-openapi type inside.
pub trait KindStrategy: Sync {
    /// Whether objects of the kind live in a namespace.
    fn namespaced(&self) -> bool;

    fn name_rule(&self) -> NameRule {
        NameRule::Dns1123Subdomain
    }

    /// Upstream's `SetDefaults_*` for the kind and everything it contains.
    fn default(&self, _obj: &mut Value) {}

    /// Before a create: e.g. reset status, set `generation` to 1.
    fn prepare_for_create(&self, _obj: &mut Value) {}

    /// Before an update: keep status (Main) or spec (Status) from `old`, bump
    /// `generation` when the spec changed.
    fn prepare_for_update(&self, _new: &mut Value, _old: &Value, _subresource: Subresource) {}

    /// Field errors of a new object (ObjectMeta is checked by the caller).
    fn validate_create(&self, _obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    /// Field errors of an update (immutable fields, transitions).
    fn validate_update(&self, _new: &Value, _old: &Value, _subresource: Subresource) -> Vec<FieldError> {
        Vec::new()
    }
}

/// The strategy of a built-in kind, or `None` for kinds without special
/// behaviour (and custom resources).
pub fn strategy(group: &str, kind: &str) -> Option<&'static dyn KindStrategy> {
    match group {
        "" => core::strategy(kind),
        "apps" => apps::strategy(kind),
        "batch" => batch::strategy(kind),
        "autoscaling" => autoscaling::strategy(kind),
        "policy" => policy::strategy(kind),
        "rbac.authorization.k8s.io" => rbac::strategy(kind),
        "networking.k8s.io" => networking::strategy(kind),
        "discovery.k8s.io" => discovery::strategy(kind),
        "coordination.k8s.io" => coordination::strategy(kind),
        "storage.k8s.io" => storage::strategy(kind),
        "scheduling.k8s.io" => scheduling::strategy(kind),
        "node.k8s.io" => node::strategy(kind),
        "events.k8s.io" => events::strategy(kind),
        "certificates.k8s.io" => certificates::strategy(kind),
        "apiextensions.k8s.io" => apiextensions::strategy(kind),
        "admissionregistration.k8s.io" => admissionregistration::strategy(kind),
        _ => None,
    }
}
