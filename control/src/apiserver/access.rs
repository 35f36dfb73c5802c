//! `authorization.k8s.io/v1` self-reviews: what `kubectl auth can-i` asks.
//!
//! The server knows one identity, the holder of the cluster token, and lets it do everything (as
//! Kubernetes' `cluster-admin`); a request without the token never gets this far. So the truthful
//! answer for any caller that reaches these handlers is "allowed", with a reason naming why, and
//! the rules review lists the one rule that grants everything.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::body;
use crate::status::ApiError;

const REASON: &str = "the cluster token is allowed every verb on every resource";

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`.
pub async fn self_subject_access_review(headers: HeaderMap, payload: Bytes) -> Response {
    respond(review(&headers, &payload, "SelfSubjectAccessReview", |spec| {
        let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
        let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
        match (resource, non_resource) {
            (Some(_), Some(_)) => {
                Err(invalid("spec.nonResourceAttributes", "cannot be specified in combination with resourceAttributes"))
            }
            (None, None) => Err(invalid(
                "spec.resourceAttributes",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )),
            _ => Ok(json!({"allowed": true, "reason": REASON})),
        }
    }))
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectrulesreviews` (`kubectl auth can-i --list`).
pub async fn self_subject_rules_review(headers: HeaderMap, payload: Bytes) -> Response {
    respond(review(&headers, &payload, "SelfSubjectRulesReview", |_| {
        Ok(json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        }))
    }))
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::BadRequest(format!("{field}: Invalid value: {message}"))
}

/// Decodes a review (JSON or protobuf), checks its type and answers it with `status`.
fn review(
    headers: &HeaderMap,
    payload: &Bytes,
    kind: &str,
    status: impl FnOnce(&Value) -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    let mut object = body::decode(headers, payload)?;
    if !object.is_object() {
        return Err(ApiError::BadRequest(format!("a {kind} must be a JSON object")));
    }
    let api_version = "authorization.k8s.io/v1";
    for (field, want) in [("apiVersion", api_version), ("kind", kind)] {
        match object.get(field).and_then(Value::as_str) {
            None | Some("") => object[field] = json!(want),
            Some(have) if have == want => {}
            Some(have) => {
                return Err(ApiError::BadRequest(format!("the {field} in the data ({have}) does not match {want:?}")));
            }
        }
    }
    let spec = object.get("spec").cloned().unwrap_or_else(|| json!({}));
    object["status"] = status(&spec)?;
    // Nothing is stored: like Kubernetes, the answer has no name, uid or resourceVersion.
    object["metadata"] = json!({"creationTimestamp": null});
    Ok(object)
}

fn respond(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(object) => (StatusCode::CREATED, axum::Json(object)).into_response(),
        Err(e) => e.into_response(),
    }
}
