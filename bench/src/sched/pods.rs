//! The benchmark's pods: what they look like, the slim view of them this process reads, and
//! creating many from C concurrent clients.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::core::{ApiResource, Object};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use wasmkube_bench::summary::Failures;

/// The namespace every pod (and the envelope's ConfigMaps) goes in.
pub const NAMESPACE: &str = "sched-bench";
/// The container image: never pulled, as hollow nodes run nothing.
pub const IMAGE: &str = "file:///nonexistent/hello.wasm";

/// The part of a pod's spec this process reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

/// The part of a pod's status this process reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SlimStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// A pod as this process reads it: decoding 150,000 full `Pod`s several times each would cost
/// this process (which shares the machine with the server) far more CPU than the fields it needs.
pub type SlimPod = Object<SlimSpec, SlimStatus>;

/// The pods of [`NAMESPACE`], read slim.
pub fn api(client: &kube::Client) -> Api<SlimPod> {
    Api::namespaced_with(client.clone(), NAMESPACE, &ApiResource::erase::<Pod>(&()))
}

pub fn pod_name(i: usize) -> String {
    format!("pod-{i:06}")
}

/// A pod for the scheduler: one container requesting 100m CPU and 128 MiB, no node.
pub fn manifest(name: &str) -> Vec<u8> {
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "sched-bench"}},
        "spec": {"containers": [{
            "name": "app",
            "image": IMAGE,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        }]},
    });
    serde_json::to_vec(&pod).expect("a JSON value serializes")
}

/// One pod the API accepted.
#[derive(Debug, Clone)]
pub struct Created {
    pub name: String,
    /// Just before the create was handed to the client.
    pub sent: Instant,
    /// Its `201 Created` read.
    pub answered: Instant,
}

/// Creates a pod per name with `clients` creates in flight at once, as fast as they are answered.
/// The one kube client opens a connection per request in flight, so this is `clients` clients
/// each on its own connection. Failed creates are counted, not retried.
pub async fn create(pods: &Api<SlimPod>, names: Vec<String>, clients: usize) -> (Vec<Created>, Failures) {
    let client = pods.clone().into_client();
    let request = kube::core::Request::new(pods.resource_url());
    let results: Vec<_> = futures::stream::iter(names)
        .map(|name| {
            let (client, request) = (&client, &request);
            async move {
                let sent = Instant::now();
                let result = match request.create(&PostParams::default(), manifest(&name)) {
                    Ok(http) => client.request::<IgnoredAny>(http).await.map(|_| ()),
                    Err(e) => Err(kube::Error::BuildRequest(e)),
                };
                (name, sent, Instant::now(), result)
            }
        })
        .buffer_unordered(clients.max(1))
        .collect()
        .await;
    let mut created = Vec::with_capacity(results.len());
    let mut failures = Failures::default();
    for (name, sent, answered, result) in results {
        match result {
            Ok(()) => created.push(Created { name, sent, answered }),
            Err(e) => failures.record(format!("{name}: {e}")),
        }
    }
    (created, failures)
}

/// Sent → answered of each create.
pub fn create_latencies(created: &[Created]) -> Vec<Duration> {
    created.iter().map(|c| c.answered - c.sent).collect()
}
