//! Cell functions for [`super`]'s column tables: small readers of an object's JSON.

use crate::meta;
use jiff::Timestamp;
use serde_json::Value;

/// The string at a JSON pointer, if any.
pub(super) fn str_at<'a>(o: &'a Value, pointer: &str) -> Option<&'a str> {
    o.pointer(pointer).and_then(Value::as_str)
}

/// The string at a JSON pointer, or "".
pub(super) fn text_at(o: &Value, pointer: &str) -> String {
    str_at(o, pointer).unwrap_or("").to_string()
}

/// The integer at a JSON pointer, or 0 (Kubernetes omits zero counts from status).
pub(super) fn int_at(o: &Value, pointer: &str) -> i64 {
    o.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The number of entries of the map or list at a JSON pointer.
pub(super) fn len_at(o: &Value, pointer: &str) -> usize {
    match o.pointer(pointer) {
        Some(Value::Object(map)) => map.len(),
        Some(Value::Array(list)) => list.len(),
        _ => 0,
    }
}

/// The elements of the list at a JSON pointer (none if absent).
pub(super) fn items<'a>(o: &'a Value, pointer: &str) -> impl DoubleEndedIterator<Item = &'a Value> {
    o.pointer(pointer).and_then(Value::as_array).into_iter().flatten()
}

pub(super) fn or_none(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("<none>").to_string()
}

pub(super) fn unknown_if_empty(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("<unknown>").to_string()
}

pub(super) fn bool_word(value: bool) -> String {
    if value { "True" } else { "False" }.to_string()
}

fn timestamp(value: Option<&str>) -> Option<Timestamp> {
    value.and_then(|t| t.parse::<Timestamp>().ok())
}

/// kubectl's age of a timestamp relative to `now`; `<unknown>` when absent or unparsable.
pub(super) fn age_at(value: Option<&str>, now: Timestamp) -> String {
    match timestamp(value) {
        Some(ts) => meta::human_duration(now.as_second() - ts.as_second()),
        None => "<unknown>".to_string(),
    }
}

/// `spec.replicas`, which the server defaults to 1.
pub(super) fn replicas(o: &Value) -> i64 {
    o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
}

/// One field of every container at `pointer`, comma-joined (CONTAINERS and IMAGES columns).
pub(super) fn containers_at(o: &Value, pointer: &str, field: &str) -> String {
    let values: Vec<&str> = items(o, pointer).filter_map(|c| c.get(field).and_then(Value::as_str)).collect();
    values.join(",")
}

pub(super) fn template_containers(o: &Value, field: &str) -> String {
    containers_at(o, "/spec/template/spec/containers", field)
}

/// A string map as `k=v,k2=v2`, or `<none>`.
pub(super) fn pairs(map: Option<&Value>) -> String {
    let pairs: Vec<String> = map
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    if pairs.is_empty() { "<none>".to_string() } else { pairs.join(",") }
}

/// A `LabelSelector` in label-query syntax (`app=web,tier in (a,b),!legacy`), or `<none>`.
pub(super) fn label_selector(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return "<none>".to_string();
    };
    let mut terms: Vec<(String, String)> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())))
        .collect();
    for expr in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = items(expr, "/values").filter_map(Value::as_str).collect();
        let term = match expr.get("operator").and_then(Value::as_str).unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        };
        terms.push((key.to_string(), term));
    }
    // kubectl prints requirements sorted by key.
    terms.sort_by(|a, b| a.0.cmp(&b.0));
    if terms.is_empty() {
        return "<none>".to_string();
    }
    terms.into_iter().map(|(_, t)| t).collect::<Vec<_>>().join(",")
}

/// Whether `status.conditions` has `kind` with status `True`.
pub(super) fn condition_true(o: &Value, kind: &str) -> bool {
    items(o, "/status/conditions").any(|c| {
        c.get("type").and_then(Value::as_str) == Some(kind) && c.get("status").and_then(Value::as_str) == Some("True")
    })
}

pub(super) fn pod_ready(o: &Value, _: Timestamp) -> String {
    let total = len_at(o, "/spec/containers");
    let ready = items(o, "/status/containerStatuses")
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true) && c.pointer("/state/running").is_some())
        .count();
    format!("{ready}/{total}")
}

