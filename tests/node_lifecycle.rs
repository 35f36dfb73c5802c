//! Node failure end to end: a node whose Lease and status stop changing goes Unknown and is tainted
//! unreachable, its pods are evicted by their tolerations and replaced elsewhere, and it recovers
//! once it reports Ready again; pods of a lost node turn not ready at once (and a real agent
//! reports them ready again); every namespace gets its `default` ServiceAccount.
//!
//! Most tests play the agent themselves (a Node and a Lease written through the API), with a grace
//! period of 2 s and default tolerations of 1 s so failures show quickly.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{TestCluster, eventually, sample};
use tokio_util::sync::CancellationToken;
use wasmkube_control::ControlPlaneConfig;
use wasmkube_runtime::agent::{Agent, AgentConfig};

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const NOT_READY: &str = "node.kubernetes.io/not-ready";

fn fast_failure(config: &mut ControlPlaneConfig) {
    config.node_monitor_grace_period = Duration::from_secs(2);
    config.default_toleration_seconds = 1;
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

/// Registers `name` as an agent would: a Node posting Ready (and one more condition) and a Lease.
async fn register(client: &kube::Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name},
        "status": {"conditions": conditions("True")},
    }))
    .expect("node");
    nodes.create(&PostParams::default(), &node).await.expect("create node");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now()},
    }))
    .expect("lease");
    leases.create(&PostParams::default(), &lease).await.expect("create lease");
}

fn conditions(ready: &str) -> Value {
    json!([
        {"type": "Ready", "status": ready, "reason": "KubeletReady", "lastHeartbeatTime": now(),
         "lastTransitionTime": now()},
        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
         "lastHeartbeatTime": now(), "lastTransitionTime": now()},
    ])
}

/// What a test agent does every 300 ms until cancelled: renews the Lease and, unless `ready` is
/// `None`, posts that Ready status with a fresh heartbeat.
fn keep_reporting(client: &kube::Client, name: &str, ready: Option<&'static str>) -> CancellationToken {
    let stop = CancellationToken::new();
    let (client, name, token) = (client.clone(), name.to_string(), stop.clone());
    tokio::spawn(async move {
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
        let nodes: Api<Node> = Api::all(client);
        while !token.is_cancelled() {
            let renew = Patch::Merge(json!({"spec": {"renewTime": now()}}));
            let _ = leases.patch(&name, &PatchParams::default(), &renew).await;
            if let Some(ready) = ready {
                let status = Patch::Merge(json!({"status": {"conditions": conditions(ready)}}));
                let _ = nodes.patch_status(&name, &PatchParams::default(), &status).await;
            }
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        }
    });
    stop
}

fn condition<'a>(node: &'a Node, kind: &str) -> Option<&'a k8s_openapi::api::core::v1::NodeCondition> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
}

fn ready_status(node: &Node) -> String {
    condition(node, "Ready").map(|c| c.status.clone()).unwrap_or_default()
}

/// The node's not-ready/unreachable taints as `key:effect`.
fn lifecycle_taints(node: &Node) -> BTreeSet<String> {
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    taints
        .iter()
        .filter(|t| t.key == UNREACHABLE || t.key == NOT_READY)
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect()
}

fn pair(key: &str) -> BTreeSet<String> {
    [format!("{key}:NoSchedule"), format!("{key}:NoExecute")].into()
}

async fn node_where(nodes: &Api<Node>, name: &str, what: &str, check: impl Fn(&Node) -> bool) -> Node {
    eventually(Duration::from_secs(20), what, || async { nodes.get(name).await.ok().filter(|n| check(n)) }).await
}

fn bound_pod(name: &str, node: &str, tolerations: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "tolerations": tolerations, "containers": [{"name": "c", "image": "i"}]},
    }))
    .expect("pod")
}

async fn gone(pods: &Api<Pod>, name: &str, within: Duration) {
    let what = format!("pod {name} to be evicted");
    eventually(within, &what, || async { pods.get_opt(name).await.ok().and_then(|p| p.is_none().then_some(())) }).await;
}

