//! Watch end to end through the `kube` crate: ordering, resumption, expiry, bookmarks, selectors,
//! and kube-runtime's list-then-watch `watcher`.

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use serde_json::json;
use support::TestCluster;

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "w"}}})).expect("configmap")
}

fn rv_of(cm: &ConfigMap) -> u64 {
    cm.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).expect("numeric resourceVersion")
}

/// The next `n` non-bookmark events, failing after 20 s.
async fn take_events(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin),
    n: usize,
) -> Vec<WatchEvent<ConfigMap>> {
    let mut out = Vec::new();
    while out.len() < n {
        let event = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("an event in time")
            .expect("stream still open")
            .expect("a well-formed event");
        if !matches!(event, WatchEvent::Bookmark(_)) {
            out.push(event);
        }
    }
    out
}

fn describe(event: &WatchEvent<ConfigMap>) -> String {
    match event {
        WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.clone().unwrap_or_default()),
        WatchEvent::Modified(o) => format!("MODIFIED {}", o.metadata.name.clone().unwrap_or_default()),
        WatchEvent::Deleted(o) => format!("DELETED {}", o.metadata.name.clone().unwrap_or_default()),
        WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
        WatchEvent::Error(e) => format!("ERROR {}", e.code),
    }
}

#[tokio::test]
async fn writes_after_a_revision_arrive_exactly_once_in_order_and_a_watch_resumes_mid_way() {
    let cluster = TestCluster::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let start = rv_of(&cms.create(&PostParams::default(), &configmap("before")).await.expect("create"));
    let mut stream = cms.watch(&WatchParams::default(), &start.to_string()).await.expect("watch").boxed();

    let mut revisions = Vec::new();
    for i in 0..20 {
        revisions
            .push(rv_of(&cms.create(&PostParams::default(), &configmap(&format!("cm{i:02}"))).await.expect("create")));
    }
    cms.patch("cm03", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "v"}}))).await.expect("patch");
    cms.delete("cm04", &DeleteParams::default()).await.expect("delete");

    let events = take_events(&mut stream, 22).await;
    let seen: Vec<String> = events.iter().map(describe).collect();
    let mut want: Vec<String> = (0..20).map(|i| format!("ADDED cm{i:02}")).collect();
    want.extend(["MODIFIED cm03".to_string(), "DELETED cm04".to_string()]);
    assert_eq!(seen, want);
    let event_rvs: Vec<u64> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => rv_of(o),
            _ => 0,
        })
        .collect();
    assert!(event_rvs.windows(2).all(|w| w[0] < w[1]), "revisions grow: {event_rvs:?}");
    assert_eq!(&event_rvs[..20], &revisions[..]);

    // Resume from the tenth create: exactly the events after it, nothing before.
    let mut resumed = cms.watch(&WatchParams::default(), &revisions[9].to_string()).await.expect("watch").boxed();
    let after: Vec<String> = take_events(&mut resumed, 12).await.iter().map(describe).collect();
    assert_eq!(after, want[10..].to_vec());
    let quiet = tokio::time::timeout(Duration::from_millis(300), resumed.next()).await;
    assert!(quiet.is_err(), "no duplicate or extra events: {:?}", quiet.map(|e| e.map(|e| e.map(|e| describe(&e)))));
}

