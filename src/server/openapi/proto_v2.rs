//! The OpenAPI v2 document in gnostic's protobuf form (`openapi.v2.Document`,
//! media types `application/com.github.proto-openapi.spec.v2.v1.0+protobuf`
//! and the deprecated `…spec.v2@v1.0+protobuf`, as kube-openapi serves them),
//! which kubectl asks for — and only for — when it validates a `kind: List`.
//! kubectl reads the definitions (schemas and their `x-kubernetes-*`
//! extensions); paths are left out.

use serde_json::Value;

/// The media types of this document; kubectl v1.34 asks for the second.
pub const MEDIA_TYPES: [&str; 2] = [
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
];

fn varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    key(out, field, 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn string(out: &mut Vec<u8>, field: u32, text: &str) {
    if !text.is_empty() {
        bytes(out, field, text.as_bytes());
    }
}

fn boolean(out: &mut Vec<u8>, field: u32, value: bool) {
    if value {
        key(out, field, 0);
        varint(out, 1);
    }
}

fn int64(out: &mut Vec<u8>, field: u32, value: i64) {
    if value != 0 {
        key(out, field, 0);
        varint(out, value as u64);
    }
}

fn double(out: &mut Vec<u8>, field: u32, value: f64) {
    if value != 0.0 {
        key(out, field, 1);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// `openapi.v2.Any`: the value as YAML text (field 2), as gnostic writes it.
fn any(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let yaml = serde_norway::to_string(value).unwrap_or_default();
    string(&mut out, 2, &yaml);
    out
}

/// `NamedAny` entries for the `x-` keys of an object.
fn vendor_extensions(out: &mut Vec<u8>, field: u32, obj: &serde_json::Map<String, Value>) {
    for (name, value) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
        let mut named = Vec::new();
        string(&mut named, 1, name);
        bytes(&mut named, 2, &any(value));
        bytes(out, field, &named);
    }
}

/// `openapi.v2.Schema` from its JSON form.
fn schema(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(obj) = value.as_object() else { return out };
    let text = |name: &str| obj.get(name).and_then(Value::as_str).unwrap_or_default();
    let number = |name: &str| obj.get(name).and_then(Value::as_f64).unwrap_or(0.0);
    let integer = |name: &str| obj.get(name).and_then(Value::as_i64).unwrap_or(0);
    let flag = |name: &str| obj.get(name).and_then(Value::as_bool).unwrap_or(false);
    string(&mut out, 1, text("$ref"));
    string(&mut out, 2, text("format"));
    string(&mut out, 3, text("title"));
    string(&mut out, 4, text("description"));
    if let Some(default) = obj.get("default") {
        bytes(&mut out, 5, &any(default));
    }
    double(&mut out, 6, number("multipleOf"));
    double(&mut out, 7, number("maximum"));
    boolean(&mut out, 8, flag("exclusiveMaximum"));
    double(&mut out, 9, number("minimum"));
    boolean(&mut out, 10, flag("exclusiveMinimum"));
    int64(&mut out, 11, integer("maxLength"));
    int64(&mut out, 12, integer("minLength"));
    string(&mut out, 13, text("pattern"));
    int64(&mut out, 14, integer("maxItems"));
    int64(&mut out, 15, integer("minItems"));
    boolean(&mut out, 16, flag("uniqueItems"));
    int64(&mut out, 17, integer("maxProperties"));
    int64(&mut out, 18, integer("minProperties"));
    for required in obj.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        string(&mut out, 19, required);
    }
    for option in obj.get("enum").and_then(Value::as_array).into_iter().flatten() {
        bytes(&mut out, 20, &any(option));
    }
    match obj.get("additionalProperties") {
        Some(Value::Bool(allowed)) => {
            let mut item = Vec::new();
            key(&mut item, 2, 0);
            varint(&mut item, u64::from(*allowed));
            bytes(&mut out, 21, &item);
        }
        Some(additional @ Value::Object(_)) => {
            let mut item = Vec::new();
            bytes(&mut item, 1, &schema(additional));
            bytes(&mut out, 21, &item);
        }
        _ => {}
    }
    let types: Vec<&str> = match obj.get("type") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() {
        let mut item = Vec::new();
        for kind in types {
            string(&mut item, 1, kind);
        }
        bytes(&mut out, 22, &item);
    }
    let items: Vec<&Value> = match obj.get("items") {
        Some(Value::Array(many)) => many.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => Vec::new(),
    };
    if !items.is_empty() {
        let mut item = Vec::new();
        for each in items {
            bytes(&mut item, 1, &schema(each));
        }
        bytes(&mut out, 23, &item);
    }
    for each in obj.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        bytes(&mut out, 24, &schema(each));
    }
    if let Some(properties) = obj.get("properties").and_then(Value::as_object) {
        bytes(&mut out, 25, &named_schemas(properties));
    }
    boolean(&mut out, 27, flag("readOnly"));
    vendor_extensions(&mut out, 31, obj);
    out
}

/// `Properties` / `Definitions`: repeated `NamedSchema` in field 1.
fn named_schemas(map: &serde_json::Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in map {
        let mut named = Vec::new();
        string(&mut named, 1, name);
        bytes(&mut named, 2, &schema(value));
        bytes(&mut out, 1, &named);
    }
    out
}

/// The protobuf `Document` of a JSON OpenAPI v2 document.
pub fn encode(document: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let text = |pointer: &str| document.pointer(pointer).and_then(Value::as_str).unwrap_or_default();
    string(&mut out, 1, text("/swagger"));
    let mut info = Vec::new();
    string(&mut info, 1, text("/info/title"));
    string(&mut info, 2, text("/info/version"));
    bytes(&mut out, 2, &info);
    if let Some(definitions) = document.get("definitions").and_then(Value::as_object) {
        bytes(&mut out, 9, &named_schemas(definitions));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_definitions_with_their_fields_and_extensions() {
        let doc = json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.34.5"},
            "definitions": {"a.B": {"type": "object", "required": ["x"],
                "properties": {"x": {"type": "string"}},
                "x-kubernetes-group-version-kind": [{"group": "", "kind": "B", "version": "v1"}]}}});
        let out = encode(&doc);
        // swagger = "2.0"
        assert_eq!(&out[..5], &[0x0a, 3, b'2', b'.', b'0']);
        let text = String::from_utf8_lossy(&out);
        for expected in ["Kubernetes", "a.B", "object", "x-kubernetes-group-version-kind", "kind: B"] {
            assert!(text.contains(expected), "{expected} missing");
        }
    }

    #[test]
    fn varints_use_seven_bits_per_byte() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
    }
}
