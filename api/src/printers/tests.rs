use crate::kinds;
use serde_json::json;

use super::*;

fn now() -> Timestamp {
    "2025-01-01T12:00:00Z".parse().expect("valid timestamp")
}

fn kind(name: &str) -> &'static Kind {
    kinds::resolve(name).expect("registered kind")
}

fn running_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": "2025-01-01T11:55:00Z"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "web", "image": "hello:1"}, {"name": "log", "image": "log:1"}]},
        "status": {
            "phase": "Running", "podIP": "127.64.0.5",
            "containerStatuses": [
                {"name": "web", "ready": true, "restartCount": 2, "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2025-01-01T11:58:00Z"}}},
                {"name": "log", "ready": false, "restartCount": 0, "state": {"running": {}}}
            ]
        }
    })
}

#[test]
fn pod_rows_show_ready_status_restarts_and_age() {
    let pod = kind("pod");
    assert_eq!(columns(pod, false), ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(row_at(pod, &running_pod(), false, now()), ["web-1", "1/2", "Running", "2 (2m ago)", "5m"]);
    assert_eq!(
        columns(pod, true),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    );
    assert_eq!(row_at(pod, &running_pod(), true, now())[5..], ["127.64.0.5", "node-a", "<none>", "<none>"]);
}

#[test]
fn pod_status_prefers_container_reasons_and_terminating() {
    let pod = kind("pod");
    let status = |object: &Value| row_at(pod, object, false, now())[2].clone();
    let mut waiting = running_pod();
    waiting["status"]["containerStatuses"][1]["state"] = json!({"waiting": {"reason": "CrashLoopBackOff"}});
    assert_eq!(status(&waiting), "CrashLoopBackOff");
    let mut exited = running_pod();
    exited["status"]["containerStatuses"][1]["state"] = json!({"terminated": {"exitCode": 137}});
    assert_eq!(status(&exited), "ExitCode:137");
    let mut oom = running_pod();
    oom["status"]["containerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}});
    assert_eq!(status(&oom), "OOMKilled");
    let mut deleting = running_pod();
    deleting["metadata"]["deletionTimestamp"] = json!("2025-01-01T11:59:00Z");
    assert_eq!(status(&deleting), "Terminating");
    let pending =
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Pending"}});
    assert_eq!(row_at(pod, &pending, false, now()), ["p", "0/1", "Pending", "0", "<unknown>"]);
}

#[test]
fn init_containers_show_progress() {
    let mut object = running_pod();
    object["spec"]["initContainers"] = json!([{"name": "a"}, {"name": "b"}]);
    object["status"]["phase"] = json!("Pending");
    object["status"]["initContainerStatuses"] = json!([
        {"name": "a", "state": {"terminated": {"exitCode": 0}}},
        {"name": "b", "state": {"running": {}}}
    ]);
    object["status"]["containerStatuses"] = json!([]);
    assert_eq!(row_at(kind("pod"), &object, false, now())[2], "Init:1/2");
}

#[test]
fn deployment_rows_count_replicas_and_wide_shows_the_template() {
    let deploy = kind("deploy");
    let object = json!({
        "metadata": {"name": "web", "creationTimestamp": "2024-12-30T12:00:00Z"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
            "template": {"spec": {"containers": [{"name": "web", "image": "hello:1"}, {"name": "side", "image": "side:2"}]}}
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
    });
    assert_eq!(columns(deploy, false), ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert_eq!(row_at(deploy, &object, false, now()), ["web", "2/3", "3", "2", "2d"]);
    assert_eq!(row_at(deploy, &object, true, now())[5..], ["web,side", "hello:1,side:2", "app=web,tier in (a,b)"]);
    let fresh = json!({"metadata": {"name": "new"}, "spec": {"replicas": 1}});
    assert_eq!(row_at(deploy, &fresh, false, now())[1..4], ["0/1", "0", "0"]);
}

#[test]
fn service_rows_show_type_ips_and_ports() {
    let svc = kind("svc");
    let object = json!({
        "metadata": {"name": "web", "creationTimestamp": "2025-01-01T11:59:30Z"},
        "spec": {"type": "NodePort", "clusterIP": "127.32.0.20", "selector": {"app": "web"}, "ports": [
            {"port": 80, "protocol": "TCP"},
            {"port": 443, "nodePort": 30443, "protocol": "TCP"},
            {"port": 53, "protocol": "UDP"}
        ]}
    });
    assert_eq!(columns(svc, false), ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]);
    assert_eq!(
        row_at(svc, &object, true, now()),
        ["web", "NodePort", "127.32.0.20", "<none>", "80/TCP,443:30443/TCP,53/UDP", "30s", "app=web"]
    );
    let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIP": "127.32.0.9"},
        "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}});
    assert_eq!(row_at(svc, &lb, false, now())[3..5], ["10.0.0.1", "<none>"]);
    let pending = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer"}});
    assert_eq!(row_at(svc, &pending, false, now())[2..4], ["<none>", "<pending>"]);
}

#[test]
fn other_kinds_print_their_kubectl_columns() {
    let node = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.33.0"}}});
    assert_eq!(
        row_at(kind("node"), &node, false, now()),
        ["n1", "Ready,SchedulingDisabled", "control-plane", "<unknown>", "v1.33.0"]
    );

    let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}});
    assert_eq!(row_at(kind("cm"), &cm, false, now())[1], "3");

    let ep = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "1.1.1.1"}, {"ip": "1.1.1.2"}],
        "ports": [{"port": 80}, {"port": 81}]}]});
    assert_eq!(row_at(kind("ep"), &ep, false, now())[1], "1.1.1.1:80,1.1.1.2:80,1.1.1.1:81 + 1 more...");

    let event = json!({"metadata": {"name": "e"}, "type": "Normal", "reason": "Scheduled", "message": "assigned ",
        "involvedObject": {"kind": "Pod", "name": "web-1"}, "lastTimestamp": "2025-01-01T11:59:50Z"});
    assert_eq!(columns(kind("ev"), false), ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]);
    assert_eq!(row_at(kind("ev"), &event, false, now()), ["10s", "Normal", "Scheduled", "pod/web-1", "assigned"]);

    let job = json!({"metadata": {"name": "j"}, "spec": {"completions": 2},
        "status": {"succeeded": 2, "startTime": "2025-01-01T11:00:00Z", "completionTime": "2025-01-01T11:00:45Z",
                   "conditions": [{"type": "Complete", "status": "True"}]}});
    assert_eq!(row_at(kind("job"), &job, false, now())[1..4], ["Complete", "2/2", "45s"]);

    assert_eq!(columns(kind("clusterrole"), true), ["NAME", "AGE"]);
}

