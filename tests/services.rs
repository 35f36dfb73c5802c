//! Services end to end: a real control plane on loopback, driven by the `kube` crate.
//! ClusterIPs and node ports come from the configured ranges, are honoured when asked for, are
//! never given twice (422 with Kubernetes' message), stay with a Service across updates, are
//! given back when it is deleted, and are remembered across a restart. EndpointSlices and
//! Endpoints follow the pods a Service selects (their status written here as an agent would).

mod support;

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{TestCluster, eventually, status_of};
use wasmkube_control::objects::ServiceNetwork;
use wasmkube_control::{ControlPlane, ControlPlaneConfig};

fn service(name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("service")
}

fn web(name: &str) -> Service {
    service(name, json!({"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}))
}

fn cluster_ip(s: &Service) -> String {
    s.spec.as_ref().and_then(|s| s.cluster_ip.clone()).unwrap_or_default()
}

fn node_ports(s: &Service) -> Vec<i32> {
    s.spec.as_ref().and_then(|s| s.ports.as_ref()).into_iter().flatten().filter_map(|p| p.node_port).collect()
}

fn network() -> ServiceNetwork {
    ServiceNetwork::new("127.40.0.0/24", "30100-30103").expect("valid")
}

#[tokio::test]
async fn services_get_addresses_from_the_configured_ranges_and_never_the_same_twice() {
    let cluster = TestCluster::start_with(|c| c.service_network = network()).await;
    let client = cluster.client.clone();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let create = |s: Service| {
        let services = services.clone();
        async move { services.create(&PostParams::default(), &s).await }
    };

    // The built-in Services hold the first and the tenth address.
    let kubernetes = services.get("kubernetes").await.expect("the kubernetes Service");
    assert_eq!(cluster_ip(&kubernetes), "127.40.0.1");
    let port = &kubernetes.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!(port.port, 443);
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i32::from(cluster.control.addr.port())))
    );
    let dns = Api::<Service>::namespaced(client.clone(), "kube-system").get("kube-dns").await.expect("kube-dns");
    assert_eq!(cluster_ip(&dns), "127.40.0.10");
    // Its endpoints are the API server's own address.
    let api = cluster.control.addr;
    let endpoints = Api::<Endpoints>::namespaced(client.clone(), "default").get("kubernetes").await.expect("Endpoints");
    let subset = &endpoints.subsets.expect("subsets")[0];
    assert_eq!(subset.addresses.as_ref().expect("addresses")[0].ip, api.ip().to_string());
    assert_eq!(subset.ports.as_ref().expect("ports")[0].port, i32::from(api.port()));
    let slice = Api::<EndpointSlice>::namespaced(client.clone(), "default").get("kubernetes").await.expect("a slice");
    assert_eq!(slice.endpoints[0].addresses, [api.ip().to_string()]);
    assert_eq!(slice.ports.expect("ports")[0].port, Some(i32::from(api.port())));

    // A ClusterIP Service gets a free address from above the static band, with its families.
    let first = create(web("first")).await.expect("create");
    assert_eq!(cluster_ip(&first), "127.40.0.16");
    let spec = first.spec.as_ref().unwrap();
    assert_eq!(spec.cluster_ips.as_deref(), Some(&["127.40.0.16".to_string()][..]));
    assert_eq!(spec.ip_families.as_deref(), Some(&["IPv4".to_string()][..]));
    assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));

    // An address asked for is honoured once; a second Service asking for it gets 422.
    let asked = create(service("asked", json!({"clusterIP": "127.40.0.20", "ports": [{"port": 80}]}))).await;
    assert_eq!(cluster_ip(&asked.expect("create")), "127.40.0.20");
    let taken = status_of(create(service("again", json!({"clusterIP": "127.40.0.20", "ports": [{"port": 80}]}))).await);
    assert_eq!((taken.code, taken.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        taken.message,
        r#"Service "again" is invalid: spec.clusterIPs: Invalid value: ["127.40.0.20"]: failed to allocate IP 127.40.0.20: provided IP is already allocated"#
    );
    let outside = status_of(create(service("out", json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}))).await);
    assert!(outside.message.contains("The range of valid IPs is 127.40.0.0/24"), "{}", outside.message);

    // Headless and ExternalName Services hold none.
    let headless =
        create(service("db", json!({"clusterIP": "None", "selector": {"app": "db"}}))).await.expect("create");
    assert_eq!(cluster_ip(&headless), "None");
    let external = create(service("ext", json!({"type": "ExternalName", "externalName": "example.com"}))).await;
    assert_eq!(cluster_ip(&external.expect("create")), "");

    // NodePort: a free port per port unless asked; a taken or out-of-range one is refused.
    let nodeport = create(service(
        "np",
        json!({"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81, "nodePort": 30100}]}),
    ))
    .await
    .expect("create");
    assert_eq!(node_ports(&nodeport), [30101, 30100]);
    let spec = nodeport.spec.as_ref().unwrap();
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
    let clash = status_of(
        create(service("np2", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30101}]}))).await,
    );
    assert_eq!(
        clash.message,
        r#"Service "np2" is invalid: spec.ports[0].nodePort: Invalid value: 30101: provided port is already allocated"#
    );
    let range = status_of(
        create(service("np3", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 31000}]}))).await,
    );
    assert!(range.message.contains("The range of valid ports is 30100-30103"), "{}", range.message);
    let lb = create(service("lb", json!({"type": "LoadBalancer", "ports": [{"port": 80}]}))).await.expect("create");
    assert_eq!(node_ports(&lb), [30102]);

    // An update keeps what the Service holds; the ClusterIP never changes.
    let mut resent = web("first");
    resent.metadata.resource_version = first.metadata.resource_version.clone();
    let replaced = services.replace("first", &PostParams::default(), &resent).await.expect("replace");
    assert_eq!(cluster_ip(&replaced), "127.40.0.16");
    let moved = Patch::Merge(json!({"spec": {"clusterIP": "127.40.0.30", "clusterIPs": ["127.40.0.30"]}}));
    let refused = status_of(services.patch("first", &PatchParams::default(), &moved).await);
    assert_eq!(refused.code, 422);
    assert!(refused.message.contains("may not change once set"), "{}", refused.message);
    let to_cluster_ip = Patch::Merge(json!({"spec": {"type": "ClusterIP"}}));
    let plain = services.patch("np", &PatchParams::default(), &to_cluster_ip).await.expect("patch");
    assert!(node_ports(&plain).is_empty(), "leaving NodePort gives its ports back");
    let reuse = create(service("np4", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30100}]}))).await;
    assert_eq!(node_ports(&reuse.expect("the port is free again")), [30100]);

    // A dry run shows an address without holding it; a delete gives the address back.
    let dry = PostParams { dry_run: true, ..PostParams::default() };
    let shown =
        services.create(&dry, &service("dry", json!({"clusterIP": "127.40.0.21", "ports": [{"port": 1}]}))).await;
    assert_eq!(cluster_ip(&shown.expect("dry run")), "127.40.0.21");
    create(service("real", json!({"clusterIP": "127.40.0.21", "ports": [{"port": 1}]}))).await.expect("not held");
    services.delete("asked", &DeleteParams::default()).await.expect("delete");
    let reused = create(service("reuse", json!({"clusterIP": "127.40.0.20", "ports": [{"port": 80}]}))).await;
    assert_eq!(cluster_ip(&reused.expect("the address is free again")), "127.40.0.20");

    // Concurrent creates never share an address.
    let many = futures::future::join_all((0..24).map(|i| create(web(&format!("many-{i}"))))).await;
    let addresses: Vec<String> = many.into_iter().map(|s| cluster_ip(&s.expect("create"))).collect();
    assert_eq!(addresses.iter().collect::<HashSet<_>>().len(), addresses.len(), "{addresses:?}");
}

