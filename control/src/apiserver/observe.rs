//! Request metrics: counts and latency by Kubernetes verb, resource and status code.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::path;

pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let (verb, resource) = classify(request.method(), request.uri());
    let response = next.run(request).await;
    state.metrics.observe_request(verb, &resource, response.status().as_u16(), started.elapsed());
    response
}

/// The Kubernetes verb (`get`, `list`, `watch`, `create`, ...) and resource label of a request.
fn classify(method: &Method, uri: &axum::http::Uri) -> (&'static str, String) {
    let Ok(parsed) = path::parse(uri.path()) else {
        return (non_resource_verb(method), String::new());
    };
    let is_collection = parsed.target.name.is_none();
    let watch = uri.query().is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match (method.as_str(), is_collection) {
        ("GET", true) if watch => "watch",
        ("GET", true) => "list",
        ("GET", false) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "deletecollection",
        ("DELETE", false) => "delete",
        _ => non_resource_verb(method),
    };
    let mut resource = parsed.target.kind.qualified_plural();
    if let Some(sub) = parsed.subresource {
        resource = format!("{resource}/{sub}");
    }
    (verb, resource)
}

fn non_resource_verb(method: &Method) -> &'static str {
    match *method {
        Method::GET => "get",
        Method::POST => "post",
        Method::PUT => "put",
        Method::DELETE => "delete",
        _ => "other",
    }
}