#[test]
fn endpoint_slices_show_address_type_ports_and_at_most_three_addresses() {
    let slice = kind("endpointslices");
    assert_eq!(columns(slice, false), ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]);
    let object = json!({
        "metadata": {"name": "web-abc", "creationTimestamp": "2025-01-01T11:00:00Z"},
        "addressType": "IPv4",
        "ports": [{"port": 8080}, {"name": "all"}],
        "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}, {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4"]}],
    });
    assert_eq!(
        row_at(slice, &object, false, now()),
        ["web-abc", "IPv4", "8080,<unset>", "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...", "60m"]
    );
    let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4"});
    assert_eq!(row_at(slice, &empty, false, now())[2..4], ["<unset>", "<unset>"]);
}

#[test]
fn event_wide_columns_add_source_first_seen_count_and_name() {
    let ev = kind("ev");
    assert_eq!(
        columns(ev, true),
        ["LAST SEEN", "TYPE", "REASON", "OBJECT", "SUBOBJECT", "SOURCE", "MESSAGE", "FIRST SEEN", "COUNT", "NAME"]
    );
    let event = json!({"metadata": {"name": "web.1"}, "type": "Warning", "reason": "BackOff", "message": "m",
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{web}"},
        "source": {"component": "kubelet", "host": "node-a"}, "count": 4,
        "firstTimestamp": "2025-01-01T11:50:00Z", "lastTimestamp": "2025-01-01T11:59:00Z"});
    assert_eq!(
        row_at(ev, &event, true, now()),
        ["60s", "Warning", "BackOff", "pod/web", "spec.containers{web}", "kubelet, node-a", "m", "10m", "4", "web.1"]
    );
}
