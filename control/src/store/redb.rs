//! The embedded [`Store`]: a redb file with the current objects, a bounded event log and the global
//! revision, written by one writer thread that batches concurrent writes into a single durable
//! commit (group commit).
//!
//! Tables:
//! - `objects`: key → (mod revision, value), the latest state.
//! - `events`: revision → (key, new value or none, previous mod revision or 0, previous value or
//!   none). It is the watch history and lets a paged list continue at an older revision: the state
//!   at revision R is the latest state with every later event undone. A row leaves out the
//!   previous value when that value is the row at the previous mod revision and that row is at
//!   most `reach` revisions older; rows are kept `reach` revisions past the compaction horizon, so
//!   every readable row can find it. Most writes update recent objects, so most rows hold one
//!   value, not two, and each commit writes a third less.
//! - `meta`: `revision` (last committed), `compacted` (events at or below it can no longer be
//!   read) and `reach` (the largest reach rows were ever written with; it never shrinks, so a
//!   smaller window later still keeps rows that long).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    Event, EventStream, KeyValue, Precondition, RangeRequest, RangeResponse, Revision, Store, StoreError, Write,
    WriteOutcome,
};
use crate::metrics::StoreMetrics;

const OBJECTS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("objects");
/// An event-log row: key, new value (none for a delete), previous mod revision (0 if the key did
/// not exist) and previous value.
type EventRow = (&'static str, Option<&'static [u8]>, u64, Option<&'static [u8]>);
const EVENTS: TableDefinition<u64, EventRow> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// At most this many writes share one commit; more wait for the next one.
const MAX_BATCH: usize = 1024;
/// Events read from the log per step when a watch catches up.
const CATCH_UP_CHUNK: usize = 1024;

/// Tunables of the embedded store.
#[derive(Debug, Clone)]
pub struct RedbConfig {
    /// How many events the log keeps for watches and paged lists; older revisions answer 410 Gone.
    pub event_window: u64,
}

impl Default for RedbConfig {
    fn default() -> Self {
        Self { event_window: 100_000 }
    }
}

struct Request {
    write: Write,
    reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
}

/// Shared between the store handle, its writer thread and watch tasks.
struct Shared {
    db: Database,
    revision: AtomicU64,
    compacted: AtomicU64,
    events: broadcast::Sender<Arc<Vec<Event>>>,
    metrics: StoreMetrics,
}

/// A durable store in one redb file.
pub struct RedbStore {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    writes: Option<mpsc::Sender<Request>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RedbStore {
    /// Closes the write queue and waits for the writer to finish what it holds, so the file is
    /// released (for a reopen in the same process) once no watch holds it either.
    fn drop(&mut self) {
        self.writes.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn read_err(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Read(Box::new(e))
}

impl RedbStore {
    /// Opens (or creates) the store at `path` and starts its writer thread.
    pub fn open(path: &Path, config: RedbConfig, metrics: StoreMetrics) -> Result<Self, StoreError> {
        let open_err = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: path.display().to_string(),
            source: e,
        };
        let db = Database::create(path).map_err(|e| open_err(Box::new(e)))?;
        let (revision, compacted, reach) = init_tables(&db, &config).map_err(open_err)?;
        count_objects(&db, &metrics).map_err(open_err)?;
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            db,
            revision: AtomicU64::new(revision),
            compacted: AtomicU64::new(compacted),
            events,
            metrics,
        });
        let (writes, rx) = mpsc::channel(4 * MAX_BATCH);
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(writer_shared, rx, LogShape { window: config.event_window, reach }))
            .map_err(|e| open_err(Box::new(e)))?;
        Ok(Self { shared, writes: Some(writes), writer: Some(writer) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared)).await.map_err(read_err)?
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the event log is kept (see the module docs).
struct LogShape {
    /// Rows readable behind the latest revision.
    window: u64,
    /// How far back a row may leave its previous value to the row that wrote it.
    reach: u64,
}

/// Creates the tables if needed; returns the revision, the compaction horizon and the reach
/// rows are written with from now on: half the window, or more if rows on file were written
/// with more (a smaller window must not drop rows those still refer to).
fn init_tables(db: &Database, config: &RedbConfig) -> Result<(Revision, Revision, u64), BoxError> {
    let txn = db.begin_write()?;
    let state = {
        txn.open_table(OBJECTS)?;
        txn.open_table(EVENTS)?;
        let mut meta = txn.open_table(META)?;
        let get = |k: &str| -> Result<u64, BoxError> { Ok(meta.get(k)?.map(|v| v.value()).unwrap_or(0)) };
        let (revision, compacted) = (get("revision")?, get("compacted")?);
        let reach = get("reach")?.max(config.event_window / 2);
        meta.insert("reach", reach)?;
        (revision, compacted, reach)
    };
    txn.commit()?;
    Ok(state)
}

fn count_objects(db: &Database, metrics: &StoreMetrics) -> Result<(), BoxError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(OBJECTS)?;
    let mut counts: HashMap<String, i64> = HashMap::new();
    for entry in table.iter()? {
        let (key, _) = entry?;
        *counts.entry(StoreMetrics::resource_of(key.value())).or_default() += 1;
    }
    for (resource, n) in counts {
        metrics.set_objects(&resource, n);
    }
    Ok(())
}

/// The single writer: takes every queued write, applies them in order in one transaction, commits
/// durably once, then answers each and publishes the events.
fn writer_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<Request>, log: LogShape) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        match commit_batch(&shared, &mut batch, &log) {
            Ok((outcomes, events)) => {
                shared.metrics.observe_commit(started.elapsed(), batch.len());
                if let Some(last) = events.last() {
                    shared.revision.store(last.revision, Ordering::Release);
                }
                for event in &events {
                    let delta = match (&event.value, &event.prev) {
                        (Some(_), None) => 1,
                        (None, Some(_)) => -1,
                        _ => 0,
                    };
                    if delta != 0 {
                        shared.metrics.add_objects(&StoreMetrics::resource_of(&event.key), delta);
                    }
                }
                for (req, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = req.reply.send(Ok(outcome));
                }
                if !events.is_empty() {
                    // No receivers is fine: nobody is watching.
                    let _ = shared.events.send(Arc::new(events));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                let msg = e.to_string();
                for req in batch {
                    let _ = req.reply.send(Err(StoreError::Commit(msg.clone().into())));
                }
            }
        }
    }
}

