//! Event compaction as Kubernetes does it (client-go's `EventCorrelator`): the pure decision of
//! whether an occurrence becomes a new core/v1 Event or bumps the `count` of one already recorded.
//!
//! A recorder (the control plane's, a node agent's) owns one [`Correlator`], asks it
//! [`Correlator::observe`] for every occurrence, and carries out the [`Decision`]: create
//! [`Decision::event`], or merge-patch [`Decision::patch`] onto the Event it names. Two rules:
//!
//! - **Deduplication.** An occurrence identical to one recorded before (same reporter, involved
//!   object, type, reason and message) patches that Event: `count + 1`, `lastTimestamp = now`. A
//!   crash-looping pod then has one `BackOff` Event counting up, not one Event per restart.
//! - **Aggregation.** When one reporter says more than [`MAX_SIMILAR`] *different* messages about
//!   the same object with the same type and reason, each within [`SIMILAR_INTERVAL`] of the one
//!   before, the first [`MAX_SIMILAR`] keep their own Events and every further new message goes to
//!   one combined Event, whose message is `(combined from similar events): <latest message>` and
//!   whose count grows.
//!
//! Both caches are LRU-bounded ([`CACHE_ENTRIES`]), so a forgotten occurrence only costs a new
//! Event. When a patch finds its Event gone (events expire, or someone deleted it), the recorder
//! calls [`Correlator::forget`] and observes again, which creates it anew.
//!
//! Unlike client-go this keeps no spam filter (token bucket per object): wasmkube's reporters
//! already rate-limit themselves (back-off delays, "only when the message changes").

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use lru::LruCache;
use serde_json::{Map, Value, json};

/// Entries each of the correlator's caches keeps (client-go's `maxLruCacheEntries`).
pub const CACHE_ENTRIES: usize = 4096;
/// Distinct messages about one object and reason that keep their own Events before further ones
/// are combined (client-go's `defaultAggregateMaxEvents`).
pub const MAX_SIMILAR: usize = 10;
/// How long similar occurrences stay "similar": a pause this long starts the count of distinct
/// messages over (client-go's `defaultAggregateIntervalInSeconds`).
pub const SIMILAR_INTERVAL: SignedDuration = SignedDuration::from_secs(600);
/// What a combined Event's message starts with.
pub const COMBINED_PREFIX: &str = "(combined from similar events): ";

/// `Normal` or `Warning`, the two types Kubernetes defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The object an Event is about (its `involvedObject`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvolvedObject {
    pub api_version: String,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Recorded on the Event, but not part of what makes two occurrences the same.
    pub resource_version: Option<String>,
}

impl InvolvedObject {
    /// The reference to a typed Kubernetes object.
    pub fn of<K: k8s_openapi::Metadata<Ty = ObjectMeta>>(object: &K) -> Self {
        let meta = object.metadata();
        Self {
            api_version: K::API_VERSION.to_string(),
            kind: K::KIND.to_string(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone(),
        }
    }
}

/// Who reports: `source.component`/`reportingComponent`, and `source.host`/`reportingInstance`
/// (a node agent's node; none for the control plane's controllers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Reporter {
    pub component: String,
    pub host: Option<String>,
}

impl Reporter {
    pub fn new(component: impl Into<String>, host: Option<String>) -> Self {
        Self { component: component.into(), host }
    }
}

/// Something worth an Event: what happened, to which object, said by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub object: InvolvedObject,
    pub type_: EventType,
    pub reason: String,
    pub message: String,
    pub reporter: Reporter,
}

impl Occurrence {
    /// The namespace the Event lives in: its object's, or `default` for cluster-scoped objects,
    /// as Kubernetes' recorder does.
    pub fn event_namespace(&self) -> &str {
        if self.object.namespace.is_empty() { "default" } else { &self.object.namespace }
    }
}

/// What makes occurrences similar: everything that identifies them but the message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Similar {
    reporter: Reporter,
    api_version: String,
    kind: String,
    namespace: String,
    name: String,
    uid: String,
    type_: EventType,
    reason: String,
}

impl Similar {
    fn of(o: &Occurrence) -> Self {
        Self {
            reporter: o.reporter.clone(),
            api_version: o.object.api_version.clone(),
            kind: o.object.kind.clone(),
            namespace: o.object.namespace.clone(),
            name: o.object.name.clone(),
            uid: o.object.uid.clone(),
            type_: o.type_,
            reason: o.reason.clone(),
        }
    }
}

/// Which recorded Event an occurrence counts towards.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventKey {
    similar: Similar,
    /// The message, or `None` for the combined Event of its similar occurrences.
    message: Option<String>,
}

/// Whether to write a new Event or update the one already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Create,
    Patch,
}

