//! The Service proxy end to end: a real control plane and agent run three `hello` pods behind a
//! NodePort Service; plain HTTP over TCP to its ClusterIP and its node port reaches them, spread
//! over all three, never a pod that left, and one pod only with ClientIP affinity. A LoadBalancer
//! Service answers on the node's address, which its status lists.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{TestCluster, eventually, get, run_to_completion, sample, which_pod};
use tokio::io::AsyncReadExt;
use wasmkube_control::objects::ServiceNetwork;
use wasmkube_runtime::agent::{Agent, AgentConfig};

/// Creates the Service `name` in `default` with `spec`; its ClusterIP.
async fn create_service(client: &kube::Client, name: &str, spec: serde_json::Value) -> String {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("service");
    let created = services.create(&PostParams::default(), &service).await.expect("create the Service");
    created.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP")
}

#[tokio::test]
async fn service_traffic_reaches_ready_pods_by_cluster_ip_and_node_port() {
    // Addresses no other test cluster on this host uses: listeners are shared between processes.
    let network = ServiceNetwork::new("127.48.0.0/24", "31900-31909").expect("valid");
    let cluster = TestCluster::start_with(|c| c.service_network = network).await;
    let mut config = AgentConfig::new("proxy-node", "127.0.0.1".parse().expect("ip"), cluster.dir.path().join("agent"));
    config.node_api_port = 0;
    config.api_token = cluster.control.pki.admin_token.clone();
    let _agent = Agent::start(cluster.client.clone(), config).await.expect("agent starts");

    let client = cluster.client.clone();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "hello"}},
                 "template": {"metadata": {"labels": {"app": "hello"}},
                              "spec": {"containers": [{"name": "hello", "image": format!("file://{}", sample("hello").display()),
                                  "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                                  "ports": [{"name": "http", "containerPort": 8080}]}]}}},
    }))
    .expect("rs");
    sets.create(&PostParams::default(), &rs).await.expect("create");
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "hello"},
        "spec": {"type": "NodePort", "selector": {"app": "hello"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}))
    .expect("service");
    let svc = services.create(&PostParams::default(), &svc).await.expect("service");
    let spec = svc.spec.expect("spec");
    let cluster_ip: SocketAddr = format!("{}:80", spec.cluster_ip.expect("a ClusterIP")).parse().expect("addr");
    let node_port = spec.ports.expect("ports")[0].node_port.expect("a node port");
    let node_addr: SocketAddr = format!("127.0.0.1:{node_port}").parse().expect("addr");

    let names = |pods: Vec<Pod>| pods.into_iter().filter_map(|p| p.metadata.name).collect::<BTreeSet<String>>();
    let all: BTreeSet<String> = eventually(Duration::from_secs(60), "three pods reached through the ClusterIP", || {
        let pods = pods.clone();
        async move {
            let listed = names(pods.list(&ListParams::default().labels("app=hello")).await.ok()?.items);
            let mut seen = BTreeSet::new();
            for _ in 0..12 {
                seen.insert(which_pod(cluster_ip).await?);
            }
            (listed.len() == 3 && seen == listed).then_some(seen)
        }
    })
    .await;
    // Round robin: a run of requests reaches every pod; the node port routes the same way.
    let mut through_node_port = BTreeSet::new();
    for _ in 0..9 {
        through_node_port.insert(which_pod(node_addr).await.expect("an answer through the node port"));
    }
    assert_eq!(through_node_port, all);

    // A pod that goes stops getting traffic once its endpoint leaves.
    let gone = all.iter().next().expect("a pod").clone();
    pods.delete(&gone, &DeleteParams::default()).await.expect("delete");
    eventually(Duration::from_secs(30), "traffic only to the pods still there", || {
        let gone = gone.clone();
        async move {
            let mut seen = BTreeSet::new();
            for _ in 0..9 {
                seen.insert(which_pod(cluster_ip).await?);
            }
            (!seen.contains(&gone)).then_some(())
        }
    })
    .await;

    // A LoadBalancer Service is served on the node's address at its port, which its status names.
    let lb: Service = serde_json::from_value(json!({"metadata": {"name": "hello-lb"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "hello"}, "ports": [{"name": "http", "port": 18481, "targetPort": "http"}]}}))
    .expect("service");
    services.create(&PostParams::default(), &lb).await.expect("create");
    eventually(Duration::from_secs(30), "the load balancer's ingress", || {
        let services = services.clone();
        async move {
            let status = services.get("hello-lb").await.ok()?.status?.load_balancer?;
            let ips: Vec<String> = status.ingress?.into_iter().filter_map(|i| i.ip).collect();
            (ips == ["127.0.0.1"]).then_some(())
        }
    })
    .await;
    let lb_addr: SocketAddr = "127.0.0.1:18481".parse().expect("addr");
    eventually(
        Duration::from_secs(30),
        "an answer through the load balancer",
        || async move { which_pod(lb_addr).await },
    )
    .await;

    // ClientIP affinity keeps this client on one pod.
    let sticky = Patch::Merge(json!({"spec": {"sessionAffinity": "ClientIP"}}));
    services.patch("hello", &PatchParams::default(), &sticky).await.expect("patch");
    eventually(Duration::from_secs(30), "one pod for this client", || async move {
        let mut seen = BTreeSet::new();
        for _ in 0..8 {
            seen.insert(which_pod(cluster_ip).await?);
        }
        (seen.len() == 1).then_some(())
    })
    .await;
}

