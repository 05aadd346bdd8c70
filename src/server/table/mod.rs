//! Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks
//! for, with upstream's columns per kind (NAME, READY, STATUS, … AGE) and a
//! NAME / AGE table for everything else.

mod columns;
mod hpa;
mod quota;

use super::catalog::ResourceInfo;
use serde_json::{Value, json};

/// A column: name, type, priority (0 = always shown, 1 = only with `-o wide`).
pub struct Column {
    pub name: &'static str,
    pub kind: &'static str,
    pub priority: u8,
}

pub const fn column(name: &'static str, priority: u8) -> Column {
    Column { name, kind: "string", priority }
}

/// Renders `items` of `res` as a Table with the given list metadata.
pub fn render(res: &ResourceInfo, items: &[Value], metadata: Value) -> Value {
    let (columns, cells) = columns::for_kind(&res.group, &res.kind);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.kind, "format": if c.name == "Name" { "name" } else { "" },
                   "description": "", "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            json!({
                "cells": cells(item),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item.get("metadata").cloned().unwrap_or(json!({})),
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

/// Upstream's `duration.HumanDuration`: 45s, 3m20s, 15m, 5h10m, 20h, 3d4h, 40d, 2y10d.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let (d, h) = (hours / 24, hours % 24);
        return if h == 0 { format!("{d}d") } else { format!("{d}d{h}h") };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    let years = hours / (24 * 365);
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 { format!("{years}y") } else { format!("{years}y{d}d") };
    }
    format!("{years}y")
}

/// The age of a timestamp field (RFC 3339), as `kubectl get` shows it.
pub fn age(obj: &Value, pointer: &str) -> Value {
    let Some(text) = obj.pointer(pointer).and_then(Value::as_str) else { return json!("<unknown>") };
    match text.parse::<jiff::Timestamp>() {
        Ok(ts) => json!(human_duration(jiff::Timestamp::now().as_second() - ts.as_second())),
        Err(_) => json!("<unknown>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        for (seconds, text) in [
            (5, "5s"),
            (119, "119s"),
            (200, "3m20s"),
            (240, "4m"),
            (900, "15m"),
            (5 * 3600 + 600, "5h10m"),
            (20 * 3600, "20h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (40 * 86400, "40d"),
        ] {
            assert_eq!(human_duration(seconds), text);
        }
    }

    #[test]
    fn tables_carry_metadata_per_row() {
        let res = crate::server::catalog::Catalog::builtin().lookup("", "v1", "configmaps").unwrap();
        let cm = json!({"metadata": {"name": "a", "creationTimestamp": "2020-01-01T00:00:00Z"}, "data": {"x": "1", "y": "2"}});
        let table = render(&res, &[cm], json!({"resourceVersion": "5"}));
        assert_eq!(table["rows"][0]["cells"][0], "a");
        assert_eq!(table["rows"][0]["cells"][1], 2);
        assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "a");
        assert_eq!(table["columnDefinitions"][0]["name"], "Name");
    }
}
