//! The node agent end to end: a real control plane, a real agent and real sample components —
//! node registration, Running/Ready pods serving HTTP on their pod IP, commands that complete,
//! restarts with CrashLoopBackOff, clear reasons for bad images, and graceful deletion.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use support::{TestCluster, eventually, sample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmkube_runtime::agent::{Agent, AgentConfig};

const NODE: &str = "node-a";

async fn cluster_with_agent() -> (TestCluster, Agent) {
    let cluster = TestCluster::start().await;
    let mut config = AgentConfig::new(NODE, "127.0.0.1".parse().expect("ip"), cluster.dir.path().join("agent"));
    config.backoff_base = Duration::from_millis(200);
    config.node_api_port = 0;
    config.api_token = cluster.control.pki.admin_token.clone();
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
    assert!(cidr.starts_with("127.64."), "{cidr}");
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
    assert!(ip.starts_with("127.64."), "{ip}");
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
    let uid = done.metadata.uid.expect("uid");
    let log = cluster.dir.path().join(format!("agent/pods/default_primes_{uid}/job/0.log"));
    let text = std::fs::read_to_string(&log).expect("the container's log file");
    assert_eq!(text, "primes below 1000: 168\n");

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
async fn bad_images_give_clear_reasons() {
    let (cluster, _agent) = cluster_with_agent().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let junk = cluster.dir.path().join("junk.wasm");
    std::fs::write(&junk, b"this is not wasm").expect("write junk");
    let cases = [
        ("junk", format!("file://{}", junk.display()), "not a WebAssembly binary"),
        ("missing", "file:///nonexistent/app.wasm".to_string(), "/nonexistent/app.wasm"),
    ];
    for (name, image, _) in &cases {
        let containers = json!([{"name": "app", "image": image}]);
        pods.create(&PostParams::default(), &pod(name, "Never", containers)).await.expect("create");
    }
    for (name, _, needle) in cases {
        let failed = wait_for(&pods, name, "a failed start", |p| phase(p) == "Failed").await;
        let terminated = container_status(&failed)["state"]["terminated"].clone();
        assert_eq!(terminated["reason"], "StartError", "{terminated}");
        assert!(terminated["message"].as_str().unwrap_or("").contains(needle), "{name}: {terminated}");
    }
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

/// The text of a container's log for one run (restart count).
fn log_of(cluster: &TestCluster, pod: &Pod, container: &str, run: u32) -> String {
    let uid = pod.metadata.uid.clone().expect("uid");
    let name = pod.metadata.name.clone().expect("name");
    let path = cluster.dir.path().join(format!("agent/pods/default_{name}_{uid}/{container}/{run}.log"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
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
    let before = wait_for(&pods, "kept", "kept Ready", |p| container_status(p)["ready"] == true).await;
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
    assert_eq!(pods.list(&Default::default()).await.expect("list").items.len(), 2, "no duplicate pods");
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
        .count();
    assert_eq!(runs, 1, "the completed job ran once");
}
