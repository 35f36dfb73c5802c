//! kubectl's dedicated layouts for the kinds people describe most.

use base64::Engine as _;
use serde_json::Value;

use super::page::Page;
use super::{labels, time};

fn text<'a>(o: &'a Value, pointer: &str) -> Option<&'a str> {
    o.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn int(o: &Value, pointer: &str) -> i64 {
    o.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn list<'a>(o: &'a Value, pointer: &str) -> &'a [Value] {
    o.pointer(pointer).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

pub(super) fn pod(page: &mut Page, pod: &Value) {
    page.field(0, "Service Account", text(pod, "/spec/serviceAccountName").unwrap_or("default"));
    let node = match (text(pod, "/spec/nodeName"), text(pod, "/status/hostIP")) {
        (Some(node), Some(ip)) => format!("{node}/{ip}"),
        (Some(node), None) => node.to_string(),
        (None, _) => "<none>".to_string(),
    };
    page.field(0, "Node", &node);
    if pod.pointer("/status/startTime").is_some() {
        page.field(0, "Start Time", &time(pod.pointer("/status/startTime")));
    }
    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
    let phase = text(pod, "/status/phase").unwrap_or("Pending");
    page.field(0, "Status", if deleting { "Terminating" } else { phase });
    for (key, pointer) in [("Reason", "/status/reason"), ("Message", "/status/message")] {
        if let Some(value) = text(pod, pointer) {
            page.field(0, key, value);
        }
    }
    page.field(0, "IP", text(pod, "/status/podIP").unwrap_or_default());
    if let Some(owner) =
        list(pod, "/metadata/ownerReferences").iter().find(|o| o.get("controller") == Some(&Value::Bool(true)))
    {
        let owner =
            format!("{}/{}", text(owner, "/kind").unwrap_or_default(), text(owner, "/name").unwrap_or_default());
        page.field(0, "Controlled By", &owner);
    }
    pod_containers(page, pod);
    if let Some(volumes) = pod.pointer("/spec/volumes").filter(|v| v.as_array().is_some_and(|a| !a.is_empty())) {
        page.tree(0, "volumes", volumes);
    }
}

/// `Init Containers:` (when there are any) and `Containers:`, each with its status.
fn pod_containers(page: &mut Page, pod: &Value) {
    for (title, spec, statuses) in [
        ("Init Containers", "/spec/initContainers", "/status/initContainerStatuses"),
        ("Containers", "/spec/containers", "/status/containerStatuses"),
    ] {
        let containers = list(pod, spec);
        if containers.is_empty() && title == "Init Containers" {
            continue;
        }
        page.header(0, title);
        for container in containers {
            let name = text(container, "/name").unwrap_or_default();
            let status = list(pod, statuses).iter().find(|s| text(s, "/name") == Some(name));
            self::container(page, 1, container, status);
        }
    }
}

/// One container: image, ports, state and readiness (with a status), resources, environment.
fn container(page: &mut Page, indent: usize, container: &Value, status: Option<&Value>) {
    page.header(indent, text(container, "/name").unwrap_or_default());
    let inner = indent + 1;
    page.field(inner, "Image", text(container, "/image").unwrap_or_default());
    let ports: Vec<String> = list(container, "/ports")
        .iter()
        .map(|p| format!("{}/{}", int(p, "/containerPort"), text(p, "/protocol").unwrap_or("TCP")))
        .collect();
    page.field(inner, "Port", &if ports.is_empty() { "<none>".to_string() } else { ports.join(", ") });
    if let Some(args) = container.get("command").filter(|v| v.is_array()) {
        page.tree(inner, "command", args);
    }
    if let Some(args) = container.get("args").filter(|v| v.is_array()) {
        page.tree(inner, "args", args);
    }
    if let Some(status) = status {
        container_status(page, inner, status);
    }
    resources(page, inner, container);
    let env: Vec<String> = list(container, "/env").iter().map(env_line).collect();
    if env.is_empty() {
        page.field(inner, "Environment", "<none>");
    } else {
        page.header(inner, "Environment");
        env.iter().for_each(|line| page.raw(inner + 1, line));
    }
}

/// State, last state, readiness and restarts of a running container.
fn container_status(page: &mut Page, inner: usize, status: &Value) {
    state(page, inner, "State", status.get("state"));
    if status.pointer("/lastState/terminated").is_some() {
        state(page, inner, "Last State", status.get("lastState"));
    }
    let ready = status.get("ready").and_then(Value::as_bool) == Some(true);
    page.field(inner, "Ready", if ready { "True" } else { "False" });
    let restarts = int(status, "/restartCount").to_string();
    page.field(inner, "Restart Count", &restarts);
}

/// `Limits:` and `Requests:` sections, when set.
fn resources(page: &mut Page, inner: usize, container: &Value) {
    for (key, pointer) in [("Limits", "/resources/limits"), ("Requests", "/resources/requests")] {
        if let Some(map) = container.pointer(pointer).and_then(Value::as_object).filter(|m| !m.is_empty()) {
            page.header(inner, key);
            for (resource, quantity) in map {
                page.field(
                    inner + 1,
                    resource,
                    &quantity.as_str().map_or_else(|| quantity.to_string(), str::to_string),
                );
            }
        }
    }
}

