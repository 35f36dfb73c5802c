//! A cluster of separate processes: a `wasmkube server` and two `wasmkube agent`s. A Deployment
//! spreads over both nodes, rolls out a new template without ever dropping below its replica count
//! (maxUnavailable 0), and moves to the surviving node when one agent is killed with SIGKILL.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::{client_for, eventually, sample};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_wasmkube");
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// A spawned `wasmkube` process, killed and reaped when dropped (also when the test panics). Its
/// stderr goes to `log`, whose tail is printed if the test fails.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// Kept open: the process may print after its ready line.
    _stdout: Option<BufReader<ChildStdout>>,
}

impl Proc {
    /// Starts `wasmkube ARGS` and waits (bounded) for its `ready:` line, which it returns.
    fn start(name: &str, args: &[&str], log: PathBuf) -> (Self, String) {
        let stderr = std::fs::File::create(&log).expect("create log file");
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("KUBECONFIG")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn wasmkube");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        // Read the ready line on a thread, so a process that hangs fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            let _ = tx.send(line);
            stdout
        });
        let proc_line = rx.recv_timeout(Duration::from_secs(60));
        let mut proc = Proc { name: name.to_string(), child, log, _stdout: None };
        let line = match proc_line {
            Ok(line) => line,
            Err(_) => {
                proc.kill();
                panic!("{name} printed no ready line within 60 s\n{}", proc.log_tail());
            }
        };
        proc._stdout = Some(reader.join().expect("reader thread"));
        assert!(line.starts_with("ready: "), "{name}: unexpected first line {line:?}\n{}", proc.log_tail());
        (proc, line.trim().to_string())
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("--- last lines of {} ---\n{}", self.name, lines[lines.len().saturating_sub(30)..].join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_spreads_rolls_out_without_losing_capacity_and_survives_a_killed_agent() {
    let started = std::time::Instant::now();
    let hello = sample("hello");
    let dir = tempfile::tempdir().expect("tempdir");
    let server_dir = dir.path().join("server");

    // The control plane. Agents heartbeat every 10 s, so the grace period must be longer than that.
    let (_server, ready) = Proc::start(
        "server",
        &[
            "server",
            "--api-addr",
            "127.0.0.1:0",
            "--data-dir",
            path_str(&server_dir),
            "--node-monitor-grace-period",
            "15",
            "--default-toleration-seconds",
            "1",
        ],
        dir.path().join("server.log"),
    );
    let url = ready
        .strip_prefix("ready: api=")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no api URL in {ready:?}"))
        .to_string();
    let token_file = server_dir.join("admin-token");
    let ca_file = server_dir.join("pki/ca.crt");
    let token = std::fs::read_to_string(&token_file).expect("admin token");
    let ca = std::fs::read_to_string(&ca_file).expect("ca.crt");
    let client = client_for(&url, &ca, Some(token.trim())).await;

    // Two agents, each with its own data dir.
    let mut agents: Vec<(String, Proc)> = ["node-a", "node-b"]
        .into_iter()
        .map(|node| {
            let data = dir.path().join(node);
            let args = [
                "agent",
                "--server",
                &url,
                "--token-file",
                path_str(&token_file),
                "--ca-file",
                path_str(&ca_file),
                "--node-name",
                node,
                "--node-api-port",
                "0",
                "--data-dir",
                path_str(&data),
            ];
            let (agent, line) = Proc::start(node, &args, dir.path().join(format!("{node}.log")));
            assert!(line.starts_with(&format!("ready: node={node} ")), "{line}");
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
    let mut current = deployments.get("web").await.expect("get deployment");
    let container = &mut current.spec.as_mut().expect("spec").template.spec.as_mut().expect("pod spec").containers[0];
    container.env = Some(vec![serde_json::from_value(json!({"name": "VERSION", "value": "2"})).expect("env")]);
    let updated = deployments.replace("web", &PostParams::default(), &current).await.expect("update deployment");
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
