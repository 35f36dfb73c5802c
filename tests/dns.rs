//! Cluster DNS end to end: the DNS server of `wasmkube-dns` fed by a real control plane's
//! Services and EndpointSlices through the API, queried over real UDP and TCP with hickory's
//! client, forwarding other names to a second server standing in for the host's upstream.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::net::client::{Client, ClientHandle};
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::net::tcp::TcpClientStream;
use hickory_server::net::udp::UdpClientStream;
use hickory_server::net::xfer::DnsMultiplexer;
use hickory_server::proto::op::{DnsResponse, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Name, RData, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{TestCluster, eventually};
use tokio_util::sync::CancellationToken;
use wasmkube_dns::server::{self, Handler};
use wasmkube_dns::zone::Zone;

async fn udp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let stream = UdpClientStream::builder(addr, TokioRuntimeProvider::default()).build();
    let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(background);
    client
}

async fn tcp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (connect, sender) = TcpClientStream::new(addr, None, None, TokioRuntimeProvider::default());
    let stream = connect.await.expect("TCP connection to the DNS server");
    let (client, background) = Client::<TokioRuntimeProvider>::from_sender(DnsMultiplexer::new(stream, sender));
    tokio::spawn(background);
    client
}

async fn ask(client: &mut Client<TokioRuntimeProvider>, name: &str, kind: RecordType) -> DnsResponse {
    let name = Name::from_str(name).expect("a name");
    client.query(name, DNSClass::IN, kind).await.expect("an answer")
}

/// The answer's records as text (`A 10.0.0.1`, `SRV 80 web.default…`, `CNAME x.`, `PTR y.`).
fn texts(response: &DnsResponse) -> Vec<String> {
    let mut out: Vec<String> = response
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => format!("A {}", a.0),
            RData::SRV(s) => format!("SRV {} {}", s.port, s.target),
            RData::CNAME(c) => format!("CNAME {}", c.0),
            RData::PTR(p) => format!("PTR {}", p.0),
            other => format!("{other:?}"),
        })
        .collect();
    out.sort();
    out
}

/// A DNS server for `domain` fed from the cluster, forwarding to `upstream`.
async fn dns_server(
    client: kube::Client,
    domain: &str,
    upstream: Option<SocketAddr>,
    cancel: &CancellationToken,
) -> SocketAddr {
    let zone = Arc::new(RwLock::new(Zone::new(domain)));
    tokio::spawn(wasmkube_dns::watch::follow(client, zone.clone(), cancel.clone()));
    let upstream = upstream.map(|addr| server::upstream_at(&[addr]).expect("resolver"));
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    server::serve(any, Handler::new(zone, upstream), cancel.clone()).await.expect("DNS server").addr
}

fn service(name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("service")
}

