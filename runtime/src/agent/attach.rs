//! `kubectl attach`: the node API's `/attach/{namespace}/{pod}/{container}` upgrades to a
//! websocket speaking the same channel protocol as exec (`v5.channel.k8s.io`) and connects the
//! client to the container's running process: what the current run writes from now on goes to
//! channels 1 (stdout) and 2 (stderr), and, for a container whose spec asks for stdin
//! (`stdin: true`), channel 0 is written into the process's stdin. The session ends, with a
//! `Success` status, when the run ends or the client leaves.
//!
//! Output is read from the run's log as it is appended (the guest writes only there), so an
//! attach sees exactly what `kubectl logs -f` sees, split back into its two streams.
//! With `stdinOnce: true` the container's stdin is closed when the first attach that wrote it
//! ends, as the kubelet does.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

use super::exec::{self, CLOSE, Execs, STDERR, STDIN, STDOUT};
use super::log::query::Decoder;
use super::log::{self, Reader, RunFiles};

/// How often the run's log is checked for new output.
const POLL: Duration = Duration::from_millis(50);

/// The writing end of a container's stdin, shared by its attach sessions.
#[derive(Clone)]
pub struct StdinPipe {
    /// `None` once closed (`stdinOnce` after the first session).
    writer: Arc<tokio::sync::Mutex<Option<DuplexStream>>>,
    once: bool,
}

impl StdinPipe {
    /// `writer` is the other end of the duplex whose reading end is the guest's stdin.
    pub fn new(writer: DuplexStream, once: bool) -> Self {
        Self { writer: Arc::new(tokio::sync::Mutex::new(Some(writer))), once }
    }

    async fn write(&self, bytes: &[u8]) -> bool {
        match self.writer.lock().await.as_mut() {
            Some(writer) => writer.write_all(bytes).await.is_ok(),
            None => false,
        }
    }

    /// A session that wrote stdin ended: with `stdinOnce`, the process's input ends too.
    async fn session_ended(&self) {
        if self.once {
            self.writer.lock().await.take();
        }
    }
}

/// Answers an attach request for the container's current run (`files`).
pub fn handle(
    execs: &Execs,
    files: RunFiles,
    mut req: Request<hyper::body::Incoming>,
    (namespace, pod, container): (&str, &str, &str),
    stop: CancellationToken,
) -> Response<exec::Body> {
    let Some(target) = execs.get(namespace, pod, container) else {
        return exec::text(StatusCode::NOT_FOUND, format!("container \"{container}\" in pod \"{pod}\" is not running"));
    };
    let query = exec::parse_query(req.uri().query());
    let stdin = if query.stdin {
        match &target.stdin {
            Some(pipe) => Some(pipe.clone()),
            None => {
                return exec::text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "stdin is not enabled for container \"{container}\" of pod \"{pod}\" (its spec has no stdin: true)"
                    ),
                );
            }
        }
    } else {
        None
    };
    let (response, upgrade) = match exec::accept_channels(&mut req) {
        Ok(accepted) => accepted,
        Err(refused) => return *refused,
    };
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
                session(ws, files, stdin, (query.stdout, query.stderr), stop).await;
            }
            Err(e) => tracing::debug!(error = %e, "attach upgrade failed"),
        }
    });
    response
}

/// One attach: the run's new output to the client, the client's input to the run's stdin.
async fn session<S>(
    ws: WebSocketStream<S>,
    files: RunFiles,
    stdin: Option<StdinPipe>,
    (stdout, stderr): (bool, bool),
    agent_stop: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut incoming) = ws.split();
    let (to_client, writer) = exec::channel_writer(sink);
    let Ok((mut reader, earlier)) = Reader::open(files.clone()).await else { return };
    // What the run wrote before the client attached is the log's business, not the session's;
    // it still goes through the decoder so a line begun before is completed after.
    let mut decoder = Decoder::default();
    decoder.push(&earlier);

    // The client's side in a task of its own: a process that does not read its stdin holds up
    // only this task, never the output.
    let client_left = CancellationToken::new();
    let input = tokio::spawn({
        let (client_left, stdin) = (client_left.clone(), stdin.clone());
        async move {
            let mut stdin_open = stdin.is_some();
            loop {
                match incoming.next().await {
                    Some(Ok(Message::Binary(data))) => match (data.first(), &stdin) {
                        (Some(&STDIN), Some(pipe)) if stdin_open => stdin_open = pipe.write(&data[1..]).await,
                        (Some(&CLOSE), Some(pipe)) if data.get(1) == Some(&STDIN) => {
                            stdin_open = false;
                            pipe.session_ended().await;
                        }
                        _ => {} // resize and anything else mean nothing to a Wasm guest
                    },
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                }
            }
            client_left.cancel();
        }
    });

    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut left = false;
    loop {
        tokio::select! {
            _ = poll.tick() => {}
            _ = client_left.cancelled() => left = true,
            _ = agent_stop.cancelled() => left = true,
        }
        // Looked at before reading: once over, this read is the last.
        let over = files.ended().await || log::runs(files.dir()).last().is_some_and(|latest| *latest > files.run());
        let Ok(fresh) = reader.read_new().await else { break };
        let mut lines = decoder.push(&fresh);
        if over {
            lines.extend(decoder.finish());
        }
        for line in lines {
            let (channel, wanted) = if line.stderr { (STDERR, stderr) } else { (STDOUT, stdout) };
            if wanted {
                let frame = [&[channel][..], &line.text].concat();
                if to_client.send(Message::Binary(frame.into())).await.is_err() {
                    left = true;
                }
            }
        }
        if over || left {
            break;
        }
    }
    input.abort();
    if let Some(pipe) = &stdin {
        pipe.session_ended().await;
    }
    if !left {
        let _ = to_client.send(exec::status_message(&serde_json::json!({"metadata": {}, "status": "Success"}))).await;
    }
    drop(to_client);
    let _ = writer.await;
}
