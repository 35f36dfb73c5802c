//! `hello`: the smallest wasi:http service. It answers every request with its greeting (env
//! `GREETING`), the pod it runs in (env `POD_NAME`) and its version; `/sleep/MS` answers after MS
//! milliseconds. wasmkube runs it as a handler with a fresh instance per request;
//! `samples/manifests/hello.yaml` deploys it.

use wstd::http::body::Body;
use wstd::http::{Error, Request, Response};

/// The version string the service reports; the hot-reload walkthrough edits it.
const VERSION: &str = "v1";

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello from wasmkube!".to_string());
    let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".to_string());
    let path = request.uri().path();
    // `/sleep/MS` answers after MS milliseconds: a slow request, for deadlines and draining.
    if let Some(ms) = path.strip_prefix("/sleep/").and_then(|ms| ms.parse::<u64>().ok()) {
        wstd::task::sleep(wstd::time::Duration::from_millis(ms)).await;
    }
    Ok(Response::new(format!("{greeting} pod={pod} version={VERSION} path={path}\n").into()))
}