#[tokio::test]
async fn a_node_that_stops_reporting_goes_unknown_tainted_and_its_pods_are_evicted_by_their_tolerations() {
    let cluster = TestCluster::start_with(fast_failure).await;
    let (nodes, pods): (Api<Node>, Api<Pod>) =
        (Api::all(cluster.client.clone()), Api::namespaced(cluster.client.clone(), "default"));
    register(&cluster.client, "lost").await;
    let reporting = keep_reporting(&cluster.client, "lost", None);
    let create = |name: &'static str, tolerations: Value| {
        let pods = pods.clone();
        async move { pods.create(&PostParams::default(), &bound_pod(name, "lost", tolerations)).await }
    };
    let plain = create("plain", Value::Null).await.expect("create");
    // 3 s rather than 2: timeAdded has whole seconds, so a toleration runs out up to 1 s early.
    let patient = json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 3}]);
    create("patient", patient).await.expect("create");
    create("forever", json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]))
        .await
        .expect("create");
    let defaulted: Vec<(String, Option<i64>)> = plain
        .spec
        .and_then(|s| s.tolerations)
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key.unwrap_or_default(), t.toleration_seconds))
        .collect();
    assert_eq!(defaulted, [(NOT_READY.to_string(), Some(1)), (UNREACHABLE.to_string(), Some(1))]);

    // A renewed Lease alone keeps the node healthy well past the grace period.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        let node = nodes.get("lost").await.expect("node");
        assert_eq!((ready_status(&node).as_str(), lifecycle_taints(&node).len()), ("True", 0));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reporting.cancel();

    let lost = node_where(&nodes, "lost", "the node Unknown and tainted unreachable", |n| {
        ready_status(n) == "Unknown" && lifecycle_taints(n) == pair(UNREACHABLE)
    })
    .await;
    assert!(pods.get_opt("patient").await.expect("get").is_some(), "tolerated for 3 s: still there");
    for kind in ["Ready", "MemoryPressure"] {
        let c = condition(&lost, kind).expect("condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
            ("Unknown", Some("NodeStatusUnknown"), Some("Kubelet stopped posting node status.")),
            "{kind}"
        );
    }
    let taints = lost.spec.and_then(|s| s.taints).unwrap_or_default();
    let no_execute = taints.iter().find(|t| t.effect == "NoExecute").expect("the NoExecute taint");
    assert!(no_execute.time_added.is_some(), "NoExecute taints carry timeAdded");

    gone(&pods, "plain", Duration::from_secs(20)).await;
    gone(&pods, "patient", Duration::from_secs(20)).await;
    assert!(pods.get_opt("forever").await.expect("get").is_some(), "tolerates the taint without a limit");
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    let evicted = events.list(&ListParams::default().fields("involvedObject.name=plain")).await.expect("events");
    assert!(
        evicted.items.iter().any(|e| e.reason.as_deref() == Some("TaintManagerEviction")
            && e.message.as_deref() == Some("Marking for deletion Pod default/plain")),
        "{:?}",
        evicted.items
    );
}

