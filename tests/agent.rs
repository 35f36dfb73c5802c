//! The node agent end to end: a real control plane, a real agent and real sample components —
//! node registration, Running/Ready pods serving HTTP on their pod IP, commands that complete,
//! restarts with CrashLoopBackOff, clear reasons for bad images, and graceful deletion.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use support::{TestCluster, eventually, sample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmkube_cli::push;
use wasmkube_runtime::agent::{Agent, AgentConfig};

const NODE: &str = "node-a";

async fn cluster_with_agent() -> (TestCluster, Agent) {
    cluster_with_agent_tuned(|_| {}).await
}

/// A cluster whose agent's configuration `tune` adjusts first.
async fn cluster_with_agent_tuned(tune: impl FnOnce(&mut AgentConfig)) -> (TestCluster, Agent) {
    let cluster = TestCluster::start().await;
    let mut config = AgentConfig::new(NODE, "127.0.0.1".parse().expect("ip"), cluster.dir.path().join("agent"));
    config.backoff_base = Duration::from_millis(200);
    config.node_api_port = 0;
    config.api_token = cluster.control.pki.admin_token.clone();
    config.server_authority = Some(cluster.url().trim_start_matches("https://").to_string());
    tune(&mut config);
    let agent = Agent::start(cluster.client.clone(), config).await.expect("agent starts");
    (cluster, agent)
}

fn pod(name: &str, restart: &str, containers: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": NODE, "restartPolicy": restart, "terminationGracePeriodSeconds": 5, "containers": containers},
    }))
    .expect("pod")
}

fn image(name: &str) -> String {
    format!("file://{}", sample(name).display())
}

/// Waits until the pod satisfies `check`, returning it.
async fn wait_for(pods: &Api<Pod>, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
    eventually(Duration::from_secs(60), what, || {
        let pods = pods.clone();
        let name = name.to_string();
        let check = &check;
        async move { pods.get(&name).await.ok().filter(|p| check(p)) }
    })
    .await
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn container_status(p: &Pod) -> Value {
    serde_json::to_value(p).expect("json")["status"]["containerStatuses"][0].clone()
}

async fn http_get(addr: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the pod");
    stream.write_all(b"GET /hi HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n").await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

#[tokio::test]
async fn a_handler_pod_runs_ready_on_its_pod_ip_and_serves_requests() {
    let (cluster, _agent) = cluster_with_agent().await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let node = nodes.get(NODE).await.expect("the agent registered its node");
    let cidr = node.spec.and_then(|s| s.pod_cidr).expect("a pod CIDR was assigned");
    let prefix = cidr.split('.').take(2).collect::<Vec<_>>().join(".") + ".";
    assert!(cidr.starts_with("127.") && cidr.ends_with("/18"), "{cidr}");
    let ready = node.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().find(|c| c.type_ == "Ready");
    assert_eq!(ready.map(|c| c.status).as_deref(), Some("True"));
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), "kube-node-lease");
    assert_eq!(leases.get(NODE).await.expect("lease").spec.and_then(|s| s.holder_identity).as_deref(), Some(NODE));

    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let containers = json!([{"name": "hello", "image": image("hello"), "ports": [{"containerPort": 8080}],
        "env": [{"name": "GREETING", "value": "Hi from a test"}, {"name": "POD_NAME", "value": "web-1"}]}]);
    pods.create(&PostParams::default(), &pod("web-1", "Always", containers)).await.expect("create");
    let running = wait_for(&pods, "web-1", "web-1 Running and Ready", |p| {
        phase(p) == "Running" && container_status(p)["ready"] == true
    })
    .await;
    let status = running.status.clone().expect("status");
    let ip = status.pod_ip.clone().expect("podIP");
    assert!(ip.starts_with(&prefix), "{ip} is in the node's {cidr}");
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(status.start_time.is_some());
    let conditions: Vec<(String, String)> =
        status.conditions.unwrap_or_default().into_iter().map(|c| (c.type_, c.status)).collect();
    for kind in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert!(conditions.contains(&(kind.to_string(), "True".to_string())), "{kind}: {conditions:?}");
    }
    let cs = container_status(&running);
    assert!(cs["state"]["running"]["startedAt"].is_string(), "{cs}");
    assert!(cs["imageID"].as_str().unwrap_or("").starts_with("sha256:"), "{cs}");
    assert_eq!(cs["restartCount"], 0);

    let response = http_get(&format!("{ip}:8080")).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("Hi from a test pod=web-1 version=v1 path=/hi"), "{response}");
}

#[tokio::test]
async fn a_command_runs_to_completion_and_its_output_is_logged() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let containers = json!([{"name": "job", "image": image("job"), "args": ["1000"]}]);
    pods.create(&PostParams::default(), &pod("primes", "Never", containers)).await.expect("create");
    let done = wait_for(&pods, "primes", "primes Succeeded", |p| phase(p) == "Succeeded").await;
    let cs = container_status(&done);
    assert_eq!(cs["state"]["terminated"]["exitCode"], 0, "{cs}");
    assert_eq!(cs["state"]["terminated"]["reason"], "Completed", "{cs}");
    assert_eq!(log_of(&cluster, &done, "job", 0), "primes below 1000: 168\n");

    let bad_args = json!([{"name": "job", "image": image("job"), "args": ["lots"]}]);
    pods.create(&PostParams::default(), &pod("bad-args", "Never", bad_args)).await.expect("create");
    let failed = wait_for(&pods, "bad-args", "bad-args Failed", |p| phase(p) == "Failed").await;
    // Rust's std exits wasip2 commands through `exit(err)`, which carries no code: any failure is 1.
    let terminated = container_status(&failed)["state"]["terminated"].clone();
    assert_eq!((terminated["exitCode"].clone(), terminated["reason"].clone()), (json!(1), json!("Error")));
}

#[tokio::test]
async fn a_crashing_container_is_restarted_with_backoff() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let containers = json!([{"name": "crasher", "image": image("crasher"),
        "env": [{"name": "CRASH_AFTER_MS", "value": "50"}]}]);
    pods.create(&PostParams::default(), &pod("crasher", "Always", containers)).await.expect("create");
    let restarted =
        wait_for(&pods, "crasher", "two restarts", |p| container_status(p)["restartCount"].as_i64().unwrap_or(0) >= 2)
            .await;
    let cs = container_status(&restarted);
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1, "{cs}");
    assert_eq!(cs["lastState"]["terminated"]["reason"], "Error", "{cs}");
    assert_eq!(phase(&restarted), "Running");

    let once =
        json!([{"name": "crasher", "image": image("crasher"), "env": [{"name": "CRASH_AFTER_MS", "value": "10"}]}]);
    pods.create(&PostParams::default(), &pod("crash-once", "Never", once)).await.expect("create");
    let failed = wait_for(&pods, "crash-once", "crash-once Failed", |p| phase(p) == "Failed").await;
    assert_eq!(container_status(&failed)["restartCount"], 0, "restartPolicy Never does not restart");
}

#[tokio::test]
async fn a_crash_loop_counts_up_one_event_per_reason_instead_of_adding_one_per_restart() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let containers = json!([{"name": "crasher", "image": image("crasher"),
        "env": [{"name": "CRASH_AFTER_MS", "value": "10"}]}]);
    pods.create(&PostParams::default(), &pod("crash-loop", "Always", containers)).await.expect("create");
    wait_for(&pods, "crash-loop", "three restarts", |p| container_status(p)["restartCount"].as_i64().unwrap_or(0) >= 3)
        .await;
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    let listed =
        events.list(&ListParams::default().fields("involvedObject.name=crash-loop")).await.expect("events").items;
    let summary: Vec<String> =
        listed.iter().map(|e| format!("{:?} x{:?} {:?}", e.reason, e.count, e.message)).collect();
    // The agent records these on every run or restart: each is one Event whose count grows. The
    // BackOff of the restart that was seen last may still be on its way, hence "at least 2".
    for (reason, at_least) in [("BackOff", 2), ("Created", 3), ("Started", 3)] {
        let repeated: Vec<&Event> = listed.iter().filter(|e| e.reason.as_deref() == Some(reason)).collect();
        assert_eq!(repeated.len(), 1, "one {reason} event: {summary:#?}");
        let event = repeated[0];
        assert!(event.count.unwrap_or(0) >= at_least, "{reason} counted up: {summary:#?}");
        let (first, last) = (event.first_timestamp.as_ref().map(|t| t.0), event.last_timestamp.as_ref().map(|t| t.0));
        assert!(first.is_some() && last >= first, "{reason}: first {first:?}, last {last:?}");
    }
}

