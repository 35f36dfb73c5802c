//! `kubectl port-forward`: the node API's `/portForward/{namespace}/{pod}?ip=POD_IP&uid=UID`
//! (the API server proxies `pods/{name}/portforward` here) switches protocols and serves
//! Kubernetes' port-forward protocol over SPDY/3.1 — either directly (`Upgrade: SPDY/3.1`, the
//! kubelet's form) or tunnelled in websocket binary messages (subprotocol
//! `SPDY/3.1+portforward.k8s.io`, what kubectl 1.31+ tries first).
//!
//! For each local connection kubectl opens two streams with the same `requestID`: an error
//! stream it only reads and a data stream. Once both arrived, the data stream is spliced to a TCP
//! connection to `POD_IP:port` — a wasi:http handler's listener or a guest's wasi:sockets one,
//! both bound on the pod IP. A failure to connect is written to the error stream in the
//! kubelet's words, which kubectl prints.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_util::sync::CancellationToken;

use super::spdy::{Frame, FrameReader, FrameWriter, Headers, REFUSED_STREAM};

/// The websocket subprotocol carrying SPDY frames in binary messages.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The stream protocol named in `X-Stream-Protocol-Version` on a plain SPDY upgrade.
const STREAM_PROTOCOL: &str = "portforward.k8s.io";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest DATA frame sent towards kubectl.
const CHUNK: usize = 32 * 1024;
/// Bytes buffered between a websocket and the SPDY session in each direction.
const PIPE: usize = 256 * 1024;

type Body = BoxBody<Bytes, Infallible>;

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(message.into())).boxed());
    *response.status_mut() = status;
    response
}

/// The pod a session forwards to.
#[derive(Debug, Clone)]
struct Target {
    ip: IpAddr,
    /// `namespace/name`, for messages.
    pod: String,
    uid: String,
}

/// Answers a port-forward request: checks it, switches protocols and serves the session in the
/// background. `pods` is this node's pod CIDR, the only addresses forwarded to.
pub fn handle(
    mut req: Request<hyper::body::Incoming>,
    pods: ipnet::IpNet,
    namespace: &str,
    pod: &str,
) -> Response<Body> {
    let mut ip = None;
    let mut uid = String::new();
    for (key, value) in form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "ip" => ip = value.parse::<IpAddr>().ok(),
            "uid" => uid = value.into_owned(),
            _ => {}
        }
    }
    let Some(ip) = ip else {
        return text(StatusCode::BAD_REQUEST, format!("pod \"{pod}\" has no IP to forward to"));
    };
    if !pods.contains(&ip) {
        return text(StatusCode::FORBIDDEN, format!("{ip} is not a pod IP of this node ({pods})"));
    }
    let target = Target { ip, pod: format!("{namespace}/{pod}"), uid };
    let value = |name: header::HeaderName| {
        req.headers().get_all(name).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",")
    };
    let upgrade_to = value(header::UPGRADE).to_ascii_lowercase();

    let mut response = text(StatusCode::SWITCHING_PROTOCOLS, "");
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, header::HeaderValue::from_static("Upgrade"));
    let websocket = if upgrade_to == "websocket" {
        let offered = value(header::SEC_WEBSOCKET_PROTOCOL);
        if !offered.split(',').any(|p| p.trim() == TUNNEL_PROTOCOL) {
            return text(
                StatusCode::BAD_REQUEST,
                format!("none of the subprotocols {offered:?} is supported; port-forward speaks {TUNNEL_PROTOCOL}"),
            );
        }
        let Ok(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).map(|k| derive_accept_key(k.as_bytes())).ok_or(())
        else {
            return text(StatusCode::BAD_REQUEST, "websocket upgrade without Sec-WebSocket-Key");
        };
        headers.insert(header::UPGRADE, header::HeaderValue::from_static("websocket"));
        if let Ok(accept) = key.parse() {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, header::HeaderValue::from_static(TUNNEL_PROTOCOL));
        true
    } else if upgrade_to == "spdy/3.1" {
        let offered = value(header::HeaderName::from_static("x-stream-protocol-version"));
        if !offered.is_empty() && !offered.split(',').any(|p| p.trim() == STREAM_PROTOCOL) {
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, \
                     server supports [{STREAM_PROTOCOL}]"
                ),
            );
        }
        headers.insert(header::UPGRADE, header::HeaderValue::from_static("SPDY/3.1"));
        headers.insert("x-stream-protocol-version", header::HeaderValue::from_static(STREAM_PROTOCOL));
        false
    } else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("port-forward needs an upgraded connection (websocket with {TUNNEL_PROTOCOL}, or SPDY/3.1)"),
        );
    };

    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => return tracing::debug!(error = %e, "port-forward upgrade failed"),
        };
        if websocket {
            let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
            let (session_side, tunnel_side) = tokio::io::duplex(PIPE);
            tokio::spawn(tunnel(ws, tunnel_side));
            session(session_side, target).await;
        } else {
            session(upgraded, target).await;
        }
    });
    response
}