#[tokio::test]
async fn the_cluster_zone_answers_services_endpoints_and_pods_and_forwards_the_rest() {
    let cluster = TestCluster::start().await;
    let client = cluster.client.clone();
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    // The "upstream": a server of its own for `upstream.test`, knowing the same Services.
    let upstream = dns_server(client.clone(), "upstream.test", None, &cancel).await;
    let dns = dns_server(client.clone(), "cluster.local", Some(upstream), &cancel).await;

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let create = |s: Service| {
        let services = services.clone();
        async move { services.create(&PostParams::default(), &s).await.expect("service") }
    };
    let web =
        create(service("web", json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}))).await;
    let web_ip = web.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP");
    create(service(
        "db",
        json!({"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "pg", "port": 5432}]}),
    ))
    .await;
    create(service("ext", json!({"type": "ExternalName", "externalName": "example.com"}))).await;
    // Headless endpoints: pods bound to a node no agent runs, reported ready as an agent would.
    for (i, name) in ["db-0", "db-1"].iter().enumerate() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "db"}},
            "spec": {"nodeName": "n1", "hostname": name, "subdomain": "db",
                     "containers": [{"name": "c", "image": "pg:1", "ports": [{"name": "pg", "containerPort": 5432}]}]}}))
        .expect("pod");
        pods.create(&PostParams::default(), &pod).await.expect("pod");
        let ip = format!("10.1.0.{}", i + 1);
        let status =
            json!({"status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status)).await.expect("status");
    }

    let mut udp = udp_client(dns).await;
    // The zone follows a watch: wait for the last Service created, then the others are in too.
    eventually(Duration::from_secs(10), "ext's CNAME", || {
        let mut udp = udp.clone();
        async move {
            let answer = texts(&ask(&mut udp, "ext.default.svc.cluster.local.", RecordType::A).await);
            (answer == ["CNAME example.com."]).then_some(())
        }
    })
    .await;
    let want = vec![format!("A {web_ip}")];
    eventually(Duration::from_secs(10), "web's A record", || {
        let mut udp = udp.clone();
        let want = want.clone();
        async move { (texts(&ask(&mut udp, "web.default.svc.cluster.local.", RecordType::A).await) == want).then_some(()) }
    })
    .await;
    let answer = ask(&mut udp, "web.default.svc.cluster.local.", RecordType::A).await;
    assert!(answer.metadata.authoritative);
    assert_eq!(answer.answers[0].ttl, server::TTL);
    assert_eq!(
        texts(&ask(&mut udp, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV).await),
        ["SRV 80 web.default.svc.cluster.local."]
    );
    let reverse = Name::from(web_ip.parse::<Ipv4Addr>().expect("an IPv4 ClusterIP")).to_ascii();
    assert_eq!(texts(&ask(&mut udp, &reverse, RecordType::PTR).await), ["PTR web.default.svc.cluster.local."]);
    let kubernetes = ask(&mut udp, "kubernetes.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(texts(&kubernetes), ["A 127.32.0.1"]);
    assert_eq!(texts(&ask(&mut udp, "ext.default.svc.cluster.local.", RecordType::A).await), ["CNAME example.com."]);

    // Headless: the ready pods, by the Service name, their hostnames and SRV.
    let want = vec!["A 10.1.0.1".to_string(), "A 10.1.0.2".to_string()];
    eventually(Duration::from_secs(10), "db's endpoints", || {
        let mut udp = udp.clone();
        let want = want.clone();
        async move { (texts(&ask(&mut udp, "db.default.svc.cluster.local.", RecordType::A).await) == want).then_some(()) }
    })
    .await;
    assert_eq!(texts(&ask(&mut udp, "db-1.db.default.svc.cluster.local.", RecordType::A).await), ["A 10.1.0.2"]);
    assert_eq!(
        texts(&ask(&mut udp, "_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV).await),
        ["SRV 5432 db-0.db.default.svc.cluster.local.", "SRV 5432 db-1.db.default.svc.cluster.local."]
    );
    assert_eq!(
        texts(&ask(&mut udp, "1.0.1.10.in-addr.arpa.", RecordType::PTR).await),
        ["PTR db-0.db.default.svc.cluster.local."]
    );
    assert_eq!(texts(&ask(&mut udp, "10-1-2-3.default.pod.cluster.local.", RecordType::A).await), ["A 10.1.2.3"]);

    // Unknown cluster names are NXDOMAIN with the zone's SOA; a known name without the type is NODATA.
    let missing = ask(&mut udp, "nope.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(missing.authorities.first().map(|r| r.record_type()), Some(RecordType::SOA));
    let no_data = ask(&mut udp, "web.default.svc.cluster.local.", RecordType::AAAA).await;
    assert_eq!((no_data.metadata.response_code, no_data.answers.len()), (ResponseCode::NoError, 0));

    // Other names go upstream.
    let forwarded = ask(&mut udp, "web.default.svc.upstream.test.", RecordType::A).await;
    assert_eq!(texts(&forwarded), [format!("A {web_ip}")]);
    let forwarded_missing = ask(&mut udp, "nope.default.svc.upstream.test.", RecordType::A).await;
    assert_eq!(forwarded_missing.metadata.response_code, ResponseCode::NXDomain);

    // Changes show at once: a Service deleted is gone.
    services.delete("ext", &Default::default()).await.expect("delete");
    eventually(Duration::from_secs(10), "ext gone", || {
        let mut udp = udp.clone();
        async move {
            let answer = ask(&mut udp, "ext.default.svc.cluster.local.", RecordType::A).await;
            (answer.metadata.response_code == ResponseCode::NXDomain).then_some(())
        }
    })
    .await;

    // TCP answers the same.
    let mut tcp = tcp_client(dns).await;
    assert_eq!(texts(&ask(&mut tcp, "web.default.svc.cluster.local.", RecordType::A).await), [format!("A {web_ip}")]);
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let cluster = TestCluster::start().await;
    let client = cluster.client.clone();
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let dns = dns_server(client.clone(), "cluster.local", None, &cancel).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let spec = json!({"clusterIP": "None", "selector": {"app": "many"}, "ports": [{"port": 80}]});
    services.create(&PostParams::default(), &service("many", spec)).await.expect("service");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..60 {
        let name = format!("many-{i}");
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "many"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x:1"}]}}))
        .expect("pod");
        pods.create(&PostParams::default(), &pod).await.expect("pod");
        let status = json!({"status": {"phase": "Running", "podIP": format!("10.2.0.{}", i + 1),
            "conditions": [{"type": "Ready", "status": "True"}]}});
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await.expect("status");
    }
    let mut tcp = tcp_client(dns).await;
    eventually(Duration::from_secs(20), "all 60 endpoints over TCP", || {
        let mut tcp = tcp.clone();
        async move {
            (ask(&mut tcp, "many.default.svc.cluster.local.", RecordType::A).await.answers.len() == 60).then_some(())
        }
    })
    .await;
    assert!(!ask(&mut tcp, "many.default.svc.cluster.local.", RecordType::A).await.metadata.truncation);
    // 60 A records do not fit in 512 bytes: without EDNS, UDP gets part of them and the TC bit.
    let mut udp = udp_client(dns).await;
    udp.disable_edns();
    let cut = ask(&mut udp, "many.default.svc.cluster.local.", RecordType::A).await;
    assert!(cut.metadata.truncation, "TC set");
    assert!(!cut.answers.is_empty() && cut.answers.len() < 60, "{} answers", cut.answers.len());
}

#[tokio::test]
async fn up_serves_cluster_dns_at_the_address_its_ready_line_names() {
    use tokio::io::AsyncBufReadExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wasmkube"))
        .args(["up", "--api-addr", "127.0.0.1:0", "--node-name", "dns-node", "--node-api-port", "0"])
        .args(["--dns-addr", "127.0.0.1:0", "--dns-upstream", "none", "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn wasmkube up");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("ready in time")
        .expect("read stdout")
        .expect("a ready line");
    let dns: SocketAddr = ready
        .split_whitespace()
        .find_map(|field| field.strip_prefix("dns="))
        .unwrap_or_else(|| panic!("no dns= in {ready:?}"))
        .parse()
        .expect("an address");
    let udp = udp_client(dns).await;
    eventually(Duration::from_secs(20), "the kubernetes Service's name", || {
        let mut udp = udp.clone();
        async move {
            let answer = ask(&mut udp, "kubernetes.default.svc.cluster.local.", RecordType::A).await;
            (texts(&answer) == ["A 127.32.0.1"]).then_some(())
        }
    })
    .await;
    let mut udp = udp.clone();
    let refused = ask(&mut udp, "example.com.", RecordType::A).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused, "no upstream: other names are refused");
    let _ = child.start_kill();
}