#[tokio::test]
async fn an_invalid_binary_is_a_terminated_start_error() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let junk = cluster.dir.path().join("junk.wasm");
    std::fs::write(&junk, b"this is not wasm").expect("write junk");
    let containers = json!([{"name": "app", "image": format!("file://{}", junk.display())}]);
    pods.create(&PostParams::default(), &pod("junk", "Never", containers)).await.expect("create");
    let failed = wait_for(&pods, "junk", "a failed start", |p| phase(p) == "Failed").await;
    let terminated = container_status(&failed)["state"]["terminated"].clone();
    assert_eq!(terminated["reason"], "StartError", "{terminated}");
    assert!(terminated["message"].as_str().unwrap_or("").contains("not a WebAssembly binary"), "{terminated}");
}

/// The waiting reason and message of a pod's first container.
fn waiting(p: &Pod) -> (String, String) {
    let w = &container_status(p)["state"]["waiting"];
    (w["reason"].as_str().unwrap_or("").to_string(), w["message"].as_str().unwrap_or("").to_string())
}

#[tokio::test]
async fn images_that_cannot_be_pulled_back_off_with_clear_reasons_until_they_can() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let cases = [
        ("missing-file", "file:///nonexistent/app.wasm", "/nonexistent/app.wasm"),
        ("not-pushed", "later:v1", "not found in the cluster registry"),
        ("elsewhere", "ghcr.io/someone/app:1", "not the cluster registry"),
    ];
    for (name, image, _) in cases {
        let containers = json!([{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]);
        pods.create(&PostParams::default(), &pod(name, "Always", containers)).await.expect("create");
    }
    for (name, _, needle) in cases {
        let seen = wait_for(&pods, name, "ErrImagePull", |p| waiting(p).0 == "ErrImagePull").await;
        assert!(waiting(&seen).1.contains(needle), "{name}: {:?}", waiting(&seen));
        assert_eq!(phase(&seen), "Pending");
        let backing_off = wait_for(&pods, name, "ImagePullBackOff", |p| waiting(p).0 == "ImagePullBackOff").await;
        assert!(waiting(&backing_off).1.contains("Back-off pulling image"), "{:?}", waiting(&backing_off));
    }
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    let messages: Vec<String> = events
        .list(&ListParams::default().fields("involvedObject.name=not-pushed"))
        .await
        .expect("events")
        .items
        .into_iter()
        .map(|e| format!("{} {}", e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect();
    for want in [
        "Pulling Pulling image \"later:v1\"",
        "Failed Failed to pull image \"later:v1\"",
        "BackOff Back-off pulling image",
    ] {
        assert!(messages.iter().any(|m| m.starts_with(want)), "no {want:?} in {messages:?}");
    }

    // Once the image is pushed, the next attempt pulls it and the pod runs.
    let wasm = std::fs::read(sample("hello")).expect("hello.wasm");
    let pushed = push::push(&cluster.client, &wasm, &push::pushable("later:v1").expect("ref")).await.expect("push");
    let running = wait_for(&pods, "not-pushed", "Running after the push", |p| phase(p) == "Running").await;
    assert_eq!(container_status(&running)["imageID"], pushed.pinned);
}

#[tokio::test]
async fn pods_run_images_pulled_from_the_cluster_registry_by_tag_and_by_digest() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let wasm = std::fs::read(sample("hello")).expect("hello.wasm");
    let pushed = push::push(&cluster.client, &wasm, &push::pushable("hello:v1").expect("ref")).await.expect("push");
    // The API server's own host:port names the cluster registry too.
    let authority = cluster.url().trim_start_matches("https://").to_string();
    let images = [
        ("by-tag", "hello:v1".to_string()),
        ("by-digest", pushed.pinned.clone()),
        ("by-host", format!("{authority}/hello:v1")),
    ];
    for (name, image) in images.clone() {
        let containers = json!([{"name": "hello", "image": image, "ports": [{"containerPort": 8080}]}]);
        pods.create(&PostParams::default(), &pod(name, "Always", containers)).await.expect("create");
    }
    for (name, _) in images {
        let ready = wait_for(&pods, name, "Running", |p| phase(p) == "Running").await;
        let status = container_status(&ready);
        assert_eq!(status["imageID"], pushed.pinned, "{name}");
        let ip = ready.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("pod IP");
        let body = eventually(Duration::from_secs(10), "an answer", || {
            let addr = format!("{ip}:8080");
            async move { Some(http_get(&addr).await).filter(|b| b.contains("version=")) }
        })
        .await;
        assert!(body.contains(&format!("pod={name}")) || body.contains("pod=unknown"), "{body}");
    }
    // The node keeps verified blobs: the agent's image cache holds the layer.
    let layer = wasmkube_api::oci::digest_of(&wasm);
    assert!(cluster.dir.path().join("agent/images/sha256").join(&layer[7..]).exists());
}

#[tokio::test]
async fn deleting_a_pod_stops_it_and_the_agent_finishes_the_deletion() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let containers = json!([{"name": "hello", "image": image("hello"), "ports": [{"containerPort": 8080}]}]);
    pods.create(&PostParams::default(), &pod("doomed", "Always", containers)).await.expect("create");
    let running = wait_for(&pods, "doomed", "doomed Running", |p| container_status(p)["ready"] == true).await;
    let ip = running.status.and_then(|s| s.pod_ip).expect("podIP");
    pods.delete("doomed", &DeleteParams::default()).await.expect("delete");
    eventually(Duration::from_secs(30), "the pod object to go", || {
        let pods = pods.clone();
        async move { pods.get("doomed").await.is_err().then_some(()) }
    })
    .await;
    assert!(
        tokio::net::TcpStream::connect(format!("{ip}:8080")).await.is_err(),
        "nothing listens on the pod IP any more"
    );
}

/// A container's log directory on the node.
fn log_dir(cluster: &TestCluster, pod: &Pod, container: &str) -> std::path::PathBuf {
    let uid = pod.metadata.uid.clone().expect("uid");
    let name = pod.metadata.name.clone().expect("name");
    cluster.dir.path().join(format!("agent/pods/default_{name}_{uid}/{container}"))
}

/// The text of a container's log for one run (restart count), read from its CRI log file
/// (`<time> <stream> <P|F> <text>` lines, each checked, prefixes stripped, fragments joined).
fn log_of(cluster: &TestCluster, pod: &Pod, container: &str, run: u32) -> String {
    let path = log_dir(cluster, pod, container).join(format!("{run}.log"));
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut text = String::new();
    for record in raw.lines() {
        let parts: Vec<&str> = record.splitn(4, ' ').collect();
        let [time, stream, tag, line] = parts.as_slice() else { panic!("not a CRI log record: {record:?}") };
        assert!(time.parse::<jiff::Timestamp>().is_ok(), "{record:?}");
        assert!(matches!(*stream, "stdout" | "stderr"), "{record:?}");
        text.push_str(line);
        match *tag {
            "F" => text.push('\n'),
            "P" => {}
            _ => panic!("bad tag in {record:?}"),
        }
    }
    text
}

#[tokio::test]
async fn env_configmaps_secrets_and_the_downward_api_reach_the_guest() {
    let (cluster, _agent) = cluster_with_agent().await;
    let client = cluster.client.clone();
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "settings"},
        "data": {"color": "blue", "size": "L"}}))
        .expect("cm"),
    )
    .await
    .expect("create cm");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "creds"},
        "stringData": {"password": "s3cret"}}))
            .expect("secret"),
        )
        .await
        .expect("create secret");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut spec = pod(
        "inspect",
        "Never",
        json!([{
            "name": "show", "image": image("inspect"),
            "args": ["env", "cat:/config/color", "cat:/secret/password", "cat:/info/name", "ls:/config"],
            "env": [
                {"name": "PLAIN", "value": "yes"},
                {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            ],
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CM_"}],
            "volumeMounts": [
                {"name": "config", "mountPath": "/config"},
                {"name": "secret", "mountPath": "/secret"},
                {"name": "info", "mountPath": "/info"},
            ],
        }]),
    );
    spec.spec.as_mut().expect("spec").volumes = serde_json::from_value(json!([
        {"name": "config", "configMap": {"name": "settings"}},
        {"name": "secret", "secret": {"secretName": "creds"}},
        {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
    ]))
    .expect("volumes");
    pods.create(&PostParams::default(), &spec).await.expect("create");
    let done = wait_for(&pods, "inspect", "inspect Succeeded", |p| phase(p) == "Succeeded").await;
    let ip = done.status.clone().and_then(|s| s.pod_ip).expect("podIP");
    let log = log_of(&cluster, &done, "show", 0);
    for line in [
        "PLAIN=yes".to_string(),
        "COLOR=blue".to_string(),
        "PASSWORD=s3cret".to_string(),
        "MY_NAME=inspect".to_string(),
        format!("MY_IP={ip}"),
        format!("MY_NODE={NODE}"),
        "CM_color=blue".to_string(),
        "CM_size=L".to_string(),
        "/config/color: blue".to_string(),
        "/secret/password: s3cret".to_string(),
        "/info/name: inspect".to_string(),
        "/config: color,size".to_string(),
    ] {
        assert!(log.lines().any(|l| l == line), "{line:?} missing from:\n{log}");
    }
}

#[tokio::test]
async fn a_missing_configmap_is_a_create_container_config_error_until_it_exists() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let containers = json!([{"name": "show", "image": image("inspect"), "args": ["env"],
        "env": [{"name": "LATE", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "k"}}}]}]);
    pods.create(&PostParams::default(), &pod("waits", "Never", containers)).await.expect("create");
    let waiting = wait_for(&pods, "waits", "CreateContainerConfigError", |p| {
        container_status(p)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    })
    .await;
    assert_eq!(container_status(&waiting)["state"]["waiting"]["message"], "configmap \"later\" not found");
    assert_eq!(phase(&waiting), "Pending");
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "later"}, "data": {"k": "v"}})).expect("cm"),
    )
    .await
    .expect("create cm");
    let done = wait_for(&pods, "waits", "waits Succeeded once the configmap exists", |p| phase(p) == "Succeeded").await;
    assert!(log_of(&cluster, &done, "show", 0).lines().any(|l| l == "LATE=v"));
}