/// Carries the SPDY byte stream in websocket binary messages, both ways, until either side ends.
async fn tunnel<S>(ws: WebSocketStream<S>, bytes: tokio::io::DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut messages) = ws.split();
    let (mut from_session, mut to_session) = tokio::io::split(bytes);
    let inbound = async move {
        while let Some(Ok(message)) = messages.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            if to_session.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = to_session.shutdown().await;
    };
    let outbound = async move {
        let mut buf = vec![0u8; CHUNK + 64];
        loop {
            match from_session.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        return;
                    }
                }
            }
        }
        let normal = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        let _ = sink.send(Message::Close(Some(normal))).await;
        let _ = sink.close().await;
    };
    tokio::join!(inbound, outbound);
}

/// What arrives on a data stream for the pod.
enum Inbound {
    Data(Bytes),
    /// The client finished sending (FIN).
    Fin,
}

/// Frames buffered towards one pod connection before its stream is reset: a pod that stops
/// reading must not stall the session's other streams (SPDY flow control is not used, so this
/// bound is the only one).
const INBOUND_FRAMES: usize = 256;
/// How long a request may wait for its second stream before both are dropped.
const PAIRING_TIMEOUT: Duration = Duration::from_secs(30);
/// RST_STREAM status: the stream is cancelled.
const CANCEL: u32 = 5;

/// A request's streams as they arrive; forwarding starts when both are there.
struct Pair {
    since: std::time::Instant,
    error: Option<u32>,
    data: Option<(u32, u16, mpsc::Receiver<Inbound>)>,
}

/// The session's view of one request's streams once they are being forwarded.
struct Open {
    /// Bytes for the pod; dropped after the client's FIN.
    to_pod: Option<mpsc::Sender<Inbound>>,
    /// Ends the forward: a reset of either stream, or the session ending.
    cancel: CancellationToken,
}

