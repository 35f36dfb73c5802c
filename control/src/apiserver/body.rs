//! Request bodies in the media types Kubernetes accepts for objects: JSON, YAML and protobuf
//! ([`super::protobuf`]), all decoded to the JSON form the object service works on.

use axum::http::{HeaderMap, header};
use serde_json::Value;

use super::protobuf;
use crate::status::ApiError;

/// The media type of the body, without parameters.
pub fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .unwrap_or("")
}

/// An object sent with POST or PUT, in the JSON form whatever its media type.
pub fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    match content_type(headers) {
        "" | "application/json" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}"))),
        "application/yaml" => yaml(body),
        protobuf::MEDIA_TYPE => protobuf::decode(body),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format ({other}) - accepted media types include: \
             application/json, application/yaml, {}",
            protobuf::MEDIA_TYPE
        ))),
    }
}

/// A YAML document (of which JSON is a subset) as JSON.
pub fn yaml(body: &[u8]) -> Result<Value, ApiError> {
    serde_yaml_ng::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not valid YAML: {e}")))
}
