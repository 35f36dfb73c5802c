//! A cluster of separate processes: a `wasmkube server` and two `wasmkube agent`s. A Deployment
//! spreads over both nodes, rolls out a new template without ever dropping below its replica count
//! (maxUnavailable 0), and moves to the surviving node when one agent is killed with SIGKILL.
//! Pods land where nodeSelector, affinity, anti-affinity, taints and spread constraints say, and
//! `drain` moves a Deployment's pods to the other node one eviction at a time, as its
//! PodDisruptionBudget allows.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::process::{BIN, Proc, Server};
use support::{eventually, sample};
use tokio::time::Instant;

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn node_of(pod: &Pod) -> String {
    pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn env_of(pod: &Pod, name: &str) -> Option<String> {
    let container = pod.spec.as_ref()?.containers.first()?;
    container.env.as_ref()?.iter().find(|e| e.name == name)?.value.clone()
}

/// The live (not terminating) pods owned by the ReplicaSets that `deployment` owns.
async fn owned_pods(client: &kube::Client, deployment: &Deployment) -> Option<Vec<Pod>> {
    let uid = deployment.metadata.uid.clone()?;
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let owned_by = |refs: &Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
                    uids: &BTreeSet<String>| {
        refs.as_ref().is_some_and(|r| r.iter().any(|o| o.controller == Some(true) && uids.contains(&o.uid)))
    };
    let deployment_uid: BTreeSet<String> = [uid].into();
    let set_uids: BTreeSet<String> = sets
        .list(&ListParams::default())
        .await
        .ok()?
        .items
        .into_iter()
        .filter(|rs| owned_by(&rs.metadata.owner_references, &deployment_uid))
        .filter_map(|rs| rs.metadata.uid)
        .collect();
    let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
    Some(
        list.items
            .into_iter()
            .filter(|p| owned_by(&p.metadata.owner_references, &set_uids) && !terminating(p))
            .collect(),
    )
}

fn ready_condition(node: &Node) -> String {
    let conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    conditions.into_iter().find(|c| c.type_ == "Ready").map(|c| c.status).unwrap_or_default()
}

fn taint_keys(node: &Node) -> BTreeSet<String> {
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    taints.into_iter().map(|t| format!("{}:{}", t.key, t.effect)).collect()
}

/// A `wasmkube server` and two agents (`node-a`, `node-b`) as separate processes, both nodes Ready.
struct TwoNodes {
    dir: tempfile::TempDir,
    client: kube::Client,
    /// The agents by node name, in start order.
    agents: Vec<(String, Proc)>,
    _server: Proc,
}

impl TwoNodes {
    /// Starts the cluster with the control plane's node grace period and default toleration
    /// seconds given.
    async fn start(grace_period: &str, toleration_seconds: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let flags = ["--node-monitor-grace-period", grace_period, "--default-toleration-seconds", toleration_seconds];
        let server = Server::start(dir.path(), "127.0.0.1:0", &flags).await;
        let client = server.client.clone();

        // Two agents, each with its own data dir.
        let agents: Vec<(String, Proc)> = ["node-a", "node-b"]
            .into_iter()
            .map(|node| {
                let agent = server.agent(dir.path(), node, None, &[]);
                (node.to_string(), agent)
            })
            .collect();
        let nodes: Api<Node> = Api::all(client.clone());
        eventually(Duration::from_secs(30), "both nodes Ready", || async {
            let list = nodes.list(&ListParams::default()).await.ok()?;
            let ready: BTreeSet<String> = list
                .items
                .iter()
                .filter(|n| ready_condition(n) == "True")
                .filter_map(|n| n.metadata.name.clone())
                .collect();
            (ready == BTreeSet::from(["node-a".to_string(), "node-b".to_string()])).then_some(())
        })
        .await;
        TwoNodes { dir, client, agents, _server: server.proc }
    }

    /// A kubeconfig for the cluster, for the CLI.
    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("server/kubeconfig")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_spreads_rolls_out_without_losing_capacity_and_survives_a_killed_agent() {
    let started = std::time::Instant::now();
    let hello = sample("hello");
    // Agents heartbeat every 10 s, so the grace period must be longer than that.
    let cluster = TwoNodes::start("15", "1").await;
    let client = cluster.client.clone();
    let mut agents = cluster.agents;
    let nodes: Api<Node> = Api::all(client.clone());

    // 1. Three replicas, spread over both nodes.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "hello",
                    "image": format!("file://{}", hello.display()),
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                }]},
            },
        },
    }))
    .expect("deployment");
    let created = deployments.create(&PostParams::default(), &deployment).await.expect("create deployment");
    let running = eventually(Duration::from_secs(90), "3 ready pods", || async {
        let pods = owned_pods(&client, &created).await?;
        (pods.len() == 3 && pods.iter().all(pod_ready)).then_some(pods)
    })
    .await;
    let spread: BTreeSet<String> = running.iter().map(node_of).collect();
    assert_eq!(spread, BTreeSet::from(["node-a".to_string(), "node-b".to_string()]), "replicas spread");

    // 2. A template change rolls out without the Ready count ever dropping below 3.
    // The controller may write the Deployment's status between the read and the write; like
    // client-go's RetryOnConflict, read again and retry on 409.
    let mut attempts = 0;
    let updated = loop {
        let mut current = deployments.get("web").await.expect("get deployment");
        let container =
            &mut current.spec.as_mut().expect("spec").template.spec.as_mut().expect("pod spec").containers[0];
        container.env = Some(vec![serde_json::from_value(json!({"name": "VERSION", "value": "2"})).expect("env")]);
        attempts += 1;
        match deployments.replace("web", &PostParams::default(), &current).await {
            Ok(updated) => break updated,
            Err(kube::Error::Api(e)) if e.code == 409 && attempts < 10 => continue,
            Err(e) => panic!("update deployment (attempt {attempts}): {e}"),
        }
    };
    let generation = updated.metadata.generation.expect("generation");
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut samples, mut most) = (0, 0);
    loop {
        if let Some(pods) = owned_pods(&client, &updated).await {
            let ready = pods.iter().filter(|p| pod_ready(p)).count();
            samples += 1;
            most = most.max(pods.len());
            assert!(ready >= 3, "only {ready} Ready pods during the rollout (sample {samples}): {pods:#?}");
        }
        let d = deployments.get("web").await.expect("get deployment");
        let status = d.status.clone().unwrap_or_default();
        if d.metadata.generation == Some(generation)
            && status.observed_generation == Some(generation)
            && status.updated_replicas == Some(3)
            && status.available_replicas == Some(3)
            && status.replicas == Some(3)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the rollout did not finish within 120 s: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rolled = owned_pods(&client, &updated).await.expect("pods");
    assert_eq!(rolled.len(), 3, "{rolled:#?}");
    for pod in &rolled {
        assert_eq!(env_of(pod, "VERSION").as_deref(), Some("2"), "{:?} has the new env", pod.metadata.name);
        assert!(pod_ready(pod), "{:?} is Ready", pod.metadata.name);
    }
    assert!(samples > 3, "sampled the rollout ({samples} samples)");
    assert!(most <= 4, "maxSurge 1: at most 4 live pods, saw {most}");

    // 3. SIGKILL one agent: its node goes Unknown and tainted, its pods move to the survivor.
    let victim = node_of(&rolled[0]);
    let survivor = if victim == "node-a" { "node-b" } else { "node-a" };
    let index = agents.iter().position(|(n, _)| *n == victim).expect("the victim's agent");
    let (_, mut killed) = agents.remove(index);
    killed.kill();
    let killed_at = std::time::Instant::now();
    eventually(Duration::from_secs(90), "3 ready pods, all on the surviving node", || async {
        let pods = owned_pods(&client, &updated).await?;
        let moved = pods.iter().all(|p| node_of(p) == survivor && pod_ready(p));
        (pods.len() == 3 && moved).then_some(())
    })
    .await;
    let lost = nodes.get(&victim).await.expect("killed node");
    assert_eq!(ready_condition(&lost), "Unknown", "{:?}", lost.status);
    let taints = taint_keys(&lost);
    assert!(taints.contains(&format!("{UNREACHABLE}:NoExecute")), "{taints:?}");
    assert!(taints.contains(&format!("{UNREACHABLE}:NoSchedule")), "{taints:?}");
    let alive = nodes.get(survivor).await.expect("surviving node");
    assert_eq!(ready_condition(&alive), "True");
    assert!(taint_keys(&alive).is_empty(), "{:?}", taint_keys(&alive));
    eprintln!(
        "multi_node: {samples} rollout samples (at most {most} pods); recovered {:?} after the kill; {:?} in all",
        killed_at.elapsed(),
        started.elapsed()
    );
}