#[tokio::test]
async fn an_empty_dir_is_shared_by_the_containers_of_a_pod() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let mount = json!([{"name": "scratch", "mountPath": "/data"}]);
    let mut spec = pod(
        "shared",
        "OnFailure",
        json!([
            {"name": "writer", "image": image("inspect"), "args": ["write:/data/msg=from the writer"], "volumeMounts": mount},
            {"name": "reader", "image": image("inspect"), "args": ["need:/data/msg", "cat:/data/msg"], "volumeMounts": mount},
        ]),
    );
    spec.spec.as_mut().expect("spec").volumes =
        serde_json::from_value(json!([{"name": "scratch", "emptyDir": {}}])).expect("volumes");
    pods.create(&PostParams::default(), &spec).await.expect("create");
    let done = wait_for(&pods, "shared", "shared Succeeded", |p| phase(p) == "Succeeded").await;
    let reader = serde_json::to_value(&done).expect("json")["status"]["containerStatuses"][1].clone();
    let runs = reader["restartCount"].as_u64().expect("restartCount") as u32;
    assert_eq!(log_of(&cluster, &done, "reader", runs), "/data/msg: from the writer\n");
}

#[tokio::test]
async fn exceeding_the_memory_limit_is_oom_killed_and_restarted() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let containers = json!([{"name": "hog", "image": image("hog"), "resources": {"limits": {"memory": "32Mi"}}}]);
    pods.create(&PostParams::default(), &pod("hog", "Always", containers)).await.expect("create");
    let restarted = wait_for(&pods, "hog", "an OOMKilled restart", |p| {
        container_status(p)["lastState"]["terminated"]["reason"] == "OOMKilled"
    })
    .await;
    let cs = container_status(&restarted);
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 137, "{cs}");
    assert!(cs["restartCount"].as_i64().unwrap_or(0) >= 1, "{cs}");
    let log = log_of(&cluster, &restarted, "hog", 0);
    let held: Vec<u32> =
        log.lines().filter_map(|l| l.strip_prefix("hog: holding ")?.strip_suffix(" MiB")?.parse().ok()).collect();
    assert!(held.last().is_some_and(|mib| *mib <= 32), "stopped at the limit: {log}");
}

// Multi-threaded like the `wasmkube` binary's runtime: the agent shares it with the API clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_loop_beside_a_handler_does_not_starve_it() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("spinner", "Always", json!([{"name": "spin", "image": image("spinner")}])),
    )
    .await
    .expect("create spinner");
    wait_for(&pods, "spinner", "spinner Running", |p| container_status(p)["state"]["running"].is_object()).await;
    let containers = json!([{"name": "hello", "image": image("hello"), "ports": [{"containerPort": 8080}]}]);
    pods.create(&PostParams::default(), &pod("neighbour", "Always", containers)).await.expect("create hello");
    let ready = wait_for(&pods, "neighbour", "neighbour Ready", |p| container_status(p)["ready"] == true).await;
    let addr = format!("{}:8080", ready.status.and_then(|s| s.pod_ip).expect("podIP"));
    let mut latencies = Vec::new();
    for _ in 0..50 {
        let started = std::time::Instant::now();
        let response = http_get(&addr).await;
        latencies.push(started.elapsed());
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    // Generous: a starved handler would wait for the spinner forever (no answer at all).
    assert!(p99 < Duration::from_secs(2), "p99 {p99:?} with a busy loop on the node: {latencies:?}");
    println!("hello p99 beside a busy loop: {p99:?}");
}

#[tokio::test]
async fn logs_are_served_through_the_api_with_tail_previous_and_follow() {
    use futures::{AsyncBufReadExt, TryStreamExt};
    use kube::api::LogParams;
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let containers = json!([{"name": "show", "image": image("inspect"), "args": ["env"],
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]);
    pods.create(&PostParams::default(), &pod("envs", "Never", containers)).await.expect("create");
    wait_for(&pods, "envs", "envs Succeeded", |p| phase(p) == "Succeeded").await;
    let all = pods.logs("envs", &LogParams::default()).await.expect("logs");
    assert_eq!(all, "A=1\nB=2\n");
    let last = pods.logs("envs", &LogParams { tail_lines: Some(1), ..LogParams::default() }).await.expect("tail");
    assert_eq!(last, "B=2\n");
    let wrong = support::status_of(
        pods.logs("envs", &LogParams { container: Some("nope".into()), ..LogParams::default() }).await,
    );
    assert_eq!((wrong.code, wrong.message.as_str()), (400, "container nope is not valid for pod envs"));

    let containers =
        json!([{"name": "crasher", "image": image("crasher"), "env": [{"name": "CRASH_AFTER_MS", "value": "400"}]}]);
    pods.create(&PostParams::default(), &pod("crashy", "Always", containers)).await.expect("create");
    wait_for(&pods, "crashy", "crashy running", |p| container_status(p)["state"]["running"].is_object()).await;
    // Following the current run: its lines arrive, and the stream ends when the run does.
    let stream = pods.log_stream("crashy", &LogParams { follow: true, ..LogParams::default() }).await.expect("follow");
    let followed: Vec<String> = tokio::time::timeout(Duration::from_secs(30), stream.lines().try_collect())
        .await
        .expect("the followed stream ends with the run")
        .expect("lines");
    assert_eq!(followed, vec!["crasher: started, exiting in 400 ms", "crasher: exiting with code 1"]);
    wait_for(&pods, "crashy", "a restart", |p| container_status(p)["restartCount"].as_i64().unwrap_or(0) >= 1).await;
    let previous = pods.logs("crashy", &LogParams { previous: true, ..LogParams::default() }).await.expect("previous");
    assert_eq!(previous, "crasher: started, exiting in 400 ms\ncrasher: exiting with code 1\n");
}

#[tokio::test]
async fn logs_carry_timestamps_on_request_and_since_drops_older_lines() {
    use kube::api::LogParams;
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let containers = json!([{"name": "talk", "image": image("inspect"),
        "args": ["echo:early", "sleep:4000", "echo:late", "sleep:600000"]}]);
    pods.create(&PostParams::default(), &pod("talker", "Never", containers)).await.expect("create");
    let logs = |params: LogParams| {
        let pods = pods.clone();
        async move { pods.logs("talker", &params).await.unwrap_or_default() }
    };
    // Asked for as soon as `late` is there, so it is at most a moment old; `early` is 4 s older.
    eventually(Duration::from_secs(60), "both lines", || async {
        (logs(LogParams::default()).await == "early\nlate\n").then_some(())
    })
    .await;
    let recent = logs(LogParams { since_seconds: Some(3), ..LogParams::default() }).await;
    assert_eq!(recent, "late\n", "sinceSeconds=3 drops the line from 4 s before");

    let stamped = logs(LogParams { timestamps: true, ..LogParams::default() }).await;
    let times: Vec<jiff::Timestamp> = stamped
        .lines()
        .map(|l| {
            let (time, text) = l.split_once(' ').unwrap_or_else(|| panic!("no timestamp in {l:?}"));
            assert!(matches!(text, "early" | "late"), "{l:?}");
            time.parse().unwrap_or_else(|e| panic!("{time:?} is not RFC 3339: {e}"))
        })
        .collect();
    assert_eq!(times.len(), 2, "{stamped}");
    let apart = times[1].duration_since(times[0]);
    assert!(apart >= jiff::SignedDuration::from_millis(3900), "written about 4 s apart: {stamped}");
    let age = jiff::Timestamp::now().duration_since(times[1]);
    assert!(age < jiff::SignedDuration::from_secs(60), "stamped when written: {stamped}");
    for line in logs(LogParams::default()).await.lines() {
        assert!(line.split_once(' ').is_none_or(|(t, _)| t.parse::<jiff::Timestamp>().is_err()), "{line:?}");
    }
    // sinceTime: between the two lines (kube-rs sends whole seconds).
    let between = times[0].checked_add(jiff::SignedDuration::from_millis(1500)).expect("time");
    let since = logs(LogParams { since_time: Some(between), ..LogParams::default() }).await;
    assert_eq!(since, "late\n");
}

#[tokio::test]
async fn logs_of_a_flood_are_capped_by_rotation_and_their_tail_is_still_served() {
    use kube::api::LogParams;
    const CAP: u64 = 64 << 10;
    let (cluster, _agent) = cluster_with_agent_tuned(|config| config.container_log_max_bytes = CAP).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    // 20000 lines of 100 bytes, about 2.8 MB on disk with their prefixes, then a failure: restarted
    // again and again, each run flooding anew.
    let containers = json!([{"name": "flood", "image": image("inspect"), "args": ["spam:20000", "exit:1"]}]);
    pods.create(&PostParams::default(), &pod("flood", "Always", containers)).await.expect("create");
    // Three restarts: run 2 has started, and deleted run 0's logs.
    let restarted =
        wait_for(&pods, "flood", "three restarts", |p| container_status(p)["restartCount"].as_i64().unwrap_or(0) >= 3)
            .await;
    let dir = log_dir(&cluster, &restarted, "flood");
    let files: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .expect("log dir")
        .filter_map(Result::ok)
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().map(|m| m.len()).unwrap_or(0)))
        .collect();
    let total: u64 = files.iter().map(|(_, len)| len).sum();
    assert!(total <= 4 * CAP, "{total} bytes on disk, over 4 × {CAP}: {files:?}");
    let runs: std::collections::BTreeSet<u32> =
        files.iter().filter_map(|(name, _)| name.split('.').next()?.parse().ok()).collect();
    let newest = runs.last().copied().unwrap_or(0);
    assert!(runs.iter().all(|r| *r + 1 >= newest) && !runs.contains(&0), "only the last two runs: {files:?}");

    let last = pods
        .logs("flood", &LogParams { previous: true, tail_lines: Some(2), ..LogParams::default() })
        .await
        .expect("tail of the previous run");
    let x = "x".repeat(85);
    assert_eq!(last, format!("spam 00019998 {x}\nspam 00019999 {x}\n"));
    // The whole kept part of a run reads on from the rotated file into the current one, no line lost.
    let kept = pods.logs("flood", &LogParams { previous: true, ..LogParams::default() }).await.expect("previous");
    let numbers: Vec<u32> =
        kept.lines().map(|l| l.get(5..13).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{l:?}"))).collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "consecutive lines");
    assert_eq!(numbers.last(), Some(&19999));
    // A record is 140 bytes (a 40-byte prefix, 100 of text): more than a file holds means both are read.
    assert!(numbers.len() > CAP as usize / 140, "the rotated file and the current one: {}", numbers.len());
}