#[tokio::test]
async fn a_lost_node_keeps_its_taints_until_it_posts_ready_again() {
    let cluster = TestCluster::start_with(fast_failure).await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    register(&cluster.client, "flaky").await;
    node_where(&nodes, "flaky", "the node tainted unreachable", |n| lifecycle_taints(n) == pair(UNREACHABLE)).await;

    // The Lease alone does not make the node Ready: the Ready condition is the agent's to post.
    let leasing = keep_reporting(&cluster.client, "flaky", None);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < deadline {
        let node = nodes.get("flaky").await.expect("node");
        assert_eq!((ready_status(&node), lifecycle_taints(&node)), ("Unknown".to_string(), pair(UNREACHABLE)));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    leasing.cancel();

    let reporting = keep_reporting(&cluster.client, "flaky", Some("True"));
    node_where(&nodes, "flaky", "the node Ready and untainted", |n| {
        ready_status(n) == "True" && lifecycle_taints(n).is_empty()
    })
    .await;
    reporting.cancel();
}

#[tokio::test]
async fn pods_of_a_lost_node_turn_not_ready_and_leave_their_endpoints_while_they_wait_out_their_tolerations() {
    let cluster = TestCluster::start_with(fast_failure).await;
    let client = cluster.client.clone();
    let (pods, services): (Api<Pod>, Api<Service>) =
        (Api::namespaced(client.clone(), "default"), Api::namespaced(client.clone(), "default"));
    register(&client, "lost").await;
    let reporting = keep_reporting(&client, "lost", Some("True"));
    let mut pod = bound_pod("web", "lost", json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]));
    pod.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    pods.create(&PostParams::default(), &pod).await.expect("create");
    // Playing the agent: the pod runs and is ready.
    let running = json!({"status": {"phase": "Running", "podIP": "10.42.0.9", "conditions": [
        {"type": "Initialized", "status": "True", "lastTransitionTime": now()},
        {"type": "Ready", "status": "True", "lastTransitionTime": now()}]}});
    pods.patch_status("web", &PatchParams::default(), &Patch::Merge(running)).await.expect("status");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }))
    .expect("service");
    services.create(&PostParams::default(), &service).await.expect("create service");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let ready_endpoints = |want: bool| {
        let slices = slices.clone();
        async move {
            let list = slices.list(&ListParams::default().labels("kubernetes.io/service-name=web")).await.ok()?;
            let ready: Vec<Option<bool>> = list
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .map(|e| e.conditions.as_ref().and_then(|c| c.ready))
                .collect();
            (ready == [Some(want)]).then_some(())
        }
    };
    eventually(Duration::from_secs(10), "the pod a ready endpoint", || ready_endpoints(true)).await;

    reporting.cancel();
    eventually(Duration::from_secs(20), "the pod of the lost node not ready", || async {
        pods.get("web").await.ok().filter(|p| !pod_ready(p))
    })
    .await;
    eventually(Duration::from_secs(10), "the pod a not-ready endpoint", || ready_endpoints(false)).await;
    assert!(pods.get_opt("web").await.expect("get").is_some(), "it tolerates the taint: not evicted");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually(Duration::from_secs(10), "a NodeNotReady warning on the pod", || async {
        let list = events.list(&ListParams::default().fields("involvedObject.name=web")).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("NodeNotReady") && e.type_.as_deref() == Some("Warning"))
            .then_some(())
    })
    .await;

    // Marking happens once per time the node stops being Ready: a pod reported ready again (its
    // agent may still be there, only late) is not overruled on every pass.
    let ready_again = json!({"status": {"conditions": [
        {"type": "Initialized", "status": "True", "lastTransitionTime": now()},
        {"type": "Ready", "status": "True", "lastTransitionTime": now()}]}});
    pods.patch_status("web", &PatchParams::default(), &Patch::Merge(ready_again)).await.expect("status");
    let until = tokio::time::Instant::now() + Duration::from_secs(6); // longer than a monitor period
    while tokio::time::Instant::now() < until {
        assert!(pod_ready(&pods.get("web").await.expect("get")), "marked not ready again");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn an_agent_reports_its_pod_ready_again_when_the_api_says_otherwise() {
    let cluster = TestCluster::start().await;
    let agent = start_agent(&cluster, "node-a").await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"containers": [{"name": "hello", "image": format!("file://{}", sample("hello").display()),
                                 "ports": [{"containerPort": 8080}]}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("create");
    eventually(Duration::from_secs(60), "the pod ready", || async { pods.get("hello").await.ok().filter(pod_ready) })
        .await;
    // What the node lifecycle controller writes while the node is lost.
    let conditions = pods.get("hello").await.expect("get").status.and_then(|s| s.conditions).unwrap_or_default();
    let marked: Vec<Value> = conditions
        .iter()
        .map(|c| {
            let status = if c.type_ == "Ready" { "False" } else { c.status.as_str() };
            json!({"type": c.type_, "status": status})
        })
        .collect();
    let patch = Patch::Merge(json!({"status": {"conditions": marked}}));
    pods.patch_status("hello", &PatchParams::default(), &patch).await.expect("mark not ready");
    eventually(Duration::from_secs(10), "the agent to report the pod ready again", || async {
        pods.get("hello").await.ok().filter(pod_ready)
    })
    .await;
    agent.shutdown();
    agent.stopped().await;
}

#[tokio::test]
async fn a_node_reporting_not_ready_is_tainted_not_ready_until_it_is_ready() {
    let cluster = TestCluster::start_with(fast_failure).await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    register(&cluster.client, "sick").await;
    let reporting = keep_reporting(&cluster.client, "sick", Some("False"));
    let sick =
        node_where(&nodes, "sick", "the node tainted not-ready", |n| lifecycle_taints(n) == pair(NOT_READY)).await;
    assert_eq!(ready_status(&sick), "False", "a node that reports stays as it reports");
    reporting.cancel();

    let reporting = keep_reporting(&cluster.client, "sick", Some("True"));
    node_where(&nodes, "sick", "the node untainted", |n| lifecycle_taints(n).is_empty()).await;
    reporting.cancel();
}

#[tokio::test]
async fn every_namespace_gets_a_default_service_account_back_after_deletion() {
    let cluster = TestCluster::start().await;
    let uid_of = |namespace: &str| {
        let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), namespace);
        async move { accounts.get_opt("default").await.ok().flatten().and_then(|a| a.metadata.uid) }
    };
    for namespace in ["default", "kube-system"] {
        eventually(Duration::from_secs(10), "a built-in namespace's account", || uid_of(namespace)).await;
    }
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let team: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}})).expect("namespace");
    namespaces.create(&PostParams::default(), &team).await.expect("create");
    let first = eventually(Duration::from_secs(10), "the default account in team", || uid_of("team")).await;

    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), "team");
    accounts.delete("default", &DeleteParams::default()).await.expect("delete");
    let second = eventually(Duration::from_secs(10), "the default account recreated", || async {
        uid_of("team").await.filter(|uid| *uid != first)
    })
    .await;
    assert_ne!(first, second);

    // Deleting the namespace is not held up by the controller putting its account back.
    namespaces.delete("team", &DeleteParams::default()).await.expect("delete namespace");
    eventually(Duration::from_secs(20), "the namespace gone", || async {
        namespaces.get_opt("team").await.ok().and_then(|n| n.is_none().then_some(()))
    })
    .await;
}

