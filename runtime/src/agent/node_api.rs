//! The agent's node API, which the API server proxies `pods/{name}/log` to (as kube-apiserver does
//! to the kubelet): `GET /containerLogs/{namespace}/{pod}/{container}` with `follow`, `tailLines`,
//! `previous` and `limitBytes`. Requests must carry the cluster's bearer token.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How often a followed log is checked for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

type Body = BoxBody<Bytes, Infallible>;

#[derive(Clone)]
pub struct NodeApi {
    /// `DATA_DIR/pods`: one directory per pod, one per container, one log file per run.
    pub pods_dir: PathBuf,
    pub token: String,
}

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(message.into())).boxed());
    *response.status_mut() = status;
    response
}

/// The query parameters of a log request.
#[derive(Debug, Default, PartialEq)]
struct LogQuery {
    follow: bool,
    previous: bool,
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
}

fn parse_query(query: Option<&str>) -> LogQuery {
    let mut q = LogQuery::default();
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "follow" => q.follow = value == "true" || value == "1",
            "previous" => q.previous = value == "true" || value == "1",
            "tailLines" => q.tail_lines = value.parse().ok(),
            "limitBytes" => q.limit_bytes = value.parse().ok(),
            _ => {}
        }
    }
    q
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
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
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
        let segments: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
        let ["containerLogs", namespace, pod, container] = segments.as_slice() else {
            return text(StatusCode::NOT_FOUND, "not found");
        };
        let query = parse_query(req.uri().query());
        match self.log_file(namespace, pod, container, query.previous) {
            Ok(path) => stream_log(path, query, stop).await,
            Err(message) => text(StatusCode::NOT_FOUND, message),
        }
    }

    /// The log file of the container's current (or previous) run in the newest pod of that name.
    fn log_file(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> Result<PathBuf, String> {
        let prefix = format!("{namespace}_{pod}_");
        let pod_dir = std::fs::read_dir(&self.pods_dir)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .map(|e| e.path())
            .ok_or_else(|| format!("pod \"{pod}\" has no logs on this node"))?;
        let runs = runs(&pod_dir.join(container));
        let wanted = if previous { runs.len().checked_sub(2) } else { runs.len().checked_sub(1) };
        match wanted.and_then(|i| runs.get(i)) {
            Some(run) => Ok(pod_dir.join(container).join(format!("{run}.log"))),
            None if previous => {
                Err(format!("previous terminated container \"{container}\" in pod \"{pod}\" not found"))
            }
            None => Err(format!("container \"{container}\" in pod \"{pod}\" is waiting to start")),
        }
    }
}

/// The run numbers that have a log file, ascending.
fn runs(container_dir: &Path) -> Vec<u32> {
    let mut runs: Vec<u32> = std::fs::read_dir(container_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".log")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    runs.sort_unstable();
    runs
}

/// The last `n` lines of `text`.
fn tail(text: &[u8], n: usize) -> &[u8] {
    let trimmed = text.strip_suffix(b"\n").unwrap_or(text);
    let start =
        trimmed.iter().enumerate().rev().filter(|(_, b)| **b == b'\n').nth(n.saturating_sub(1)).map(|(i, _)| i + 1);
    match (n, start) {
        (0, _) => &[],
        (_, Some(i)) => &text[i..],
        (_, None) => text,
    }
}

/// Sends the log (tail and limit applied); when following, keeps sending what is appended until
/// a newer run starts, the client leaves or the agent stops.
async fn stream_log(path: PathBuf, query: LogQuery, stop: CancellationToken) -> Response<Body> {
    let content = match tokio::fs::read(&path).await {
        Ok(c) => c,
        Err(e) => return text(StatusCode::NOT_FOUND, format!("reading the log: {e}")),
    };
    let mut first = match query.tail_lines {
        Some(n) => tail(&content, n).to_vec(),
        None => content.clone(),
    };
    if let Some(limit) = query.limit_bytes {
        first.truncate(limit);
    }
    if !query.follow {
        return Response::new(Full::new(Bytes::from(first)).boxed());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        if tx.send(Ok(Frame::data(Bytes::from(first)))).await.is_err() {
            return;
        }
        let mut offset = content.len() as u64;
        let container_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let run: u32 = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()).unwrap_or(0);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = tx.closed() => return,
                _ = stop.cancelled() => return,
            }
            let Ok(now) = tokio::fs::read(&path).await else { return };
            if now.len() as u64 > offset {
                let fresh = Bytes::copy_from_slice(&now[offset as usize..]);
                offset = now.len() as u64;
                if tx.send(Ok(Frame::data(fresh))).await.is_err() {
                    return;
                }
            } else if runs(&container_dir).last().is_some_and(|latest| *latest > run) {
                return; // this run ended and a new one started: the followed stream is complete
            }
        }
    });
    Response::new(StreamBody::new(tokio_stream_from(rx)).boxed())
}

fn tokio_stream_from<T>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 1), b"c");
        assert_eq!(tail(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail(b"a\nb\n", 0), b"");
    }

    #[test]
    fn queries_parse_like_kubelet_parameters() {
        let q = parse_query(Some("follow=true&tailLines=3&previous=false&limitBytes=10&container=x"));
        assert_eq!(q, LogQuery { follow: true, previous: false, tail_lines: Some(3), limit_bytes: Some(10) });
    }
}
