//! `GET /api/v1/nodes/{name}/proxy/metrics`: the node agent's Prometheus metrics through the API
//! server, as kube-apiserver proxies to the kubelet (`kubectl get --raw
//! /api/v1/nodes/NODE/proxy/metrics`).

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::AppState;
use super::logs::agent_address;
use crate::status::ApiError;

pub async fn node_metrics(State(state): State<AppState>, Path(node): Path<String>) -> Response {
    match fetch(&state, &node).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn fetch(state: &AppState, node: &str) -> Result<String, ApiError> {
    let (status, body) = agent_get(state, &agent_address(state, node).await?, "/metrics", None).await?;
    let text = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() { Ok(text) } else { Err(ApiError::Internal(text)) }
}

/// A GET of `path` on the node API at `address` with the cluster token, bounded by `timeout` if
/// given: its status and whole body.
pub(super) async fn agent_get(
    state: &AppState,
    address: &str,
    path: &str,
    timeout: Option<std::time::Duration>,
) -> Result<(http::StatusCode, bytes::Bytes), ApiError> {
    let request = http::Request::get(format!("http://{address}{path}"))
        .header(header::AUTHORIZATION, format!("Bearer {}", state.settings.admin_token))
        .body(axum::body::Body::empty())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let client: Client<_, axum::body::Body> = Client::builder(TokioExecutor::new()).build_http();
    let unreachable = |e: &dyn std::fmt::Display| ApiError::Internal(format!("reaching the agent at {address}: {e}"));
    let response = match timeout {
        Some(limit) => tokio::time::timeout(limit, client.request(request))
            .await
            .map_err(|_| ApiError::Internal(format!("the agent at {address} did not answer in {limit:?}")))?,
        None => client.request(request).await,
    }
    .map_err(|e| unreachable(&e))?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| unreachable(&e))?.to_bytes();
    Ok((status, body))
}