#[tokio::test]
async fn updates_and_removals_of_services_keep_the_addresses_right() {
    let cluster = TestCluster::start_with(|c| c.service_network = network()).await;
    let services: Api<Service> = Api::namespaced(cluster.client.clone(), "default");
    let create = |s: Service| {
        let services = services.clone();
        async move { services.create(&PostParams::default(), &s).await }
    };
    let patch = |name: &'static str, body: Value| {
        let services = services.clone();
        async move { services.patch(name, &PatchParams::default(), &Patch::Merge(body)).await }
    };

    // A TCP and a UDP port of one number share a node port; one number twice for TCP is refused.
    let dns = create(service(
        "dns",
        json!({"type": "NodePort", "ports": [
        {"name": "udp", "port": 53, "protocol": "UDP"}, {"name": "tcp", "port": 53, "protocol": "TCP"}]}),
    ))
    .await
    .expect("create");
    assert_eq!(node_ports(&dns), [30100, 30100]);
    let twice = status_of(
        create(service(
            "twice",
            json!({"type": "NodePort", "ports": [
            {"name": "a", "port": 1, "nodePort": 30103}, {"name": "b", "port": 2, "nodePort": 30103}]}),
        ))
        .await,
    );
    assert!(twice.message.contains("spec.ports[1].nodePort: Duplicate value: 30103"), "{}", twice.message);
    let headless = status_of(
        create(service("hl", json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 1}]}))).await,
    );
    assert!(headless.message.contains("may not be set to 'None' for NodePort services"), "{}", headless.message);

    // Sending a Service again unchanged changes nothing, generation included.
    let web = create(web("web")).await.expect("create");
    let mut again = self::web("web");
    again.metadata.resource_version = web.metadata.resource_version.clone();
    let replaced = services.replace("web", &PostParams::default(), &again).await.expect("replace");
    assert_eq!(
        (replaced.metadata.generation, replaced.metadata.resource_version),
        (web.metadata.generation, web.metadata.resource_version)
    );

    // Moving a node port frees the old number; an ExternalName Service may not carry an address.
    let moved = patch(
        "dns",
        json!({"spec": {"ports": [
        {"name": "udp", "port": 53, "protocol": "UDP", "nodePort": 30101},
        {"name": "tcp", "port": 53, "protocol": "TCP", "nodePort": 30101}]}}),
    )
    .await
    .expect("patch");
    assert_eq!(node_ports(&moved), [30101, 30101]);
    let taker = create(service("taker", json!({"type": "NodePort", "ports": [{"port": 1, "nodePort": 30100}]}))).await;
    assert_eq!(node_ports(&taker.expect("30100 is free again")), [30100]);
    let external = status_of(
        patch(
            "web",
            json!({"spec": {"type": "ExternalName", "externalName": "example.com", "clusterIP": "127.40.0.99"}}),
        )
        .await,
    );
    assert!(
        external.message.contains("spec.clusterIPs: Forbidden: may not be set for ExternalName services"),
        "{}",
        external.message
    );

    // A LoadBalancer without automatic node ports still holds the ones it asks for.
    let bare = json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80, "nodePort": 30102}]});
    create(service("lb", bare.clone())).await.expect("create");
    let clash = status_of(create(service("lb2", bare)).await);
    assert!(clash.message.contains("provided port is already allocated"), "{}", clash.message);

    // A Service held by a finalizer keeps its address until the finalizer goes.
    let held =
        create(service("held", json!({"clusterIP": "127.40.0.50", "ports": [{"port": 80}]}))).await.expect("create");
    assert_eq!(cluster_ip(&held), "127.40.0.50");
    patch("held", json!({"metadata": {"finalizers": ["example.com/hold"]}})).await.expect("finalizer");
    services.delete("held", &DeleteParams::default()).await.expect("delete");
    let copy = || service("copy", json!({"clusterIP": "127.40.0.50", "ports": [{"port": 80}]}));
    let refused = status_of(create(copy()).await);
    assert!(refused.message.contains("provided IP is already allocated"), "{}", refused.message);
    patch("held", json!({"metadata": {"finalizers": null}})).await.expect("finalizer removed");
    assert_eq!(cluster_ip(&create(copy()).await.expect("the address is free once the Service is gone")), "127.40.0.50");
}

