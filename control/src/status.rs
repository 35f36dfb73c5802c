//! API errors and their rendering as Kubernetes `Status` objects.
//!
//! Every failure the API can answer with is one [`ApiError`] variant; `code()`, `reason()` and the
//! message follow kube-apiserver's wording so clients (kubectl, kube-rs) print and classify them
//! exactly as they would against Kubernetes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use wasmkube_api::Kind;
use wasmkube_api::validation::Cause;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{} \"{name}\" not found", kind.qualified_plural())]
    NotFound { kind: &'static Kind, name: String },
    #[error("namespaces \"{0}\" not found")]
    NamespaceNotFound(String),
    #[error("{} \"{name}\" already exists", kind.qualified_plural())]
    AlreadyExists { kind: &'static Kind, name: String },
    #[error("Operation cannot be fulfilled on {} \"{name}\": {message}", kind.qualified_plural())]
    Conflict { kind: &'static Kind, name: String, message: String },
    #[error("{} \"{name}\" is invalid: {}", qualified_kind(kind), join_causes(causes))]
    Invalid { kind: &'static Kind, name: String, causes: Vec<Cause> },
    #[error("{0}")]
    BadRequest(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{} \"{name}\" is forbidden: {message}", kind.qualified_plural())]
    Forbidden { kind: &'static Kind, name: String, message: String },
    #[error("{0}")]
    Gone(String),
    #[error("the server could not find the requested resource")]
    NoSuchResource,
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429: try again later, e.g. an eviction a disruption budget refuses now. `causes` are
    /// (type, message) pairs.
    #[error("{message}")]
    TooManyRequests { message: String, causes: Vec<(String, String)> },
    #[error("Internal error occurred: {0}")]
    Internal(String),
    /// A server-side apply that would take fields another manager set to other values: each
    /// conflict is (the manager as printed, `"kubectl"` or `"kubectl-edit" using apps/v1`; the
    /// field path).
    #[error("{}", apply_conflict_message(.0))]
    ApplyConflict(Vec<(String, String)>),
}

/// Kubernetes' wording: one conflict inline, several grouped by manager (sorted).
fn apply_conflict_message(conflicts: &[(String, String)]) -> String {
    if let [(manager, field)] = conflicts {
        return format!("Apply failed with 1 conflict: conflict with {manager}: {field}");
    }
    let mut by_manager: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for (manager, field) in conflicts {
        by_manager.entry(manager).or_default().push(field);
    }
    let mut lines = Vec::new();
    for (manager, fields) in by_manager {
        lines.push(format!("conflicts with {manager}:"));
        lines.extend(fields.iter().map(|f| format!("- {f}")));
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}

fn qualified_kind(kind: &Kind) -> String {
    if kind.group.is_empty() { kind.kind.to_string() } else { format!("{}.{}", kind.kind, kind.group) }
}

fn join_causes(causes: &[Cause]) -> String {
    let parts: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
    match parts.as_slice() {
        [one] => one.clone(),
        _ => format!("[{}]", parts.join(", ")),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted { requested, compacted } => {
                ApiError::Gone(format!("too old resource version: {requested} ({compacted})"))
            }
            other => {
                let mut msg = other.to_string();
                let mut source = std::error::Error::source(&other);
                while let Some(s) = source {
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    source = s.source();
                }
                ApiError::Internal(msg)
            }
        }
    }
}

impl ApiError {
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } | ApiError::NamespaceNotFound(_) | ApiError::NoSuchResource => {
                StatusCode::NOT_FOUND
            }
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } | ApiError::ApplyConflict(_) => {
                StatusCode::CONFLICT
            }
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NamespaceNotFound(_) | ApiError::NoSuchResource => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict(_) => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::Gone(_) => "Expired",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::Internal(_) => "InternalError",
        }
    }

    fn details(&self) -> Option<Value> {
        let about = |kind: &Kind, name: &str| json!({"name": name, "group": kind.group, "kind": kind.plural});
        match self {
            ApiError::NotFound { kind, name }
            | ApiError::AlreadyExists { kind, name }
            | ApiError::Conflict { kind, name, .. }
            | ApiError::Forbidden { kind, name, .. } => Some(about(kind, name)),
            ApiError::NamespaceNotFound(name) => Some(json!({"name": name, "kind": "namespaces"})),
            ApiError::Invalid { kind, name, causes } => Some(json!({
                "name": name,
                "group": kind.group,
                "kind": kind.kind,
                "causes": causes.iter().map(|c| json!({
                    "reason": c.reason.as_str(), "message": c.message, "field": c.field,
                })).collect::<Vec<_>>(),
            })),
            ApiError::ApplyConflict(conflicts) => Some(json!({
                "causes": conflicts.iter().map(|(manager, field)| json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {manager}"),
                    "field": field,
                })).collect::<Vec<_>>(),
            })),
            ApiError::TooManyRequests { causes, .. } => Some(json!({
                "causes": causes.iter().map(|(kind, message)| json!({"reason": kind, "message": message}))
                    .collect::<Vec<_>>(),
            })),
            _ => None,
        }
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        if let Some(details) = self.details() {
            status["details"] = details;
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(msg) = &self {
            tracing::error!(error = %msg, "internal error answered");
        }
        (self.code(), axum::Json(self.to_status())).into_response()
    }
}
