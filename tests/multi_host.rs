//! Services across real separate hosts: each agent runs in its own network namespace (its own
//! loopback, so its pod IPs and ClusterIPs exist only there), joined to the server by a bridge, as
//! machines on one LAN are. A pod on one host calls `http://hello` whose only endpoint runs on
//! another; a NodePort on one host reaches a pod on the other; a guest connects raw TCP to pods on
//! the other host by their IPs (selected by a Service or not) and by a headless Service's name; a
//! UDP NodePort reaches a pod on the other host; all go through the other node's tunnel. When a
//! host is lost (agent killed, link cut) its pods turn not ready once the node grace period ends
//! and the survivors serve every request.
//!
//! Needs root and `ip` (iproute2); without them it fails, unless `WASMKUBE_SKIP_NETNS=1` says
//! to skip it. The namespaces, veths and bridge are removed on drop (and leftovers of a killed
//! run with the same names before the next starts).

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::process::Server;
use support::{eventually, get, run_to_completion, sample, which_pod};

/// Runs `ip ARGS`, panicking with its stderr if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A LAN of hosts: a bridge in this namespace (where the server runs, at `.1`) and one network
/// namespace per agent host, each with a veth on the bridge at `.2`, `.3`, ….
struct Lan {
    tag: String,
    subnet: String,
    hosts: Vec<String>,
}

impl Lan {
    fn new(hosts: usize) -> Self {
        // Names unique to this process, within the 15 characters interface names may have.
        let tag = format!("wk{}", std::process::id() % 100_000);
        let subnet = format!("10.{}.{}", 200 + std::process::id() % 50, std::process::id() % 250);
        let mut lan = Lan { tag, subnet, hosts: Vec::new() };
        lan.remove(hosts);
        let bridge = format!("{}br", lan.tag);
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{}.1/24", lan.subnet), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        for i in 0..hosts {
            let netns = format!("{}-h{i}", lan.tag);
            ip(&["netns", "add", &netns]);
            lan.hosts.push(netns.clone());
            let veth = lan.veth(i);
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns]);
            ip(&["link", "set", &veth, "master", &bridge, "up"]);
            ip(&["-n", &netns, "addr", "add", &format!("{}/24", lan.host_ip(i)), "dev", "eth0"]);
            ip(&["-n", &netns, "link", "set", "eth0", "up"]);
            ip(&["-n", &netns, "link", "set", "lo", "up"]);
        }
        lan
    }

    fn server_ip(&self) -> String {
        format!("{}.1", self.subnet)
    }

    fn host_ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 2)
    }

    fn veth(&self, i: usize) -> String {
        format!("{}v{i}", self.tag)
    }

    /// Cuts host `i` off the LAN: its packets are dropped, as when a machine loses power.
    fn cut(&self, i: usize) {
        ip(&["link", "set", &self.veth(i), "down"]);
    }
}

impl Lan {
    /// Removes this LAN's namespaces and bridge, if they exist. Deleting a namespace deletes its
    /// veth end, and with it the peer on the bridge.
    fn remove(&self, hosts: usize) {
        let quiet = |args: &[&str]| {
            let _ = Command::new("ip").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        for i in 0..hosts {
            quiet(&["netns", "del", &format!("{}-h{i}", self.tag)]);
        }
        quiet(&["link", "del", &format!("{}br", self.tag)]);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.remove(self.hosts.len());
    }
}

/// Whether this process may build network namespaces; if not, why.
fn cannot_build_hosts() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref() != Some("0") {
        return Some("not running as root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is not installed".into());
    }
    None
}

fn hello_pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "hello"}},
        "spec": {"nodeName": node, "containers": [{
            "name": "hello", "image": format!("file://{}", sample("hello").display()),
            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "ports": [{"name": "http", "containerPort": 8080}]}]},
    }))
    .expect("pod")
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait_ready(pods: &Api<Pod>, name: &str) {
    let what = format!("pod {name} ready");
    eventually(Duration::from_secs(60), &what, || async { pods.get(name).await.ok().filter(pod_ready) }).await;
}

/// Creates a NodePort Service `name` for pods labelled `app=APP`; its node port.
async fn node_port(services: &Api<Service>, name: &str, app: &str) -> u16 {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"type": "NodePort", "selector": {"app": app}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }))
    .expect("service");
    let created = services.create(&PostParams::default(), &service).await.expect("create service");
    let port = created.spec.and_then(|s| s.ports).and_then(|p| p.first().and_then(|p| p.node_port));
    u16::try_from(port.expect("a node port")).expect("a port")
}