/// A control plane with the Service network given and an agent whose guests resolve names through
/// a cluster DNS server next to it, as `wasmkube up` runs them; all stop when dropped.
struct GuestNode {
    // Dropped in this order: the agent, the DNS server, the control plane.
    _agent: Agent,
    _stop: tokio_util::sync::DropGuard,
    cluster: TestCluster,
}

impl GuestNode {
    async fn start(service_cidr: &str, node_ports: &str) -> Self {
        let network = ServiceNetwork::new(service_cidr, node_ports).expect("valid");
        let cluster = TestCluster::start_with(|c| c.service_network = network).await;
        let cancel = tokio_util::sync::CancellationToken::new();
        let zone = std::sync::Arc::new(std::sync::RwLock::new(wasmkube_dns::zone::Zone::new("cluster.local")));
        tokio::spawn(wasmkube_dns::watch::follow(cluster.client.clone(), zone.clone(), cancel.clone()));
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let handler = wasmkube_dns::server::Handler::new(zone, None);
        let dns = wasmkube_dns::server::serve(any, handler, cancel.clone()).await.expect("DNS").addr;
        let mut config =
            AgentConfig::new("guest-node", "127.0.0.1".parse().expect("ip"), cluster.dir.path().join("agent"));
        config.node_api_port = 0;
        config.api_token = cluster.control.pki.admin_token.clone();
        config.cluster_dns =
            Some(wasmkube_runtime::host::outbound::ClusterDns { server: dns, domain: "cluster.local".into() });
        let agent = Agent::start(cluster.client.clone(), config).await.expect("agent starts");
        GuestNode { cluster, _agent: agent, _stop: cancel.drop_guard() }
    }
}

