use serde_json::json;
use wasmkube_api::kinds;

use super::*;

fn now() -> Timestamp {
    "2025-01-01T12:00:00Z".parse().expect("valid timestamp")
}

fn kind(name: &str) -> &'static Kind {
    kinds::resolve(name).expect("registered")
}

fn line<'a>(page: &'a str, start: &str) -> &'a str {
    page.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("no line {start:?} in\n{page}"))
}

#[test]
fn metadata_is_aligned_and_hides_the_last_applied_annotation() {
    let cm = json!({"metadata": {"name": "settings", "namespace": "default",
        "labels": {"app": "web", "tier": "front"},
        "annotations": {LAST_APPLIED: "{}", "note": "hi"}}, "data": {"k": "v\nw"}});
    let page = describe(kind("cm"), &cm, &[], now());
    assert!(page.starts_with("Name:               settings\nNamespace:          default\n"), "{page}");
    assert_eq!(line(&page, "Labels:"), "Labels:             app=web");
    assert!(page.contains("\n                    tier=front\n"), "{page}");
    assert_eq!(line(&page, "Annotations:"), "Annotations:        note: hi");
    assert!(!page.contains("last-applied"));
    assert!(page.contains("\nData\n====\nk:\n----\nv\nw\n\n"), "{page}");
    assert!(page.ends_with("Events:  <none>\n"), "{page}");
}

#[test]
fn deployments_show_the_replicas_line_and_conditions() {
    let deploy = json!({"metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "hello:1", "ports": [{"containerPort": 8080}]}]}}},
        "status": {"replicas": 3, "updatedReplicas": 3, "availableReplicas": 2, "unavailableReplicas": 1,
            "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}]}});
    let page = describe(kind("deploy"), &deploy, &[], now());
    assert_eq!(
        line(&page, "Replicas:"),
        "Replicas:               3 desired | 3 updated | 3 total | 2 available | 1 unavailable"
    );
    assert_eq!(line(&page, "Selector:"), "Selector:               app=web");
    assert!(page.contains("      Image:        hello:1\n      Port:         8080/TCP\n"), "{page}");
    assert!(page.contains("Conditions:\n  Type       Status  Reason\n  ----       ------  ------\n  Available  False   MinimumReplicasUnavailable\n"), "{page}");
}

#[test]
fn pods_list_containers_with_state_and_events() {
    let pod = json!({"metadata": {"name": "web-1", "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": [{"name": "web", "image": "hello:1", "env": [{"name": "A", "value": "1"}]}]},
        "status": {"phase": "Running", "podIP": "127.64.0.5", "hostIP": "127.0.0.1",
            "containerStatuses": [{"name": "web", "ready": true, "restartCount": 1,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
    let events = [json!({"type": "Warning", "reason": "BackOff", "message": "Back-off restarting",
        "source": {"component": "kubelet"}, "count": 3,
        "firstTimestamp": "2025-01-01T11:55:00Z", "lastTimestamp": "2025-01-01T11:59:00Z"})];
    let page = describe(kind("pod"), &pod, &events, now());
    assert_eq!(line(&page, "Node:"), "Node:               n1/127.0.0.1");
    assert!(page.contains("Containers:\n  web:\n    Image:          hello:1\n"), "{page}");
    assert!(page.contains("    State:          Waiting\n      Reason:       CrashLoopBackOff\n"), "{page}");
    assert!(page.contains("    Restart Count:  1\n"), "{page}");
    assert!(page.contains("    Environment:\n      A:  1\n"), "{page}");
    assert!(page.ends_with(
        "Events:\n  Type     Reason   Age               From     Message\n  ----     ------   ----              ----     -------\n  Warning  BackOff  60s (x3 over 5m)  kubelet  Back-off restarting\n"
    ), "{page}");
}

#[test]
fn other_kinds_render_spec_and_status_as_a_labelled_tree() {
    let svc = json!({"metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "127.32.0.20", "ports": [{"port": 80, "protocol": "TCP"}]}});
    let page = describe(kind("svc"), &svc, &[], now());
    assert!(
        page.contains("Spec:\n  Cluster IP:  127.32.0.20\n  Ports:\n    Port:      80\n    Protocol:  TCP\n"),
        "{page}"
    );
    let secret = json!({"metadata": {"name": "s", "namespace": "default"}, "type": "Opaque", "data": {"password": "aHVudGVyMg=="}});
    let page = describe(kind("secret"), &secret, &[], now());
    assert!(page.contains("password:  7 bytes"), "{page}");
    assert!(!page.contains("aHVudGVyMg"));
}

#[test]
fn smart_labels_follow_kubectl() {
    for (field, label) in [
        ("clusterIP", "Cluster IP"),
        ("nodeName", "Node Name"),
        ("uid", "UID"),
        ("HTTPServer", "HTTP Server"),
        ("app.kubernetes.io/name", "app.kubernetes.io/name"),
        ("replicas", "Replicas"),
    ] {
        assert_eq!(page::smart_label(field), label);
    }
}
