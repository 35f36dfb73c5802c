//! LIST (with selectors and `limit`/`continue` pages at one consistent revision) and WATCH.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wasmkube_api::selector::{FieldSelector, LabelSelector};

use super::{Objects, Target, decode, decode_at, parse_revision};
use crate::status::ApiError;
use crate::store::{Event, RangeRequest, Revision, StoreError};

/// Keys read from the store per step while filling a filtered page.
const SCAN_CHUNK: usize = 500;

/// Which objects a list or watch selects.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
}

impl Selectors {
    pub fn parse(target: &Target, labels: Option<&str>, fields: Option<&str>) -> Result<Self, ApiError> {
        let labels = labels
            .filter(|s| !s.is_empty())
            .map(LabelSelector::parse)
            .transpose()
            .map_err(|e| ApiError::BadRequest(format!("unable to parse requirement: {e}")))?;
        let fields = fields
            .filter(|s| !s.is_empty())
            .map(|s| FieldSelector::parse(s, target.kind))
            .transpose()
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(Self { labels, fields })
    }

    fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.labels.as_ref().is_none_or(|l| l.matches_object(object))
            && self.fields.as_ref().is_none_or(|f| f.matches(object))
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub selectors: Selectors,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    /// `resourceVersionMatch=Exact`: read at exactly `resource_version`.
    pub exact: bool,
}

/// Where the next page starts; opaque to clients.
#[derive(Serialize, Deserialize)]
struct ContinueToken {
    rv: Revision,
    start: String,
}

fn encode_continue(rv: Revision, start: &str) -> String {
    let json = serde_json::to_vec(&ContinueToken { rv, start: start.to_string() }).expect("token serialises");
    URL_SAFE_NO_PAD.encode(json)
}

fn decode_continue(token: &str) -> Result<ContinueToken, ApiError> {
    URL_SAFE_NO_PAD.decode(token).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).ok_or_else(|| {
        ApiError::BadRequest(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)".into(),
        )
    })
}

const EXPIRED_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. \
You can start a new list without the continue parameter.";

impl Objects {
    /// A `<Kind>List` of the objects `target`'s collection holds that `opts` selects.
    pub async fn list(&self, target: &Target, opts: &ListOptions) -> Result<Value, ApiError> {
        let prefix = target.collection_prefix();
        let (mut revision, mut start) = match opts.continue_token.as_deref().filter(|c| !c.is_empty()) {
            Some(token) => {
                let token = decode_continue(token)?;
                (Some(token.rv), Some(token.start))
            }
            None => {
                let exact = match (&opts.resource_version, opts.exact) {
                    (Some(rv), true) => Some(parse_revision(rv)?),
                    _ => None,
                };
                (exact, None)
            }
        };
        let limit = opts.limit.filter(|l| *l > 0);
        let mut items = Vec::new();
        let mut continue_token = None;
        let mut remaining = None;
        loop {
            let want = limit.map(|l| (l - items.len()).max(if opts.selectors.is_empty() { 0 } else { SCAN_CHUNK }));
            let page = self
                .store
                .range(RangeRequest { prefix: prefix.clone(), start_after: start.clone(), limit: want, revision })
                .await
                .map_err(|e| match e {
                    StoreError::Compacted { .. } if opts.continue_token.is_some() => {
                        ApiError::Gone(EXPIRED_CONTINUE.into())
                    }
                    other => other.into(),
                })?;
            revision = Some(page.revision);
            let n = page.items.len();
            for (i, kv) in page.items.iter().enumerate() {
                start = Some(kv.key.clone());
                let object = decode(kv)?;
                if opts.selectors.matches(&object) {
                    items.push(object);
                }
                if limit.is_some_and(|l| items.len() >= l) {
                    let more = i + 1 < n || page.remaining > 0;
                    if more {
                        continue_token = Some(encode_continue(page.revision, &kv.key));
                        if opts.selectors.is_empty() {
                            remaining = Some((n - i - 1) as u64 + page.remaining);
                        }
                    }
                    break;
                }
            }
            let filled = limit.is_some_and(|l| items.len() >= l);
            if filled || page.remaining == 0 {
                break;
            }
        }
        let mut metadata = json!({"resourceVersion": revision.unwrap_or(0).to_string()});
        if let Some(token) = continue_token {
            metadata["continue"] = json!(token);
            if let Some(rest) = remaining {
                metadata["remainingItemCount"] = json!(rest);
            }
        }
        Ok(json!({
            "apiVersion": target.kind.api_version(),
            "kind": target.kind.list_kind(),
            "metadata": metadata,
            "items": items,
        }))
    }
}