/// One SPDY connection: answers streams, pairs them by request and forwards each pair.
async fn session<S>(io: S, target: Target)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let (outbox, mut queue) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(async move {
        let mut writer = FrameWriter::new(write);
        while let Some(frame) = queue.recv().await {
            if let Err(e) = writer.write(&frame).await {
                tracing::debug!(error = %e, "port-forward write failed");
                return;
            }
        }
        let _ = writer.shutdown().await;
    });

    let session_over = CancellationToken::new();
    let mut reader = FrameReader::new(read);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // By stream id (both streams of a request point at the same forward).
    let mut open: HashMap<u32, std::sync::Arc<std::sync::Mutex<Open>>> = HashMap::new();
    // Senders of data streams whose pair is not complete yet.
    let mut waiting: HashMap<u32, mpsc::Sender<Inbound>> = HashMap::new();
    loop {
        let frame = match reader.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, pod = %target.pod, "port-forward session ended");
                break;
            }
        };
        match frame {
            Frame::SynStream { stream, headers, .. } => {
                // Requests whose second stream never came are given up.
                let stale: Vec<String> =
                    pairs.iter().filter(|(_, p)| p.since.elapsed() > PAIRING_TIMEOUT).map(|(k, _)| k.clone()).collect();
                for request in stale {
                    if let Some(pair) = pairs.remove(&request) {
                        for id in pair.error.into_iter().chain(pair.data.map(|d| d.0)) {
                            waiting.remove(&id);
                            let _ = outbox.send(Frame::RstStream { stream: id, status: CANCEL }).await;
                        }
                    }
                }
                let (port, kind, request) = match classify(stream, &headers) {
                    Ok(parsed) => parsed,
                    Err(message) => {
                        tracing::debug!(stream, %message, "port-forward stream refused");
                        let _ = outbox.send(Frame::RstStream { stream, status: REFUSED_STREAM }).await;
                        continue;
                    }
                };
                let reply = Frame::SynReply { stream, fin: false, headers: Headers::default() };
                if outbox.send(reply).await.is_err() {
                    break;
                }
                let pair = pairs.entry(request.clone()).or_insert_with(|| Pair {
                    since: std::time::Instant::now(),
                    error: None,
                    data: None,
                });
                match kind {
                    StreamKind::Error => pair.error = Some(stream),
                    StreamKind::Data => {
                        let (sender, receiver) = mpsc::channel(INBOUND_FRAMES);
                        waiting.insert(stream, sender);
                        pair.data = Some((stream, port, receiver));
                    }
                }
                // Both streams there: the forward starts (else the pair waits for its other one).
                let complete = pair.error.is_some() && pair.data.is_some();
                if let Some(Pair { error: Some(error), data: Some((data, port, receiver)), .. }) =
                    complete.then(|| pairs.remove(&request)).flatten()
                {
                    let cancel = session_over.child_token();
                    let state = Open { to_pod: waiting.remove(&data), cancel: cancel.clone() };
                    let state = std::sync::Arc::new(std::sync::Mutex::new(state));
                    open.insert(data, state.clone());
                    open.insert(error, state);
                    let streams = Streams { data, error, port };
                    tokio::spawn(forward(target.clone(), streams, receiver, outbox.clone(), cancel));
                }
            }
            Frame::Data { stream, fin, data } => {
                let sender = match open.get(&stream) {
                    Some(state) => state.lock().unwrap_or_else(|p| p.into_inner()).to_pod.clone(),
                    None => waiting.get(&stream).cloned(),
                };
                let Some(sender) = sender else { continue };
                let mut overflowed = !data.is_empty() && sender.try_send(Inbound::Data(data)).is_err();
                if fin && !overflowed {
                    overflowed = sender.try_send(Inbound::Fin).is_err();
                }
                if fin || overflowed {
                    if let Some(state) = open.get(&stream) {
                        state.lock().unwrap_or_else(|p| p.into_inner()).to_pod = None;
                    }
                    waiting.remove(&stream);
                }
                if overflowed {
                    // The pod does not keep up: this stream alone is reset.
                    if let Some(state) = open.get(&stream) {
                        state.lock().unwrap_or_else(|p| p.into_inner()).cancel.cancel();
                    }
                    let _ = outbox.send(Frame::RstStream { stream, status: CANCEL }).await;
                }
            }
            Frame::RstStream { stream, .. } => {
                waiting.remove(&stream);
                if let Some(state) = open.remove(&stream) {
                    state.lock().unwrap_or_else(|p| p.into_inner()).cancel.cancel();
                }
            }
            // Pings from the client (odd ids) are answered by echoing them.
            Frame::Ping(id) => {
                let _ = outbox.send(Frame::Ping(id)).await;
            }
            Frame::GoAway { .. } => break,
            Frame::SynReply { .. } | Frame::Ignored => {}
        }
    }
    // The connection is gone: every forward still running is stopped with it.
    session_over.cancel();
    drop(open);
    drop(waiting);
    drop(outbox);
    let _ = writer.await;
}

