//! wasmkube's control plane: the Kubernetes REST API on a durable redb store, with watch, TLS and
//! the controllers that live next to the store.
//!
//! Start at [`ControlPlane::start`], which opens the [`store`], wraps it in the [`objects`] service
//! (Kubernetes' create/update/patch/delete/list/watch semantics), serves that through the
//! [`apiserver`] over HTTPS with the material from [`pki`] (beside the image [`registry`]), and runs
//! the [`controller`]s and the [`scheduler`], which record Events through one shared [`events`]
//! recorder. Errors reach clients as Kubernetes `Status` objects ([`status`]); [`metrics`] are
//! served at `/metrics`. [`schema`] holds every kind's OpenAPI schema with its merge semantics,
//! for `/openapi/v3` and for strategic merge patches.

pub mod apiserver;
pub mod controller;
pub mod events;
pub mod metrics;
pub mod objects;
pub mod pki;
pub mod registry;
pub mod scheduler;
pub mod schema;
pub mod status;
pub mod store;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::objects::Objects;
use crate::pki::Pki;
use crate::store::redb::{RedbConfig, RedbStore};

/// How to run a control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// Holds `store.redb`, `pki/`, `admin-token` and the image `registry/`.
    pub data_dir: PathBuf,
    /// Where the API listens; port 0 picks a free one.
    pub api_addr: SocketAddr,
    /// Extra addresses and names the server certificate must be valid for.
    pub extra_ips: Vec<IpAddr>,
    pub extra_hostnames: Vec<String>,
    /// Events kept for watch resumption and paged lists.
    pub event_window: u64,
    /// Interval of BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Where nodes' pod CIDRs come from.
    pub cluster_cidr: controller::node_ipam::ClusterCidr,
    /// How long a node may go without renewing its Lease or posting its Ready heartbeat before it
    /// is marked Unknown and tainted unreachable (kube-controller-manager's
    /// `--node-monitor-grace-period`; default 40 s).
    pub node_monitor_grace_period: Duration,
    /// `tolerationSeconds` of the not-ready/unreachable NoExecute tolerations given to pods created
    /// without them: how long their pods stay bound to a lost node before eviction (default 300).
    pub default_toleration_seconds: i64,
    /// Where Services' ClusterIPs and node ports come from.
    pub service_network: objects::ServiceNetwork,
}

impl ControlPlaneConfig {
    pub fn new(data_dir: impl Into<PathBuf>, api_addr: SocketAddr) -> Self {
        Self {
            data_dir: data_dir.into(),
            api_addr,
            extra_ips: Vec::new(),
            extra_hostnames: Vec::new(),
            event_window: RedbConfig::default().event_window,
            bookmark_interval: Duration::from_secs(60),
            cluster_cidr: controller::node_ipam::ClusterCidr::default(),
            node_monitor_grace_period: controller::node_lifecycle::DEFAULT_GRACE_PERIOD,
            default_toleration_seconds: 300,
            service_network: objects::ServiceNetwork::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("creating the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the store")]
    Store(#[from] store::StoreError),
    #[error("preparing TLS certificates and the admin token")]
    Pki(#[from] pki::PkiError),
    #[error("opening the image registry's storage")]
    Registry(#[source] std::io::Error),
    #[error("configuring TLS")]
    Tls(#[source] std::io::Error),
    #[error("binding the API address {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the built-in namespaces and Services: {0}")]
    Bootstrap(status::ApiError),
}

/// A running control plane. Dropping it does not stop it; call [`ControlPlane::shutdown`].
pub struct ControlPlane {
    /// The address the API actually listens on.
    pub addr: SocketAddr,
    pub pki: Pki,
    pub objects: Objects,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl ControlPlane {
    /// Opens the store, prepares TLS, binds the API and starts serving and the controllers.
    pub async fn start(config: ControlPlaneConfig) -> Result<Self, StartError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| StartError::DataDir { path: config.data_dir.clone(), source })?;
        let metrics = Metrics::new();
        let store = RedbStore::open(
            &config.data_dir.join("store.redb"),
            RedbConfig { event_window: config.event_window },
            metrics.store.clone(),
        )?;
        let objects = Objects::new(Arc::new(store))
            .with_default_toleration_seconds(config.default_toleration_seconds)
            .with_service_network(config.service_network.clone());
        controller::namespace::ensure_built_in(&objects).await.map_err(StartError::Bootstrap)?;

        let mut ips = config.extra_ips.clone();
        if !config.api_addr.ip().is_unspecified() {
            ips.push(config.api_addr.ip());
        }
        let pki = Pki::load_or_create(&config.data_dir, &ips, &config.extra_hostnames)?;
        let tls = pki.server_config().map_err(StartError::Tls)?;

        let listener = std::net::TcpListener::bind(config.api_addr)
            .map_err(|source| StartError::Bind { addr: config.api_addr, source })?;
        listener.set_nonblocking(true).map_err(|source| StartError::Bind { addr: config.api_addr, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.api_addr, source })?;

        let state = apiserver::AppState {
            objects: objects.clone(),
            metrics: metrics.api.clone(),
            registry: metrics.registry(),
            settings: Arc::new(apiserver::Settings {
                admin_token: pki.admin_token.clone(),
                bookmark_interval: config.bookmark_interval,
            }),
            images: registry::storage::Storage::open(config.data_dir.join("registry")).map_err(StartError::Registry)?,
        };
        controller::built_in_services::ensure(&objects, addr).await.map_err(StartError::Bootstrap)?;
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let router = apiserver::router(state);
        let serve_cancel = cancel.clone();
        tasks.spawn(async move {
            if let Err(e) = apiserver::serve(listener, tls, router, serve_cancel.clone()).await {
                tracing::error!(error = %e, "API server stopped");
                serve_cancel.cancel();
            }
        });
        tasks.spawn(controller::namespace::run(objects.clone(), cancel.clone()));
        tasks.spawn(controller::node_ipam::run(objects.clone(), config.cluster_cidr.clone(), cancel.clone()));
        // One recorder (one correlator, one bounded cache) for every task that records Events.
        let recorder = events::Recorder::new(objects.clone());
        tasks.spawn(controller::replicaset::run(objects.clone(), recorder.clone(), cancel.clone()));
        tasks.spawn(controller::deployment::run(objects.clone(), recorder.clone(), cancel.clone()));
        tasks.spawn(controller::disruption::run(objects.clone(), cancel.clone()));
        tasks.spawn(controller::garbage_collector::run(objects.clone(), cancel.clone()));
        let grace = config.node_monitor_grace_period;
        tasks.spawn(controller::node_lifecycle::run(objects.clone(), recorder.clone(), grace, cancel.clone()));
        tasks.spawn(controller::service_account::run(objects.clone(), cancel.clone()));
        tasks.spawn(controller::endpoints::run(objects.clone(), cancel.clone()));
        tasks.spawn(controller::service_lb::run(objects.clone(), cancel.clone()));
        tasks.spawn(scheduler::run(objects.clone(), recorder, scheduler::Scheduler::default(), cancel.clone()));
        tracing::info!(%addr, "control plane serving");
        Ok(Self { addr, pki, objects, cancel, tasks })
    }

    /// `https://<addr>`, with `localhost`'s IP shown as is.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Asks every task to stop.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// Resolves when the control plane has stopped (after [`ControlPlane::shutdown`] or a fatal error).
    pub async fn stopped(mut self) {
        self.cancel.cancelled().await;
        while self.tasks.join_next().await.is_some() {}
    }
}
