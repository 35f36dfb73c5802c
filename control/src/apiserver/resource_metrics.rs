//! `metrics.k8s.io/v1beta1`: NodeMetrics and PodMetrics for `kubectl top`, from the agents' own
//! measurements.
//!
//! Kubernetes clusters serve this API from metrics-server, which scrapes every kubelet; here the
//! API server asks each node's agent for its usage summary (`/stats/usage` on the node API:
//! cumulative CPU time and current memory per container, and for the agent process) and turns two
//! summaries into CPU rates. The previous summary of each node is kept; a node asked for the first
//! time (or after a long pause) is sampled twice, [`FIRST_WINDOW`] apart, so the first answer is a
//! measured rate too.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use wasmkube_api::kinds;

use super::AppState;
use super::logs::agent_address;
use super::node_proxy::agent_get;
use crate::objects::{ListOptions, Selectors, Target};
use crate::status::ApiError;

/// The window of a node's first measurement.
const FIRST_WINDOW: Duration = Duration::from_millis(500);
/// A previous summary older than this is not used (the rate would average over too long).
const STALE: Duration = Duration::from_secs(300);
/// Summaries closer together than this do not make a new rate: the last rate is answered again.
const MIN_WINDOW: Duration = Duration::from_secs(1);
/// How long an agent may take to answer: a node that does not answer in time has no metrics.
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node's agent reported, and when.
#[derive(Clone)]
struct Summary {
    at: Instant,
    node_cpu: u64,
    node_memory: u64,
    /// (namespace, pod, container) → (CPU nanoseconds so far, memory bytes now).
    containers: HashMap<(String, String, String), (u64, u64)>,
}

/// Rates over one window.
#[derive(Clone)]
struct Measured {
    window: Duration,
    at: jiff::Timestamp,
    node_cores: f64,
    node_memory: u64,
    /// (namespace, pod, container) → (cores, memory bytes).
    containers: HashMap<(String, String, String), (f64, u64)>,
}

/// Per agent address: the last summary and the rates it ended.
static LAST: LazyLock<Mutex<HashMap<String, (Summary, Measured)>>> = LazyLock::new(Default::default);

async fn fetch(state: &AppState, address: &str) -> Result<Summary, ApiError> {
    let (_, body) = agent_get(state, address, "/stats/usage", Some(AGENT_TIMEOUT)).await?;
    let at = Instant::now();
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::Internal(format!("the agent at {address} sent no usage summary: {e}")))?;
    let number = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64).unwrap_or(0);
    let mut containers = HashMap::new();
    for pod in value["pods"].as_array().into_iter().flatten() {
        let text = |key: &str| pod.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        for c in pod["containers"].as_array().into_iter().flatten() {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            containers
                .insert((text("namespace"), text("name"), name), (number(c, "cpuNanos"), number(c, "memoryBytes")));
        }
    }
    Ok(Summary {
        at,
        node_cpu: number(&value["node"], "cpuNanos"),
        node_memory: number(&value["node"], "memoryBytes"),
        containers,
    })
}

fn rates(before: &Summary, after: &Summary) -> Measured {
    let window = after.at.duration_since(before.at);
    let seconds = window.as_secs_f64().max(f64::EPSILON);
    let cores = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e9 / seconds;
    let containers = after
        .containers
        .iter()
        .map(|(key, &(cpu, memory))| {
            let start = before.containers.get(key).map(|c| c.0).unwrap_or(0);
            (key.clone(), (cores(start, cpu), memory))
        })
        .collect();
    Measured {
        window,
        at: jiff::Timestamp::now(),
        node_cores: cores(before.node_cpu, after.node_cpu),
        node_memory: after.node_memory,
        containers,
    }
}

/// The current rates of the node whose agent is at `address`.
async fn measure(state: &AppState, address: &str) -> Result<Measured, ApiError> {
    let previous = LAST.lock().expect("metrics cache lock").get(address).cloned();
    let now = fetch(state, address).await?;
    let measured = match previous {
        Some((last, measured)) if now.at.duration_since(last.at) < MIN_WINDOW => return Ok(measured),
        Some((last, _)) if now.at.duration_since(last.at) < STALE => rates(&last, &now),
        _ => {
            tokio::time::sleep(FIRST_WINDOW).await;
            let second = fetch(state, address).await?;
            let measured = rates(&now, &second);
            LAST.lock().expect("metrics cache lock").insert(address.to_string(), (second, measured.clone()));
            return Ok(measured);
        }
    };
    LAST.lock().expect("metrics cache lock").insert(address.to_string(), (now, measured.clone()));
    Ok(measured)
}

/// CPU as Kubernetes prints a usage (nanocores).
fn cpu(cores: f64) -> String {
    format!("{}n", (cores * 1e9).round() as u64)
}

/// Memory in KiB, as metrics-server reports it.
fn memory(bytes: u64) -> String {
    format!("{}Ki", bytes.div_ceil(1024))
}

fn window(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64()).replace(".000s", "s")
}

async fn nodes(state: &AppState, only: Option<&str>, selector: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let kind = kinds::by_resource("", "v1", "nodes").expect("nodes are registered");
    let target = Target { kind, namespace: None, name: None };
    let options = ListOptions { selectors: Selectors::parse(&target, selector, None)?, ..ListOptions::default() };
    let list = state.objects.list(&target, &options).await?;
    let mut items = Vec::new();
    for node in list["items"].as_array().into_iter().flatten() {
        let name = node.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let Ok(address) = agent_address(state, name).await else { continue };
        // A node whose agent does not answer has no metrics, as with metrics-server.
        let Ok(m) = measure(state, &address).await else { continue };
        items.push(json!({
            "metadata": {"name": name, "labels": node.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
                         "creationTimestamp": m.at.to_string()},
            "timestamp": m.at.to_string(),
            "window": window(m.window),
            "usage": {"cpu": cpu(m.node_cores), "memory": memory(m.node_memory)},
        }));
    }
    Ok(items)
}

