//! Prometheus metrics of the control plane, served as text at `/metrics`.
//!
//! [`Metrics::new`] builds the registry once; the API server and the store each hold a cheap clone
//! of their part ([`ApiMetrics`], [`StoreMetrics`]) and record into it.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~13 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// The registry plus handles to every metric in it.
pub struct Metrics {
    registry: Arc<Registry>,
    pub api: ApiMetrics,
    pub store: StoreMetrics,
}

/// What the API server records per request and per watch.
#[derive(Clone)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    watches: Gauge,
}

/// What the store records per commit, and the object counts it keeps.
#[derive(Clone)]
pub struct StoreMetrics {
    commit_seconds: Histogram,
    batch_size: Histogram,
    objects: Family<ResourceLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let api = ApiMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            watches: Gauge::default(),
        };
        let store = StoreMetrics {
            commit_seconds: latency_histogram(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            objects: Family::default(),
        };
        registry.register(
            "apiserver_request",
            "API requests by verb, resource and HTTP status code",
            api.requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "API request latency (for watches: until the response head) by verb and resource",
            api.latency.clone(),
        );
        registry.register("apiserver_registered_watchers", "Open watch streams", api.watches.clone());
        registry.register(
            "store_commit_duration_seconds",
            "Duration of one durable store commit (one batch of writes)",
            store.commit_seconds.clone(),
        );
        registry.register("store_commit_batch_size", "Writes that shared one durable commit", store.batch_size.clone());
        registry.register("apiserver_storage_objects", "Stored objects by resource", store.objects.clone());
        Self { registry: Arc::new(registry), api, store }
    }

    /// The registry, for rendering.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }
}

/// Renders a registry in the Prometheus text exposition format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

impl ApiMetrics {
    pub fn observe_request(&self, verb: &str, resource: &str, code: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { verb: verb.into(), resource: resource.into(), code: code.to_string() })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels { verb: verb.into(), resource: resource.into() })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an open watch until the returned guard is dropped.
    pub fn watch_opened(&self) -> WatchGuard {
        self.watches.inc();
        WatchGuard(self.watches.clone())
    }
}

/// Decrements the open-watch gauge when the watch ends.
pub struct WatchGuard(Gauge);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl StoreMetrics {
    pub fn observe_commit(&self, elapsed: Duration, writes: usize) {
        self.commit_seconds.observe(elapsed.as_secs_f64());
        self.batch_size.observe(writes as f64);
    }

    pub fn set_objects(&self, resource: &str, n: i64) {
        self.objects.get_or_create(&ResourceLabels { resource: resource.into() }).set(n);
    }

    pub fn add_objects(&self, resource: &str, delta: i64) {
        self.objects.get_or_create(&ResourceLabels { resource: resource.into() }).inc_by(delta);
    }

    /// The resource label of a storage key: `/registry/apps/deployments/ns/x` → `deployments.apps`,
    /// `/registry/core/pods/ns/x` → `pods`.
    pub fn resource_of(key: &str) -> String {
        let mut parts = key.trim_start_matches("/registry/").splitn(3, '/');
        match (parts.next(), parts.next()) {
            (Some("core"), Some(resource)) => resource.to_string(),
            (Some(group), Some(resource)) => format!("{resource}.{group}"),
            _ => "unknown".to_string(),
        }
    }
}
