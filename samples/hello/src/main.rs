//! `hello`: the smallest wasi:http service, answering every request with a greeting. wasmkube runs
//! it as a handler with a fresh instance per request; `samples/manifests/hello.yaml` deploys it.

use wstd::http::body::Body;
use wstd::http::{Error, Request, Response};

/// What the service answers; the hot-reload walkthrough edits this line.
const GREETING: &str = "Hello from wasmkube!";

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let path = request.uri().path();
    Ok(Response::new(format!("{GREETING} ({path})\n").into()))
}