async fn start_agent(cluster: &TestCluster, name: &str) -> Agent {
    let mut config = AgentConfig::new(name, "127.0.0.1".parse().expect("ip"), cluster.dir.path().join(name));
    config.backoff_base = Duration::from_millis(200);
    config.node_api_port = 0;
    config.api_token = cluster.control.pki.admin_token.clone();
    Agent::start(cluster.client.clone(), config).await.expect("agent starts")
}

fn node_of(pod: &Pod) -> String {
    pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn pods_of_a_stopped_agent_are_replaced_on_the_other_node() {
    // Real agents heartbeat every 10 s, so the grace period has to be longer than that.
    let cluster = TestCluster::start_with(|c| {
        c.node_monitor_grace_period = Duration::from_secs(15);
        c.default_toleration_seconds = 1;
    })
    .await;
    let mut agents = vec![start_agent(&cluster, "node-a").await, start_agent(&cluster, "node-b").await];
    let sets: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "hello",
                                  "image": format!("file://{}", sample("hello").display()),
                                  "ports": [{"containerPort": 8080}]}]}}},
    }))
    .expect("rs");
    sets.create(&PostParams::default(), &rs).await.expect("create");
    let selector = ListParams::default().labels("app=web");
    let running = eventually(Duration::from_secs(60), "4 ready pods", || async {
        let list = pods.list(&selector).await.ok()?;
        (list.items.len() == 4 && list.items.iter().all(pod_ready)).then_some(list.items)
    })
    .await;

    // Stop the agent of a node that runs some of them.
    let victim = node_of(&running[0]);
    let survivor = if victim == "node-a" { "node-b" } else { "node-a" };
    let index = agents.iter().position(|a| a.node_name == victim).expect("the victim's agent");
    let agent = agents.remove(index);
    agent.shutdown();
    agent.stopped().await;

    let nodes: Api<Node> = Api::all(cluster.client.clone());
    eventually(Duration::from_secs(60), "the stopped node tainted unreachable", || async {
        nodes.get(&victim).await.ok().filter(|n| lifecycle_taints(n) == pair(UNREACHABLE))
    })
    .await;
    eventually(Duration::from_secs(90), "4 ready pods, all on the surviving node", || async {
        let list = pods.list(&selector).await.ok()?;
        let all_moved = list.items.iter().all(|p| node_of(p) == survivor && pod_ready(p));
        (list.items.len() == 4 && all_moved).then_some(())
    })
    .await;
    let surviving = nodes.get(survivor).await.expect("node");
    assert_eq!((ready_status(&surviving), lifecycle_taints(&surviving)), ("True".to_string(), BTreeSet::new()));
}