#[derive(Debug, PartialEq)]
enum StreamKind {
    Error,
    Data,
}

/// A stream's port, kind and request id, checked as the kubelet checks them.
fn classify(stream: u32, headers: &Headers) -> Result<(u16, StreamKind, String), String> {
    let port = headers.get("port").ok_or("\"port\" header is required")?;
    let port: u16 = port.parse().map_err(|e| format!("unable to parse {port:?} as a port: {e}"))?;
    if port == 0 {
        return Err("port \"0\" must be > 0".to_string());
    }
    let kind = match headers.get("streamType") {
        Some("error") => StreamKind::Error,
        Some("data") => StreamKind::Data,
        Some(other) => return Err(format!("invalid stream type {other:?}")),
        None => return Err("\"streamType\" header is required".to_string()),
    };
    // Clients older than request ids open the error stream, then the data stream, with
    // consecutive odd ids; pair those as the kubelet does.
    let request = match headers.get("requestID") {
        Some(id) if !id.is_empty() => id.to_string(),
        _ if kind == StreamKind::Data => stream.saturating_sub(2).to_string(),
        _ => stream.to_string(),
    };
    Ok((port, kind, request))
}

/// The two streams of one forwarded connection and the pod port they go to.
struct Streams {
    data: u32,
    error: u32,
    port: u16,
}