#[tokio::test]
async fn addresses_held_are_remembered_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = |network: ServiceNetwork| {
        let mut config = ControlPlaneConfig::new(dir.path(), "127.0.0.1:0".parse().expect("addr"));
        config.service_network = network;
        ControlPlane::start(config)
    };
    let control = start(network()).await.expect("starts");
    let client = support::client_for(&control.url(), &control.pki.ca_pem, Some(&control.pki.admin_token)).await;
    let services: Api<Service> = Api::namespaced(client, "default");
    let held = services
        .create(&PostParams::default(), &service("held", json!({"type": "NodePort", "ports": [{"port": 80}]})))
        .await
        .expect("create");
    control.shutdown();
    control.stopped().await;

    let control = start(network()).await.expect("starts again");
    let client = support::client_for(&control.url(), &control.pki.ca_pem, Some(&control.pki.admin_token)).await;
    let services: Api<Service> = Api::namespaced(client, "default");
    let same_ip = service("copy", json!({"clusterIP": cluster_ip(&held), "ports": [{"port": 80}]}));
    let refused = status_of(services.create(&PostParams::default(), &same_ip).await);
    assert!(refused.message.contains("provided IP is already allocated"), "{}", refused.message);
    let same_port =
        service("copy", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": node_ports(&held)[0]}]}));
    let refused = status_of(services.create(&PostParams::default(), &same_port).await);
    assert!(refused.message.contains("provided port is already allocated"), "{}", refused.message);
    control.shutdown();
    control.stopped().await;

    // With other ranges, a Service from the old ones can still be changed and deleted.
    let elsewhere = ServiceNetwork::new("127.41.0.0/24", "30200-30203").expect("valid");
    let control = start(elsewhere).await.expect("starts with other ranges");
    let client = support::client_for(&control.url(), &control.pki.ca_pem, Some(&control.pki.admin_token)).await;
    let services: Api<Service> = Api::namespaced(client, "default");
    let labelled = Patch::Merge(json!({"metadata": {"labels": {"tier": "old"}}}));
    let kept = services.patch("held", &PatchParams::default(), &labelled).await.expect("a label on an old Service");
    assert_eq!((cluster_ip(&kept), node_ports(&kept)), (cluster_ip(&held), node_ports(&held)));
    services.delete("held", &DeleteParams::default()).await.expect("delete");
    control.shutdown();
    control.stopped().await;
}

