//! The Kubernetes REST API over HTTPS (axum + rustls).
//!
//! [`router`] assembles the routes: health, `/version`, `/metrics`, discovery, `/openapi/v3`, the
//! answered resources (self-subject reviews in `access`, `metrics.k8s.io` in `resource_metrics`),
//! pod exec, attach and port-forward ([`streaming`]) and node metrics, and one fallback ([`resources::handle`]) for every stored resource
//! path, which [`path`] parses and the object service answers; `/v2/…` is the image
//! [`crate::registry`]. Authentication ([`auth`]) and request metrics ([`observe`]) are layers around all of it.

mod access;
mod auth;
mod body;
mod discovery;
mod logs;
mod media;
mod node_proxy;
mod observe;
mod openapi;
pub mod path;
mod protobuf;
mod resource_metrics;
mod resources;
mod streaming;
mod table;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::metrics::ApiMetrics;
use crate::objects::Objects;

pub use discovery::KUBERNETES_MINOR;

/// Settings of the running API server.
#[derive(Debug, Clone)]
pub struct Settings {
    pub admin_token: String,
    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK event.
    pub bookmark_interval: Duration,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub objects: Objects,
    pub metrics: ApiMetrics,
    pub registry: Arc<Registry>,
    pub settings: Arc<Settings>,
    /// The image registry's storage (`/v2/…`).
    pub images: crate::registry::storage::Storage,
}

impl axum::extract::FromRef<AppState> for crate::registry::storage::Storage {
    fn from_ref(state: &AppState) -> Self {
        state.images.clone()
    }
}

/// Kubernetes' request body limit (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

pub fn router(state: AppState) -> Router {
    openapi::prepare();
    Router::new()
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(ok))
        .route("/version", get(discovery::version))
        .route("/metrics", get(metrics))
        .route("/api", get(discovery::core_versions))
        .route("/api/v1", get(discovery::core_resources))
        .route("/apis", get(discovery::groups))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::group_resources))
        .route("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", post(access::self_subject_access_review))
        .route("/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", post(access::self_subject_rules_review))
        .route("/apis/metrics.k8s.io/v1beta1/nodes", get(resource_metrics::node_list))
        .route("/apis/metrics.k8s.io/v1beta1/nodes/{name}", get(resource_metrics::node_get))
        .route("/apis/metrics.k8s.io/v1beta1/pods", get(resource_metrics::pod_list_all))
        .route("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods", get(resource_metrics::pod_list))
        .route("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/{name}", get(resource_metrics::pod_get))
        .route("/openapi/v3", get(openapi::root))
        .route("/openapi/v3/{*path}", get(openapi::group_version))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/exec", any(streaming::pod_exec))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/portforward", any(streaming::pod_portforward))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/attach", any(streaming::pod_attach))
        .route("/api/v1/nodes/{name}/proxy/metrics", get(node_proxy::node_metrics))
        .route("/v2", any(crate::registry::handle))
        .route("/v2/", any(crate::registry::handle))
        .route("/v2/{*rest}", any(crate::registry::handle))
        .fallback(resources::handle)
        .layer(from_fn_with_state(state.clone(), auth::require_token))
        .layer(from_fn_with_state(state.clone(), observe::record))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn ok() -> &'static str {
    "ok"
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::render(&state.registry))
}

/// Serves `router` over TLS on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: std::net::TcpListener,
    tls: rustls::ServerConfig,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let on_shutdown = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        // Watches stay open until their clients go; give in-flight requests a moment, then stop.
        on_shutdown.graceful_shutdown(Some(Duration::from_secs(2)));
    });
    let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls));
    // TCP_NODELAY, as Go's net/http (and so Kubernetes' API server) sets by default: a response
    // goes out as several TLS records, and with Nagle's algorithm a later one waits for the
    // client's delayed ACK of the first, up to 40 ms.
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config).acceptor(axum_server::accept::NoDelayAcceptor);
    axum_server::from_tcp(listener)?.acceptor(acceptor).handle(handle).serve(router.into_make_service()).await
}