fn commit_batch(
    shared: &Shared,
    batch: &mut [Request],
    shape: &LogShape,
) -> Result<(Vec<WriteOutcome>, Vec<Event>), BoxError> {
    let mut txn = shared.db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    {
        let mut objects = txn.open_table(OBJECTS)?;
        let mut log = txn.open_table(EVENTS)?;
        // Rows from here on are all on file (compaction drops a prefix): a row may leave out a
        // previous value only if its row is among them.
        let first_row = log.first()?.map(|(rev, _)| rev.value());
        let mut meta = txn.open_table(META)?;
        let mut revision = meta.get("revision")?.map(|v| v.value()).unwrap_or(0);
        for req in batch.iter_mut() {
            let (key, put, precondition) = match &mut req.write {
                Write::Put { key, value, precondition } => (key.as_str(), Some(value), *precondition),
                Write::Delete { key, precondition } => (key.as_str(), None, *precondition),
            };
            let current = objects.get(key)?.map(|v| {
                let (rev, value) = v.value();
                KeyValue { key: key.to_string(), value: value.to_vec(), mod_revision: rev }
            });
            let holds = match precondition {
                None => true,
                Some(Precondition::Absent) => current.is_none(),
                Some(Precondition::ModRevision(r)) => current.as_ref().is_some_and(|c| c.mod_revision == r),
            };
            if !holds {
                outcomes.push(WriteOutcome::PreconditionFailed { current });
                continue;
            }
            // The value moves into the event: the request is only answered from here on.
            let value = match put {
                Some(value) => Some(std::mem::take(value)),
                None if current.is_none() => {
                    outcomes.push(WriteOutcome::NotFound);
                    continue;
                }
                None => None,
            };
            revision += 1;
            match &value {
                Some(v) => objects.insert(key, (revision, v.as_slice()))?,
                None => objects.remove(key)?,
            };
            let (prev_rev, prev_value) = match &current {
                // Left to the row at `mod_revision`, which is on file and kept as long as this one.
                Some(c)
                    if first_row.is_some_and(|first| c.mod_revision >= first)
                        && revision - c.mod_revision <= shape.reach =>
                {
                    (c.mod_revision, None)
                }
                Some(c) => (c.mod_revision, Some(c.value.as_slice())),
                None => (0, None),
            };
            log.insert(revision, (key, value.as_deref(), prev_rev, prev_value))?;
            events.push(Event { revision, key: key.to_string(), value, prev: current });
            outcomes.push(WriteOutcome::Committed(revision));
        }
        meta.insert("revision", revision)?;
        let compacted = meta.get("compacted")?.map(|v| v.value()).unwrap_or(0);
        let horizon = revision.saturating_sub(shape.window);
        if horizon > compacted {
            // Rows up to `reach` behind the horizon stay: readable rows may refer to them.
            log.retain_in(..=horizon.saturating_sub(shape.reach), |_, _| false)?;
            meta.insert("compacted", horizon)?;
            shared.compacted.store(horizon, Ordering::Release);
        }
    }
    txn.commit()?;
    Ok((outcomes, events))
}

