//! The node tunnel: how a Service proxy on one host reaches a pod on another. Pod IPs are
//! loopback addresses, so only their own host can dial them; every agent therefore accepts
//! `CONNECT POD_IP:PORT` on its node API (which already carries the cluster's bearer token and is
//! advertised in the Node's `daemonEndpoints`), dials the pod, answers `200` and then splices
//! bytes both ways, as an HTTP proxy does. A pod that refuses gets `502`, so the caller skips to
//! the next endpoint as it would for a local refusal; addresses outside the node's pod CIDR get
//! `403`. (A host process listening on a wildcard address also answers at pod addresses, so the
//! bearer token is what guards the tunnel, as it guards `exec`.)
//!
//! HTTP CONNECT rather than a header of our own: hyper parses and writes it on both sides, and
//! the upgraded connection is the plain TCP socket underneath, so resets still pass through.
//!
//! UDP goes through the same tunnel: a CONNECT with `wasmkube-transport: udp` makes the far node
//! relay datagrams between the tunnel and a UDP socket connected to the pod, each datagram framed
//! on the tunnel as a 2-byte big-endian length and its bytes. One tunnel carries one client
//! session; it closes when the session goes idle (either side closing ends it).

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::{CONNECT_TIMEOUT, IDLE_TIMEOUT, splice};

/// The request header that asks for a UDP relay rather than a TCP connection.
const TRANSPORT: &str = "wasmkube-transport";

/// What a tunnel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

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
    match req.headers().get(TRANSPORT).map(|v| v.as_bytes()) {
        None | Some(b"tcp") => {}
        Some(b"udp") => return accept_udp(req, target).await,
        Some(other) => {
            let other = String::from_utf8_lossy(other);
            return Err((StatusCode::BAD_REQUEST, format!("{TRANSPORT}: {other:?} is neither tcp nor udp")));
        }
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

/// The UDP side of [`accept`]: a socket connected to the pod, relayed once the caller has the `200`.
async fn accept_udp(mut req: Request<Incoming>, target: SocketAddr) -> Result<(), Refusal> {
    let local: SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(local).await.map_err(|e| (StatusCode::BAD_GATEWAY, format!("UDP socket: {e}")))?;
    socket.connect(target).await.map_err(|e| (StatusCode::BAD_GATEWAY, format!("UDP to {target}: {e}")))?;
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else { return };
        let (read, mut write) = parts.io.into_inner().into_split();
        let mut read = std::io::Cursor::new(parts.read_buf).chain(read);
        let socket = &socket;
        let last = std::sync::Mutex::new(std::time::Instant::now());
        let touch = || *last.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
        let out = async {
            while let Some(datagram) = read_frame(&mut read).await {
                touch();
                if socket.send(&datagram).await.is_err() {
                    break;
                }
            }
        };
        let back = async {
            let mut buffer = vec![0u8; FRAME_MAX];
            // A refused datagram (ICMP port unreachable) ends the relay, as it ends a local session.
            while let Ok(n) = socket.recv(&mut buffer).await {
                touch();
                if write_frame(&mut write, &buffer[..n]).await.is_err() {
                    break;
                }
            }
        };
        // The caller ends the session when it goes idle by closing the tunnel; should the caller's
        // host vanish instead, the same idle time ends it here.
        let watchdog = async {
            loop {
                let since = last.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
                if since >= super::udp::SESSION_IDLE {
                    return;
                }
                tokio::time::sleep(super::udp::SESSION_IDLE - since).await;
            }
        };
        tokio::select! {
            _ = out => {}
            _ = back => {}
            _ = watchdog => {}
        }
    });
    Ok(())
}

/// The largest datagram a frame carries.
pub const FRAME_MAX: usize = u16::MAX as usize;

/// Reads one framed datagram; `None` at the end of the stream or on an error.
pub async fn read_frame<R: AsyncRead + Unpin>(from: &mut R) -> Option<Vec<u8>> {
    let mut length = [0u8; 2];
    from.read_exact(&mut length).await.ok()?;
    let mut datagram = vec![0u8; u16::from_be_bytes(length) as usize];
    from.read_exact(&mut datagram).await.ok()?;
    Some(datagram)
}

/// Writes one datagram as a frame (at most [`FRAME_MAX`] bytes, as UDP allows).
pub async fn write_frame<W: AsyncWrite + Unpin>(to: &mut W, datagram: &[u8]) -> io::Result<()> {
    let length = u16::try_from(datagram.len()).map_err(|_| io::Error::other("datagram too large"))?;
    let mut frame = Vec::with_capacity(2 + datagram.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(datagram);
    to.write_all(&frame).await
}

/// Opens a connection to `target` (a pod on another host) through the tunnel at `tunnel`. Returns
/// the connection and any bytes the pod already sent, which were read with the tunnel's answer.
/// A refusal at the far end is an error of kind `ConnectionRefused`. For [`Transport::Udp`] the
/// connection carries framed datagrams ([`read_frame`], [`write_frame`]).
pub async fn dial(
    tunnel: SocketAddr,
    target: SocketAddr,
    token: &str,
    transport: Transport,
) -> io::Result<(TcpStream, Bytes)> {
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
        .header(TRANSPORT, if transport == Transport::Udp { "udp" } else { "tcp" })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_keep_their_bounds_on_the_stream() {
        let mut stream = Vec::new();
        for datagram in [&b"one"[..], b"", &[7u8; FRAME_MAX][..]] {
            write_frame(&mut stream, datagram).await.expect("framed");
        }
        assert!(write_frame(&mut stream, &[0u8; FRAME_MAX + 1]).await.is_err(), "larger than UDP allows");
        let mut read = &stream[..];
        assert_eq!(read_frame(&mut read).await.as_deref(), Some(&b"one"[..]));
        assert_eq!(read_frame(&mut read).await.as_deref(), Some(&b""[..]));
        assert_eq!(read_frame(&mut read).await.map(|d| d.len()), Some(FRAME_MAX));
        assert_eq!(read_frame(&mut read).await, None, "the end of the stream");
    }
}