#[tokio::test]
async fn following_the_logs_of_a_command_that_is_not_restarted_ends_when_it_exits() {
    use futures::{AsyncBufReadExt, TryStreamExt};
    use kube::api::LogParams;
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let containers =
        json!([{"name": "job", "image": image("inspect"), "args": ["echo:first", "sleep:1500", "echo:second"]}]);
    pods.create(&PostParams::default(), &pod("once", "Never", containers)).await.expect("create");
    wait_for(&pods, "once", "once running", |p| container_status(p)["state"]["running"].is_object()).await;
    let stream = pods.log_stream("once", &LogParams { follow: true, ..LogParams::default() }).await.expect("follow");
    let followed: Vec<String> = tokio::time::timeout(Duration::from_secs(30), stream.lines().try_collect())
        .await
        .expect("the followed stream ends when the command exits")
        .expect("lines");
    assert_eq!(followed, ["first", "second"]);
    let done = pods.get("once").await.expect("pod");
    assert_eq!(container_status(&done)["restartCount"], 0);
    // Following a run that is already over answers at once.
    let stream = pods.log_stream("once", &LogParams { follow: true, ..LogParams::default() }).await.expect("follow");
    let again: Vec<String> =
        tokio::time::timeout(Duration::from_secs(5), stream.lines().try_collect()).await.expect("ends").expect("lines");
    assert_eq!(again, ["first", "second"]);
}

#[tokio::test]
async fn a_restarted_agent_re_adopts_its_pods_on_the_same_ips_without_duplicates() {
    let cluster = TestCluster::start().await;
    let config = || {
        let mut config = AgentConfig::new(NODE, "127.0.0.1".parse().expect("ip"), cluster.dir.path().join("agent"));
        config.backoff_base = Duration::from_millis(200);
        config.node_api_port = 0;
        config.api_token = cluster.control.pki.admin_token.clone();
        config
    };
    let first = Agent::start(cluster.client.clone(), config()).await.expect("agent starts");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let containers = json!([{"name": "hello", "image": image("hello"), "ports": [{"containerPort": 8080}]}]);
    pods.create(&PostParams::default(), &pod("kept", "Always", containers)).await.expect("create");
    let done = json!([{"name": "job", "image": image("job"), "args": ["100"]}]);
    pods.create(&PostParams::default(), &pod("finished", "Never", done)).await.expect("create");
    let crashing = json!([{"name": "crash", "image": image("crasher")}]);
    pods.create(&PostParams::default(), &pod("crashy", "Always", crashing)).await.expect("create");
    let before = wait_for(&pods, "kept", "kept Ready", |p| container_status(p)["ready"] == true).await;
    let crashed =
        wait_for(&pods, "crashy", "a restart", |p| container_status(p)["restartCount"].as_i64() >= Some(1)).await;
    let restarts_before = container_status(&crashed)["restartCount"].as_i64().expect("restartCount");
    wait_for(&pods, "finished", "finished Succeeded", |p| phase(p) == "Succeeded").await;
    let ip = before.status.and_then(|s| s.pod_ip).expect("podIP");

    first.shutdown();
    first.stopped().await;
    assert!(
        tokio::net::TcpStream::connect(format!("{ip}:8080")).await.is_err(),
        "the old agent's pods stopped with it"
    );

    let _second = Agent::start(cluster.client.clone(), config()).await.expect("agent restarts");
    let response = eventually(Duration::from_secs(30), "the pod served again on its IP", || {
        let addr = format!("{ip}:8080");
        async move {
            tokio::net::TcpStream::connect(&addr).await.ok()?;
            Some(http_get(&addr).await)
        }
    })
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let after = pods.get("kept").await.expect("kept");
    assert_eq!(after.status.and_then(|s| s.pod_ip).as_deref(), Some(ip.as_str()), "same pod IP");
    assert_eq!(pods.list(&Default::default()).await.expect("list").items.len(), 3, "no duplicate pods");
    let crashy = pods.get("crashy").await.expect("crashy");
    let restarts_after = container_status(&crashy)["restartCount"].as_i64().expect("restartCount");
    assert!(restarts_after >= restarts_before, "restart counts go on: {restarts_before} then {restarts_after}");
    // The restarted agent loaded the handler's code from its on-disk compile cache.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(cluster.client.clone(), "default");
    let pulled: Vec<String> = events
        .list(&kube::api::ListParams::default().fields("involvedObject.name=kept,reason=Pulled"))
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    assert!(pulled.iter().any(|m| m.contains(", compiled)")), "{pulled:?}");
    assert!(pulled.iter().any(|m| m.contains(", from the compile cache)")), "{pulled:?}");
    let finished = pods.get("finished").await.expect("finished");
    assert_eq!(phase(&finished), "Succeeded", "a completed pod is not run again");
    let uid = finished.metadata.uid.expect("uid");
    let runs = std::fs::read_dir(cluster.dir.path().join(format!("agent/pods/default_finished_{uid}/job")))
        .expect("log dir")
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log")))
        .count();
    assert_eq!(runs, 1, "the completed job ran once");
}

/// The messages of the events with `reason` about pod `name`.
async fn events(cluster: &TestCluster, name: &str, reason: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(cluster.client.clone(), "default");
    let fields = format!("involvedObject.name={name},reason={reason}");
    let listed = events.list(&kube::api::ListParams::default().fields(&fields)).await.expect("events");
    listed.items.into_iter().filter_map(|e| e.message).collect()
}

/// Waits until an event with `reason` about pod `name` says `needle`.
async fn wait_for_event(cluster: &TestCluster, name: &str, reason: &str, needle: &str) -> Vec<String> {
    eventually(Duration::from_secs(30), &format!("a {reason} event on {name} saying {needle:?}"), || async {
        let found = events(cluster, name, reason).await;
        found.iter().any(|m| m.contains(needle)).then_some(found)
    })
    .await
}

fn ready_condition(p: &Pod) -> String {
    let conditions = p.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    conditions.into_iter().find(|c| c.type_ == "Ready").map(|c| c.status).unwrap_or_default()
}

// The probe tests use ports of their own: every test cluster hands out the same pod IPs, and tests
// run concurrently in one process.