/// The correlator's answer for one occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub write: Write,
    /// What to [`Correlator::forget`] if the Event turns out to be gone or was never written.
    pub key: EventKey,
    /// The Event's `metadata.name`: new for a create, the recorded one for a patch.
    pub name: String,
    /// The message to record (prefixed with [`COMBINED_PREFIX`] for a combined Event).
    pub message: String,
    pub count: i32,
    pub first_timestamp: Timestamp,
    pub last_timestamp: Timestamp,
}

/// Kubernetes' `firstTimestamp`/`lastTimestamp` form: RFC 3339 to the second.
fn rfc3339(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second()).unwrap_or(t).to_string()
}

impl Decision {
    /// The core/v1 Event to create.
    pub fn event(&self, o: &Occurrence) -> Value {
        let mut involved = json!({"apiVersion": o.object.api_version, "kind": o.object.kind,
            "name": o.object.name, "uid": o.object.uid});
        if !o.object.namespace.is_empty() {
            involved["namespace"] = json!(o.object.namespace);
        }
        if let Some(rv) = &o.object.resource_version {
            involved["resourceVersion"] = json!(rv);
        }
        let mut source = Map::new();
        source.insert("component".into(), json!(o.reporter.component));
        let mut event = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": self.name, "namespace": o.event_namespace()},
            "involvedObject": involved,
            "reason": o.reason, "message": self.message, "type": o.type_.as_str(),
            "reportingComponent": o.reporter.component,
            "firstTimestamp": rfc3339(self.first_timestamp), "lastTimestamp": rfc3339(self.last_timestamp),
            "count": self.count});
        if let Some(host) = &o.reporter.host {
            source.insert("host".into(), json!(host));
            event["reportingInstance"] = json!(host);
        }
        event["source"] = Value::Object(source);
        event
    }

    /// The merge patch that brings the recorded Event up to this occurrence.
    pub fn patch(&self) -> Value {
        json!({"count": self.count, "lastTimestamp": rfc3339(self.last_timestamp), "message": self.message})
    }
}

/// The distinct messages seen lately for one [`Similar`].
struct Messages {
    seen: HashSet<String>,
    last: Timestamp,
}

/// What the correlator remembers of an Event it had written.
struct Recorded {
    name: String,
    count: i32,
    first: Timestamp,
}

/// Decides create-or-patch for each occurrence (see the module docs). Not thread-safe by itself:
/// a recorder shares one behind a mutex.
pub struct Correlator {
    similar: LruCache<Similar, Messages>,
    recorded: LruCache<EventKey, Recorded>,
}

impl Default for Correlator {
    fn default() -> Self {
        Self::with_capacity(NonZeroUsize::new(CACHE_ENTRIES).expect("CACHE_ENTRIES is not zero"))
    }
}

impl Correlator {
    /// A correlator whose caches keep at most `entries` each.
    pub fn with_capacity(entries: NonZeroUsize) -> Self {
        Self { similar: LruCache::new(entries), recorded: LruCache::new(entries) }
    }

    /// Decides how `o`, happening at `now`, is recorded, and remembers it as recorded that way.
    pub fn observe(&mut self, o: &Occurrence, now: Timestamp) -> Decision {
        let similar = Similar::of(o);
        let messages = self.similar.get_or_insert_mut(similar.clone(), || Messages { seen: HashSet::new(), last: now });
        if now.duration_since(messages.last) > SIMILAR_INTERVAL {
            messages.seen.clear();
        }
        messages.last = now;
        let combine = if messages.seen.contains(&o.message) {
            false
        } else if messages.seen.len() < MAX_SIMILAR {
            messages.seen.insert(o.message.clone());
            false
        } else {
            true
        };
        let (key, message) = if combine {
            (EventKey { similar, message: None }, format!("{COMBINED_PREFIX}{}", o.message))
        } else {
            (EventKey { similar, message: Some(o.message.clone()) }, o.message.clone())
        };
        let (write, name, count, first) = match self.recorded.get_mut(&key) {
            Some(r) => {
                r.count = r.count.saturating_add(1);
                (Write::Patch, r.name.clone(), r.count, r.first)
            }
            None => {
                let name = unique_name(&o.object.name, now);
                self.recorded.put(key.clone(), Recorded { name: name.clone(), count: 1, first: now });
                (Write::Create, name, 1, now)
            }
        };
        Decision { write, key, name, message, count, first_timestamp: first, last_timestamp: now }
    }

    /// Drops what was remembered of an Event, so the next such occurrence creates a new one: for
    /// an Event that is gone (a patch answered NotFound) or was never written.
    pub fn forget(&mut self, key: &EventKey) {
        self.recorded.pop(key);
    }

    /// How many recorded Events are remembered (at most the capacity).
    pub fn len(&self) -> usize {
        self.recorded.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recorded.is_empty()
    }
}