/// The `(pod, ready)` endpoints of Service `name`.
async fn endpoints(slices: &Api<EndpointSlice>, name: &str) -> BTreeSet<(String, bool)> {
    let selector = format!("kubernetes.io/service-name={name}");
    let list = slices.list(&ListParams::default().labels(&selector)).await.map(|l| l.items).unwrap_or_default();
    list.iter()
        .flat_map(|s| s.endpoints.iter())
        .map(|e| {
            let pod = e.target_ref.as_ref().and_then(|r| r.name.clone()).unwrap_or_default();
            (pod, e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
        })
        .collect()
}

#[tokio::test]
async fn services_reach_pods_on_other_hosts_through_their_node_tunnel_and_survive_a_lost_host() {
    if std::env::var("WASMKUBE_SKIP_NETNS").as_deref() == Ok("1") {
        eprintln!("skipped: WASMKUBE_SKIP_NETNS=1");
        return;
    }
    if let Some(why) = cannot_build_hosts() {
        panic!("building hosts needs network namespaces: {why} (WASMKUBE_SKIP_NETNS=1 skips this test)");
    }
    let sample_built = sample("hello"); // build the samples before the clock of any wait starts
    assert!(sample_built.exists());
    let lan = Lan::new(2);
    let dir = tempfile::tempdir().expect("tempdir");
    // Agents heartbeat every 10 s, so the grace period has to be well beyond that: a heartbeat
    // late on a busy machine must not make a live host look lost.
    let api_addr = format!("{}:0", lan.server_ip());
    let server = Server::start(dir.path(), &api_addr, &["--node-monitor-grace-period", "25"]).await;
    let client = server.client.clone();

    let start_agent = |i: usize, node: &str| {
        let flags = ["--node-ip", &lan.host_ip(i), "--dns-upstream", "none"];
        server.agent(dir.path(), node, Some(&lan.hosts[i]), &flags)
    };
    let _agent_b = start_agent(0, "host-b");
    let mut agent_c = start_agent(1, "host-c");
    let (b_ip, c_ip) = (lan.host_ip(0), lan.host_ip(1));
    let at = |host: &str, port: u16| -> SocketAddr { format!("{host}:{port}").parse().expect("address") };

    // hello runs only on host-c; frontend only on host-b.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &hello_pod("hello-c", "host-c")).await.expect("create");
    let frontend: Pod = serde_json::from_value(json!({
        "metadata": {"name": "frontend-b", "labels": {"app": "frontend"}},
        "spec": {"nodeName": "host-b", "containers": [{
            "name": "frontend", "image": format!("file://{}", sample("frontend").display()),
            "env": [{"name": "BACKEND", "value": "http://hello/"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "ports": [{"name": "http", "containerPort": 8080}]}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &frontend).await.expect("create");
    let hello_port = node_port(&services, "hello", "hello").await;
    let frontend_port = node_port(&services, "frontend", "frontend").await;
    wait_ready(&pods, "hello-c").await;
    wait_ready(&pods, "frontend-b").await;

    // 1. A pod on host-b calls `http://hello`, whose only endpoint is on host-c.
    let answer = eventually(Duration::from_secs(20), "frontend on host-b to reach hello on host-c", || async {
        get(at(&b_ip, frontend_port)).await.filter(|body| body.contains("pod=hello-c"))
    })
    .await;
    assert!(answer.contains("frontend pod=frontend-b asked http://hello/"), "{answer}");
    assert!(answer.contains("pod=hello-c"), "hello on host-c answered: {answer}");

    // 2. The NodePort of host-b reaches the pod on host-c; so does host-c's own.
    for host in [&b_ip, &c_ip] {
        let what = format!("hello's NodePort on {host} to reach hello-c");
        let pod = eventually(Duration::from_secs(20), &what, || which_pod(at(host, hello_port))).await;
        assert_eq!(pod, "hello-c");
    }

    // 3. A guest on host-b connects raw TCP to the echo pod on host-c: by a headless Service's name
    // (its DNS answer is the pod IP) and by the pod IP itself.
    let echo: Pod = serde_json::from_value(json!({
        "metadata": {"name": "echo-c", "labels": {"app": "echo"}},
        "spec": {"nodeName": "host-c", "containers": [{
            "name": "echo", "image": format!("file://{}", sample("echo").display()), "args": ["17009"],
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            "ports": [{"name": "echo", "containerPort": 17009}]}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &echo).await.expect("create");
    let headless: Service = serde_json::from_value(json!({
        "metadata": {"name": "echo"},
        "spec": {"clusterIP": "None", "selector": {"app": "echo"}, "ports": [{"name": "echo", "port": 17009}]},
    }))
    .expect("service");
    services.create(&PostParams::default(), &headless).await.expect("create service");
    wait_ready(&pods, "echo-c").await;
    let echo_ip = pods.get("echo-c").await.expect("get").status.and_then(|s| s.pod_ip).expect("pod IP");
    let want = BTreeSet::from([("echo-c".to_string(), true)]);
    eventually(Duration::from_secs(20), "echo-c an endpoint of echo", || async {
        (endpoints(&slices, "echo").await == want).then_some(())
    })
    .await;
    // And a pod no Service selects, by its IP.
    let mut lone = echo.clone();
    lone.metadata.name = Some("echo-lone".into());
    lone.metadata.labels = None;
    lone.metadata.resource_version = None;
    pods.create(&PostParams::default(), &lone).await.expect("create");
    wait_ready(&pods, "echo-lone").await;
    let lone_ip = pods.get("echo-lone").await.expect("get").status.and_then(|s| s.pod_ip).expect("pod IP");
    let targets = ["echo:17009".to_string(), format!("{echo_ip}:17009"), format!("{lone_ip}:17009")];
    let args: Vec<String> = targets.iter().enumerate().map(|(i, t)| format!("tcp:{t}=raw-{i}")).collect();
    let caller: Pod = serde_json::from_value(json!({
        "metadata": {"name": "tcp-caller-b"},
        "spec": {"nodeName": "host-b", "restartPolicy": "Never", "containers": [{
            "name": "inspect", "image": format!("file://{}", sample("inspect").display()), "args": args}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &caller).await.expect("create");
    let (phase, log) = run_to_completion(&pods, "tcp-caller-b").await;
    assert_eq!(phase, "Succeeded", "{log}");
    let want: Vec<String> = targets.iter().enumerate().map(|(i, t)| format!("tcp {t}: raw-{i}")).collect();
    assert_eq!(log.lines().collect::<Vec<_>>(), want);

    // 4. UDP too: a datagram to host-b's NodePort reaches an echo pod on host-c and comes back.
    let udp_echo: Pod = serde_json::from_value(json!({
        "metadata": {"name": "udp-echo-c", "labels": {"app": "udp-echo"}},
        "spec": {"nodeName": "host-c", "containers": [{
            "name": "echo", "image": format!("file://{}", sample("inspect").display()), "args": ["udp-echo:17010"],
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            "ports": [{"containerPort": 17010, "protocol": "UDP"}]}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &udp_echo).await.expect("create");
    let udp_service: Service = serde_json::from_value(json!({
        "metadata": {"name": "udp-echo"},
        "spec": {"type": "NodePort", "selector": {"app": "udp-echo"},
                 "ports": [{"port": 17010, "protocol": "UDP"}]},
    }))
    .expect("service");
    let created = services.create(&PostParams::default(), &udp_service).await.expect("create service");
    let udp_port = created.spec.and_then(|s| s.ports).and_then(|p| p.first().and_then(|p| p.node_port)).expect("port");
    wait_ready(&pods, "udp-echo-c").await;
    let socket = tokio::net::UdpSocket::bind(format!("{}:0", lan.server_ip())).await.expect("bind");
    let echoed = eventually(Duration::from_secs(20), "a datagram echoed from host-c through host-b", || async {
        socket.send_to(b"ping over the tunnel", format!("{b_ip}:{udp_port}")).await.ok()?;
        let mut buffer = [0u8; 64];
        let (n, _) =
            tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buffer)).await.ok()?.ok()?;
        Some(buffer[..n].to_vec())
    })
    .await;
    assert_eq!(echoed, b"ping over the tunnel");

    // 5. With hello on both hosts, host-b's NodePort spreads over both.
    pods.create(&PostParams::default(), &hello_pod("hello-b", "host-b")).await.expect("create");
    wait_ready(&pods, "hello-b").await;
    eventually(Duration::from_secs(20), "answers from both hello pods through host-b", || async {
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            seen.extend(which_pod(at(&b_ip, hello_port)).await);
        }
        (seen.len() == 2).then_some(())
    })
    .await;

    // 6. Host-c is lost: its agent dies and its link goes down, so packets to it vanish. Once the
    // grace period is over its pod is not ready, and host-b serves every request itself.
    agent_c.kill();
    lan.cut(1);
    let want: BTreeSet<(String, bool)> = [("hello-b".to_string(), true), ("hello-c".to_string(), false)].into();
    eventually(Duration::from_secs(60), "hello-c a not-ready endpoint", || async {
        (endpoints(&slices, "hello").await == want).then_some(())
    })
    .await;
    // Every request is answered by host-b, and none of them first waited for a dial to the cut
    // host to time out (the proxy's connect timeout is 2 s; a request here takes milliseconds):
    // the not-ready endpoint is out of the proxy's rotation, not merely skipped.
    for _ in 0..10 {
        let started = std::time::Instant::now();
        let pod = which_pod(at(&b_ip, hello_port)).await;
        let took = started.elapsed();
        assert_eq!(pod.as_deref(), Some("hello-b"));
        assert!(took < Duration::from_millis(1500), "a request waited {took:?}: it tried the lost host first");
    }
}