#[tokio::test]
async fn a_failing_liveness_probe_kills_the_container_and_it_is_restarted() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let containers = json!([{"name": "flaky", "image": image("flaky"), "ports": [{"containerPort": 18081}],
        "livenessProbe": {"httpGet": {"path": "/fail", "port": 18081}, "periodSeconds": 1, "failureThreshold": 1}}]);
    pods.create(&PostParams::default(), &pod("doomed-liveness", "Always", containers)).await.expect("create");
    let restarted = wait_for(&pods, "doomed-liveness", "a restart after a liveness kill", |p| {
        container_status(p)["restartCount"].as_i64().unwrap_or(0) >= 2
    })
    .await;
    let last = container_status(&restarted)["lastState"]["terminated"].clone();
    assert_eq!((last["exitCode"].clone(), last["reason"].clone()), (json!(137), json!("Error")), "{last}");
    assert_eq!(last["message"], "liveness probe failed: HTTP probe failed with statuscode: 500", "{last}");
    assert_eq!(phase(&restarted), "Running");
    let unhealthy = wait_for_event(&cluster, "doomed-liveness", "Unhealthy", "Liveness probe failed").await;
    assert!(unhealthy.contains(&"Liveness probe failed: HTTP probe failed with statuscode: 500".to_string()));
    let killing = events(&cluster, "doomed-liveness", "Killing").await;
    assert!(killing.contains(&"Container flaky failed liveness probe, will be restarted".to_string()), "{killing:?}");
    let created = events(&cluster, "doomed-liveness", "Created").await;
    assert!(created.contains(&"Created container flaky".to_string()), "{created:?}");
}

#[tokio::test]
async fn a_readiness_probe_takes_the_pod_in_and_out_of_ready() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let containers = json!([{"name": "flaky", "image": image("flaky"),
        "ports": [{"name": "http", "containerPort": 18082}],
        "env": [{"name": "FLAKY_PERIOD_SECONDS", "value": "2"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1}}]);
    pods.create(&PostParams::default(), &pod("flapping", "Always", containers)).await.expect("create");
    let ready = wait_for(&pods, "flapping", "flapping Ready", |p| ready_condition(p) == "True").await;
    assert_eq!(container_status(&ready)["ready"], true);
    let unready = wait_for(&pods, "flapping", "flapping no longer Ready", |p| ready_condition(p) == "False").await;
    let cs = container_status(&unready);
    assert_eq!(cs["ready"], false, "{cs}");
    assert!(cs["state"]["running"].is_object(), "not ready, yet still running: {cs}");
    assert_eq!(cs["restartCount"], 0, "readiness never restarts: {cs}");
    wait_for(&pods, "flapping", "flapping Ready again", |p| ready_condition(p) == "True").await;
    wait_for_event(&cluster, "flapping", "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503")
        .await;

    // Deleting it stops its container, and says so.
    pods.delete("flapping", &DeleteParams::default()).await.expect("delete");
    wait_for_event(&cluster, "flapping", "Killing", "Stopping container flaky").await;
}

