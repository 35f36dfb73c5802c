//! Workloads end to end with a real agent: the scheduler binds pods that name no node, a
//! ReplicaSet keeps its replicas running (and replaces a deleted one), and a pod that fits nowhere
//! stays Pending with Kubernetes' FailedScheduling message.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use support::{TestCluster, eventually, sample};
use wasmkube_runtime::agent::{Agent, AgentConfig};

async fn cluster_with_agent(node: &str) -> (TestCluster, Agent) {
    let cluster = TestCluster::start().await;
    let mut config = AgentConfig::new(node, "127.0.0.1".parse().expect("ip"), cluster.dir.path().join("agent"));
    config.backoff_base = Duration::from_millis(200);
    config.node_api_port = 0;
    config.api_token = cluster.control.pki.admin_token.clone();
    let agent = Agent::start(cluster.client.clone(), config).await.expect("agent starts");
    (cluster, agent)
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn a_replicaset_keeps_its_replicas_scheduled_running_and_replaced() {
    let (cluster, _agent) = cluster_with_agent("worker").await;
    let sets: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "hello", "image": format!("file://{}", sample("hello").display()),
                                                       "ports": [{"containerPort": 8080}]}]}}},
    }))
    .expect("rs");
    sets.create(&PostParams::default(), &rs).await.expect("create");
    let selector = ListParams::default().labels("app=web");
    let running = eventually(Duration::from_secs(60), "3 ready pods", || {
        let (pods, selector) = (pods.clone(), selector.clone());
        async move {
            let list = pods.list(&selector).await.ok()?;
            (list.items.len() == 3 && list.items.iter().all(ready)).then_some(list.items)
        }
    })
    .await;
    for pod in &running {
        assert_eq!(pod.spec.as_ref().and_then(|s| s.node_name.as_deref()), Some("worker"), "bound by the scheduler");
        let owner = pod.metadata.owner_references.as_ref().and_then(|r| r.first()).expect("an owner");
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("ReplicaSet", "web", Some(true)));
        assert!(pod.metadata.name.as_deref().unwrap_or("").starts_with("web-"));
    }
    eventually(Duration::from_secs(30), "the ReplicaSet's status", || {
        let sets = sets.clone();
        async move {
            let s = sets.get("web").await.ok()?.status?;
            (s.replicas == 3 && s.ready_replicas == Some(3) && s.available_replicas == Some(3)).then_some(())
        }
    })
    .await;
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    let first = running[0].metadata.name.clone().expect("name");
    let scheduled =
        events.list(&ListParams::default().fields(&format!("involvedObject.name={first}"))).await.expect("events");
    assert!(
        scheduled.items.iter().any(|e| e.reason.as_deref() == Some("Scheduled")
            && e.message.as_deref() == Some(&format!("Successfully assigned default/{first} to worker"))),
        "a Scheduled event"
    );

    // A deleted pod is replaced; the set never has more than 3 live pods.
    pods.delete(&first, &DeleteParams::default()).await.expect("delete");
    eventually(Duration::from_secs(60), "a replacement", || {
        let (pods, selector, first) = (pods.clone(), selector.clone(), first.clone());
        async move {
            let list = pods.list(&selector).await.ok()?;
            let live: Vec<&Pod> = list.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
            let replaced = live.len() == 3
                && live.iter().all(|p| ready(p))
                && live.iter().all(|p| p.metadata.name.as_deref() != Some(&first));
            replaced.then_some(())
        }
    })
    .await;

    // Scaling down removes pods; scaling to zero removes them all.
    sets.patch("web", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(json!({"spec": {"replicas": 0}})))
        .await
        .expect("scale to 0");
    eventually(Duration::from_secs(60), "no pods", || {
        let (pods, selector) = (pods.clone(), selector.clone());
        async move { pods.list(&selector).await.ok()?.items.is_empty().then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_pod_that_fits_nowhere_stays_pending_with_the_reason() {
    let (cluster, _agent) = cluster_with_agent("small").await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "huge"},
        "spec": {"containers": [{"name": "c", "image": "hello:v1", "resources": {"requests": {"cpu": "1000"}}}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("create");
    let pending = eventually(Duration::from_secs(30), "PodScheduled=False", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("huge").await.ok()?;
            let c = p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "PodScheduled")?.clone();
            (c.status == "False").then_some(c)
        }
    })
    .await;
    assert_eq!(pending.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(pending.message.as_deref(), Some("0/1 nodes are available: 1 Insufficient cpu."));
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    let failed = events
        .list(&ListParams::default().fields("involvedObject.name=huge,reason=FailedScheduling"))
        .await
        .expect("events");
    assert_eq!(failed.items.len(), 1, "one event while the reason stays the same");
    let p = pods.get("huge").await.expect("pod");
    assert!(p.spec.and_then(|s| s.node_name).is_none(), "never bound where a filter said no");
}