async fn pods(
    state: &AppState,
    namespace: Option<&str>,
    name: Option<&str>,
    selector: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    let kind = kinds::by_resource("", "v1", "pods").expect("pods are registered");
    let target = Target { kind, namespace: namespace.map(String::from), name: None };
    let options = ListOptions { selectors: Selectors::parse(&target, selector, None)?, ..ListOptions::default() };
    let list = state.objects.list(&target, &options).await?;
    // Each node is asked once per request; one that fails is not asked again for its next pod.
    let mut by_node: HashMap<String, Option<Measured>> = HashMap::new();
    let mut items = Vec::new();
    for pod in list["items"].as_array().into_iter().flatten() {
        let text = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
        let (pod_ns, pod_name, node) = (text("/metadata/namespace"), text("/metadata/name"), text("/spec/nodeName"));
        if name.is_some_and(|n| n != pod_name) || node.is_empty() || text("/status/phase") != "Running" {
            continue;
        }
        if !by_node.contains_key(&node) {
            let measured = match agent_address(state, &node).await {
                Ok(address) => measure(state, &address).await.ok(),
                Err(_) => None,
            };
            by_node.insert(node.clone(), measured);
        }
        let Some(m) = &by_node[&node] else { continue };
        let containers: Vec<Value> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let container = c.get("name").and_then(Value::as_str)?;
                let &(cores, bytes) = m.containers.get(&(pod_ns.clone(), pod_name.clone(), container.to_string()))?;
                Some(json!({"name": container, "usage": {"cpu": cpu(cores), "memory": memory(bytes)}}))
            })
            .collect();
        if containers.is_empty() {
            continue;
        }
        items.push(json!({
            "metadata": {"name": pod_name, "namespace": pod_ns,
                         "labels": pod.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
                         "creationTimestamp": m.at.to_string()},
            "timestamp": m.at.to_string(),
            "window": window(m.window),
            "containers": containers,
        }));
    }
    Ok(items)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsQuery {
    label_selector: Option<String>,
}

const API_VERSION: &str = "metrics.k8s.io/v1beta1";

fn list(kind: &str, items: Vec<Value>) -> Response {
    axum::Json(json!({"kind": kind, "apiVersion": API_VERSION, "metadata": {}, "items": items})).into_response()
}

fn one(kind: &str, resource: &str, name: &str, items: Vec<Value>) -> Response {
    match items.into_iter().next() {
        Some(mut item) => {
            item["kind"] = json!(kind);
            item["apiVersion"] = json!(API_VERSION);
            axum::Json(item).into_response()
        }
        None => {
            let message = format!("{resource}.metrics.k8s.io \"{name}\" not found");
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": "NotFound",
                "details": {"name": name, "group": "metrics.k8s.io", "kind": resource}, "code": 404});
            (http::StatusCode::NOT_FOUND, axum::Json(status)).into_response()
        }
    }
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| e.into_response())
}

/// `GET /apis/metrics.k8s.io/v1beta1/nodes`.
pub async fn node_list(State(state): State<AppState>, Query(q): Query<MetricsQuery>) -> Response {
    respond(nodes(&state, None, q.label_selector.as_deref()).await.map(|items| list("NodeMetricsList", items)))
}

/// `GET /apis/metrics.k8s.io/v1beta1/nodes/{name}`.
pub async fn node_get(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    respond(nodes(&state, Some(&name), None).await.map(|items| one("NodeMetrics", "nodes", &name, items)))
}

/// `GET /apis/metrics.k8s.io/v1beta1/pods`.
pub async fn pod_list_all(State(state): State<AppState>, Query(q): Query<MetricsQuery>) -> Response {
    respond(pods(&state, None, None, q.label_selector.as_deref()).await.map(|items| list("PodMetricsList", items)))
}

/// `GET /apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods`.
pub async fn pod_list(
    State(state): State<AppState>,
    Path(ns): Path<String>,
    Query(q): Query<MetricsQuery>,
) -> Response {
    respond(pods(&state, Some(&ns), None, q.label_selector.as_deref()).await.map(|items| list("PodMetricsList", items)))
}

/// `GET /apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/{name}`.
pub async fn pod_get(State(state): State<AppState>, Path((ns, name)): Path<(String, String)>) -> Response {
    respond(pods(&state, Some(&ns), Some(&name), None).await.map(|items| one("PodMetrics", "pods", &name, items)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_cpu_over_the_window_and_memory_as_is() {
        let key = ("default".to_string(), "web".to_string(), "c".to_string());
        let t0 = Instant::now();
        let before =
            Summary { at: t0, node_cpu: 0, node_memory: 1, containers: [(key.clone(), (1_000_000_000, 5))].into() };
        let after = Summary {
            at: t0 + Duration::from_secs(2),
            node_cpu: 1_000_000_000,
            node_memory: 4096,
            containers: [(key.clone(), (2_000_000_000, 8192))].into(),
        };
        let m = rates(&before, &after);
        assert_eq!(cpu(m.node_cores), "500000000n");
        assert_eq!(m.containers[&key], (0.5, 8192));
        assert_eq!((memory(m.node_memory), memory(1)), ("4Ki".to_string(), "1Ki".to_string()));
        assert_eq!(window(Duration::from_millis(500)), "0.500s");
        assert_eq!(window(Duration::from_secs(2)), "2s");
    }
}