#[tokio::test]
async fn tcp_socket_probes_pass_on_a_listening_port_and_fail_on_a_closed_one() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let probed = |listen: u16, port: Value| {
        json!([{"name": "hello", "image": image("hello"), "ports": [{"name": "http", "containerPort": listen}],
            "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1}}])
    };
    // One probes its own named port; the other a port nothing listens on.
    let cases = [("tcp-open", probed(18083, json!("http"))), ("tcp-closed", probed(18084, json!(18085)))];
    for (name, containers) in cases {
        pods.create(&PostParams::default(), &pod(name, "Always", containers)).await.expect("create");
    }
    let open = wait_for(&pods, "tcp-open", "tcp-open Ready", |p| ready_condition(p) == "True").await;
    assert_eq!(container_status(&open)["ready"], true);
    wait_for_event(&cluster, "tcp-closed", "Unhealthy", "Readiness probe failed: dial tcp").await;
    let closed = pods.get("tcp-closed").await.expect("tcp-closed");
    assert_eq!((phase(&closed), ready_condition(&closed).as_str()), ("Running", "False"));
    assert_eq!(container_status(&closed)["ready"], false);
}

#[tokio::test]
async fn exec_probes_run_the_command_again_with_the_probe_arguments() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let mount = json!([{"name": "scratch", "mountPath": "/data"}]);
    let with_probe = |name: &str, kind: &str, needed: &str| {
        let mut spec = pod(
            name,
            "Always",
            json!([{"name": "show", "image": image("inspect"), "volumeMounts": mount,
                "args": ["write:/data/ready=yes", "sleep:600000"],
                kind: {"exec": {"command": [format!("need:{needed}")]}, "periodSeconds": 1, "failureThreshold": 1}}]),
        );
        spec.spec.as_mut().expect("spec").volumes =
            serde_json::from_value(json!([{"name": "scratch", "emptyDir": {}}])).expect("volumes");
        spec
    };
    // The probe sees the container's volume: the file the container wrote makes it ready.
    pods.create(&PostParams::default(), &with_probe("exec-ready", "readinessProbe", "/data/ready"))
        .await
        .expect("create");
    pods.create(&PostParams::default(), &with_probe("exec-dead", "livenessProbe", "/data/missing"))
        .await
        .expect("create");
    let handler = json!([{"name": "hello", "image": image("hello"), "ports": [{"containerPort": 18086}],
        "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1, "failureThreshold": 1}}]);
    pods.create(&PostParams::default(), &pod("exec-handler", "Always", handler)).await.expect("create");

    wait_for(&pods, "exec-ready", "exec-ready Ready", |p| ready_condition(p) == "True").await;
    let dead = wait_for(&pods, "exec-dead", "a liveness kill", |p| {
        container_status(p)["lastState"]["terminated"]["exitCode"] == 137
    })
    .await;
    let message = container_status(&dead)["lastState"]["terminated"]["message"].clone();
    assert_eq!(message, "liveness probe failed: command \"need:/data/missing\" exited with code 1");
    let handler = wait_for(&pods, "exec-handler", "a liveness kill", |p| {
        container_status(p)["lastState"]["terminated"]["exitCode"] == 137
    })
    .await;
    let message = container_status(&handler)["lastState"]["terminated"]["message"].clone();
    assert_eq!(message, "liveness probe failed: the component does not export wasi:cli/run");
}

#[tokio::test]
async fn exec_runs_the_component_as_a_command_in_the_pods_sandbox_with_stdio_and_exit_codes() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let containers = json!([
        {"name": "shell", "image": image("inspect"), "args": ["sleep:600000"],
         "env": [{"name": "FOO", "value": "bar"}], "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        {"name": "hello", "image": image("hello"), "ports": [{"containerPort": 18090}]},
    ]);
    let mut spec = pod("box", "Always", containers);
    spec.spec.as_mut().expect("spec").volumes =
        Some(serde_json::from_value(json!([{"name": "data", "emptyDir": {}}])).expect("volumes"));
    pods.create(&PostParams::default(), &spec).await.expect("create");
    wait_for(&pods, "box", "Running", |p| phase(p) == "Running").await;

    let exec_in = |words: &'static [&'static str], stdin: Option<&'static str>| {
        let pods = pods.clone();
        async move {
            use kube::api::AttachParams;
            let params = AttachParams::default().container("shell").stdin(stdin.is_some()).stdout(true).stderr(true);
            let mut process = pods.exec("box", words.to_vec(), &params).await.expect("exec starts");
            if let (Some(mut input), Some(text)) = (process.stdin(), stdin) {
                input.write_all(text.as_bytes()).await.expect("write stdin");
                input.shutdown().await.expect("close stdin");
            }
            let status = process.take_status().expect("a status channel");
            let (mut out, mut err) = (String::new(), String::new());
            let (mut stdout, mut stderr) = (process.stdout().expect("stdout"), process.stderr().expect("stderr"));
            let (a, b) = tokio::join!(stdout.read_to_string(&mut out), stderr.read_to_string(&mut err));
            a.expect("stdout");
            b.expect("stderr");
            (out, err, status.await)
        }
    };
    let (out, _, status) = exec_in(&["env"], None).await;
    assert!(out.lines().any(|l| l == "FOO=bar"), "the container's env: {out}");
    assert_eq!(status.and_then(|s| s.status).as_deref(), Some("Success"));
    // The same volumes: a file written by one exec is read by the next.
    exec_in(&["write:/data/note=shared"], None).await;
    let (out, _, _) = exec_in(&["cat:/data/note"], None).await;
    assert_eq!(out, "/data/note: shared\n");
    let (out, _, _) = exec_in(&["upper"], Some("through stdin\n")).await;
    assert_eq!(out, "THROUGH STDIN\n");
    let (_, err, status) = exec_in(&["warn:going down", "exit:3"], None).await;
    assert_eq!(err, "going down\n");
    let status = status.expect("a failure status");
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let cause = status.details.and_then(|d| d.causes).and_then(|c| c.into_iter().next()).expect("a cause");
    // wasi:cli/exit (WASI 0.2) carries only success or failure, so a component's exit(3) is 1.
    assert_eq!((cause.reason.as_deref(), cause.message.as_deref()), (Some("ExitCode"), Some("1")));

    // A handler-only component has no command to run; the refusal says why.
    let refused = pods.exec("box", vec!["x"], &kube::api::AttachParams::default().container("hello")).await;
    let message = format!("{:?}", refused.err().expect("exec into a handler is refused"));
    assert!(message.contains("wasi:cli/run"), "{message}");
}

/// `GET path` on `addr`; the status code and the whole response.
async fn http_get_path(addr: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the pod");
    let request = format!("GET {path} HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, response)
}

#[tokio::test]
async fn request_deadlines_and_the_concurrency_cap_come_from_annotations_and_deletion_drains() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let containers = json!([{"name": "hello", "image": image("hello"), "ports": [{"containerPort": 18100}]}]);
    let with_annotations = |name: &str, annotations: Value| {
        let mut p = pod(name, "Always", containers.clone());
        p.metadata.annotations = Some(serde_json::from_value(annotations).expect("annotations"));
        p
    };
    // Bad settings are refused at admission, naming the annotation.
    let refused = pods
        .create(&PostParams::default(), &with_annotations("bad", json!({"wasmkube.dev/request-timeout": "soon"})))
        .await;
    let status = support::status_of(refused);
    assert_eq!(status.code, 422);
    assert!(status.message.contains("metadata.annotations[wasmkube.dev/request-timeout]"), "{}", status.message);

    let settings = json!({"wasmkube.dev/request-timeout": "600ms", "wasmkube.dev/max-concurrency": "1"});
    pods.create(&PostParams::default(), &with_annotations("capped", settings)).await.expect("create");
    let running = wait_for(&pods, "capped", "Ready", |p| container_status(p)["ready"] == true).await;
    let addr = format!("{}:18100", running.status.and_then(|s| s.pod_ip).expect("pod IP"));

    let (code, body) = http_get_path(&addr, "/sleep/3000").await;
    assert_eq!(code, 504, "{body}");
    assert!(body.contains("did not answer within 600ms"), "{body}");

    // One slot: two 200 ms requests sent together are served one after the other.
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(http_get_path(&addr, "/sleep/200"), http_get_path(&addr, "/sleep/200"));
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    assert!(started.elapsed() >= Duration::from_millis(390), "served concurrently: {:?}", started.elapsed());

    // Deleting the pod lets an in-flight request finish (grace period 5 s) before the pod goes.
    let containers = json!([{"name": "hello", "image": image("hello"), "ports": [{"containerPort": 18101}]}]);
    pods.create(&PostParams::default(), &pod("draining", "Always", containers)).await.expect("create");
    let running = wait_for(&pods, "draining", "Ready", |p| container_status(p)["ready"] == true).await;
    let addr = format!("{}:18101", running.status.and_then(|s| s.pod_ip).expect("pod IP"));
    let slow = tokio::spawn(async move { http_get_path(&addr, "/sleep/1500").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    pods.delete("draining", &DeleteParams::default()).await.expect("delete");
    let (code, body) = slow.await.expect("the slow request");
    assert_eq!(code, 200, "the in-flight request finished: {body}");
    eventually(Duration::from_secs(30), "the pod object to go", || {
        let pods = pods.clone();
        async move { pods.get_opt("draining").await.ok().flatten().is_none().then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn the_echo_sample_serves_tcp_on_its_pod_ip_through_wasi_sockets() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let containers = json!([{"name": "echo", "image": image("echo"), "args": ["17007"],
        "ports": [{"containerPort": 17007}],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]);
    pods.create(&PostParams::default(), &pod("echo", "Always", containers)).await.expect("create");
    let running = wait_for(&pods, "echo", "Running", |p| phase(p) == "Running").await;
    let addr = format!("{}:17007", running.status.and_then(|s| s.pod_ip).expect("pod IP"));
    // Two clients at once, each getting its own bytes back.
    let talk = |text: &'static str| {
        let addr = addr.clone();
        async move {
            let mut stream = eventually(Duration::from_secs(10), "the echo port", || {
                let addr = addr.clone();
                async move { tokio::net::TcpStream::connect(&addr).await.ok() }
            })
            .await;
            stream.write_all(text.as_bytes()).await.expect("send");
            stream.shutdown().await.expect("half-close");
            let mut back = String::new();
            stream.read_to_string(&mut back).await.expect("read");
            back
        }
    };
    let (a, b) = tokio::join!(talk("first client\n"), talk("second client\n"));
    assert_eq!((a.as_str(), b.as_str()), ("first client\n", "second client\n"));
}

/// The value of the series `name{labels}` in Prometheus text, if present.
fn series(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() { format!("{name} ") } else { format!("{name}{{{labels}}} ") };
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn the_agent_serves_metrics_of_its_pods_instances_requests_and_compile_cache() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let containers = json!([
        {"name": "hello", "image": image("hello"), "ports": [{"containerPort": 18110}]},
        {"name": "shell", "image": image("inspect"), "args": ["sleep:600000"]},
    ]);
    pods.create(&PostParams::default(), &pod("measured", "Always", containers)).await.expect("create");
    let running = wait_for(&pods, "measured", "Running", |p| phase(p) == "Running").await;
    let addr = format!("{}:18110", running.status.and_then(|s| s.pod_ip).expect("pod IP"));
    for _ in 0..3 {
        assert_eq!(http_get_path(&addr, "/").await.0, 200);
    }
    assert_eq!(http_get_path(&addr, "/sleep/5").await.0, 200);

    let scrape = || async {
        let request =
            http::Request::get(format!("/api/v1/nodes/{NODE}/proxy/metrics")).body(Vec::new()).expect("request");
        cluster.client.request_text(request).await.expect("the node's metrics through the API server")
    };
    let text = scrape().await;
    let hello = r#"namespace="default",pod="measured",container="hello""#;
    let shell = r#"namespace="default",pod="measured",container="shell""#;
    assert_eq!(series(&text, "wasmkube_agent_pods", r#"phase="Running""#), Some(1.0), "{text}");
    assert_eq!(series(&text, "wasmkube_agent_containers", r#"state="running""#), Some(2.0));
    assert_eq!(series(&text, "wasmkube_container_requests_total", hello), Some(4.0));
    assert_eq!(series(&text, "wasmkube_container_request_errors_total", hello), Some(0.0));
    assert_eq!(series(&text, "wasmkube_container_instantiations_total", hello), Some(4.0), "one instance per request");
    assert_eq!(
        series(&text, "wasmkube_container_instances", hello),
        Some(0.0),
        "handler instances end with their request"
    );
    assert_eq!(series(&text, "wasmkube_container_instances", shell), Some(1.0));
    assert!(series(&text, "wasmkube_container_memory_bytes", shell).is_some_and(|b| b >= 65536.0), "{text}");
    assert!(series(&text, "wasmkube_container_cpu_seconds_total", hello).is_some_and(|s| s > 0.0));
    assert!(series(&text, "wasmkube_instantiate_duration_seconds_count", "").is_some_and(|n| n >= 5.0), "{text}");
    let starts: f64 = ["memory", "disk", "compiled"]
        .iter()
        .filter_map(|s| series(&text, "wasmkube_compile_cache_total", &format!("source=\"{s}\"")))
        .sum();
    assert_eq!(starts, 2.0, "one compile-cache lookup per container start: {text}");

    pods.delete("measured", &DeleteParams::default()).await.expect("delete");
    eventually(Duration::from_secs(30), "the pod's series to go", || async {
        (!scrape().await.contains("pod=\"measured\"")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_limit_caps_a_busy_loop_at_its_share_of_a_core() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let spinners = json!([
        {"name": "capped", "image": image("spinner"), "resources": {"limits": {"cpu": "100m"}}},
        {"name": "free", "image": image("spinner")},
    ]);
    pods.create(&PostParams::default(), &pod("spinners", "Always", spinners)).await.expect("create");
    wait_for(&pods, "spinners", "Running", |p| phase(p) == "Running").await;
    let cpu = |text: &str, container: &str| {
        series(
            text,
            "wasmkube_container_cpu_seconds_total",
            &format!(r#"namespace="default",pod="spinners",container="{container}""#),
        )
        .expect("a cpu series")
    };
    let scrape = || async {
        let request =
            http::Request::get(format!("/api/v1/nodes/{NODE}/proxy/metrics")).body(Vec::new()).expect("request");
        cluster.client.request_text(request).await.expect("metrics")
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = scrape().await;
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = scrape().await;
    let wall = started.elapsed().as_secs_f64();
    let capped = (cpu(&after, "capped") - cpu(&before, "capped")) / wall;
    let free = (cpu(&after, "free") - cpu(&before, "free")) / wall;
    println!("cores used: capped {capped:.3}, free {free:.3}");
    // The quota is checked at 10 ms epoch ticks, so a 100m loop may overrun by up to a tick per
    // 100 ms period; uncapped, it takes a whole core when it can. A noisy machine only lowers both.
    assert!(capped > 0.0 && capped < 0.3, "capped used {capped:.3} cores (free: {free:.3})");
}

#[tokio::test]
async fn host_paths_mount_only_under_allowed_roots_and_working_dir_is_set() {
    let cluster = TestCluster::start().await;
    let allowed = cluster.dir.path().join("shared-data");
    std::fs::create_dir_all(&allowed).expect("root");
    std::fs::write(allowed.join("greeting.txt"), "from the host").expect("file");
    let mut config = AgentConfig::new(NODE, "127.0.0.1".parse().expect("ip"), cluster.dir.path().join("agent"));
    config.node_api_port = 0;
    config.api_token = cluster.control.pki.admin_token.clone();
    config.host_path_roots = vec![allowed.clone()];
    let _agent = Agent::start(cluster.client.clone(), config).await.expect("agent starts");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");

    let with_host_path = |name: &str, path: String| {
        let mut p = pod(
            name,
            "Never",
            json!([{"name": "app", "image": image("inspect"), "workingDir": "/host",
                    "args": ["cat:/host/greeting.txt", "write:/host/note=written", "env"],
                    "volumeMounts": [{"name": "host", "mountPath": "/host"}]}]),
        );
        p.spec.as_mut().expect("spec").volumes =
            Some(serde_json::from_value(json!([{"name": "host", "hostPath": {"path": path}}])).expect("volumes"));
        p
    };
    pods.create(&PostParams::default(), &with_host_path("inside", allowed.display().to_string()))
        .await
        .expect("create");
    // `..` that leaves the root is caught after canonicalization.
    let escape = format!("{}/../", allowed.display());
    pods.create(&PostParams::default(), &with_host_path("escape", escape)).await.expect("create");

    let done = wait_for(&pods, "inside", "Succeeded", |p| phase(p) == "Succeeded").await;
    let log = log_of(&cluster, &done, "app", 0);
    assert!(log.contains("/host/greeting.txt: from the host"), "{log}");
    // workingDir reaches the guest as wasi:cli's initial-cwd and as PWD (Rust's wasi-libc reads
    // neither yet, so `current_dir()` stays "/" for this sample).
    assert!(log.lines().any(|l| l == "PWD=/host"), "workingDir: {log}");
    assert_eq!(std::fs::read_to_string(allowed.join("note")).expect("written through the mount"), "written");

    let refused = wait_for(&pods, "escape", "CreateContainerConfigError", |p| {
        container_status(p)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    })
    .await;
    let message = container_status(&refused)["state"]["waiting"]["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains("outside the allowed roots"), "{message}");
}

#[tokio::test]
async fn a_startup_probe_holds_started_and_ready_until_it_passes() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let mut spec = pod(
        "slow-start",
        "Always",
        json!([{"name": "app", "image": image("inspect"), "args": ["sleep:600000"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "startupProbe": {"exec": {"command": ["need:/data/started"]}, "periodSeconds": 1, "failureThreshold": 60}}]),
    );
    spec.spec.as_mut().expect("spec").volumes =
        Some(serde_json::from_value(json!([{"name": "data", "emptyDir": {}}])).expect("volumes"));
    pods.create(&PostParams::default(), &spec).await.expect("create");
    let running = wait_for(&pods, "slow-start", "Running", |p| phase(p) == "Running").await;
    let status = container_status(&running);
    assert_eq!((status["started"].as_bool(), status["ready"].as_bool()), (Some(false), Some(false)), "{status}");

    // The container "finishes starting" when the file appears (written through exec).
    let params = kube::api::AttachParams::default().stdout(true).stderr(true);
    let mut process = pods.exec("slow-start", vec!["write:/data/started=yes"], &params).await.expect("exec");
    let status_channel = process.take_status().expect("status");
    assert_eq!(status_channel.await.and_then(|s| s.status).as_deref(), Some("Success"));
    let started = wait_for(&pods, "slow-start", "started", |p| container_status(p)["started"] == true).await;
    assert_eq!(container_status(&started)["ready"], true, "no readiness probe: ready once started");
}

/// One request to `addr`: the whole answer, or why there was none.
async fn try_get(addr: &str) -> Result<String, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET /hi HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.map_err(|e| e.to_string())?;
        Ok(response)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await.map_err(|_| "no answer within 10s".to_string())?
}

#[tokio::test]
async fn an_opted_in_handler_swaps_to_a_new_image_in_place_without_failing_a_request() {
    use kube::api::{Patch, PatchParams};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let mut web =
        pod("web", "Always", json!([{"name": "web", "image": image("hello"), "ports": [{"containerPort": 8080}]}]));
    web.metadata.annotations = Some([("wasmkube.dev/hot-swap".to_string(), "true".to_string())].into());
    pods.create(&PostParams::default(), &web).await.expect("create");
    let before = wait_for(&pods, "web", "web Ready", |p| container_status(p)["ready"] == true).await;
    let ip = before.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("a pod IP");
    let addr = format!("{ip}:8080");
    assert!(http_get(&addr).await.contains("Hello from wasmkube"));

    // Requests back to back for the whole swap: every one must be answered 200.
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU32::new(0));
    let load = tokio::spawn({
        let (stop, addr, requests) = (stop.clone(), addr.clone(), requests.clone());
        async move {
            let (mut answered, mut failures) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match try_get(&addr).await {
                    Ok(answer) if answer.starts_with("HTTP/1.1 200") => answered += 1,
                    other => failures.push(other),
                }
                requests.fetch_add(1, Ordering::Relaxed);
            }
            (answered, failures)
        }
    });
    let set_image =
        |name: &str| Patch::Strategic(json!({"spec": {"containers": [{"name": "web", "image": image(name)}]}}));
    pods.patch("web", &PatchParams::default(), &set_image("flaky")).await.expect("change the image");
    let swapped =
        wait_for(&pods, "web", "the new image reported", |p| container_status(p)["image"] == image("flaky")).await;
    eventually(Duration::from_secs(30), "the new version answering", || {
        let addr = addr.clone();
        async move { try_get(&addr).await.ok().filter(|a| a.contains("flaky: a sample for probes")) }
    })
    .await;
    // Not compiled on this node before: baseline code served first, then Cranelift's code took
    // over, also under load.
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    let event = |reason: &'static str, containing: &'static str| {
        let events = events.clone();
        move || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default().fields("involvedObject.name=web")).await.ok()?;
                list.items.into_iter().find(|e| {
                    e.reason.as_deref() == Some(reason) && e.message.as_deref().is_some_and(|m| m.contains(containing))
                })
            }
        }
    };
    let swap = eventually(Duration::from_secs(30), "a Swapped event", event("Swapped", "flaky.wasm")).await;
    let message = swap.message.unwrap_or_default();
    assert!(message.contains("(baseline code; optimised code follows)"), "{message}");
    eventually(Duration::from_secs(60), "a Recompiled event", event("Recompiled", "flaky.wasm")).await;
    // Some more requests on the optimised version before the load stops.
    let after_swap = requests.load(Ordering::Relaxed) + 20;
    eventually(Duration::from_secs(30), "20 more requests", || {
        let requests = requests.clone();
        async move { (requests.load(Ordering::Relaxed) >= after_swap).then_some(()) }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (answered, failures) = load.await.expect("load");
    assert!(failures.is_empty(), "{} of {} requests failed: {:?}", failures.len(), answered, &failures[..1]);
    assert!(answered > 5, "only {answered} requests ran");
    // The same pod: uid, IP and run kept (no restart).
    assert_eq!(swapped.metadata.uid, before.metadata.uid);
    assert_eq!(swapped.status.as_ref().and_then(|s| s.pod_ip.clone()), Some(ip));
    assert_eq!(container_status(&swapped)["restartCount"], 0);
    assert_ne!(container_status(&swapped)["imageID"], container_status(&before)["imageID"]);

    // A version that is no handler is refused, and the one serving goes on.
    pods.patch("web", &PatchParams::default(), &set_image("job")).await.expect("change the image");
    let refused = eventually(Duration::from_secs(60), "a SwapFailed event", event("SwapFailed", "")).await;
    let message = refused.message.unwrap_or_default();
    assert!(message.contains("not a wasi:http handler") && message.contains("flaky.wasm"), "{message}");
    assert!(try_get(&addr).await.expect("still serving").contains("flaky: a sample for probes"));
    let kept = pods.get("web").await.expect("get");
    assert_eq!(container_status(&kept)["image"], image("flaky"));

    // Back to a version this node has compiled: its optimised code serves at once.
    pods.patch("web", &PatchParams::default(), &set_image("hello")).await.expect("change the image");
    let back = eventually(Duration::from_secs(30), "a Swapped event", event("Swapped", "hello.wasm")).await;
    let message = back.message.unwrap_or_default();
    assert!(message.contains("(optimised code)"), "{message}");
    assert!(try_get(&addr).await.expect("serving").contains("Hello from wasmkube"));
}

#[tokio::test]
async fn a_pod_whose_image_changes_restarts_its_container_with_the_new_image() {
    use kube::api::{Patch, PatchParams};

    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    // restartPolicy Never: a changed image restarts the container regardless, as in Kubernetes.
    let web =
        pod("plain", "Never", json!([{"name": "web", "image": image("hello"), "ports": [{"containerPort": 8080}]}]));
    pods.create(&PostParams::default(), &web).await.expect("create");
    let before = wait_for(&pods, "plain", "web Ready", |p| container_status(p)["ready"] == true).await;
    let ip = before.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("a pod IP");
    let addr = format!("{ip}:8080");
    assert!(http_get(&addr).await.contains("Hello from wasmkube"));

    let patch = Patch::Strategic(json!({"spec": {"containers": [{"name": "web", "image": image("flaky")}]}}));
    pods.patch("plain", &PatchParams::default(), &patch).await.expect("change the image");
    let after = wait_for(&pods, "plain", "web restarted on the new image", |p| {
        let status = container_status(p);
        status["image"] == image("flaky") && status["ready"] == true && status["restartCount"] == 1
    })
    .await;
    let status = container_status(&after);
    assert_eq!(status["lastState"]["terminated"]["reason"], "Completed", "{status}");
    assert_ne!(status["imageID"], container_status(&before)["imageID"]);
    assert_eq!(after.metadata.uid, before.metadata.uid);
    eventually(Duration::from_secs(30), "the new version answering", || {
        let addr = addr.clone();
        async move { try_get(&addr).await.ok().filter(|a| a.contains("flaky: a sample for probes")) }
    })
    .await;
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    let list = events.list(&ListParams::default().fields("involvedObject.name=plain")).await.expect("events");
    let killing: Vec<_> = list.items.iter().filter(|e| e.reason.as_deref() == Some("Killing")).collect();
    assert!(
        killing.iter().any(|e| e.message.as_deref() == Some("Container web definition changed, will be restarted")),
        "{killing:?}"
    );
    assert!(!list.items.iter().any(|e| e.reason.as_deref() == Some("Swapped")), "not opted in: no swap");
}

#[tokio::test]
async fn a_new_image_ends_a_back_off_at_once() {
    use kube::api::{Patch, PatchParams};

    // Back-off far longer than any wait below: only the new image can end it in time.
    let (cluster, _agent) = cluster_with_agent_tuned(|c| c.backoff_base = Duration::from_secs(300)).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let crashing = json!([{"name": "web", "image": image("crasher")}]);
    pods.create(&PostParams::default(), &pod("crashing", "Always", crashing)).await.expect("create");
    let unpulled = json!([{"name": "web", "image": "file:///nowhere/missing.wasm"}]);
    pods.create(&PostParams::default(), &pod("unpulled", "Always", unpulled)).await.expect("create");
    let waiting = |reason: &'static str| move |p: &Pod| container_status(p)["state"]["waiting"]["reason"] == reason;
    wait_for(&pods, "crashing", "CrashLoopBackOff", waiting("CrashLoopBackOff")).await;
    wait_for(&pods, "unpulled", "ImagePullBackOff", waiting("ImagePullBackOff")).await;

    let hello = Patch::Strategic(json!({"spec": {"containers": [{"name": "web", "image": image("hello")}]}}));
    for name in ["crashing", "unpulled"] {
        pods.patch(name, &PatchParams::default(), &hello).await.expect("change the image");
    }
    for name in ["crashing", "unpulled"] {
        let running = wait_for(&pods, name, "running the new image", |p| {
            let status = container_status(p);
            status["image"] == image("hello") && status["ready"] == true
        })
        .await;
        let restarts = if name == "crashing" { 1 } else { 0 };
        assert_eq!(container_status(&running)["restartCount"], restarts, "{name}: the crash counted, the change not");
    }
}

#[tokio::test]
async fn an_opted_in_pod_restarts_a_command_container_whose_image_changes() {
    use kube::api::{Patch, PatchParams};

    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let mut both = pod(
        "mixed",
        "Never",
        json!([
            {"name": "web", "image": image("hello"), "ports": [{"containerPort": 8080}]},
            {"name": "worker", "image": image("inspect"), "args": ["sleep:600000"]},
        ]),
    );
    both.metadata.annotations = Some([("wasmkube.dev/hot-swap".to_string(), "true".to_string())].into());
    pods.create(&PostParams::default(), &both).await.expect("create");
    let named = |p: &Pod, name: &str| {
        let statuses = p.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
        statuses.into_iter().find(|c| c.name == name).map(|c| serde_json::to_value(c).expect("status"))
    };
    let worker_running = |p: &Pod| named(p, "worker").is_some_and(|w| w["state"]["running"].is_object());
    wait_for(&pods, "mixed", "both running", |p| {
        worker_running(p) && named(p, "web").is_some_and(|w| w["ready"] == true)
    })
    .await;

    // `job` reads "sleep:600000" as its count, which is not a number: it fails (exit code 1 under
    // WASI 0.2, which has no other codes), so its run shows.
    let patch = Patch::Strategic(json!({"spec": {"containers": [{"name": "worker", "image": image("job")}]}}));
    pods.patch("mixed", &PatchParams::default(), &patch).await.expect("change the worker's image");
    let after = wait_for(&pods, "mixed", "the worker restarted on job", |p| {
        named(p, "worker").is_some_and(|w| w["image"] == image("job") && w["state"]["terminated"]["exitCode"] == 1)
    })
    .await;
    let worker = named(&after, "worker").expect("worker");
    assert_eq!(worker["restartCount"], 1, "{worker}");
    assert_eq!(worker["lastState"]["terminated"]["reason"], "Completed", "{worker}");
    let web = named(&after, "web").expect("web");
    assert_eq!((web["restartCount"].clone(), web["ready"].clone()), (json!(0), json!(true)), "{web}");
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    let list = events.list(&ListParams::default().fields("involvedObject.name=mixed")).await.expect("events");
    assert!(!list.items.iter().any(|e| e.reason.as_deref() == Some("SwapFailed")), "a command is not swapped");
}

#[tokio::test]
async fn an_opted_in_deployment_swaps_images_into_its_pods_instead_of_rolling_out() {
    use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
    use kube::api::{Patch, PatchParams};

    let (cluster, _agent) = cluster_with_agent().await;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let replica_sets: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "swapper"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "swapper"}},
                 "template": {"metadata": {"labels": {"app": "swapper"}, "annotations": {"wasmkube.dev/hot-swap": "true"}},
                              "spec": {"containers": [{"name": "web", "image": image("hello"),
                                                       "ports": [{"containerPort": 8080}]}]}}},
    }))
    .expect("deployment");
    deployments.create(&PostParams::default(), &deployment).await.expect("create");
    let selected = ListParams::default().labels("app=swapper");
    let ready_pods = |wanted_image: String| {
        let (pods, selected) = (pods.clone(), selected.clone());
        move || {
            let (pods, selected, wanted_image) = (pods.clone(), selected.clone(), wanted_image.clone());
            async move {
                let list = pods.list(&selected).await.ok()?.items;
                let all = list.len() == 2
                    && list.iter().all(|p| {
                        let status = container_status(p);
                        status["ready"] == true && status["image"] == wanted_image.as_str()
                    });
                all.then_some(list)
            }
        }
    };
    let before = eventually(Duration::from_secs(60), "two hello pods Ready", ready_pods(image("hello"))).await;

    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image("flaky")}]}}}});
    deployments.patch("swapper", &PatchParams::default(), &Patch::Strategic(patch)).await.expect("new image");
    let after = eventually(Duration::from_secs(60), "both pods swapped", ready_pods(image("flaky"))).await;

    // The same pods, IPs and ReplicaSet: swapped, not rolled out.
    let identity = |list: &[Pod]| {
        let mut ids: Vec<_> =
            list.iter().map(|p| (p.metadata.name.clone(), p.status.as_ref().and_then(|s| s.pod_ip.clone()))).collect();
        ids.sort();
        ids
    };
    assert_eq!(identity(&after), identity(&before));
    for pod in &after {
        assert_eq!(container_status(pod)["restartCount"], 0);
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("ip");
        assert!(http_get(&format!("{ip}:8080")).await.contains("flaky: a sample for probes"));
    }
    let sets = replica_sets.list(&ListParams::default()).await.expect("list").items;
    assert_eq!(sets.len(), 1, "no new ReplicaSet");
    let rs_image =
        serde_json::to_value(&sets[0]).expect("json")["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert_eq!(rs_image, image("flaky"));
    let done = eventually(Duration::from_secs(30), "the rollout complete", || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("swapper").await.ok()?;
            let s = d.status.clone()?;
            (s.observed_generation == d.metadata.generation && s.updated_replicas == Some(2)).then_some(d)
        }
    })
    .await;
    assert_eq!(done.status.and_then(|s| s.available_replicas), Some(2));
}
