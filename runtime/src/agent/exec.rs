//! `exec` into a running container: the node API's `/exec/{namespace}/{pod}/{container}` upgrades
//! to a websocket speaking Kubernetes' `v5.channel.k8s.io` (or `v4`) subprotocol and runs the
//! container's component again as a command — argv `[container name] + command`, the container's
//! env, volumes and network — streaming stdin (channel 0), stdout (1) and stderr (2), and ending
//! with a `Status` on channel 3 (`NonZeroExitCode` with an `ExitCode` cause when it failed).
//!
//! A Wasm container has no shell or other binaries to run: exec runs the container's own
//! component, so it needs one that exports `wasi:cli/run` (a command or a p1 module); a
//! wasi:http-only component is refused with a message saying so.
//!
//! [`Execs`] is the index of running containers the node API looks commands up in; a container
//! task registers itself for the length of each run.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_util::sync::CancellationToken;

use crate::host::command::{self, Outcome};
use crate::host::{ExecStdio, GuestConfig, Workload};

/// Subprotocols spoken, most preferred first (v5 adds closing stdin with channel 255).
const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
pub(super) const STDIN: u8 = 0;
pub(super) const STDOUT: u8 = 1;
pub(super) const STDERR: u8 = 2;
const STATUS: u8 = 3;
pub(super) const CLOSE: u8 = 255;
/// Bytes buffered between the websocket and the guest in each direction.
const PIPE: usize = 64 * 1024;

pub(super) type Body = BoxBody<Bytes, Infallible>;

/// What it takes to run a container's component again.
pub struct ExecTarget {
    pub workload: Workload,
    pub config: GuestConfig,
    pub engine: wasmtime::Engine,
    /// Fires when the container's run ends (an exec does not outlive its container).
    pub stop: CancellationToken,
    /// The container's stdin, when its spec asks for one (`stdin: true`), for `attach`.
    pub stdin: Option<super::attach::StdinPipe>,
}

/// Running containers by `namespace/pod/container`.
#[derive(Clone, Default)]
pub struct Execs(Arc<Mutex<HashMap<String, Arc<ExecTarget>>>>);

/// Keeps a container registered until dropped.
pub struct Registration {
    execs: Execs,
    key: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.execs.0.lock().expect("exec index lock").remove(&self.key);
    }
}

impl Execs {
    pub fn register(&self, namespace: &str, pod: &str, container: &str, target: ExecTarget) -> Registration {
        let key = format!("{namespace}/{pod}/{container}");
        self.0.lock().expect("exec index lock").insert(key.clone(), Arc::new(target));
        Registration { execs: self.clone(), key }
    }

    pub(super) fn get(&self, namespace: &str, pod: &str, container: &str) -> Option<Arc<ExecTarget>> {
        self.0.lock().expect("exec index lock").get(&format!("{namespace}/{pod}/{container}")).cloned()
    }
}

pub(super) fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(message.into())).boxed());
    *response.status_mut() = status;
    response
}

/// What the exec request asks for (kubelet's query parameters).
#[derive(Debug, Default, PartialEq)]
pub(super) struct ExecQuery {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

pub(super) fn parse_query(query: Option<&str>) -> ExecQuery {
    let mut q = ExecQuery::default();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let yes = value == "true" || value == "1";
        match key.as_ref() {
            "command" => q.command.push(value.into_owned()),
            "stdin" => q.stdin = yes,
            "stdout" => q.stdout = yes,
            "stderr" => q.stderr = yes,
            _ => {}
        }
    }
    q
}

/// Answers an exec request: checks it, switches protocols and runs the session in the background.
pub fn handle(
    execs: &Execs,
    mut req: Request<hyper::body::Incoming>,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Response<Body> {
    let Some(target) = execs.get(namespace, pod, container) else {
        return text(StatusCode::NOT_FOUND, format!("container \"{container}\" in pod \"{pod}\" is not running"));
    };
    if matches!(target.workload, Workload::Http(_)) {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "container \"{container}\" is a wasi:http handler whose component does not export wasi:cli/run, \
                 so there is nothing to exec (exec runs the container's own component as a command)"
            ),
        );
    }
    let query = parse_query(req.uri().query());
    if query.command.is_empty() {
        return text(StatusCode::BAD_REQUEST, "you must specify at least 1 command");
    }
    let (response, upgrade) = match accept_channels(&mut req) {
        Ok(accepted) => accepted,
        Err(refused) => return *refused,
    };
    let mut argv = vec![container.to_string()];
    argv.extend(query.command.iter().cloned());
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
                session(ws, target, argv, query).await;
            }
            Err(e) => tracing::debug!(error = %e, "exec upgrade failed"),
        }
    });
    response
}

/// Checks a websocket upgrade to the channel protocol (exec, attach): the `101` answer to send
/// and the upgrade to await, or the refusal.
pub(super) fn accept_channels(
    req: &mut Request<hyper::body::Incoming>,
) -> Result<(Response<Body>, hyper::upgrade::OnUpgrade), Box<Response<Body>>> {
    let header_value =
        |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let Some(key) = header_value(header::SEC_WEBSOCKET_KEY) else {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "this needs a websocket upgrade (Sec-WebSocket-Key missing)",
        )));
    };
    let offered = header_value(header::SEC_WEBSOCKET_PROTOCOL).unwrap_or_default();
    let Some(protocol) = PROTOCOLS.iter().find(|p| offered.split(',').any(|o| o.trim() == **p)) else {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            format!("none of the subprotocols {offered:?} is supported; use one of {PROTOCOLS:?}"),
        )));
    };
    let upgrade = hyper::upgrade::on(req);
    let mut response = text(StatusCode::SWITCHING_PROTOCOLS, "");
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, header::HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, header::HeaderValue::from_static("websocket"));
    if let Ok(accept) = derive_accept_key(key.as_bytes()).parse() {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    headers.insert(header::SEC_WEBSOCKET_PROTOCOL, header::HeaderValue::from_static(protocol));
    Ok((response, upgrade))
}