type EventTable = redb::ReadOnlyTable<u64, EventRow>;

fn decode_event(
    log: &EventTable,
    revision: u64,
    row: (&str, Option<&[u8]>, u64, Option<&[u8]>),
) -> Result<Event, StoreError> {
    let (key, value, prev_rev, prev_value) = row;
    Ok(Event {
        revision,
        key: key.to_string(),
        value: value.map(<[u8]>::to_vec),
        prev: previous(log, key, prev_rev, prev_value)?,
    })
}

/// The version a row replaced: in the row, or (left out) the row that wrote it.
fn previous(
    log: &EventTable,
    key: &str,
    prev_rev: u64,
    prev_value: Option<&[u8]>,
) -> Result<Option<KeyValue>, StoreError> {
    let value = match (prev_rev, prev_value) {
        (0, _) => return Ok(None),
        (_, Some(value)) => value.to_vec(),
        (_, None) => {
            let row = log.get(prev_rev).map_err(read_err)?;
            let written = row.as_ref().map(|r| r.value()).filter(|(k, ..)| *k == key).and_then(|(_, v, ..)| v);
            let Some(value) = written else {
                let message = format!("event log row for {key} refers to revision {prev_rev}, which does not hold it");
                return Err(StoreError::Read(message.into()));
            };
            value.to_vec()
        }
    };
    Ok(Some(KeyValue { key: key.to_string(), value, mod_revision: prev_rev }))
}

/// Events with revision > `after`, at most `limit` of them, plus whether `after` is still covered.
fn read_events(shared: &Shared, after: Revision, limit: usize) -> Result<Vec<Event>, StoreError> {
    let txn = shared.db.begin_read().map_err(read_err)?;
    // Checked in the same transaction as the rows are read: a compaction committed since the
    // caller looked may have dropped rows the kept ones refer to.
    let compacted =
        txn.open_table(META).map_err(read_err)?.get("compacted").map_err(read_err)?.map_or(0, |v| v.value());
    if after < compacted {
        return Err(StoreError::Compacted { requested: after, compacted });
    }
    let table = txn.open_table(EVENTS).map_err(read_err)?;
    let mut out = Vec::new();
    for entry in table.range(after + 1..).map_err(read_err)?.take(limit) {
        let (rev, v) = entry.map_err(read_err)?;
        out.push(decode_event(&table, rev.value(), v.value())?);
    }
    Ok(out)
}

