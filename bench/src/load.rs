//! The closed-loop load: N clients, each on its own connection, each sending its next request as
//! soon as the previous one is answered, for a warm-up and then a measured window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::task::JoinSet;

use crate::connection::{Connection, Endpoint};

/// A server under load: where to connect, what each request is, and what answer counts.
pub trait LoadTarget: Send + Sync + 'static {
    fn endpoint(&self) -> &Endpoint;

    /// The request to send; `name` is distinct for every request of a run (`{prefix}-{client}-{seq}`),
    /// for targets that create objects.
    fn request(&self, name: &str) -> Request<Full<Bytes>>;

    /// The status of a successful request; any other counts as an error.
    fn success(&self) -> StatusCode;
}

/// One point of the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub clients: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// What the clients of one point saw.
#[derive(Debug, Default)]
pub struct Sample {
    /// Latency of every successful request started inside the measured window.
    pub latencies: Vec<Duration>,
    /// Failed requests (wrong status or transport error), warm-up included.
    pub errors: u64,
    /// The first few distinct error messages.
    pub error_examples: Vec<String>,
}

const MAX_ERROR_EXAMPLES: usize = 3;
/// After a broken connection, wait this long before reconnecting, so a dead server is not
/// hammered in a tight loop that would count millions of errors.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// The measured window. A request counts if it *started* inside it: the requests cut off at the
/// start and those running over the end balance out, so successes / duration is the rate.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

/// Runs `plan` against `target`; request names start with `prefix`, so points never collide.
pub async fn run<T: LoadTarget>(target: Arc<T>, plan: Plan, prefix: &str) -> Result<Sample> {
    // Connect everyone first, so handshakes are not part of any measured latency.
    let mut connections = Vec::with_capacity(plan.clients);
    for _ in 0..plan.clients {
        connections.push(target.endpoint().connect().await?);
    }
    let start = Instant::now() + plan.warmup;
    let window = Window { start, end: start + plan.duration };
    let mut clients = JoinSet::new();
    for (id, connection) in connections.into_iter().enumerate() {
        let name_prefix = format!("{prefix}-{id}");
        clients.spawn(client(target.clone(), connection, name_prefix, window));
    }
    let mut sample = Sample::default();
    while let Some(result) = clients.join_next().await {
        merge(&mut sample, result?);
    }
    Ok(sample)
}

/// One client's loop: request `{prefix}-0`, `{prefix}-1`, ... until the window closes.
async fn client<T: LoadTarget>(target: Arc<T>, connection: Connection, prefix: String, window: Window) -> Sample {
    let mut sample = Sample::default();
    let mut connection = Some(connection);
    for seq in 0u64.. {
        let started = Instant::now();
        if started >= window.end {
            break;
        }
        let Some(conn) = connection.as_mut() else {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            let reconnected = target.endpoint().connect().await;
            connection = reconnected.inspect_err(|e| record_error(&mut sample, format!("{e:#}"))).ok();
            continue;
        };
        match conn.send(target.request(&format!("{prefix}-{seq}"))).await {
            Ok((status, _)) if status == target.success() => {
                if started >= window.start {
                    sample.latencies.push(started.elapsed());
                }
            }
            Ok((status, body)) => {
                let body = String::from_utf8_lossy(&body);
                record_error(&mut sample, format!("{status}: {}", truncate(&body, 200)));
            }
            Err(e) => {
                record_error(&mut sample, format!("{e:#}"));
                connection = None;
            }
        }
    }
    sample
}

fn record_error(sample: &mut Sample, message: String) {
    sample.errors += 1;
    if sample.error_examples.len() < MAX_ERROR_EXAMPLES && !sample.error_examples.contains(&message) {
        sample.error_examples.push(message);
    }
}

fn merge(into: &mut Sample, from: Sample) {
    into.latencies.extend(from.latencies);
    into.errors += from.errors;
    for message in from.error_examples {
        if into.error_examples.len() < MAX_ERROR_EXAMPLES && !into.error_examples.contains(&message) {
            into.error_examples.push(message);
        }
    }
}

/// At most `max_chars` characters of `s`.
pub fn truncate(s: &str, max_chars: usize) -> &str {
    s.char_indices().nth(max_chars).map_or(s, |(i, _)| &s[..i])
}