#[tokio::test]
async fn a_watch_from_a_revision_past_the_log_window_gets_410_expired() {
    let cluster = TestCluster::start_with(|c| c.event_window = 5).await;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let first = rv_of(&cms.create(&PostParams::default(), &configmap("first")).await.expect("create"));
    for i in 0..10 {
        cms.create(&PostParams::default(), &configmap(&format!("later{i}"))).await.expect("create");
    }
    let mut stream = cms.watch(&WatchParams::default(), &first.to_string()).await.expect("watch").boxed();
    let event = stream.next().await.expect("one event").expect("decodes");
    match event {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected a 410 error event, got {}", describe(&other)),
    }
    assert!(stream.next().await.is_none(), "the stream ends after the error");

    // A paged list whose continue token points past the window is 410 too.
    let page = cms.list(&kube::api::ListParams::default().limit(2)).await.expect("page");
    let token = page.metadata.continue_.expect("more pages");
    for i in 0..10 {
        cms.create(&PostParams::default(), &configmap(&format!("more{i}"))).await.expect("create");
    }
    let expired = support::status_of(cms.list(&kube::api::ListParams::default().limit(2).continue_token(&token)).await);
    assert_eq!((expired.code, expired.reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn bookmarks_arrive_when_asked_for_and_timeout_seconds_ends_the_watch() {
    let cluster = TestCluster::start_with(|c| c.bookmark_interval = Duration::from_millis(200)).await;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let rv = rv_of(&cms.create(&PostParams::default(), &configmap("b")).await.expect("create"));
    // Without allowWatchBookmarks no bookmark comes, however long the watch is quiet.
    let mut plain =
        cms.watch(&WatchParams::default().disable_bookmarks(), &rv.to_string()).await.expect("watch").boxed();
    assert!(tokio::time::timeout(Duration::from_secs(1), plain.next()).await.is_err(), "no event at all");
    // kube asks for bookmarks by default (allowWatchBookmarks=true).
    let params = WatchParams::default().timeout(3);
    let mut stream = cms.watch(&params, &rv.to_string()).await.expect("watch").boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a bookmark in time")
        .expect("open")
        .expect("decodes");
    match first {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv.to_string()),
        other => panic!("expected a bookmark, got {}", describe(&other)),
    }
    // timeoutSeconds=3: the server closes the stream by itself.
    let ended = tokio::time::timeout(Duration::from_secs(15), async { while stream.next().await.is_some() {} }).await;
    assert!(ended.is_ok(), "the watch ended after timeoutSeconds");
}

#[tokio::test]
async fn selectors_turn_objects_leaving_the_selection_into_deletions() {
    let cluster = TestCluster::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let rv = rv_of(&cms.create(&PostParams::default(), &configmap("sel")).await.expect("create"));
    let params = WatchParams::default().labels("app=w");
    let mut stream = cms.watch(&params, &rv.to_string()).await.expect("watch").boxed();
    let relabel = |app: &str| Patch::Merge(json!({"metadata": {"labels": {"app": app}}}));
    cms.patch("sel", &PatchParams::default(), &relabel("other")).await.expect("leave");
    cms.patch("sel", &PatchParams::default(), &relabel("w")).await.expect("return");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "unlabelled"}})).expect("cm"),
    )
    .await
    .expect("create unlabelled");
    cms.patch("sel", &PatchParams::default(), &Patch::Merge(json!({"data": {"x": "1"}}))).await.expect("modify");
    let seen: Vec<String> = take_events(&mut stream, 3).await.iter().map(describe).collect();
    assert_eq!(seen, vec!["DELETED sel", "ADDED sel", "MODIFIED sel"]);
}

#[tokio::test]
async fn kube_runtime_watcher_lists_then_follows_changes() {
    let cluster = TestCluster::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    cms.create(&PostParams::default(), &configmap("existing")).await.expect("create");
    let mut events = watcher(cms.clone(), watcher::Config::default()).boxed();
    let mut names = Vec::new();
    let writer = cms.clone();
    let mut created = false;
    let result = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events.try_next().await.expect("watcher") {
            match event {
                watcher::Event::InitDone if !created => {
                    created = true;
                    writer.create(&PostParams::default(), &configmap("fresh")).await.expect("create");
                }
                watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                    names.push(o.metadata.name.clone().unwrap_or_default());
                    if names.contains(&"fresh".to_string()) {
                        return;
                    }
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(result.is_ok(), "watcher saw the new object; got {names:?}");
    assert_eq!(names, vec!["existing", "fresh"]);
}
