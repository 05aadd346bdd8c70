//! `events.k8s.io/v1` Event ⇄ core `v1` Event: the same object, with the
//! newer API's names (`regarding`, `note`, `deprecated*` …).

use super::rename;
use serde_json::Value;

/// (core v1 name, events.k8s.io/v1 name)
const RENAMES: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

pub fn to_events_v1(core: &Value) -> Value {
    let mut event = core.clone();
    if let Some(obj) = event.as_object_mut() {
        for (core_name, new_name) in RENAMES {
            rename(obj, core_name, new_name);
        }
        obj.insert("apiVersion".into(), Value::String("events.k8s.io/v1".into()));
        // Upstream leaves these out when empty.
        for empty in ["deprecatedFirstTimestamp", "deprecatedLastTimestamp"] {
            if obj.get(empty).is_some_and(Value::is_null) {
                obj.remove(empty);
            }
        }
        if obj.get("deprecatedCount").and_then(Value::as_i64) == Some(0) {
            obj.remove("deprecatedCount");
        }
    }
    event
}

pub fn to_core_v1(event: &Value) -> Value {
    let mut core = event.clone();
    if let Some(obj) = core.as_object_mut() {
        for (core_name, new_name) in RENAMES {
            rename(obj, new_name, core_name);
        }
        obj.insert("apiVersion".into(), Value::String("v1".into()));
    }
    core
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renames_round_trip() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "hi", "reason": "Started",
            "count": 3, "firstTimestamp": "2026-01-01T00:00:00Z", "source": {"component": "kubelet"},
            "reportingComponent": "kubelet", "type": "Normal"});
        let event = to_events_v1(&core);
        assert_eq!(event["apiVersion"], "events.k8s.io/v1");
        assert_eq!(event["regarding"]["name"], "p");
        assert_eq!(event["note"], "hi");
        assert_eq!(event["deprecatedCount"], 3);
        assert_eq!(event["reportingController"], "kubelet");
        assert!(event.get("message").is_none());
        assert_eq!(to_core_v1(&event), core);
    }
}
