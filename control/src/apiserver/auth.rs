//! Bearer-token authentication: every request but the health and version endpoints must carry
//! `Authorization: Bearer <admin token>`; anything else is answered 401 with a `Status`.
//!
//! The image registry (`/v2/…`) also takes the token as the password of HTTP Basic (any user
//! name), which is how OCI tools log in, and answers 401 the distribution spec's way.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::registry::RegistryError;
use crate::status::ApiError;

/// Paths anyone may read, as in Kubernetes (health checks and the server version).
const PUBLIC: &[&str] = &["/healthz", "/livez", "/readyz", "/version"];

pub async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if PUBLIC.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let registry = request.uri().path() == "/v2" || request.uri().path().starts_with("/v2/");
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let presented = match authorization {
        Some(v) if v.starts_with("Bearer ") => Some(v["Bearer ".len()..].trim().to_string()),
        Some(v) if registry && v.starts_with("Basic ") => basic_password(&v["Basic ".len()..]),
        _ => None,
    };
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.settings.admin_token.as_bytes()) => {
            next.run(request).await
        }
        _ if registry => RegistryError::unauthorized().into_response(),
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// The password of HTTP Basic credentials (`base64(user:password)`).
fn basic_password(encoded: &str) -> Option<String> {
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, password)| password.to_string())
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