/// Marks `pod` as an agent would once it runs: an IP and its Ready condition.
async fn report(pods: &Api<Pod>, pod: &str, ip: &str, ready: bool) {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    pods.patch_status(pod, &PatchParams::default(), &Patch::Merge(status)).await.expect("status");
}

/// `(pod, address, ready, serving, terminating)` of every endpoint in the Service's slices, and
/// the slices' ports.
async fn slice_view(slices: &Api<EndpointSlice>, service: &str) -> (Vec<(String, String, bool, bool, bool)>, Vec<i32>) {
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let listed = slices.list(&lp).await.expect("list slices");
    let mut endpoints = Vec::new();
    let mut ports = Vec::new();
    for slice in listed.items {
        ports.extend(slice.ports.into_iter().flatten().filter_map(|p| p.port));
        for e in slice.endpoints {
            let c = e.conditions.unwrap_or_default();
            let pod = e.target_ref.and_then(|r| r.name).unwrap_or_default();
            let flag = |b: Option<bool>| b.unwrap_or(false);
            endpoints.push((pod, e.addresses[0].clone(), flag(c.ready), flag(c.serving), flag(c.terminating)));
        }
    }
    endpoints.sort();
    (endpoints, ports)
}

#[tokio::test]
async fn endpoint_slices_and_endpoints_follow_the_pods_a_service_selects() {
    let cluster = TestCluster::start().await;
    let client = cluster.client.clone();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let svc = service(
        "web",
        json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
    );
    services.create(&PostParams::default(), &svc).await.expect("service");
    // Bound to a node no agent runs: their status is written below, as an agent would.
    for name in ["a", "b", "c"] {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "hello:1", "ports": [{"name": "http", "containerPort": 8080}]}]}}))
        .expect("pod");
        pods.create(&PostParams::default(), &pod).await.expect("pod");
    }
    // An empty slice until the pods have addresses.
    eventually(Duration::from_secs(10), "an empty slice", || async {
        let lp = ListParams::default().labels("kubernetes.io/service-name=web");
        (slices.list(&lp).await.ok()?.items.len() == 1).then_some(())
    })
    .await;
    report(&pods, "a", "10.1.0.1", true).await;
    report(&pods, "b", "10.1.0.2", true).await;
    report(&pods, "c", "10.1.0.3", false).await;
    let want = |c_ready: bool| {
        vec![
            ("a".to_string(), "10.1.0.1".to_string(), true, true, false),
            ("b".to_string(), "10.1.0.2".to_string(), true, true, false),
            ("c".to_string(), "10.1.0.3".to_string(), c_ready, c_ready, false),
        ]
    };
    let wanted = want(false);
    eventually(Duration::from_secs(10), "three endpoints", || async {
        let view = slice_view(&slices, "web").await;
        (view == (wanted.clone(), vec![8080])).then_some(())
    })
    .await;
    let ep = endpoints.get("web").await.expect("the Endpoints of the Service");
    let subset = &ep.subsets.as_ref().expect("subsets")[0];
    let ips = |list: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| -> Vec<String> {
        list.iter().flatten().map(|a| a.ip.clone()).collect()
    };
    assert_eq!(
        (ips(&subset.addresses), ips(&subset.not_ready_addresses)),
        (vec!["10.1.0.1".to_string(), "10.1.0.2".into()], vec!["10.1.0.3".to_string()])
    );
    assert_eq!(subset.ports.as_ref().expect("ports")[0].port, 8080);

    // Readiness changes, relabelling and deletion show within the batching delay.
    report(&pods, "c", "10.1.0.3", true).await;
    let wanted = want(true);
    eventually(Duration::from_secs(10), "c ready", || async {
        (slice_view(&slices, "web").await.0 == wanted).then_some(())
    })
    .await;
    pods.patch("b", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})))
        .await
        .expect("relabel");
    pods.delete("a", &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await.expect("delete");
    let only_c = vec![("c".to_string(), "10.1.0.3".to_string(), true, true, false)];
    eventually(Duration::from_secs(10), "only c", || async {
        (slice_view(&slices, "web").await.0 == only_c).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "Endpoints with only c", || async {
        let ep = endpoints.get("web").await.ok()?;
        let subsets = ep.subsets?;
        (subsets.len() == 1 && ips(&subsets[0].addresses) == ["10.1.0.3"] && subsets[0].not_ready_addresses.is_none())
            .then_some(())
    })
    .await;

    // A slice someone deletes is put back; deleting the Service takes its slices and Endpoints.
    let lp = ListParams::default().labels("kubernetes.io/service-name=web");
    let name = slices.list(&lp).await.expect("list").items[0].metadata.name.clone().expect("name");
    slices.delete(&name, &DeleteParams::default()).await.expect("delete slice");
    eventually(Duration::from_secs(10), "the slice back", || async {
        (slice_view(&slices, "web").await.0 == only_c).then_some(())
    })
    .await;
    services.delete("web", &DeleteParams::default()).await.expect("delete service");
    eventually(Duration::from_secs(20), "slices and Endpoints gone", || async {
        let none_left = slices.list(&lp).await.ok()?.items.is_empty();
        (none_left && endpoints.get_opt("web").await.ok()?.is_none()).then_some(())
    })
    .await;
}