/// Splices one request's data stream with a TCP connection to the pod's port. The pod closing
/// its side ends the forward (both streams finish); kubectl finishing its side half-closes the
/// pod connection; a failure is written to the error stream, as the kubelet does, and both
/// streams finish; a reset or the session ending (`cancel`) stops it at once.
async fn forward(
    target: Target,
    streams: Streams,
    mut inbound: mpsc::Receiver<Inbound>,
    outbox: mpsc::Sender<Frame>,
    cancel: CancellationToken,
) {
    let Streams { data, error, port } = streams;
    let address = SocketAddr::new(target.ip, port);
    let failed = |why: String| format!("error forwarding port {port} to pod {}, uid {}: {why}", target.pod, target.uid);
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address));
    let outcome: Result<(), String> = tokio::select! {
        _ = cancel.cancelled() => return,
        connected = connect => match connected {
            Ok(Ok(connection)) => {
                let (mut from_pod, mut to_pod) = connection.into_split();
                let upstream = async {
                    loop {
                        match inbound.recv().await {
                            Some(Inbound::Data(bytes)) => {
                                to_pod.write_all(&bytes).await.map_err(|e| format!("writing to {address}: {e}"))?;
                            }
                            // kubectl is done sending: the pod sees the end of its input and
                            // answers on; only the pod closing ends the forward now.
                            Some(Inbound::Fin) | None => {
                                let _ = to_pod.shutdown().await;
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                };
                let downstream = async {
                    let mut buf = vec![0u8; CHUNK];
                    loop {
                        match from_pod.read(&mut buf).await {
                            Ok(0) => return Ok(()),
                            Err(e) => return Err(format!("reading from {address}: {e}")),
                            Ok(n) => {
                                let frame = Frame::Data { stream: data, fin: false, data: Bytes::copy_from_slice(&buf[..n]) };
                                if outbox.send(frame).await.is_err() {
                                    return Ok(());
                                }
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    ended = downstream => ended,
                    failed = upstream => failed,
                }
            }
            Ok(Err(e)) => Err(format!("failed to connect to {address}: {e}")),
            Err(_) => Err(format!("failed to connect to {address}: no answer within {CONNECT_TIMEOUT:?}")),
        },
    };
    if let Err(why) = outcome {
        let _ = outbox.send(Frame::Data { stream: error, fin: false, data: failed(why).into() }).await;
    }
    let finish = |stream| Frame::Data { stream, fin: true, data: Bytes::new() };
    let _ = outbox.send(finish(data)).await;
    let _ = outbox.send(finish(error)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
    }

    /// A client end of a session with the pod on 127.0.0.1.
    async fn client() -> (
        FrameWriter<tokio::io::WriteHalf<tokio::io::DuplexStream>>,
        FrameReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let target = Target { ip: "127.0.0.1".parse().unwrap(), pod: "default/p".into(), uid: "u".into() };
        let served = tokio::spawn(session(theirs, target));
        let (read, write) = tokio::io::split(ours);
        (FrameWriter::new(write), FrameReader::new(read), served)
    }

    async fn open_pair(writer: &mut FrameWriter<tokio::io::WriteHalf<tokio::io::DuplexStream>>, port: u16) {
        for (stream, kind) in [(1, "error"), (3, "data")] {
            let headers = headers(&[("streamtype", kind), ("port", &port.to_string()), ("requestid", "0")]);
            writer.write(&Frame::SynStream { stream, fin: kind == "error", headers }).await.unwrap();
        }
    }

    async fn next(reader: &mut FrameReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(10), reader.next()).await.expect("a frame in time").expect("a frame")
    }

    #[tokio::test]
    async fn a_reset_stops_a_forward_whose_pod_never_closes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mut writer, mut reader, served) = client().await;
        open_pair(&mut writer, port).await;
        let (mut pod, _) = listener.accept().await.unwrap();
        writer.write(&Frame::Data { stream: 3, fin: true, data: Bytes::from_static(b"hello") }).await.unwrap();
        let mut got = Vec::new();
        pod.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello", "the bytes, then the client's end of input");
        // The pod keeps its side open; kubectl resets the stream, which must end the forward.
        writer.write(&Frame::RstStream { stream: 3, status: CANCEL }).await.unwrap();
        let mut rest = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(10), pod.read(&mut rest)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the pod connection was closed: {closed:?}");
        for _ in 0..2 {
            assert!(matches!(next(&mut reader).await, Some(Frame::SynReply { .. })));
        }
        writer.write(&Frame::GoAway { last_good: 3, status: 0 }).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), served).await.expect("the session ends").unwrap();
    }

    #[tokio::test]
    async fn a_refused_connection_is_reported_on_the_error_stream_and_both_streams_finish() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let (mut writer, mut reader, _served) = client().await;
        open_pair(&mut writer, port).await;
        let mut error = Vec::new();
        let mut finished = Vec::new();
        while finished.len() < 2 {
            match next(&mut reader).await {
                Some(Frame::Data { stream: 1, data, fin }) => {
                    error.extend_from_slice(&data);
                    if fin {
                        finished.push(1);
                    }
                }
                Some(Frame::Data { stream: 3, fin: true, .. }) => finished.push(3),
                Some(Frame::SynReply { .. }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let error = String::from_utf8(error).unwrap();
        assert!(
            error.starts_with(&format!("error forwarding port {port} to pod default/p, uid u: failed to connect")),
            "{error}"
        );
    }

    #[test]
    fn streams_are_classified_as_the_kubelet_does() {
        let data = headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "4")]);
        assert_eq!(classify(3, &data), Ok((8080, StreamKind::Data, "4".to_string())));
        // Without request ids, the error stream's id names the pair.
        assert_eq!(classify(5, &headers(&[("streamtype", "error"), ("port", "80")])).unwrap().2, "5");
        assert_eq!(classify(7, &headers(&[("streamtype", "data"), ("port", "80")])).unwrap().2, "5");
        assert_eq!(classify(1, &headers(&[("streamtype", "data")])).unwrap_err(), "\"port\" header is required");
        assert!(classify(1, &headers(&[("streamtype", "data"), ("port", "http")])).unwrap_err().contains("\"http\""));
        assert_eq!(
            classify(1, &headers(&[("streamtype", "data"), ("port", "0")])).unwrap_err(),
            "port \"0\" must be > 0"
        );
        assert_eq!(
            classify(1, &headers(&[("streamtype", "both"), ("port", "80")])).unwrap_err(),
            "invalid stream type \"both\""
        );
    }
}
