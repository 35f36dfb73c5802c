//! `GET pods/{name}/log`: finds the pod's node and container and streams the answer of that node's
//! agent (`/containerLogs/...` on `status.daemonEndpoints.kubeletEndpoint.Port`), as kube-apiserver
//! proxies to the kubelet.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::AppState;
use crate::objects::Target;
use crate::status::ApiError;

fn bad_request(message: String) -> ApiError {
    ApiError::BadRequest(message)
}

/// The container a log request means: the `container` parameter, or the pod's only container.
pub(super) fn container_of(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let name = wasmkube_api::meta::name(pod);
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(bad_request(format!("container {c} is not valid for pod {name}"))),
        None if names.len() == 1 => Ok(names[0].to_string()),
        None => Err(bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            names.join(" ")
        ))),
    }
}

/// `http://<InternalIP>:<port>` of the node's agent.
async fn agent_url(state: &AppState, node_name: &str) -> Result<String, ApiError> {
    Ok(format!("http://{}", agent_address(state, node_name).await?))
}

/// `<InternalIP>:<port>` of the node's agent (its node API).
pub(super) async fn agent_address(state: &AppState, node_name: &str) -> Result<String, ApiError> {
    let nodes = wasmkube_api::kinds::by_resource("", "v1", "nodes").expect("nodes are registered");
    let node = state.objects.get(&Target { kind: nodes, namespace: None, name: Some(node_name.to_string()) }).await?;
    let ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        .and_then(|a| a.get("address").and_then(Value::as_str))
        .ok_or_else(|| bad_request(format!("node {node_name} reports no InternalIP address")))?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad_request(format!("node {node_name} reports no agent endpoint")))?;
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
    Ok(format!("{host}:{port}"))
}

/// Answers a log request for `target` (a pod) with its agent's stream.
pub async fn pod_log(state: &AppState, target: &Target, query: Option<&str>) -> Result<Response, ApiError> {
    let pod = state.objects.get(target).await?;
    let pairs: Vec<(String, String)> = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let requested = pairs.iter().find(|(k, _)| k == "container").map(|(_, v)| v.as_str());
    let container = container_of(&pod, requested)?;
    let node =
        pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| {
            bad_request(format!("pod {} is not scheduled to a node yet", wasmkube_api::meta::name(&pod)))
        })?;
    let namespace = target.namespace.as_deref().unwrap_or("default");
    let pod_name = target.name.as_deref().unwrap_or_default();
    let forwarded: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "follow" | "previous" | "timestamps" | "sinceSeconds" | "sinceTime" | "tailLines" | "limitBytes"
            )
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let url = format!(
        "{}/containerLogs/{namespace}/{pod_name}/{container}?{}",
        agent_url(state, node).await?,
        forwarded.join("&")
    );
    let request = http::Request::get(&url)
        .header(header::AUTHORIZATION, format!("Bearer {}", state.settings.admin_token))
        .body(Body::empty())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .request(request)
        .await
        .map_err(|e| ApiError::Internal(format!("reaching the agent of node {node}: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let message = String::from_utf8_lossy(&body).into_owned();
        // Not found (no such run) and bad parameters are the client's to fix, as kube-apiserver says.
        let theirs = matches!(status, StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST);
        return Err(if theirs { bad_request(message) } else { ApiError::Internal(message) });
    }
    let body = Body::new(response.into_body().map_err(axum::Error::new));
    Ok(([(header::CONTENT_TYPE, "text/plain")], body).into_response())
}
