//! The redb store on real files: revisions, preconditions, group commit, historical pages, watch
//! replay and compaction.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;
use wasmkube_control::metrics::Metrics;
use wasmkube_control::store::redb::{RedbConfig, RedbStore};
use wasmkube_control::store::{Precondition, RangeRequest, Store, StoreError, Write, WriteOutcome};

fn open(dir: &std::path::Path, window: u64) -> RedbStore {
    RedbStore::open(&dir.join("store.redb"), RedbConfig { event_window: window }, Metrics::new().store)
        .expect("store opens")
}

fn put(key: &str, value: &str, precondition: Option<Precondition>) -> Write {
    Write::Put { key: key.into(), value: value.as_bytes().to_vec(), precondition }
}

async fn committed(store: &RedbStore, write: Write) -> u64 {
    match store.write(write).await.expect("write") {
        WriteOutcome::Committed(rev) => rev,
        other => panic!("expected a commit, got {other:?}"),
    }
}

#[tokio::test]
async fn concurrent_writes_get_distinct_strictly_increasing_revisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = std::sync::Arc::new(open(dir.path(), 1000));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { committed(&store, put(&format!("/k/{i:03}"), "v", None)).await }));
    }
    let mut revisions = Vec::new();
    for t in tasks {
        revisions.push(t.await.expect("task"));
    }
    revisions.sort();
    revisions.dedup();
    assert_eq!(revisions, (1..=200).collect::<Vec<u64>>());
    assert_eq!(store.revision(), 200);
}

#[tokio::test]
async fn failed_preconditions_write_nothing_and_report_the_current_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 1000);
    let rev = committed(&store, put("/a", "1", Some(Precondition::Absent))).await;
    let again = store.write(put("/a", "2", Some(Precondition::Absent))).await.expect("write");
    assert!(matches!(again, WriteOutcome::PreconditionFailed { current: Some(ref kv) } if kv.value == b"1"));
    let stale = store.write(put("/a", "2", Some(Precondition::ModRevision(rev + 5)))).await.expect("write");
    assert!(matches!(stale, WriteOutcome::PreconditionFailed { .. }));
    assert_eq!(store.revision(), rev, "no revision is spent on a failed write");
    let del = store.write(Write::Delete { key: "/missing".into(), precondition: None }).await.expect("write");
    assert_eq!(del, WriteOutcome::NotFound);
    let rev2 = committed(&store, put("/a", "2", Some(Precondition::ModRevision(rev)))).await;
    assert_eq!(store.get("/a").await.expect("get").expect("present").mod_revision, rev2);
}

#[tokio::test]
async fn state_and_revision_survive_reopening_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path(), 1000);
        committed(&store, put("/a", "1", None)).await;
        committed(&store, put("/b", "2", None)).await;
    }
    let store = open(dir.path(), 1000);
    assert_eq!(store.revision(), 2);
    assert_eq!(store.get("/b").await.expect("get").expect("present").value, b"2");
    assert_eq!(committed(&store, put("/c", "3", None)).await, 3);
}

#[tokio::test]
async fn a_page_at_an_old_revision_sees_the_state_of_that_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 1000);
    for k in ["a", "b", "c", "d"] {
        committed(&store, put(&format!("/p/{k}"), "old", None)).await;
    }
    let first =
        store.range(RangeRequest { prefix: "/p/".into(), limit: Some(2), ..Default::default() }).await.expect("range");
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.remaining, 2);
    // Writes after the first page: change c, delete d, add bb and e.
    committed(&store, put("/p/c", "new", None)).await;
    committed(&store, Write::Delete { key: "/p/d".into(), precondition: None }).await;
    committed(&store, put("/p/bb", "new", None)).await;
    committed(&store, put("/p/e", "new", None)).await;
    let second = store
        .range(RangeRequest {
            prefix: "/p/".into(),
            start_after: Some(first.items[1].key.clone()),
            limit: Some(10),
            revision: Some(first.revision),
        })
        .await
        .expect("range");
    let seen: Vec<(String, String)> =
        second.items.iter().map(|kv| (kv.key.clone(), String::from_utf8_lossy(&kv.value).into())).collect();
    assert_eq!(seen, vec![("/p/c".into(), "old".into()), ("/p/d".into(), "old".into())]);
    assert_eq!(second.remaining, 0);
}

