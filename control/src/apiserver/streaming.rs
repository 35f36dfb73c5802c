//! The streaming subresources of a pod — `exec` and `attach` (websockets with the
//! `v5.channel.k8s.io` family of subprotocols) and `portforward` (a websocket tunnelling SPDY, or a plain SPDY/3.1 upgrade) —
//! are forwarded to the pod's node agent (`/exec/{namespace}/{pod}/{container}`,
//! `/attach/{namespace}/{pod}/{container}`, `/portForward/{namespace}/{pod}`), and once the agent switches protocols the two upgraded
//! connections are spliced byte for byte: kube-apiserver's upgrade-aware proxy to the kubelet, in
//! small. The API server does not parse the streams, so every protocol version the agent speaks
//! passes through.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::AppState;
use super::logs::{agent_address, container_of};
use crate::objects::Target;
use crate::status::ApiError;

/// How long the agent may take to accept the connection and answer the upgrade.
const AGENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Request headers that carry the upgrade handshake to the agent.
const HANDSHAKE: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
];

pub async fn pod_exec(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    exec(&state, &namespace, &name, request).await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn pod_attach(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    attach(&state, &namespace, &name, request).await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn pod_portforward(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    port_forward(&state, &namespace, &name, request).await.unwrap_or_else(IntoResponse::into_response)
}

async fn pod(state: &AppState, namespace: &str, name: &str) -> Result<Value, ApiError> {
    let pods = wasmkube_api::kinds::by_resource("", "v1", "pods").expect("pods are registered");
    let target = Target { kind: pods, namespace: Some(namespace.to_string()), name: Some(name.to_string()) };
    state.objects.get(&target).await
}

async fn exec(state: &AppState, namespace: &str, name: &str, request: Request) -> Result<Response, ApiError> {
    let pod = pod(state, namespace, name).await?;
    let query = request.uri().query().unwrap_or_default().to_string();
    let requested =
        form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "container").map(|(_, v)| v.into_owned());
    let container = container_of(&pod, requested.as_deref())?;
    if !form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "command") {
        return Err(ApiError::BadRequest("you must specify at least 1 command".to_string()));
    }
    let agent_path = format!("/exec/{namespace}/{name}/{container}?{query}");
    splice_to_agent(
        state,
        &pod,
        &agent_path,
        "exec needs an upgraded connection (websocket with the v5.channel.k8s.io subprotocol)",
        request,
    )
    .await
}

async fn attach(state: &AppState, namespace: &str, name: &str, request: Request) -> Result<Response, ApiError> {
    let pod = pod(state, namespace, name).await?;
    let query = request.uri().query().unwrap_or_default().to_string();
    let requested =
        form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "container").map(|(_, v)| v.into_owned());
    let container = container_of(&pod, requested.as_deref())?;
    let agent_path = format!("/attach/{namespace}/{name}/{container}?{query}");
    let refusal = "attach needs an upgraded connection (websocket with the v5.channel.k8s.io subprotocol)";
    splice_to_agent(state, &pod, &agent_path, refusal, request).await
}

async fn port_forward(state: &AppState, namespace: &str, name: &str, request: Request) -> Result<Response, ApiError> {
    let pod = pod(state, namespace, name).await?;
    let ip = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("pod {name} has no IP to forward to yet")))?;
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    let query: String =
        form_urlencoded::Serializer::new(String::new()).append_pair("ip", ip).append_pair("uid", uid).finish();
    let agent_path = format!("/portForward/{namespace}/{name}?{query}");
    let refusal = "port-forward needs an upgraded connection (websocket with the SPDY/3.1+portforward.k8s.io subprotocol, or SPDY/3.1)";
    splice_to_agent(state, &pod, &agent_path, refusal, request).await
}

/// Forwards an upgrade request to the agent of the pod's node and, once both sides switched
/// protocols, splices the client's connection with the agent's.
async fn splice_to_agent(
    state: &AppState,
    pod: &Value,
    agent_path: &str,
    not_upgraded: &str,
    mut request: Request,
) -> Result<Response, ApiError> {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("pod {name} is not scheduled to a node yet")))?;
    if request.headers().get(header::UPGRADE).is_none_or(|v| v.is_empty()) {
        return Err(ApiError::BadRequest(not_upgraded.to_string()));
    }
    let address = agent_address(state, node).await?;
    let unreachable = |e: &dyn std::fmt::Display| ApiError::Internal(format!("reaching the agent of node {node}: {e}"));
    // A node that is down must not hold the request for the OS's connect timeout.
    let connect = tokio::time::timeout(AGENT_TIMEOUT, tokio::net::TcpStream::connect(&address));
    let stream = connect.await.map_err(|e| unreachable(&e))?.map_err(|e| unreachable(&e))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| unreachable(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "agent streaming connection ended");
        }
    });

    let mut forwarded = http::Request::builder()
        .method(request.method().clone())
        .uri(agent_path)
        .header(header::HOST, &address)
        .header(header::AUTHORIZATION, format!("Bearer {}", state.settings.admin_token));
    for (key, value) in request.headers() {
        if HANDSHAKE.contains(&key.as_str()) {
            forwarded = forwarded.header(key, value);
        }
    }
    let forwarded = forwarded.body(Body::empty()).map_err(|e| ApiError::Internal(e.to_string()))?;
    let answer = tokio::time::timeout(AGENT_TIMEOUT, sender.send_request(forwarded));
    let mut answer = answer.await.map_err(|e| unreachable(&e))?.map_err(|e| unreachable(&e))?;
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = answer.status();
        let body = answer.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let message = String::from_utf8_lossy(&body).trim().to_string();
        return Err(match status {
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => ApiError::BadRequest(message),
            _ => ApiError::Internal(message),
        });
    }

    let mut headers = HeaderMap::new();
    for (key, value) in answer.headers() {
        if HANDSHAKE.contains(&key.as_str()) || key.as_str() == "sec-websocket-accept" {
            headers.insert(key.clone(), value.clone());
        }
    }
    headers.entry(header::CONNECTION).or_insert(HeaderValue::from_static("Upgrade"));
    let client_side = hyper::upgrade::on(&mut request);
    let agent_side = hyper::upgrade::on(&mut answer);
    tokio::spawn(async move {
        let (client, agent) = match tokio::try_join!(client_side, agent_side) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "streaming upgrade failed");
                return;
            }
        };
        let (mut client, mut agent) = (TokioIo::new(client), TokioIo::new(agent));
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut agent).await {
            tracing::debug!(error = %e, "streaming connection ended");
        }
    });
    Ok((StatusCode::SWITCHING_PROTOCOLS, headers).into_response())
}