/// One event of a watch stream, as it goes on the wire.
#[derive(Debug, Clone, Serialize)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub object: Value,
}

impl WatchEvent {
    pub fn error(error: &ApiError) -> Self {
        Self { kind: "ERROR", object: error.to_status() }
    }

    /// The revision this event brings a watcher to, if it carries one.
    pub fn revision(&self) -> Option<Revision> {
        self.object.pointer("/metadata/resourceVersion")?.as_str()?.parse().ok()
    }
}

#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    pub selectors: Selectors,
    /// Start after this revision; unset or "0" sends the current state as ADDED events first.
    pub resource_version: Option<String>,
}

impl Objects {
    /// The events of `target`'s collection from the requested revision on. A start revision older
    /// than the store keeps yields a single ERROR event (410 Expired), as kube-apiserver does.
    pub async fn watch(
        &self,
        target: &Target,
        opts: WatchOptions,
    ) -> Result<(Revision, impl Stream<Item = WatchEvent> + Send + 'static), ApiError> {
        let prefix = target.collection_prefix();
        let (initial, start) = match opts.resource_version.as_deref().filter(|rv| !rv.is_empty() && *rv != "0") {
            Some(rv) => (Vec::new(), parse_revision(rv)?),
            None => {
                let list =
                    self.list(target, &ListOptions { selectors: opts.selectors.clone(), ..Default::default() }).await?;
                let rev = list.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("0");
                let rev = parse_revision(rev)?;
                let items = list.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
                (items.into_iter().map(|object| WatchEvent { kind: "ADDED", object }).collect(), rev)
            }
        };
        let selectors = opts.selectors;
        let mut failed = false;
        let live = self.store.watch(&prefix, start).filter_map(move |item| {
            let out = if failed {
                None
            } else {
                match item {
                    Ok(event) => to_watch_event(&event, &selectors).unwrap_or_else(|e| Some(WatchEvent::error(&e))),
                    Err(e) => {
                        failed = true;
                        Some(WatchEvent::error(&ApiError::from(e)))
                    }
                }
            };
            futures::future::ready(out)
        });
        Ok((start, futures::stream::iter(initial).chain(live)))
    }
}

/// Translates a store event into what a watcher with these selectors sees: objects moving into
/// the selection are ADDED, out of it DELETED.
fn to_watch_event(event: &Event, selectors: &Selectors) -> Result<Option<WatchEvent>, ApiError> {
    let prev = event.prev.as_ref().map(decode).transpose()?;
    let prev_matches = prev.as_ref().is_some_and(|p| selectors.matches(p));
    match &event.value {
        Some(bytes) => {
            let object = decode_at(bytes, event.revision)?;
            let now_matches = selectors.matches(&object);
            Ok(match (prev_matches, now_matches) {
                (true, true) => Some(WatchEvent { kind: "MODIFIED", object }),
                (false, true) => Some(WatchEvent { kind: "ADDED", object }),
                (true, false) => Some(WatchEvent { kind: "DELETED", object }),
                (false, false) => None,
            })
        }
        None if prev_matches => {
            let mut object = prev.expect("prev_matches implies a previous object");
            super::set_resource_version(&mut object, event.revision);
            Ok(Some(WatchEvent { kind: "DELETED", object }))
        }
        None => Ok(None),
    }
}
