//! Streaming a watch as newline-delimited JSON, with periodic bookmarks and `timeoutSeconds`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use wasmkube_api::Kind;

use super::AppState;
use super::table::{self, TableRequest};
use crate::objects::WatchEvent;
use crate::store::Revision;

/// How a watch is streamed.
pub struct Options {
    /// `timeoutSeconds`: the stream ends after this long.
    pub timeout: Option<Duration>,
    /// With `allowWatchBookmarks=true`, how often a BOOKMARK is sent.
    pub bookmarks: Option<Duration>,
    /// Objects are sent as one-row Tables ([`table::of_object`]).
    pub as_table: Option<TableRequest>,
}

/// Starts streaming `events`; the stream stays open until the client goes, `timeout` passes or the
/// watch fails (an ERROR event is its last line).
pub fn respond(
    state: &AppState,
    kind: &'static Kind,
    start: Revision,
    events: impl Stream<Item = WatchEvent> + Send + 'static,
    options: Options,
) -> Response {
    let Options { timeout, bookmarks, as_table } = options;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let guard = state.metrics.watch_opened();
    tokio::spawn(async move {
        let _guard = guard;
        let mut events = std::pin::pin!(events);
        let mut last = start;
        let never = Duration::from_secs(365 * 24 * 3600);
        let deadline = tokio::time::sleep(timeout.unwrap_or(never));
        tokio::pin!(deadline);
        let period = bookmarks.unwrap_or(never);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut first_row = true;
        loop {
            let mut event = tokio::select! {
                event = events.next() => match event {
                    Some(event) => event,
                    None => break,
                },
                _ = ticker.tick(), if bookmarks.is_some() => WatchEvent {
                    kind: "BOOKMARK",
                    object: json!({
                        "kind": kind.kind,
                        "apiVersion": kind.api_version(),
                        "metadata": {"resourceVersion": last.to_string()},
                    }),
                },
                _ = &mut deadline => break,
                _ = tx.closed() => break,
            };
            if let Some(rev) = event.revision() {
                last = last.max(rev);
            }
            let is_error = event.kind == "ERROR";
            if let Some(request) = as_table.filter(|_| matches!(event.kind, "ADDED" | "MODIFIED" | "DELETED")) {
                let object = std::mem::take(&mut event.object);
                event.object = table::of_object(kind, object, request, first_row);
                first_row = false;
            }
            let mut line = serde_json::to_vec(&event).expect("watch events serialise");
            line.push(b'\n');
            if tx.send(Bytes::from(line)).await.is_err() || is_error {
                break;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .expect("static response parts are valid")
}