/// A websocket's writing half behind a channel: frames sent to the returned sender go out in
/// order; when every sender is dropped, a normal close follows.
pub(super) fn channel_writer<S>(
    mut sink: futures::stream::SplitSink<WebSocketStream<S>, Message>,
) -> (mpsc::Sender<Message>, tokio::task::JoinHandle<()>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (to_client, mut outbox) = mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(message) = outbox.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        // A normal-closure code: kubectl reads a close frame without one as an error.
        let normal = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        let _ = sink.send(Message::Close(Some(normal))).await;
        let _ = sink.close().await;
    });
    (to_client, writer)
}

/// A `Status` on channel 3.
pub(super) fn status_message(status: &serde_json::Value) -> Message {
    let mut frame = vec![STATUS];
    frame.extend(serde_json::to_vec(status).expect("a Status serializes"));
    Message::Binary(frame.into())
}

/// One exec: pipes between the websocket channels and the guest's stdio, then the exit status.
async fn session<S>(ws: WebSocketStream<S>, target: Arc<ExecTarget>, argv: Vec<String>, query: ExecQuery)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut incoming) = ws.split();
    let (to_client, writer) = channel_writer(sink);

    let (guest_stdin, mut stdin_writer) = tokio::io::duplex(PIPE);
    let (stdout_writer, stdout_reader) = tokio::io::duplex(PIPE);
    let (stderr_writer, stderr_reader) = tokio::io::duplex(PIPE);
    let forwarders = [(STDOUT, stdout_reader, query.stdout), (STDERR, stderr_reader, query.stderr)]
        .map(|(channel, reader, wanted)| tokio::spawn(forward(channel, reader, wanted, to_client.clone())));

    // Client → guest: stdin data, and its end (channel 255 in v5, or the socket closing).
    let stdin_wanted = query.stdin;
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = incoming.next().await {
            let Message::Binary(data) = message else {
                if matches!(message, Message::Close(_)) {
                    break;
                }
                continue;
            };
            let input_ended = match data.first() {
                Some(&STDIN) if stdin_wanted => stdin_writer.write_all(&data[1..]).await.is_err(),
                Some(&CLOSE) => data.get(1) == Some(&STDIN),
                _ => false, // resize (4) and anything else mean nothing to a Wasm guest
            };
            if input_ended {
                break;
            }
        }
        // Dropping the writer is the guest's end of input.
    });

    let mut config = target.config.clone();
    config.args = argv;
    config.log = None;
    config.stdin = None;
    config.stdio = Some(ExecStdio::new(guest_stdin, stdout_writer, stderr_writer));
    let stop = target.stop.child_token();
    let outcome = command::run(&target.workload, &target.engine, &config, &stop).await;
    drop(config); // closes the guest's ends of stdout and stderr
    for forwarder in forwarders {
        let _ = forwarder.await;
    }
    reader.abort();
    let _ = to_client.send(status_message(&exit_status(&outcome))).await;
    drop(to_client);
    let _ = writer.await;
}

/// Copies a guest output pipe to its channel until the guest closes it.
async fn forward(channel: u8, mut reader: tokio::io::DuplexStream, wanted: bool, to_client: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut buf[..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !wanted {
            continue;
        }
        let mut frame = Vec::with_capacity(n + 1);
        frame.push(channel);
        frame.extend_from_slice(&buf[..n]);
        if to_client.send(Message::Binary(frame.into())).await.is_err() {
            return;
        }
    }
}

/// The `Status` kubectl reads from channel 3.
fn exit_status(outcome: &Outcome) -> serde_json::Value {
    let (code, message) = match outcome {
        Outcome::Exited(0) => return json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => (*code, format!("command terminated with non-zero exit code: exit status {code}")),
        Outcome::OutOfMemory => (137, "command terminated: memory limit exceeded (OOMKilled)".to_string()),
        Outcome::Trapped(trap) => (1, format!("command terminated: {trap}")),
        Outcome::Stopped => (137, "command terminated: the container stopped".to_string()),
    };
    json!({
        "metadata": {}, "status": "Failure", "message": message, "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_collect_every_command_word() {
        let q =
            parse_query(Some("command=inspect&command=cat%3A%2Fdata%2Fx&stdin=true&stdout=1&stderr=false&tty=false"));
        assert_eq!(
            q,
            ExecQuery {
                command: vec!["inspect".into(), "cat:/data/x".into()],
                stdin: true,
                stdout: true,
                stderr: false
            }
        );
    }

    #[test]
    fn failures_carry_the_exit_code_as_kubectl_expects() {
        assert_eq!(exit_status(&Outcome::Exited(0))["status"], "Success");
        let failed = exit_status(&Outcome::Exited(3));
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0], json!({"reason": "ExitCode", "message": "3"}));
    }
}