/// Merges `labels` into the node's labels.
async fn label(nodes: &Api<Node>, node: &str, labels: serde_json::Value) {
    let patch = Patch::Merge(json!({"metadata": {"labels": labels}}));
    nodes.patch(node, &PatchParams::default(), &patch).await.expect("label node");
}

/// Replaces the node's taints and its unschedulable flag.
async fn set_node_spec(nodes: &Api<Node>, node: &str, taints: serde_json::Value, unschedulable: bool) {
    let patch = Patch::Merge(json!({"spec": {"taints": taints, "unschedulable": unschedulable}}));
    nodes.patch(node, &PatchParams::default(), &patch).await.expect("node spec");
}

/// A bare `hello` pod with `labels`, with the fields of `spec` added to its pod spec.
fn hello_pod(hello: &Path, name: &str, labels: serde_json::Value, spec: serde_json::Value) -> Pod {
    let mut pod = json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{
            "name": "hello",
            "image": format!("file://{}", hello.display()),
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        }]},
    });
    for (field, value) in spec.as_object().cloned().unwrap_or_default() {
        pod["spec"][field] = value;
    }
    serde_json::from_value(pod).expect("pod")
}

/// Waits until every named pod is bound, and returns their nodes by pod name.
async fn placed(pods: &Api<Pod>, names: &[&str]) -> std::collections::BTreeMap<String, String> {
    eventually(Duration::from_secs(30), &format!("{names:?} bound"), || async {
        let mut nodes = std::collections::BTreeMap::new();
        for name in names {
            let node = node_of(&pods.get(name).await.ok()?);
            if node.is_empty() {
                return None;
            }
            nodes.insert(name.to_string(), node);
        }
        Some(nodes)
    })
    .await
}