#[tokio::test]
async fn a_guest_reaches_a_service_by_its_names_and_its_cluster_ip() {
    let node = GuestNode::start("127.49.0.0/24", "31910-31919").await;
    let cluster = &node.cluster;

    let client = cluster.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let hello: Pod = serde_json::from_value(json!({"metadata": {"name": "hello-0", "labels": {"app": "hello"}},
        "spec": {"containers": [{"name": "hello", "image": format!("file://{}", sample("hello").display()),
            "env": [{"name": "POD_NAME", "value": "hello-0"}], "ports": [{"name": "http", "containerPort": 8080}]}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &hello).await.expect("hello");
    let spec = json!({"selector": {"app": "hello"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]});
    let cluster_ip = create_service(&client, "hello", spec).await;
    // One frontend per way of naming the Service.
    let backends = [
        ("short", "http://hello/".to_string()),
        ("namespaced", "http://hello.default/".to_string()),
        ("fqdn", "http://hello.default.svc.cluster.local/".to_string()),
        ("ip", format!("http://{cluster_ip}/")),
    ];
    for (name, backend) in &backends {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": format!("frontend-{name}")},
            "spec": {"containers": [{"name": "frontend", "image": format!("file://{}", sample("frontend").display()),
                "env": [{"name": "BACKEND", "value": backend}], "ports": [{"name": "http", "containerPort": 8080}]}]}}))
        .expect("pod");
        pods.create(&PostParams::default(), &pod).await.expect("frontend");
    }
    for (name, backend) in &backends {
        let pod_name = format!("frontend-{name}");
        let body = eventually(Duration::from_secs(60), &format!("{pod_name} answered through hello"), || {
            let pods = pods.clone();
            let pod_name = pod_name.clone();
            async move {
                let ip = pods.get(&pod_name).await.ok()?.status?.pod_ip?;
                let body = get(format!("{ip}:8080").parse().ok()?).await?;
                body.contains("200 Hello from wasmkube! pod=hello-0").then_some(body)
            }
        })
        .await;
        assert!(body.contains(&format!("asked {backend}")), "{body}");
    }
}

#[tokio::test]
async fn a_guest_connects_raw_tcp_to_a_service_by_name_and_cluster_ip_and_to_a_pod_ip() {
    let node = GuestNode::start("127.51.0.0/24", "31930-31939").await;
    let cluster = &node.cluster;
    let client = cluster.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let echo: Pod = serde_json::from_value(json!({"metadata": {"name": "echo-0", "labels": {"app": "echo"}},
        "spec": {"containers": [{"name": "echo", "image": format!("file://{}", sample("echo").display()),
            "args": ["17008"], "ports": [{"name": "echo", "containerPort": 17008}],
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &echo).await.expect("echo");
    let spec = json!({"selector": {"app": "echo"}, "ports": [{"name": "echo", "port": 7007, "targetPort": "echo"}]});
    let cluster_ip = create_service(&client, "echo", spec).await;
    let pod_ip = eventually(Duration::from_secs(60), "echo ready", || async {
        let pod = pods.get("echo-0").await.ok()?;
        let ready = pod.status.as_ref()?.conditions.as_ref()?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(pod.status?.pod_ip?)
    })
    .await;
    let targets = [
        "echo:7007".to_string(),
        "echo.default:7007".to_string(),
        "echo.default.svc.cluster.local:7007".to_string(),
        format!("{cluster_ip}:7007"),
        format!("{pod_ip}:17008"),
    ];
    let args: Vec<String> = targets.iter().enumerate().map(|(i, t)| format!("tcp:{t}=hello-{i}")).collect();
    let caller: Pod = serde_json::from_value(json!({"metadata": {"name": "tcp-caller"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "inspect",
            "image": format!("file://{}", sample("inspect").display()), "args": args}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &caller).await.expect("caller");
    let (phase, log) = run_to_completion(&pods, "tcp-caller").await;
    assert_eq!(phase, "Succeeded", "{log}");
    let want: Vec<String> = targets.iter().enumerate().map(|(i, t)| format!("tcp {t}: hello-{i}")).collect();
    assert_eq!(log.lines().collect::<Vec<_>>(), want);
}

#[tokio::test]
async fn udp_services_relay_datagrams_and_replies_per_client() {
    let network = ServiceNetwork::new("127.50.0.0/24", "31920-31929").expect("valid");
    let cluster = TestCluster::start_with(|c| c.service_network = network).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let me =
        wasmkube_runtime::proxy::routes::Me { node_name: "udp-node".into(), node_ip: "127.0.0.1".parse().expect("ip") };
    tokio::spawn(wasmkube_runtime::proxy::run(cluster.client.clone(), me, String::new(), cancel.clone()));
    // Two UDP "pods" answering with their name, as a Service without a selector names them.
    let mut backends = Vec::new();
    for name in ["udp-a", "udp-b"] {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        backends.push(socket.local_addr().expect("addr"));
        tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buffer).await {
                let reply = format!("{name}:{}", String::from_utf8_lossy(&buffer[..n]));
                let _ = socket.send_to(reply.as_bytes(), from).await;
            }
        });
    }
    let client = cluster.client.clone();
    let ip =
        create_service(&client, "udp", json!({"ports": [{"name": "echo", "port": 5300, "protocol": "UDP"}]})).await;
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> = Api::namespaced(client.clone(), "default");
    for (i, backend) in backends.iter().enumerate() {
        let slice = serde_json::from_value(json!({
            "metadata": {"name": format!("udp-{i}"), "labels": {"kubernetes.io/service-name": "udp"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [backend.ip().to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "echo", "port": backend.port(), "protocol": "UDP"}],
        }))
        .expect("slice");
        slices.create(&PostParams::default(), &slice).await.expect("slice");
    }
    let service: SocketAddr = format!("{ip}:5300").parse().expect("addr");
    // Each client socket is one session: its datagrams all go to one backend, whose replies come back.
    let answers = eventually(Duration::from_secs(20), "replies from both backends", || async move {
        let mut names = BTreeSet::new();
        for _ in 0..4 {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
            socket.connect(service).await.ok()?;
            let mut seen = BTreeSet::new();
            for word in ["one", "two"] {
                socket.send(word.as_bytes()).await.ok()?;
                let mut buffer = [0u8; 512];
                let n = tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buffer)).await.ok()?.ok()?;
                let reply = String::from_utf8_lossy(&buffer[..n]).to_string();
                let (name, echoed) = reply.split_once(':')?;
                if echoed != word {
                    return None;
                }
                seen.insert(name.to_string());
            }
            if seen.len() != 1 {
                return None;
            }
            names.extend(seen);
        }
        (names.len() == 2).then_some(names)
    })
    .await;
    assert_eq!(answers, BTreeSet::from(["udp-a".to_string(), "udp-b".to_string()]));

    // A TCP Service with no endpoints resets connections, as a closed port would.
    let ip = create_service(&client, "empty", json!({"ports": [{"name": "tcp", "port": 7777}]})).await;
    let addr: SocketAddr = format!("{ip}:7777").parse().expect("addr");
    let outcome = eventually(Duration::from_secs(20), "a reset from the empty Service", || async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut buffer = [0u8; 16];
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer)).await.ok()? {
            Err(e) => Some(e.kind()),
            Ok(_) => None,
        }
    })
    .await;
    assert_eq!(outcome, std::io::ErrorKind::ConnectionReset);
}
