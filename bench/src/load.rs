//! The closed-loop load: N clients, each on its own connection, each sending its next write as
//! soon as the previous one is answered, for a warm-up and then a measured window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::task::JoinSet;

use crate::connection::Connection;
use crate::target::Target;

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
    /// Latency of every successful write started inside the measured window.
    pub latencies: Vec<Duration>,
    /// Failed writes (wrong status or transport error), warm-up included.
    pub errors: u64,
    /// The first few distinct error messages.
    pub error_examples: Vec<String>,
}

const MAX_ERROR_EXAMPLES: usize = 3;
/// After a broken connection, wait this long before reconnecting, so a dead server is not
/// hammered in a tight loop that would count millions of errors.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// The measured window. A write counts if it *started* inside it: the writes cut off at the start
/// and those running over the end balance out, so successes / duration is the rate.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

/// Runs `plan` against `target`; object names start with `prefix`, so points never collide.
pub async fn run(target: Arc<Target>, plan: Plan, prefix: &str) -> Result<Sample> {
    // Connect everyone first, so handshakes are not part of any measured latency.
    let mut connections = Vec::with_capacity(plan.clients);
    for _ in 0..plan.clients {
        connections.push(target.connect().await?);
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

/// One client's loop: create `{prefix}-0`, `{prefix}-1`, ... until the window closes.
async fn client(target: Arc<Target>, connection: Connection, prefix: String, window: Window) -> Sample {
    let mut sample = Sample::default();
    let mut connection = Some(connection);
    for seq in 0u64.. {
        let started = Instant::now();
        if started >= window.end {
            break;
        }
        let Some(conn) = connection.as_mut() else {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            connection = target.connect().await.inspect_err(|e| record_error(&mut sample, format!("{e:#}"))).ok();
            continue;
        };
        match conn.send(target.create(&format!("{prefix}-{seq}"))).await {
            Ok((status, _)) if status == target.created() => {
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

fn truncate(s: &str, max_chars: usize) -> &str {
    s.char_indices().nth(max_chars).map_or(s, |(i, _)| &s[..i])
}
