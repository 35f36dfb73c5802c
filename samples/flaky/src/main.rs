//! `flaky`: a wasi:http service whose health follows the clock — the sample for probes. Every
//! request gets a fresh instance, so it cannot count requests; the wall clock is its only state.
//! `/ready` answers 200 during even periods of `FLAKY_PERIOD_SECONDS` (default 10) and 503 during
//! odd ones, `/healthz` always 200, `/fail` always 500; any other path says what the service is.
//! `samples/manifests/flaky.yaml` deploys it with a readiness and a liveness probe.

use std::time::{SystemTime, UNIX_EPOCH};

use wstd::http::body::Body;
use wstd::http::{Error, Request, Response};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let (status, text) = match request.uri().path() {
        "/ready" => ready(),
        "/healthz" => (200, "healthy\n".to_string()),
        "/fail" => (500, "failing on purpose\n".to_string()),
        path => (200, format!("flaky: a sample for probes (/ready flips, /healthz 200, /fail 500); path={path}\n")),
    };
    Ok(Response::builder().status(status).body(text.into())?)
}

/// 200 in even periods, 503 in odd ones.
fn ready() -> (u16, String) {
    let period: u64 =
        std::env::var("FLAKY_PERIOD_SECONDS").ok().and_then(|v| v.parse().ok()).filter(|p| *p > 0).unwrap_or(10);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let n = now / period;
    if n % 2 == 0 {
        (200, format!("ready (period {n} of {period}s is even)\n"))
    } else {
        (503, format!("not ready (period {n} of {period}s is odd)\n"))
    }
}
