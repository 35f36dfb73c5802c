//! The native baseline of `pod-bench http`: a hyper HTTP/1.1 server answering every request the
//! way the `hello` sample does (`Hello from wasmkube! pod=unknown version=v1 path=/`), with no Wasm
//! in between. `pod-bench http` runs it as a child process (`pod-bench serve-native`), so it has a
//! process and runtime of its own, as the other two servers do.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The line `serve` prints once it listens, followed by its address.
pub const ANNOUNCEMENT: &str = "listening: ";

/// Serves `addr` until killed.
pub async fn serve(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    // stdout is a pipe to `pod-bench http`; `println!` flushes at the newline.
    println!("{ANNOUNCEMENT}{}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: keep serving the connections already open,
            // and do not spin while none can be accepted.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        // Small responses on keep-alive connections: never let Nagle hold one back.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // A client closing its connection mid-request is its business.
            let _ =
                http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service_fn(hello)).await;
        });
    }
}

async fn hello(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = format!("Hello from wasmkube! pod=unknown version=v1 path={}\n", request.uri().path());
    Ok(Response::new(Full::new(Bytes::from(body))))
}
