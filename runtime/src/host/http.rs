//! Serving a wasi:http handler: HTTP/1.1 on the pod's IP and port, a fresh instance per request
//! (as `wasmtime serve` does), a per-request deadline, and a graceful drain on stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::command::share_cpu;
use super::usage::Timed;
use super::{Guest, GuestConfig};

/// The version of a handler that new requests get: swapped in place by a hot swap, while
/// requests already running keep the instance they started with. Each replacement is numbered,
/// so a late replacement (optimised code for a version since swapped out) can be refused.
/// A version carries its engine: baseline and optimised code come from different engines.
#[derive(Clone)]
pub struct CurrentVersion(Arc<std::sync::RwLock<(u64, ProxyPre<Guest>)>>);

impl CurrentVersion {
    pub fn new(pre: ProxyPre<Guest>) -> Self {
        Self(Arc::new(std::sync::RwLock::new((0, pre))))
    }

    fn get(&self) -> ProxyPre<Guest> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).1.clone()
    }

    /// From the next request on, `pre` serves; the number of this replacement.
    pub fn replace(&self, pre: ProxyPre<Guest>) -> u64 {
        let mut current = self.0.write().unwrap_or_else(|p| p.into_inner());
        *current = (current.0 + 1, pre);
        current.0
    }

    /// Replaces the version put in by replacement `number` only if it still serves; whether it did.
    pub fn replace_if_current(&self, number: u64, pre: ProxyPre<Guest>) -> bool {
        let mut current = self.0.write().unwrap_or_else(|p| p.into_inner());
        if current.0 != number {
            return false;
        }
        *current = (number + 1, pre);
        true
    }
}

/// How one handler container is served.
#[derive(Clone)]
pub struct Handler {
    pub pre: CurrentVersion,
    pub config: Arc<GuestConfig>,
    /// A request still running after this is stopped and answered 504.
    pub deadline: Duration,
    /// The concurrency cap: a request waits for a slot; the wait counts toward its deadline.
    pub limit: Option<ConcurrencyLimit>,
    /// Requests served, for status and metrics.
    pub served: Arc<AtomicU64>,
}

/// At most `max` requests in flight (`wasmkube.dev/max-concurrency`).
#[derive(Clone)]
pub struct ConcurrencyLimit {
    slots: Arc<Semaphore>,
    max: usize,
}

impl ConcurrencyLimit {
    pub fn new(max: usize) -> Self {
        Self { slots: Arc::new(Semaphore::new(max)), max }
    }
}

/// Aborts a task when dropped, unless disarmed.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl AbortOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

fn text_response(status: u16, text: String) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response
}

impl Handler {
    /// Serves `listener` until `stop` fires, then lets in-flight requests finish for up to `grace`.
    pub async fn serve(self, listener: TcpListener, stop: CancellationToken, grace: Duration) {
        let graceful = GracefulShutdown::new();
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                },
                _ = stop.cancelled() => break,
            };
            let handler = self.clone();
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, std::convert::Infallible>(handler.handle(req).await) }
            });
            let conn = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        drop(listener);
        if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
            tracing::info!("grace period over with requests still running");
        }
    }

    async fn handle(&self, req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<HyperOutgoingBody> {
        self.served.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + self.deadline;
        // Held until the response head is out (the body may stream on), like the handler's instance.
        let _slot = match &self.limit {
            Some(limit) => match tokio::time::timeout_at(deadline, limit.slots.clone().acquire_owned()).await {
                Ok(Ok(permit)) => Some(permit),
                _ => {
                    let message = format!(
                        "the handler did not answer within {:?}: all {} request slots of the pod \
                         (wasmkube.dev/max-concurrency) stayed busy\n",
                        self.deadline, limit.max
                    );
                    return text_response(504, message);
                }
            },
            None => None,
        };
        let response = match tokio::time::timeout_at(deadline, self.instantiate_and_handle(self.pre.get(), req)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => text_response(500, format!("the handler failed: {e:#}\n")),
            Err(_) => text_response(504, format!("the handler did not answer within {:?}\n", self.deadline)),
        };
        let usage = &self.config.usage;
        usage.requests.fetch_add(1, Ordering::Relaxed);
        if response.status().is_server_error() {
            usage.request_errors.fetch_add(1, Ordering::Relaxed);
        }
        response
    }

    /// Sends one request (`GET path`, no body) to `pre`, a version not serving yet: an error
    /// means it failed to instantiate or trapped. Its answer, whatever the status, is read whole.
    pub async fn trial(&self, pre: ProxyPre<Guest>, path: &str) -> wasmtime::Result<u16> {
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, "localhost")
            .body(http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}))?;
        let run = async {
            let response = self.instantiate_and_handle(pre, req).await?;
            let status = response.status().as_u16();
            response.into_body().collect().await.map_err(|e| wasmtime::Error::msg(format!("{e:?}")))?;
            Ok(status)
        };
        tokio::time::timeout(self.deadline, run)
            .await
            .unwrap_or_else(|_| Err(wasmtime::Error::msg(format!("no answer within {:?}", self.deadline))))
    }

    async fn instantiate_and_handle<B>(
        &self,
        pre: ProxyPre<Guest>,
        req: hyper::Request<B>,
    ) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>>
    where
        B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
    {
        let mut store = Store::new(pre.engine(), self.config.guest()?);
        store.limiter(|g| &mut g.limits);
        share_cpu(&mut store, self.config.cpu_quota.clone());
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store.data_mut().http().new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let usage = self.config.usage.clone();
        // The instance runs in its own task so the body can keep streaming after the head is sent.
        let task = tokio::spawn(Timed::new(
            async move {
                let started = Instant::now();
                let proxy = pre.instantiate_async(&mut store).await?;
                store.data().limits.usage().observe_instantiation(started);
                proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
            },
            usage,
        ));
        // If the deadline drops this future before the head arrives, the task is aborted with it:
        // that drops the store and stops the guest.
        let abort = AbortOnDrop(Some(task.abort_handle()));
        match receiver.await {
            Ok(Ok(response)) => {
                abort.disarm();
                Ok(response)
            }
            Ok(Err(code)) => Err(wasmtime::Error::msg(format!("{code:?}"))),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(wasmtime::Error::msg("the guest never set a response")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(wasmtime::Error::msg(e.to_string())),
            },
        }
    }
}