/// A terminated container's reason, else `Signal:N` / `ExitCode:N`, with an optional prefix.
fn terminated_reason(terminated: &Value, prefix: &str) -> String {
    if let Some(reason) = terminated.get("reason").and_then(Value::as_str).filter(|r| !r.is_empty()) {
        return format!("{prefix}{reason}");
    }
    match terminated.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
        Some(signal) => format!("{prefix}Signal:{signal}"),
        None => format!("{prefix}ExitCode:{}", int_at(terminated, "/exitCode")),
    }
}

fn waiting_reason(status: &Value) -> Option<&str> {
    str_at(status, "/state/waiting/reason").filter(|r| !r.is_empty())
}

/// The STATUS column: kubectl's `printPod` rules, in order — pod reason or phase, then the first
/// unfinished init container, then the last container waiting or terminated with a reason, then
/// `Terminating` once deletion started.
pub(super) fn pod_status(o: &Value, _: Timestamp) -> String {
    let mut reason = str_at(o, "/status/reason")
        .filter(|r| !r.is_empty())
        .or_else(|| str_at(o, "/status/phase"))
        .unwrap_or("Pending")
        .to_string();
    let init = init_reason(o);
    let initializing = init.is_some();
    if let Some(init) = init {
        reason = init;
    }
    if !initializing || condition_true(o, "Initialized") {
        let mut has_running = false;
        for status in items(o, "/status/containerStatuses").rev() {
            let terminated = status.pointer("/state/terminated");
            if let Some(waiting) = waiting_reason(status) {
                reason = waiting.to_string();
            } else if let Some(terminated) = terminated {
                reason = terminated_reason(terminated, "");
            } else if status.get("ready").and_then(Value::as_bool) == Some(true)
                && status.pointer("/state/running").is_some()
            {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(o, "Ready") { "Running" } else { "NotReady" }.to_string();
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
        reason = if str_at(o, "/status/reason") == Some("NodeLost") { "Unknown" } else { "Terminating" }.to_string();
    }
    reason
}

/// The status of the first init container that has not finished, as `Init:...`.
fn init_reason(o: &Value) -> Option<String> {
    let total = len_at(o, "/spec/initContainers");
    for (i, status) in items(o, "/status/initContainerStatuses").enumerate() {
        let terminated = status.pointer("/state/terminated");
        if terminated.is_some_and(|t| int_at(t, "/exitCode") == 0) {
            continue;
        }
        // A started sidecar (restartPolicy: Always) init container does not hold up the pod.
        let name = status.get("name").and_then(Value::as_str);
        let sidecar = items(o, "/spec/initContainers")
            .any(|c| c.get("name").and_then(Value::as_str) == name && str_at(c, "/restartPolicy") == Some("Always"));
        if sidecar && status.get("started").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        return Some(match (terminated, waiting_reason(status)) {
            (Some(terminated), _) => terminated_reason(terminated, "Init:"),
            (None, Some(waiting)) if waiting != "PodInitializing" => format!("Init:{waiting}"),
            _ => format!("Init:{i}/{total}"),
        });
    }
    None
}

/// Total restarts, with how long ago the last one ended: `3 (5m ago)`.
pub(super) fn pod_restarts(o: &Value, now: Timestamp) -> String {
    let statuses = items(o, "/status/initContainerStatuses").chain(items(o, "/status/containerStatuses"));
    let mut restarts = 0;
    let mut last: Option<Timestamp> = None;
    for status in statuses {
        restarts += int_at(status, "/restartCount");
        let finished = timestamp(str_at(status, "/lastState/terminated/finishedAt"));
        last = last.max(finished);
    }
    match last {
        Some(ts) if restarts != 0 => {
            format!("{restarts} ({} ago)", meta::human_duration(now.as_second() - ts.as_second()))
        }
        _ => restarts.to_string(),
    }
}

pub(super) fn pod_readiness_gates(o: &Value, _: Timestamp) -> String {
    let gates: Vec<&str> = items(o, "/spec/readinessGates").filter_map(|g| str_at(g, "/conditionType")).collect();
    if gates.is_empty() {
        return "<none>".to_string();
    }
    let ready = gates.iter().filter(|g| condition_true(o, g)).count();
    format!("{ready}/{}", gates.len())
}

pub(super) fn service_external_ip(o: &Value, _: Timestamp) -> String {
    let external: Vec<&str> = items(o, "/spec/externalIPs").filter_map(Value::as_str).collect();
    match str_at(o, "/spec/type").unwrap_or("ClusterIP") {
        "ClusterIP" | "NodePort" if external.is_empty() => "<none>".to_string(),
        "ClusterIP" | "NodePort" => external.join(","),
        "LoadBalancer" => {
            let mut all: Vec<&str> = items(o, "/status/loadBalancer/ingress")
                .filter_map(|i| str_at(i, "/ip").or_else(|| str_at(i, "/hostname")))
                .collect();
            all.extend(external);
            if all.is_empty() { "<pending>".to_string() } else { all.join(",") }
        }
        "ExternalName" => text_at(o, "/spec/externalName"),
        _ => "<unknown>".to_string(),
    }
}

/// `80/TCP,443:30443/TCP`: port, the node port when allocated, protocol.
pub(super) fn service_ports(o: &Value, _: Timestamp) -> String {
    let ports: Vec<String> = items(o, "/spec/ports")
        .map(|p| {
            let protocol = str_at(p, "/protocol").unwrap_or("TCP");
            match int_at(p, "/nodePort") {
                0 => format!("{}/{protocol}", int_at(p, "/port")),
                node_port => format!("{}:{node_port}/{protocol}", int_at(p, "/port")),
            }
        })
        .collect();
    if ports.is_empty() { "<none>".to_string() } else { ports.join(",") }
}

pub(super) fn node_status(o: &Value, _: Timestamp) -> String {
    let ready = items(o, "/status/conditions").find(|c| str_at(c, "/type") == Some("Ready"));
    let mut status = match ready.and_then(|c| str_at(c, "/status")) {
        Some("True") => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }
    .to_string();
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// Roles from `node-role.kubernetes.io/<role>` and `kubernetes.io/role` labels.
pub(super) fn node_roles(o: &Value, _: Timestamp) -> String {
    let mut roles: Vec<String> = Vec::new();
    for (key, value) in o.pointer("/metadata/labels").and_then(Value::as_object).into_iter().flatten() {
        if let Some(role) = key.strip_prefix("node-role.kubernetes.io/").filter(|r| !r.is_empty()) {
            roles.push(role.to_string());
        } else if key == "kubernetes.io/role" {
            roles.extend(value.as_str().filter(|v| !v.is_empty()).map(str::to_string));
        }
    }
    roles.sort();
    roles.dedup();
    if roles.is_empty() { "<none>".to_string() } else { roles.join(",") }
}

pub(super) fn node_address(o: &Value, kind: &str) -> String {
    let address = items(o, "/status/addresses").find(|a| str_at(a, "/type") == Some(kind));
    or_none(address.and_then(|a| str_at(a, "/address")))
}

/// `ip:port` pairs, at most three, then ` + N more...`.
pub(super) fn endpoints(o: &Value, _: Timestamp) -> String {
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut count = 0;
    for subset in items(o, "/subsets") {
        let ips: Vec<&str> = items(subset, "/addresses").filter_map(|a| str_at(a, "/ip")).collect();
        let ports: Vec<i64> = items(subset, "/ports").map(|p| int_at(p, "/port")).collect();
        let pairs: Vec<String> = if ports.is_empty() {
            ips.iter().map(|ip| ip.to_string()).collect()
        } else {
            ports.iter().flat_map(|port| ips.iter().map(move |ip| join_host_port(ip, *port))).collect()
        };
        count += pairs.len();
        list.extend(pairs.into_iter().take(MAX.saturating_sub(list.len())));
    }
    match list.len() {
        0 => "<none>".to_string(),
        shown if count > shown => format!("{} + {} more...", list.join(","), count - shown),
        _ => list.join(","),
    }
}

/// At most three values joined by commas, then how many more; `<unset>` for none (EndpointSlices).
fn first_three(values: Vec<String>) -> String {
    const MAX: usize = 3;
    match values.len() {
        0 => "<unset>".to_string(),
        n if n > MAX => format!("{} + {} more...", values[..MAX].join(","), n - MAX),
        _ => values.join(","),
    }
}

/// An EndpointSlice's port numbers (`<unset>` for a port without a number: all ports).
pub(super) fn slice_ports(o: &Value, _: Timestamp) -> String {
    let ports = items(o, "/ports").map(|p| match p.get("port").and_then(Value::as_i64) {
        Some(port) => port.to_string(),
        None => "<unset>".to_string(),
    });
    first_three(ports.collect())
}

/// An EndpointSlice's endpoint addresses.
pub(super) fn slice_endpoints(o: &Value, _: Timestamp) -> String {
    let addresses = items(o, "/endpoints").flat_map(|e| items(e, "/addresses").filter_map(Value::as_str));
    first_three(addresses.map(String::from).collect())
}

fn join_host_port(ip: &str, port: i64) -> String {
    if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }
}

pub(super) fn event_last_seen(o: &Value, now: Timestamp) -> String {
    let first = str_at(o, "/firstTimestamp").or_else(|| str_at(o, "/eventTime"));
    let last = str_at(o, "/series/lastObservedTime").or_else(|| str_at(o, "/lastTimestamp")).or(first);
    age_at(last, now)
}

/// `component, host` of whoever reported the event (the events.k8s.io fields when the core ones
/// are empty).
pub(super) fn event_source(o: &Value, _: Timestamp) -> String {
    let component =
        str_at(o, "/source/component").filter(|s| !s.is_empty()).or_else(|| str_at(o, "/reportingComponent"));
    let instance = str_at(o, "/source/host").filter(|s| !s.is_empty()).or_else(|| str_at(o, "/reportingInstance"));
    match (component.unwrap_or(""), instance.filter(|i| !i.is_empty())) {
        (component, Some(instance)) => format!("{component}, {instance}"),
        (component, None) => component.to_string(),
    }
}

/// How often the event happened: its series' count, else its count (at least 1).
pub(super) fn event_count(o: &Value, _: Timestamp) -> String {
    match o.pointer("/series/count").and_then(Value::as_i64) {
        Some(n) => n.to_string(),
        None => int_at(o, "/count").max(1).to_string(),
    }
}

/// `kind/name` of the event's object, kind lower-cased.
pub(super) fn event_object(o: &Value, _: Timestamp) -> String {
    let kind = text_at(o, "/involvedObject/kind").to_lowercase();
    match str_at(o, "/involvedObject/name").filter(|n| !n.is_empty()) {
        Some(name) => format!("{kind}/{name}"),
        None => kind,
    }
}

pub(super) fn job_status(o: &Value, _: Timestamp) -> String {
    let deleting = o.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
    if condition_true(o, "Complete") {
        "Complete"
    } else if condition_true(o, "Failed") {
        "Failed"
    } else if deleting {
        "Terminating"
    } else if condition_true(o, "Suspended") {
        "Suspended"
    } else if condition_true(o, "FailureTarget") {
        "FailureTarget"
    } else if condition_true(o, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
    .to_string()
}

pub(super) fn job_completions(o: &Value, _: Timestamp) -> String {
    let succeeded = int_at(o, "/status/succeeded");
    if let Some(completions) = o.pointer("/spec/completions").and_then(Value::as_i64) {
        return format!("{succeeded}/{completions}");
    }
    match int_at(o, "/spec/parallelism") {
        p if p > 1 => format!("{succeeded}/1 of {p}"),
        _ => format!("{succeeded}/1"),
    }
}

pub(super) fn job_duration(o: &Value, now: Timestamp) -> String {
    let Some(start) = timestamp(str_at(o, "/status/startTime")) else {
        return String::new();
    };
    let end = timestamp(str_at(o, "/status/completionTime")).unwrap_or(now);
    meta::human_duration(end.as_second() - start.as_second())
}