#[tokio::test]
async fn watch_resumes_mid_way_and_refuses_compacted_revisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 5);
    for i in 0..4 {
        committed(&store, put(&format!("/w/{i}"), "v", None)).await;
    }
    let mut watch = store.watch("/w/", 2);
    for want in [3, 4] {
        let event = watch.next().await.expect("event").expect("ok");
        assert_eq!(event.revision, want);
    }
    committed(&store, put("/other", "v", None)).await; // not under the prefix
    committed(&store, put("/w/9", "v", None)).await;
    let live = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("live event in time");
    assert_eq!(live.expect("event").expect("ok").revision, 6);
    for i in 0..10 {
        committed(&store, put(&format!("/x/{i}"), "v", None)).await;
    }
    assert!(store.compacted_revision() > 1);
    let mut old = store.watch("/w/", 1);
    let first = old.next().await.expect("an error item");
    assert!(matches!(first, Err(StoreError::Compacted { requested: 1, .. })), "{first:?}");
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Delete(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![(0u8..12, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)), (0u8..12).prop_map(Op::Delete)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Revisions only grow, and replaying the watch from revision 0 rebuilds the final state.
    #[test]
    fn replaying_the_watch_from_zero_rebuilds_the_final_state(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = open(dir.path(), 10_000);
            let mut last = 0;
            for op in &ops {
                let write = match op {
                    Op::Put(k, v) => put(&format!("/r/{k:02}"), &v.to_string(), None),
                    Op::Delete(k) => Write::Delete { key: format!("/r/{k:02}"), precondition: None },
                };
                if let WriteOutcome::Committed(rev) = store.write(write).await.expect("write") {
                    prop_assert!(rev > last);
                    last = rev;
                }
            }
            let final_state: BTreeMap<String, Vec<u8>> = store
                .range(RangeRequest { prefix: "/r/".into(), ..Default::default() })
                .await
                .expect("range")
                .items
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect();
            let mut replayed = BTreeMap::new();
            let mut watch = store.watch("/r/", 0);
            let mut seen = 0;
            while seen < last {
                let event = watch.next().await.expect("event").expect("ok");
                prop_assert!(event.revision > seen);
                seen = event.revision;
                match event.value {
                    Some(v) => { replayed.insert(event.key, v); }
                    None => { replayed.remove(&event.key); }
                }
            }
            prop_assert_eq!(replayed, final_state);
            Ok(())
        })?;
    }
}

/// A key's value and the revision that wrote it.
type Version = (Vec<u8>, u64);

#[derive(Debug, Clone)]
enum Step {
    Write(Op),
    /// Close the file and open it again with this event window.
    Reopen(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![8 => op().prop_map(Step::Write), 1 => (1u64..64).prop_map(Step::Reopen)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    /// However small the window, and however it changes between opens, every revision the store
    /// still serves reads as it was, and every event it replays carries the version it replaced.
    #[test]
    fn every_readable_revision_and_replayed_event_matches_the_history(
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut store = open(dir.path(), 8);
            // The state after each revision, and each revision's (key, new value, replaced version).
            let mut states: Vec<BTreeMap<String, Version>> = vec![BTreeMap::new()];
            let mut events: Vec<(String, Option<Vec<u8>>, Option<Version>)> = vec![(String::new(), None, None)];
            for step in &steps {
                let op = match step {
                    Step::Write(op) => op,
                    Step::Reopen(window) => {
                        drop(store);
                        store = open(dir.path(), *window);
                        continue;
                    }
                };
                let (key, value) = match op {
                    Op::Put(k, v) => (format!("/h/{k:02}"), Some(v.to_string().into_bytes())),
                    Op::Delete(k) => (format!("/h/{k:02}"), None),
                };
                let write = match &value {
                    Some(v) => Write::Put { key: key.clone(), value: v.clone(), precondition: None },
                    None => Write::Delete { key: key.clone(), precondition: None },
                };
                if let WriteOutcome::Committed(rev) = store.write(write).await.expect("write") {
                    prop_assert_eq!(rev as usize, states.len());
                    let mut state = states.last().cloned().unwrap_or_default();
                    let prev = match &value {
                        Some(v) => state.insert(key.clone(), (v.clone(), rev)),
                        None => state.remove(&key),
                    };
                    states.push(state);
                    events.push((key, value, prev));
                }
            }
            let last = states.len() as u64 - 1;
            let compacted = store.compacted_revision();
            for at in compacted.max(1)..=last {
                let page = store
                    .range(RangeRequest { prefix: "/h/".into(), revision: Some(at), ..Default::default() })
                    .await
                    .expect("a readable revision");
                let seen: BTreeMap<String, Version> =
                    page.items.into_iter().map(|kv| (kv.key, (kv.value, kv.mod_revision))).collect();
                prop_assert_eq!(&seen, &states[at as usize], "state at {}", at);
            }
            let mut watch = store.watch("/h/", compacted);
            for revision in compacted + 1..=last {
                let event = watch.next().await.expect("event").expect("a replayable event");
                prop_assert_eq!(event.revision, revision);
                let (key, value, prev) = &events[revision as usize];
                prop_assert_eq!(&event.key, key);
                prop_assert_eq!(&event.value, value);
                let replaced = event.prev.map(|kv| (kv.value, kv.mod_revision));
                prop_assert_eq!(&replaced, prev, "the version revision {} replaced", revision);
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_grown_window_never_refers_a_row_to_one_already_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 8);
    let first = committed(&store, put("/a", "1", None)).await;
    for i in 0..20 {
        committed(&store, put(&format!("/other/{i}"), "v", None)).await;
    }
    drop(store);
    // Row 1 is gone; with the larger window, /a's next row would be within reach of it.
    let store = open(dir.path(), 100);
    let compacted = store.compacted_revision();
    let second = committed(&store, put("/a", "2", None)).await;
    assert!(second - first <= 50, "within the new reach");
    let mut watch = store.watch("/a", compacted);
    let event = watch.next().await.expect("event").expect("a replayable event");
    assert_eq!(event.revision, second);
    let replaced = event.prev.expect("the version it replaced");
    assert_eq!((replaced.value.as_slice(), replaced.mod_revision), (&b"1"[..], first));
}
