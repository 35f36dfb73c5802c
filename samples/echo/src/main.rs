//! `echo`: a TCP echo service on wasi:sockets. It listens on `$POD_IP:PORT` (the first argument,
//! default 7007) — a guest may bind only its pod's IP, so the manifest passes `status.podIP` in
//! through the downward API — and sends every connection's bytes back until the client closes.
//! Connections are served concurrently on wstd's async runtime.

use wstd::io;
use wstd::iter::AsyncIterator;
use wstd::net::TcpListener;

#[wstd::main]
async fn main() -> io::Result<()> {
    let ip = std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".to_string());
    let port = std::env::args().nth(1).unwrap_or_else(|| "7007".to_string());
    let listener = TcpListener::bind(&format!("{ip}:{port}")).await?;
    println!("echo: listening on {}", listener.local_addr()?);
    let mut connections = listener.incoming();
    while let Some(connection) = connections.next().await {
        let Ok(stream) = connection else { continue };
        wstd::runtime::spawn(async move {
            // A client that goes away mid-copy is not an error worth stopping for.
            let _ = io::copy(&stream, &stream).await;
        })
        .detach();
    }
    Ok(())
}