fn range_at(shared: &Shared, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
    let txn = shared.db.begin_read().map_err(read_err)?;
    let meta = txn.open_table(META).map_err(read_err)?;
    let meta_get =
        |k: &str| -> Result<u64, StoreError> { Ok(meta.get(k).map_err(read_err)?.map(|v| v.value()).unwrap_or(0)) };
    let latest = meta_get("revision")?;
    let compacted = meta_get("compacted")?;
    let at = req.revision.unwrap_or(latest).min(latest);
    if at < compacted {
        return Err(StoreError::Compacted { requested: at, compacted });
    }
    let objects = txn.open_table(OBJECTS).map_err(read_err)?;
    let start = req.start_after.clone().unwrap_or_else(|| req.prefix.clone());
    let in_range = |k: &str| k.starts_with(&req.prefix) && req.start_after.as_deref().is_none_or(|s| k > s);

    // Undo every event after `at` for keys in range: the first such event's `prev` is the state at `at`.
    let mut overlay: BTreeMap<String, Option<KeyValue>> = BTreeMap::new();
    if at < latest {
        let events = txn.open_table(EVENTS).map_err(read_err)?;
        for entry in events.range(at + 1..).map_err(read_err)? {
            let (_, v) = entry.map_err(read_err)?;
            let (key, _, prev_rev, prev_value) = v.value();
            if in_range(key) && !overlay.contains_key(key) {
                overlay.insert(key.to_string(), previous(&events, key, prev_rev, prev_value)?);
            }
        }
    }

    // Among current keys only the first `limit` can be on the page (the overlay may add older
    // keys in between, never reorder current ones), so keep those and just count the rest.
    let limit = req.limit.unwrap_or(usize::MAX);
    let mut merged: BTreeMap<String, KeyValue> = BTreeMap::new();
    let mut rest = 0u64;
    for entry in objects.range(start.as_str()..).map_err(read_err)? {
        let (k, v) = entry.map_err(read_err)?;
        let key = k.value();
        if !key.starts_with(&req.prefix) {
            break;
        }
        if !in_range(key) || overlay.contains_key(key) {
            continue;
        }
        if merged.len() < limit {
            let (rev, value) = v.value();
            merged.insert(key.to_string(), KeyValue { key: key.to_string(), value: value.to_vec(), mod_revision: rev });
        } else {
            rest += 1;
        }
    }
    merged.extend(overlay.into_iter().filter_map(|(key, prev)| Some((key, prev?))));
    let remaining = merged.len().saturating_sub(limit) as u64 + rest;
    let items: Vec<KeyValue> = merged.into_values().take(limit).collect();
    Ok(RangeResponse { items, revision: at, remaining })
}

#[async_trait]
impl Store for RedbStore {
    /// A point read runs on the calling task: it touches a few pages, almost always cached, and
    /// handing it to the blocking pool cost more than the read (two thread wake-ups per get).
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let txn = self.shared.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(OBJECTS).map_err(read_err)?;
        Ok(table.get(key).map_err(read_err)?.map(|v| {
            let (rev, value) = v.value();
            KeyValue { key: key.to_string(), value: value.to_vec(), mod_revision: rev }
        }))
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.blocking(move |s| range_at(s, &request)).await
    }

    async fn write(&self, write: Write) -> Result<WriteOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        let writes = self.writes.as_ref().ok_or(StoreError::Closed)?;
        writes.send(Request { write, reply }).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    fn watch(&self, prefix: &str, after: Revision) -> EventStream {
        let (tx, rx) = mpsc::channel(256);
        let shared = self.shared.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let live = shared.events.subscribe();
            if let Err(e) = feed_watch(&shared, &prefix, after, live, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    fn revision(&self) -> Revision {
        self.shared.revision.load(Ordering::Acquire)
    }

    fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::Acquire)
    }
}

type WatchSender = mpsc::Sender<Result<Event, StoreError>>;

/// Sends the log from `after` on, then live events; falls back to the log whenever it lags behind
/// the live channel. Returns `Ok` when the receiver goes away.
async fn feed_watch(
    shared: &Arc<Shared>,
    prefix: &str,
    mut last: Revision,
    mut live: broadcast::Receiver<Arc<Vec<Event>>>,
    tx: &WatchSender,
) -> Result<(), StoreError> {
    loop {
        // Catch up from the durable log. `live` was subscribed first, so nothing falls in between.
        loop {
            let compacted = shared.compacted.load(Ordering::Acquire);
            if last < compacted {
                return Err(StoreError::Compacted { requested: last, compacted });
            }
            let reader = shared.clone();
            let chunk = tokio::task::spawn_blocking(move || read_events(&reader, last, CATCH_UP_CHUNK))
                .await
                .map_err(read_err)??;
            let n = chunk.len();
            for event in chunk {
                last = event.revision;
                if event.key.starts_with(prefix) && tx.send(Ok(event)).await.is_err() {
                    return Ok(());
                }
            }
            if n < CATCH_UP_CHUNK {
                break;
            }
        }
        // Live events until the channel says we fell behind.
        loop {
            let batch = tokio::select! {
                batch = live.recv() => batch,
                _ = tx.closed() => return Ok(()),
            };
            match batch {
                Ok(events) => {
                    for event in events.iter() {
                        if event.revision <= last {
                            continue;
                        }
                        last = event.revision;
                        if event.key.starts_with(prefix) && tx.send(Ok(event.clone())).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return Err(StoreError::Closed),
            }
        }
    }
}