/// `NAME:  value`, or where a value comes from (`<set to the key 'k' of config map 'c'>`).
fn env_line(var: &Value) -> String {
    let name = text(var, "/name").unwrap_or_default();
    if let Some(value) = var.get("value").and_then(Value::as_str) {
        return format!("{name}:  {value}");
    }
    let from = match var.get("valueFrom") {
        Some(from) if from.get("configMapKeyRef").is_some() => format!(
            "<set to the key '{}' of config map '{}'>",
            text(from, "/configMapKeyRef/key").unwrap_or_default(),
            text(from, "/configMapKeyRef/name").unwrap_or_default()
        ),
        Some(from) if from.get("secretKeyRef").is_some() => format!(
            "<set to the key '{}' in secret '{}'>",
            text(from, "/secretKeyRef/key").unwrap_or_default(),
            text(from, "/secretKeyRef/name").unwrap_or_default()
        ),
        Some(from) if from.get("fieldRef").is_some() => {
            format!("({})", text(from, "/fieldRef/fieldPath").unwrap_or_default())
        }
        _ => String::new(),
    };
    format!("{name}:  {from}")
}

/// `State: Running` with its details one level in (`Started`, `Reason`, `Exit Code`, ...).
fn state(page: &mut Page, indent: usize, key: &str, state: Option<&Value>) {
    let state = state.unwrap_or(&Value::Null);
    if let Some(running) = state.get("running") {
        page.field(indent, key, "Running");
        page.field(indent + 1, "Started", &time(running.get("startedAt")));
    } else if let Some(waiting) = state.get("waiting") {
        page.field(indent, key, "Waiting");
        if let Some(reason) = text(waiting, "/reason") {
            page.field(indent + 1, "Reason", reason);
        }
    } else if let Some(terminated) = state.get("terminated") {
        page.field(indent, key, "Terminated");
        if let Some(reason) = text(terminated, "/reason") {
            page.field(indent + 1, "Reason", reason);
        }
        if let Some(message) = text(terminated, "/message") {
            page.field(indent + 1, "Message", message);
        }
        page.field(indent + 1, "Exit Code", &int(terminated, "/exitCode").to_string());
        page.field(indent + 1, "Started", &time(terminated.get("startedAt")));
        page.field(indent + 1, "Finished", &time(terminated.get("finishedAt")));
    } else {
        page.field(indent, key, "Waiting");
    }
}

pub(super) fn deployment(page: &mut Page, deploy: &Value) {
    page.field(0, "Selector", &wasmkube_api::printers::selector_text(deploy.pointer("/spec/selector")));
    let replicas = deploy.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    page.field(
        0,
        "Replicas",
        &format!(
            "{replicas} desired | {} updated | {} total | {} available | {} unavailable",
            int(deploy, "/status/updatedReplicas"),
            int(deploy, "/status/replicas"),
            int(deploy, "/status/availableReplicas"),
            int(deploy, "/status/unavailableReplicas"),
        ),
    );
    let strategy = text(deploy, "/spec/strategy/type").unwrap_or("RollingUpdate");
    page.field(0, "StrategyType", strategy);
    page.field(0, "MinReadySeconds", &int(deploy, "/spec/minReadySeconds").to_string());
    if strategy == "RollingUpdate" {
        let bound = |p: &str| match deploy.pointer(p) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => "25%".to_string(),
        };
        let line = format!(
            "{} max unavailable, {} max surge",
            bound("/spec/strategy/rollingUpdate/maxUnavailable"),
            bound("/spec/strategy/rollingUpdate/maxSurge")
        );
        page.field(0, "RollingUpdateStrategy", &line);
    }
    page.header(0, "Pod Template");
    page.field(1, "Labels", &labels(deploy.pointer("/spec/template/metadata/labels")));
    page.header(1, "Containers");
    for container in list(deploy, "/spec/template/spec/containers") {
        self::container(page, 2, container, None);
    }
}

/// kubectl's `Data` section: each key, a rule, then its value.
pub(super) fn config_map(page: &mut Page, cm: &Value) {
    page.raw(0, "");
    page.raw(0, "Data");
    page.raw(0, "====");
    for (key, value) in cm.get("data").and_then(Value::as_object).into_iter().flatten() {
        page.raw(0, &format!("{key}:"));
        page.raw(0, "----");
        for line in value.as_str().unwrap_or_default().lines() {
            page.raw(0, line);
        }
        page.raw(0, "");
    }
    page.raw(0, "");
    page.raw(0, "BinaryData");
    page.raw(0, "====");
    for (key, value) in cm.get("binaryData").and_then(Value::as_object).into_iter().flatten() {
        page.raw(0, &format!("{key}: {} bytes", decoded_len(value)));
    }
    page.raw(0, "");
}

/// Type and the size of each value — never the values themselves.
pub(super) fn secret(page: &mut Page, secret: &Value) {
    page.raw(0, "");
    page.field(0, "Type", text(secret, "/type").unwrap_or("Opaque"));
    page.raw(0, "");
    page.raw(0, "Data");
    page.raw(0, "====");
    for (key, value) in secret.get("data").and_then(Value::as_object).into_iter().flatten() {
        page.field(0, key, &format!("{} bytes", decoded_len(value)));
    }
}

fn decoded_len(value: &Value) -> usize {
    let encoded = value.as_str().unwrap_or_default();
    base64::engine::general_purpose::STANDARD.decode(encoded).map(|b| b.len()).unwrap_or(encoded.len())
}