fn on(nodes: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    nodes.iter().map(|(pod, node)| (pod.to_string(), node.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_land_where_their_rules_say_and_drain_moves_them_within_their_disruption_budget() {
    let hello = sample("hello");
    let cluster = TwoNodes::start("40", "300").await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    label(&nodes, "node-a", json!({"disk": "ssd", "topology.kubernetes.io/zone": "z1"})).await;
    label(&nodes, "node-b", json!({"topology.kubernetes.io/zone": "z2"})).await;
    let create = |pod: Pod| {
        let pods = pods.clone();
        async move { pods.create(&PostParams::default(), &pod).await.expect("create pod") }
    };
    let hostname = "kubernetes.io/hostname";

    // nodeSelector, required node affinity, and inter-pod affinity and anti-affinity.
    create(hello_pod(&hello, "selected", json!({"app": "selected"}), json!({"nodeSelector": {"disk": "ssd"}}))).await;
    let no_ssd = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "disk", "operator": "DoesNotExist"}]}]}}});
    create(hello_pod(&hello, "avoids-ssd", json!({}), json!({"affinity": no_ssd}))).await;
    placed(&pods, &["selected"]).await;
    let term = json!([{"labelSelector": {"matchLabels": {"app": "selected"}}, "topologyKey": hostname}]);
    let near = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term}});
    let apart = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term}});
    create(hello_pod(&hello, "near", json!({}), json!({"affinity": near}))).await;
    create(hello_pod(&hello, "apart", json!({}), json!({"affinity": apart}))).await;
    assert_eq!(
        placed(&pods, &["selected", "avoids-ssd", "near", "apart"]).await,
        on(&[("selected", "node-a"), ("avoids-ssd", "node-b"), ("near", "node-a"), ("apart", "node-b")])
    );

    // Taints: only a pod tolerating node-b's taint goes there.
    let taint = json!([{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}]);
    set_node_spec(&nodes, "node-b", taint, false).await;
    for name in ["untolerant-1", "untolerant-2"] {
        create(hello_pod(&hello, name, json!({}), json!({}))).await;
    }
    let tolerant = json!({
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}],
        "nodeSelector": {hostname: "node-b"},
    });
    create(hello_pod(&hello, "tolerant", json!({}), tolerant)).await;
    assert_eq!(
        placed(&pods, &["untolerant-1", "untolerant-2", "tolerant"]).await,
        on(&[("untolerant-1", "node-a"), ("untolerant-2", "node-a"), ("tolerant", "node-b")])
    );
    set_node_spec(&nodes, "node-b", json!(null), false).await;

    // A zone spread constraint splits four pods two and two, whatever else runs where.
    let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "spread"}}}]});
    let names = ["spread-1", "spread-2", "spread-3", "spread-4"];
    for name in names {
        create(hello_pod(&hello, name, json!({"app": "spread"}), spread.clone())).await;
    }
    let spread_nodes = placed(&pods, &names).await;
    let on_a = spread_nodes.values().filter(|n| *n == "node-a").count();
    assert_eq!(on_a, 2, "two per zone: {spread_nodes:?}");

    // More CPU than either node has: Pending, with Kubernetes' message.
    let mut greedy = hello_pod(&hello, "greedy", json!({}), json!({}));
    greedy.spec.as_mut().expect("spec").containers[0].resources =
        Some(serde_json::from_value(json!({"requests": {"cpu": "64"}})).expect("resources"));
    create(greedy).await;
    let message = eventually(Duration::from_secs(30), "greedy marked Unschedulable", || async {
        let pod = pods.get("greedy").await.ok()?;
        let conditions = pod.status?.conditions?;
        let scheduled = conditions.into_iter().find(|c| c.type_ == "PodScheduled")?;
        (scheduled.status == "False" && scheduled.reason.as_deref() == Some("Unschedulable"))
            .then_some(scheduled.message)
    })
    .await;
    assert_eq!(message.as_deref(), Some("0/2 nodes are available: 2 Insufficient cpu."));
    pods.delete("greedy", &Default::default()).await.expect("delete greedy");

    // Drain: two replicas on node-a (node-b cordoned while they start), guarded by a budget. They
    // report Ready only after 3 s, so the budget has to hold the second eviction back until the
    // first one's replacement is Ready (without it both would go at once).
    set_node_spec(&nodes, "node-b", json!(null), true).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "hello",
                    "image": format!("file://{}", hello.display()),
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1,
                                       "initialDelaySeconds": 3},
                }]},
            },
        },
    }))
    .expect("deployment");
    let web = deployments.create(&PostParams::default(), &deployment).await.expect("create deployment");
    let started = eventually(Duration::from_secs(60), "2 ready web pods on node-a", || async {
        let pods = owned_pods(&client, &web).await?;
        (pods.len() == 2 && pods.iter().all(|p| pod_ready(p) && node_of(p) == "node-a")).then_some(pods)
    })
    .await;
    set_node_spec(&nodes, "node-b", json!(null), false).await;

    // A budget that allows no disruption refuses an eviction with 429.
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let budget: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
    }))
    .expect("budget");
    budgets.create(&PostParams::default(), &budget).await.expect("create budget");
    let allowed = |want: i32| {
        let budgets = budgets.clone();
        async move {
            eventually(Duration::from_secs(30), &format!("{want} disruptions allowed"), || async {
                let status = budgets.get("web").await.ok()?.status?;
                (status.disruptions_allowed == want && status.current_healthy == 2).then_some(())
            })
            .await
        }
    };
    allowed(0).await;
    let victim = started[0].metadata.name.clone().expect("name");
    let refused = pods.evict(&victim, &EvictParams::default()).await.expect_err("eviction refused");
    match refused {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 429, "{status:?}");
            assert_eq!(status.message, "Cannot evict pod as it would violate the pod's disruption budget.");
        }
        other => panic!("expected a 429 Status, got {other:?}"),
    }
    let patch = Patch::Merge(json!({"spec": {"minAvailable": 1}}));
    budgets.patch("web", &PatchParams::default(), &patch).await.expect("relax budget");
    allowed(1).await;

    // `drain node-a` evicts one pod at a time: the budget keeps one web pod Ready throughout, and
    // the pods end up on node-b.
    let kubeconfig = cluster.kubeconfig();
    let drain = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(["drain", "node-a", "--force", "--timeout", "3m"])
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .expect("run drain")
    });
    let mut fewest_ready = usize::MAX;
    while !drain.is_finished() {
        if let Some(pods) = owned_pods(&client, &web).await {
            fewest_ready = fewest_ready.min(pods.iter().filter(|p| pod_ready(p)).count());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = drain.await.expect("drain task");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "drain failed:\n{stdout}\n{stderr}");
    assert!(stdout.ends_with("node/node-a drained\n"), "{stdout}");
    for pod in &started {
        let name = pod.metadata.name.as_deref().expect("name");
        assert!(stdout.contains(&format!("pod/{name} evicted\n")), "{stdout}");
    }
    assert!(
        stderr.contains("(will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget."),
        "the second eviction waited for the budget: {stderr}"
    );
    assert!(fewest_ready >= 1, "the budget kept a web pod Ready (fewest seen: {fewest_ready})");
    eventually(Duration::from_secs(60), "2 ready web pods on node-b", || async {
        let pods = owned_pods(&client, &web).await?;
        (pods.len() == 2 && pods.iter().all(|p| pod_ready(p) && node_of(p) == "node-b")).then_some(())
    })
    .await;
    let left: Vec<String> = pods
        .list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|p| !terminating(p))
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(left.is_empty(), "node-a still runs {left:?}");
}
