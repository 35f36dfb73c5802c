//! The node tunnel: how a Service proxy on one host reaches a pod on another. Pod IPs are
//! loopback addresses, so only their own host can dial them; every agent therefore accepts
//! `CONNECT POD_IP:PORT` on its node API (which already carries the cluster's bearer token and is
//! advertised in the Node's `daemonEndpoints`), dials the pod, answers `200` and then splices
//! bytes both ways, as an HTTP proxy does. A pod that refuses gets `502`, so the caller skips to
//! the next endpoint as it would for a local refusal; addresses outside the node's pod CIDR get
//! `403`, so the tunnel reaches pods and nothing else on the host.
//!
//! HTTP CONNECT rather than a header of our own: hyper parses and writes it on both sides, and
//! the upgraded connection is the plain TCP socket underneath, so resets still pass through.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{CONNECT_TIMEOUT, IDLE_TIMEOUT, splice};

/// Why a tunnel was not opened: the status and message the node API answers with.
pub type Refusal = (StatusCode, String);

/// Serves `CONNECT POD_IP:PORT` (already authorized): dials the pod, and once the caller has
/// the `200`, splices the two connections. `pods` is this node's pod CIDR.
pub async fn accept(mut req: Request<Incoming>, pods: IpNet) -> Result<(), Refusal> {
    let target = req
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
        .ok_or_else(|| (StatusCode::BAD_REQUEST, "CONNECT needs POD_IP:PORT".to_string()))?;
    if !pods.contains(&target.ip()) {
        return Err((StatusCode::FORBIDDEN, format!("{} is not a pod IP of this node ({pods})", target.ip())));
    }
    let pod = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(pod)) => pod,
        Ok(Err(e)) => return Err((StatusCode::BAD_GATEWAY, format!("dialling {target}: {e}"))),
        Err(_) => return Err((StatusCode::GATEWAY_TIMEOUT, format!("dialling {target}: timed out"))),
    };
    let _ = pod.set_nodelay(true);
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(%target, error = %e, "a tunnel's caller left before it opened");
                return;
            }
        };
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let mut pod = pod;
                // Bytes the caller sent right behind its request were read with it.
                if !parts.read_buf.is_empty() && pod.write_all(&parts.read_buf).await.is_err() {
                    return;
                }
                splice(parts.io.into_inner(), pod, IDLE_TIMEOUT).await;
            }
            Err(upgraded) => {
                // Not a plain TCP connection underneath (never so for the node API): copy bytes.
                let (mut caller, mut pod) = (TokioIo::new(upgraded), pod);
                let _ = tokio::io::copy_bidirectional(&mut caller, &mut pod).await;
            }
        }
    });
    Ok(())
}

/// Opens a connection to `target` (a pod on another host) through the tunnel at `tunnel`. Returns
/// the connection and any bytes the pod already sent, which were read with the tunnel's answer.
/// A refusal at the far end is an error of kind `ConnectionRefused`.
pub async fn dial(tunnel: SocketAddr, target: SocketAddr, token: &str) -> io::Result<(TcpStream, Bytes)> {
    let stream = TcpStream::connect(tunnel).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(connection.with_upgrades());
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri(target.to_string())
        .header(hyper::header::HOST, target.to_string())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::new())
        .map_err(io::Error::other)?;
    let response = sender.send_request(request).await.map_err(io::Error::other)?;
    if response.status() != StatusCode::OK {
        let status = response.status();
        return Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("tunnel at {tunnel}: {status}")));
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(io::Error::other)?;
    let parts = upgraded
        .downcast::<TokioIo<TcpStream>>()
        .map_err(|_| io::Error::other("the tunnel's connection is not a TCP stream"))?;
    Ok((parts.io.into_inner(), parts.read_buf))
}