/// `<object>.<hex>`, as Kubernetes' recorder names Events: the hex is the time in nanoseconds,
/// bumped past the last one handed out in this process, so two Events in the same nanosecond (or
/// from two recorders of one process) still get distinct names.
pub fn unique_name(object: &str, now: Timestamp) -> String {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let nanos = i64::try_from(now.as_nanosecond()).unwrap_or(i64::MAX);
    let next = |last: i64| nanos.max(last.saturating_add(1));
    let unique = match LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(next(last))) {
        Ok(last) | Err(last) => next(last),
    };
    format!("{object}.{unique:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occurrence(name: &str, reason: &str, message: &str) -> Occurrence {
        Occurrence {
            object: InvolvedObject {
                api_version: "v1".into(),
                kind: "Pod".into(),
                namespace: "default".into(),
                name: name.into(),
                uid: format!("uid-{name}"),
                resource_version: None,
            },
            type_: EventType::Warning,
            reason: reason.into(),
            message: message.into(),
            reporter: Reporter::new("wasmkube-agent", Some("node-a".into())),
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("a valid time")
    }

    #[test]
    fn identical_occurrences_create_once_then_patch_with_growing_counts() {
        let mut c = Correlator::default();
        let backoff = occurrence("crasher", "BackOff", "Back-off restarting failed container crasher");
        let cases = [(0, Write::Create, 1), (1, Write::Patch, 2), (5, Write::Patch, 3), (60, Write::Patch, 4)];
        let mut name = None;
        for (second, write, count) in cases {
            let d = c.observe(&backoff, at(second));
            assert_eq!((d.write, d.count), (write, count), "at {second}s");
            assert_eq!(name.get_or_insert_with(|| d.name.clone()), &d.name, "one Event throughout");
            assert_eq!((d.first_timestamp, d.last_timestamp), (at(0), at(second)));
            assert_eq!(d.message, backoff.message);
        }
        assert!(name.is_some_and(|n| n.starts_with("crasher.")));
    }

    /// The control plane stores `Decision::event` as it is (without decoding it through the
    /// Event type first), so it must already be what that decoding would give.
    #[test]
    fn the_event_to_create_is_already_in_canonical_form() {
        let events = crate::kinds::by_resource("", "v1", "events").expect("events are registered");
        let mut hosted = occurrence("p", "BackOff", "Back-off restarting failed container");
        hosted.reporter.host = Some("node-a".into());
        hosted.object.resource_version = Some("42".into());
        for o in [occurrence("p", "Scheduled", "Successfully assigned default/p to node-a"), hosted] {
            let event = Correlator::default().observe(&o, at(0)).event(&o);
            assert_eq!(events.normalize(&event).expect("an Event"), event);
        }
    }

    #[test]
    fn occurrences_that_differ_in_identity_are_recorded_apart() {
        let base = occurrence("p", "BackOff", "m");
        let mut other_uid = base.clone();
        other_uid.object.uid = "another".into();
        let mut other_type = base.clone();
        other_type.type_ = EventType::Normal;
        let mut other_host = base.clone();
        other_host.reporter.host = Some("node-b".into());
        let mut other_kind = base.clone();
        other_kind.object.kind = "ReplicaSet".into();
        let mut new_version = base.clone();
        new_version.object.resource_version = Some("42".into());
        let cases = [
            ("another reason", occurrence("p", "Started", "m"), Write::Create),
            ("another object", occurrence("q", "BackOff", "m"), Write::Create),
            ("another uid (a new pod of the same name)", other_uid, Write::Create),
            ("another type", other_type, Write::Create),
            ("another reporter instance", other_host, Write::Create),
            ("another kind", other_kind, Write::Create),
            ("only the object's resourceVersion moved", new_version, Write::Patch),
        ];
        for (what, o, write) in cases {
            let mut c = Correlator::default();
            c.observe(&base, at(0));
            assert_eq!(c.observe(&o, at(1)).write, write, "{what}");
        }
    }

    #[test]
    fn the_eleventh_distinct_message_goes_to_one_combined_event() {
        let mut c = Correlator::default();
        let say =
            |c: &mut Correlator, message: &str, second| c.observe(&occurrence("p", "Unhealthy", message), at(second));
        let firsts: Vec<Decision> = (0..MAX_SIMILAR).map(|i| say(&mut c, &format!("probe {i}"), i as i64)).collect();
        assert!(firsts.iter().all(|d| d.write == Write::Create && d.count == 1), "{firsts:?}");
        let names: HashSet<&String> = firsts.iter().map(|d| &d.name).collect();
        assert_eq!(names.len(), MAX_SIMILAR, "each its own Event");

        // (message, expected write, count, message recorded)
        let cases = [
            ("probe 10", Write::Create, 1, "(combined from similar events): probe 10"),
            ("probe 11", Write::Patch, 2, "(combined from similar events): probe 11"),
            ("probe 12", Write::Patch, 3, "(combined from similar events): probe 12"),
            // A message that has its own Event keeps counting there.
            ("probe 3", Write::Patch, 2, "probe 3"),
        ];
        let mut combined = None;
        for (i, (message, write, count, recorded)) in cases.into_iter().enumerate() {
            let d = say(&mut c, message, 20 + i as i64);
            assert_eq!((d.write, d.count, d.message.as_str()), (write, count, recorded), "{message}");
            if d.message.starts_with(COMBINED_PREFIX) {
                assert_eq!(combined.get_or_insert_with(|| d.name.clone()), &d.name, "one combined Event");
            } else {
                assert_eq!(d.name, firsts[3].name);
            }
        }
    }

    #[test]
    fn a_quiet_interval_lets_new_messages_have_their_own_events_again() {
        let mut c = Correlator::default();
        for i in 0..MAX_SIMILAR {
            c.observe(&occurrence("p", "Unhealthy", &format!("probe {i}")), at(i as i64));
        }
        let later = 9 + SIMILAR_INTERVAL.as_secs() + 1;
        let d = c.observe(&occurrence("p", "Unhealthy", "probe 99"), at(later));
        assert_eq!((d.write, d.message.as_str()), (Write::Create, "probe 99"));
    }

    #[test]
    fn the_caches_are_bounded_and_evict_the_least_recently_used() {
        let mut c = Correlator::with_capacity(NonZeroUsize::new(2).expect("two"));
        let (a, b, third) = (occurrence("a", "R", "m"), occurrence("b", "R", "m"), occurrence("c", "R", "m"));
        let cases = [
            (&a, Write::Create, 1),
            (&b, Write::Create, 1),
            (&a, Write::Patch, 2),      // a is now the most recently used
            (&third, Write::Create, 1), // evicts b
            (&a, Write::Patch, 3),
            (&b, Write::Create, 1), // forgotten: a new Event
        ];
        for (i, (o, write, count)) in cases.into_iter().enumerate() {
            let d = c.observe(o, at(i as i64));
            assert_eq!((d.write, d.count), (write, count), "step {i} ({})", o.object.name);
            assert!(c.len() <= 2);
        }
        assert!(Correlator::default().is_empty());
    }

    #[test]
    fn a_forgotten_event_is_created_anew_under_a_new_name() {
        let mut c = Correlator::default();
        let o = occurrence("p", "BackOff", "m");
        let first = c.observe(&o, at(0));
        let patched = c.observe(&o, at(1));
        assert_eq!((patched.write, patched.name.as_str()), (Write::Patch, first.name.as_str()));
        // The patch found the Event gone (expired or deleted): the recorder forgets and observes again.
        c.forget(&patched.key);
        let again = c.observe(&o, at(2));
        assert_eq!((again.write, again.count, again.first_timestamp), (Write::Create, 1, at(2)));
        assert_ne!(again.name, first.name);
        assert_eq!(c.observe(&o, at(3)).write, Write::Patch);
    }

    #[test]
    fn names_are_unique_even_within_one_nanosecond() {
        let now = at(0);
        let names: HashSet<String> = (0..100).map(|_| unique_name("p", now)).collect();
        assert_eq!(names.len(), 100);
    }

    #[test]
    fn events_and_patches_have_kubernetes_fields() {
        let mut c = Correlator::default();
        let o = occurrence("p", "BackOff", "m");
        let d = c.observe(&o, Timestamp::from_second(1_800_000_000).expect("time") + SignedDuration::from_millis(250));
        let event = d.event(&o);
        assert_eq!(event["metadata"]["namespace"], "default");
        assert_eq!(event["involvedObject"]["uid"], "uid-p");
        assert_eq!(event["source"], json!({"component": "wasmkube-agent", "host": "node-a"}));
        assert_eq!(
            (&event["reportingComponent"], &event["reportingInstance"]),
            (&json!("wasmkube-agent"), &json!("node-a"))
        );
        assert_eq!((&event["type"], &event["count"]), (&json!("Warning"), &json!(1)));
        assert_eq!(event["firstTimestamp"], "2027-01-15T08:00:00Z", "to the second");
        let d = c.observe(&o, at(7));
        assert_eq!(d.patch(), json!({"count": 2, "lastTimestamp": "2027-01-15T08:00:07Z", "message": "m"}));

        let mut node = occurrence("n", "NodeNotReady", "m");
        node.object.namespace.clear();
        node.reporter.host = None;
        let event = Correlator::default().observe(&node, at(0)).event(&node);
        assert_eq!(event["metadata"]["namespace"], "default", "cluster-scoped objects' events live in default");
        assert!(event["involvedObject"].get("namespace").is_none() && event.get("reportingInstance").is_none());
    }
}
