//! The key-value store under the API: one global revision, compare-and-put writes, and watch.
//!
//! [`Store`] is deliberately as narrow as etcd's KV + Watch API so an etcd backend can implement it
//! later: keys are strings, values are opaque bytes, every successful write gets the next global
//! revision, and a key's `mod_revision` is the revision of its last write (the API serves it as
//! `metadata.resourceVersion`). [`redb::RedbStore`] is the embedded, durable implementation.

pub mod redb;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

/// A position in the store's single, strictly increasing history.
pub type Revision = u64;

/// One key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision of the write that produced this value.
    pub mod_revision: Revision,
}

/// A condition on a key's current state that a write requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// The key must not exist (create).
    Absent,
    /// The key must exist with exactly this mod revision (optimistic concurrency).
    ModRevision(Revision),
}

/// One write, applied atomically with its precondition.
#[derive(Debug, Clone)]
pub enum Write {
    Put { key: String, value: Vec<u8>, precondition: Option<Precondition> },
    Delete { key: String, precondition: Option<Precondition> },
}

impl Write {
    pub fn key(&self) -> &str {
        match self {
            Write::Put { key, .. } | Write::Delete { key, .. } => key,
        }
    }
}

/// What happened to a write that did not fail outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Durably committed at this revision.
    Committed(Revision),
    /// The precondition did not hold; nothing was written. `current` is the key's state.
    PreconditionFailed { current: Option<KeyValue> },
    /// A delete of a key that does not exist (and had no precondition); nothing was written.
    NotFound,
}

/// A page of a prefix range read.
#[derive(Debug, Clone, Default)]
pub struct RangeRequest {
    /// Keys starting with this prefix.
    pub prefix: String,
    /// Only keys strictly greater than this one (for `continue`).
    pub start_after: Option<String>,
    /// At most this many keys (`None` = all).
    pub limit: Option<usize>,
    /// Read the state as of this revision (`None` = the latest). A revision older than the event
    /// log keeps fails with [`StoreError::Compacted`].
    pub revision: Option<Revision>,
}

#[derive(Debug, Clone)]
pub struct RangeResponse {
    pub items: Vec<KeyValue>,
    /// The revision the page was read at.
    pub revision: Revision,
    /// How many matching keys follow this page (0 when it is the last).
    pub remaining: u64,
}

/// One change in the store's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub revision: Revision,
    pub key: String,
    /// The new value, or `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// The key's state just before this event, if it existed.
    pub prev: Option<KeyValue>,
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, StoreError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("required revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted { requested: Revision, compacted: Revision },
    #[error("opening the store at {path}")]
    Open {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("reading from the store")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("committing to the store")]
    Commit(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the store is shut down")]
    Closed,
}

/// The storage API the control plane is written against.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError>;

    /// Applies one write durably; returns only after the commit that holds it is on disk.
    async fn write(&self, write: Write) -> Result<WriteOutcome, StoreError>;

    /// Every event under `prefix` with a revision greater than `after`, in order, then live ones
    /// for as long as the stream is polled. Fails (first item) with [`StoreError::Compacted`] when
    /// `after` is older than the event log keeps.
    fn watch(&self, prefix: &str, after: Revision) -> EventStream;

    /// The latest committed revision.
    fn revision(&self) -> Revision;

    /// The oldest revision a watch or a historical read may still start from.
    fn compacted_revision(&self) -> Revision;
}
