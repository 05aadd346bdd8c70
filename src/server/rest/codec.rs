//! Request bodies in (JSON or YAML) and responses out (JSON, YAML, or a
//! Table when the client asks for `as=Table`), as upstream negotiates them.

use crate::server::error::ApiError;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::Value;

/// The largest request body accepted (upstream's limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// What the client wants back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    pub table: bool,
    pub yaml: bool,
}

impl Negotiated {
    pub fn from_headers(headers: &HeaderMap) -> Negotiated {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mut negotiated = Negotiated::default();
        // The first acceptable media type wins, as in upstream's negotiation.
        for media in accept.split(',') {
            let media = media.trim();
            let base = media.split(';').next().unwrap_or("").trim();
            let table = media.split(';').any(|p| p.trim() == "as=Table");
            match base {
                "application/json" | "*/*" | "application/*" => {
                    negotiated.table = table;
                    return negotiated;
                }
                "application/yaml" => {
                    negotiated.yaml = true;
                    return negotiated;
                }
                _ => continue,
            }
        }
        negotiated
    }
}

/// Decodes a JSON or YAML request body.
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let base = content_type.split(';').next().unwrap_or("").trim();
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    match base {
        "application/json"
        | ""
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/json-patch+json" => {
            serde_json::from_slice(body).map_err(|err| ApiError::bad_request(format!("error decoding JSON: {err}")))
        }
        "application/yaml" | "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
            serde_norway::from_slice(body).map_err(|err| ApiError::bad_request(format!("error decoding YAML: {err}")))
        }
        crate::server::protobuf::CONTENT_TYPE => {
            crate::server::protobuf::decode_object(body).map_err(|err| ApiError::bad_request(err.to_string()))
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// A JSON (or YAML) response with the given status.
pub fn respond(status: StatusCode, value: &Value, negotiated: Negotiated) -> Response {
    if negotiated.yaml {
        match serde_norway::to_string(value) {
            Ok(text) => return (status, [(header::CONTENT_TYPE, "application/yaml")], text).into_response(),
            Err(err) => return ApiError::internal("encode YAML", &err).into_response(),
        }
    }
    match serde_json::to_vec(value) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(err) => ApiError::internal("encode JSON", &err).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn kubectl_get_asks_for_tables() {
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert!(Negotiated::from_headers(&headers(&[("accept", accept)])).table);
        assert!(!Negotiated::from_headers(&headers(&[("accept", "application/json")])).table);
        assert!(Negotiated::from_headers(&headers(&[("accept", "application/yaml")])).yaml);
    }

    #[test]
    fn bodies_in_json_and_yaml() {
        let json = decode_body(&headers(&[("content-type", "application/json")]), br#"{"a":1}"#).unwrap();
        let yaml = decode_body(&headers(&[("content-type", "application/yaml")]), b"a: 1\n").unwrap();
        assert_eq!(json, yaml);
        let err = decode_body(&headers(&[("content-type", "application/cbor")]), b"x").unwrap_err();
        assert_eq!(err.code, 415);
        assert_eq!(decode_body(&HeaderMap::new(), b"{").unwrap_err().code, 400);
    }
}
