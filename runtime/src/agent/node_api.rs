//! The agent's node API, which the API server proxies `pods/{name}/log` to (as kube-apiserver does
//! to the kubelet): `GET /containerLogs/{namespace}/{pod}/{container}` with `follow`, `previous`,
//! `timestamps`, `sinceSeconds`, `sinceTime`, `tailLines` and `limitBytes` (see [`super::log`]);
//! `/exec/{namespace}/{pod}/{container}` (see [`super::exec`]);
//! `/attach/{namespace}/{pod}/{container}` (see [`super::attach`]);
//! `/portForward/{namespace}/{pod}` (see [`super::port_forward`]); `/metrics` (see
//! [`super::metrics`]); and `CONNECT POD_IP:PORT`, the node tunnel other nodes' Service proxies
//! reach this node's pods through (see [`crate::proxy::tunnel`]).
//! Requests must carry the cluster's bearer token.

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::log::query::{self, Decoder, LogQuery, Output};
use super::log::{self, Reader, RunFiles};

/// How often a followed log is checked for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

type Body = BoxBody<Bytes, Infallible>;

#[derive(Clone)]
pub struct NodeApi {
    /// `DATA_DIR/pods`: one directory per pod, one per container, one log file per run.
    pub pods_dir: PathBuf,
    pub token: String,
    /// Running containers, for `exec`.
    pub execs: super::exec::Execs,
    pub metrics: std::sync::Arc<super::metrics::AgentMetrics>,
    /// This node's pod CIDR: the only addresses the tunnel dials.
    pub pod_cidr: ipnet::IpNet,
}

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(message.into())).boxed());
    *response.status_mut() = status;
    response
}

impl NodeApi {
    /// Serves until `stop` fires.
    pub async fn serve(self, listener: TcpListener, stop: CancellationToken) {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
                _ = stop.cancelled() => return,
            };
            let api = self.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let api = api.clone();
                    let stop = stop.clone();
                    async move { Ok::<_, Infallible>(api.handle(req, stop).await) }
                });
                // Upgrades: `exec`, `attach` and `portForward` switch the connection to another protocol.
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades().await;
            });
        }
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>, stop: CancellationToken) -> Response<Body> {
        let authorized = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.strip_prefix("Bearer ").is_some_and(|t| t.trim() == self.token));
        if !authorized {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
        if req.method() == hyper::Method::CONNECT {
            return match crate::proxy::tunnel::accept(req, self.pod_cidr).await {
                Ok(()) => text(StatusCode::OK, ""),
                Err((status, message)) => text(status, message),
            };
        }
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        if segments == ["metrics"] {
            let mut response = text(StatusCode::OK, self.metrics.render());
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return response;
        }
        if segments == ["stats", "usage"] {
            let mut response = text(StatusCode::OK, self.metrics.pods.usage_summary().to_string());
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
            return response;
        }
        if let ["exec", namespace, pod, container] = segments.as_slice() {
            return super::exec::handle(&self.execs, req, namespace, pod, container);
        }
        if let ["attach", namespace, pod, container] = segments.as_slice() {
            return match self.run_files(namespace, pod, container, false) {
                Ok(files) => super::attach::handle(&self.execs, files, req, (namespace, pod, container), stop),
                Err(message) => text(StatusCode::NOT_FOUND, message),
            };
        }
        if let ["portForward", namespace, pod] = segments.as_slice() {
            return super::port_forward::handle(req, self.pod_cidr, namespace, pod);
        }
        let ["containerLogs", namespace, pod, container] = segments.as_slice() else {
            return text(StatusCode::NOT_FOUND, "not found");
        };
        let query = match query::parse(req.uri().query()) {
            Ok(query) => query,
            Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
        };
        match self.run_files(namespace, pod, container, query.previous) {
            Ok(files) => stream_log(files, query, stop).await,
            Err(message) => text(StatusCode::NOT_FOUND, message),
        }
    }

    /// The log files of the container's current (or previous) run in the newest pod of that name.
    fn run_files(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> Result<RunFiles, String> {
        let prefix = format!("{namespace}_{pod}_");
        let pod_dir = std::fs::read_dir(&self.pods_dir)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .map(|e| e.path())
            .ok_or_else(|| format!("pod \"{pod}\" has no logs on this node"))?;
        let container_dir = pod_dir.join(container);
        let runs = log::runs(&container_dir);
        // Waiting to restart, the container's last run is both its current and its previous one.
        let waiting = runs.last().is_some_and(|run| RunFiles::new(&container_dir, *run).restarting());
        let back = if previous && !waiting { 2 } else { 1 };
        let wanted = runs.len().checked_sub(back);
        match wanted.and_then(|i| runs.get(i)) {
            Some(run) => Ok(RunFiles::new(&container_dir, *run)),
            None if previous => {
                Err(format!("previous terminated container \"{container}\" in pod \"{pod}\" not found"))
            }
            None => Err(format!("container \"{container}\" in pod \"{pod}\" is waiting to start")),
        }
    }
}

/// Sends the run's log, filtered as asked; when following, keeps sending what the run writes until
/// it is over (its end marker, or a newer run), `limitBytes` are sent, the client leaves or the
/// agent stops.
async fn stream_log(files: RunFiles, query: LogQuery, stop: CancellationToken) -> Response<Body> {
    // Looked at before reading: a run over by then is read whole, with nothing to follow.
    let ended = files.ended().await;
    let (mut reader, content) = match Reader::open(files.clone()).await {
        Ok(opened) => opened,
        Err(e) => return text(StatusCode::NOT_FOUND, format!("reading the log: {e}")),
    };
    let mut output = Output::new(&query, jiff::Timestamp::now());
    let mut decoder = Decoder::default();
    let mut lines = decoder.push(&content);
    let follow = query.follow && !ended;
    if !follow {
        lines.extend(decoder.finish());
    }
    let first = output.first(lines, query.tail_lines);
    if !follow || output.exhausted() {
        return Response::new(Full::new(Bytes::from(first)).boxed());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(Ok(Frame::data(Bytes::from(first)))).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = tx.closed() => return,
                _ = stop.cancelled() => return,
            }
            // Looked at before reading, for the same reason: once over, this read is the last.
            let over = files.ended().await || log::runs(files.dir()).last().is_some_and(|latest| *latest > files.run());
            let Ok(fresh) = reader.read_new().await else { return };
            let mut lines = decoder.push(&fresh);
            if over {
                lines.extend(decoder.finish());
            }
            let more = output.more(lines);
            if !more.is_empty() && tx.send(Ok(Frame::data(Bytes::from(more)))).await.is_err() {
                return;
            }
            if over || output.exhausted() {
                return;
            }
        }
    });
    Response::new(StreamBody::new(tokio_stream_from(rx)).boxed())
}

fn tokio_stream_from<T>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
