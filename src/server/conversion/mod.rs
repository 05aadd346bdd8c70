//! Resources served in one version and stored in another, as upstream
//! converts them through its internal version: `events.k8s.io/v1` Events are
//! the core `v1` Events under other field names, `autoscaling/v1`
//! HorizontalPodAutoscalers are the `autoscaling/v2` ones with a single CPU
//! target. The REST layer works on the stored form and converts requests in
//! and responses out (`rest::converted`).

mod events;
mod hpa;

use serde_json::Value;

/// How one served version maps onto its stored version.
pub struct Conversion {
    /// The served resource: (group, version, plural).
    pub served: (&'static str, &'static str, &'static str),
    /// The resource whose objects hold the data: (group, version, plural).
    pub stored: (&'static str, &'static str, &'static str),
    /// The served kind, e.g. `Event` (its list is `<kind>List`).
    pub kind: &'static str,
    /// Stored object → served object.
    pub to_served: fn(&Value) -> Value,
    /// Served object → stored object.
    pub to_stored: fn(&Value) -> Value,
}

impl Conversion {
    pub fn served_api_version(&self) -> String {
        format!("{}/{}", self.served.0, self.served.1)
    }

    fn stored_api_version(&self) -> String {
        if self.stored.0.is_empty() {
            self.stored.1.to_string()
        } else {
            format!("{}/{}", self.stored.0, self.stored.1)
        }
    }

    /// A stored object, list or watch event converted for the client; other
    /// values (a `Status`, a `Table`) pass unchanged.
    pub fn response(&self, value: Value) -> Value {
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default();
        let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let stored_kind = self.stored_kind();
        if api_version != self.stored_api_version() {
            return value;
        }
        if kind == stored_kind {
            return (self.to_served)(&value);
        }
        if kind == format!("{stored_kind}List") {
            let mut list = value;
            list["apiVersion"] = Value::String(self.served_api_version());
            list["kind"] = Value::String(format!("{}List", self.kind));
            if let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) {
                for item in items.iter_mut() {
                    // Items of a list carry no kind on the wire in some paths; give them one.
                    if item.get("kind").is_none() {
                        item["kind"] = Value::String(stored_kind.to_string());
                        item["apiVersion"] = Value::String(self.stored_api_version());
                    }
                    *item = (self.to_served)(item);
                }
            }
            return list;
        }
        value
    }

    /// The kind of the stored objects (the same as the served kind for both conversions).
    fn stored_kind(&self) -> &'static str {
        self.kind
    }
}

/// Every served-but-converted resource.
pub const CONVERSIONS: &[Conversion] = &[
    Conversion {
        served: ("events.k8s.io", "v1", "events"),
        stored: ("", "v1", "events"),
        kind: "Event",
        to_served: events::to_events_v1,
        to_stored: events::to_core_v1,
    },
    Conversion {
        served: ("autoscaling", "v1", "horizontalpodautoscalers"),
        stored: ("autoscaling", "v2", "horizontalpodautoscalers"),
        kind: "HorizontalPodAutoscaler",
        to_served: hpa::to_v1,
        to_stored: hpa::to_v2,
    },
];

/// The conversion of a served resource, if it is one.
pub fn of(group: &str, version: &str, plural: &str) -> Option<&'static Conversion> {
    CONVERSIONS.iter().find(|c| c.served == (group, version, plural))
}

/// Moves `from` to `to` in an object map, if present.
fn rename(obj: &mut serde_json::Map<String, Value>, from: &str, to: &str) {
    if let Some(value) = obj.remove(from) {
        obj.insert(to.to_string(), value);
    }
}
