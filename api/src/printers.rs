//! The table columns `get` prints for each kind, as kubectl prints them.
//!
//! Pure functions of the object's JSON (and the current time for ages), shared by the API server's
//! `Table` responses and `wasmkube get`. Each kind is a list of [`Column`]s; a column marked `wide`
//! only shows with `-o wide`. Cell rules (pod STATUS, service PORT(S), ...) mirror kubectl's
//! printers in `pkg/printers/internalversion`.

use crate::{Kind, meta};
use jiff::Timestamp;
use serde_json::Value;

mod cells;

use cells::*;

/// How a cell is computed from an object at a given time.
type Cell = fn(&Value, Timestamp) -> String;

/// One table column.
struct Column {
    /// As Kubernetes names it in a Table (`Up-to-date`); kubectl prints it upper-cased.
    name: &'static str,
    /// Only printed with `-o wide` (priority 1 in a Table).
    wide: bool,
    cell: Cell,
}

const fn col(name: &'static str, cell: Cell) -> Column {
    Column { name, wide: false, cell }
}

const fn wide(name: &'static str, cell: Cell) -> Column {
    Column { name, wide: true, cell }
}

const NAME: Column = col("Name", |o, _| meta::name(o).to_string());
const AGE: Column = col("Age", |o, now| age_at(str_at(o, "/metadata/creationTimestamp"), now));
const CONTAINERS: Column = wide("Containers", |o, _| template_containers(o, "name"));
const IMAGES: Column = wide("Images", |o, _| template_containers(o, "image"));
const SELECTOR: Column = wide("Selector", |o, _| label_selector(o.pointer("/spec/selector")));

static POD: &[Column] = &[
    NAME,
    col("Ready", pod_ready),
    col("Status", pod_status),
    col("Restarts", pod_restarts),
    AGE,
    wide("IP", |o, _| or_none(str_at(o, "/status/podIP"))),
    wide("Node", |o, _| or_none(str_at(o, "/spec/nodeName"))),
    wide("Nominated Node", |o, _| or_none(str_at(o, "/status/nominatedNodeName"))),
    wide("Readiness Gates", pod_readiness_gates),
];

static DEPLOYMENT: &[Column] = &[
    NAME,
    col("Ready", |o, _| format!("{}/{}", int_at(o, "/status/readyReplicas"), replicas(o))),
    col("Up-to-date", |o, _| int_at(o, "/status/updatedReplicas").to_string()),
    col("Available", |o, _| int_at(o, "/status/availableReplicas").to_string()),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

static REPLICA_SET: &[Column] = &[
    NAME,
    col("Desired", |o, _| replicas(o).to_string()),
    col("Current", |o, _| int_at(o, "/status/replicas").to_string()),
    col("Ready", |o, _| int_at(o, "/status/readyReplicas").to_string()),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

static STATEFUL_SET: &[Column] = &[
    NAME,
    col("Ready", |o, _| format!("{}/{}", int_at(o, "/status/readyReplicas"), replicas(o))),
    AGE,
    CONTAINERS,
    IMAGES,
];

static DAEMON_SET: &[Column] = &[
    NAME,
    col("Desired", |o, _| int_at(o, "/status/desiredNumberScheduled").to_string()),
    col("Current", |o, _| int_at(o, "/status/currentNumberScheduled").to_string()),
    col("Ready", |o, _| int_at(o, "/status/numberReady").to_string()),
    col("Up-to-date", |o, _| int_at(o, "/status/updatedNumberScheduled").to_string()),
    col("Available", |o, _| int_at(o, "/status/numberAvailable").to_string()),
    col("Node Selector", |o, _| pairs(o.pointer("/spec/template/spec/nodeSelector"))),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

static SERVICE: &[Column] = &[
    NAME,
    col("Type", |o, _| str_at(o, "/spec/type").unwrap_or("ClusterIP").to_string()),
    col("Cluster-IP", |o, _| or_none(str_at(o, "/spec/clusterIP"))),
    col("External-IP", service_external_ip),
    col("Port(s)", service_ports),
    AGE,
    wide("Selector", |o, _| pairs(o.pointer("/spec/selector"))),
];

static NAMESPACE: &[Column] = &[NAME, col("Status", |o, _| text_at(o, "/status/phase")), AGE];

static NODE: &[Column] = &[
    NAME,
    col("Status", node_status),
    col("Roles", node_roles),
    AGE,
    col("Version", |o, _| text_at(o, "/status/nodeInfo/kubeletVersion")),
    wide("Internal-IP", |o, _| node_address(o, "InternalIP")),
    wide("External-IP", |o, _| node_address(o, "ExternalIP")),
    wide("OS-Image", |o, _| unknown_if_empty(str_at(o, "/status/nodeInfo/osImage"))),
    wide("Kernel-Version", |o, _| unknown_if_empty(str_at(o, "/status/nodeInfo/kernelVersion"))),
    wide("Container-Runtime", |o, _| unknown_if_empty(str_at(o, "/status/nodeInfo/containerRuntimeVersion"))),
];

static CONFIG_MAP: &[Column] =
    &[NAME, col("Data", |o, _| (len_at(o, "/data") + len_at(o, "/binaryData")).to_string()), AGE];

static SECRET: &[Column] =
    &[NAME, col("Type", |o, _| text_at(o, "/type")), col("Data", |o, _| len_at(o, "/data").to_string()), AGE];

static SERVICE_ACCOUNT: &[Column] = &[NAME, col("Secrets", |o, _| len_at(o, "/secrets").to_string()), AGE];

static ENDPOINTS: &[Column] = &[NAME, col("Endpoints", endpoints), AGE];

static ENDPOINT_SLICE: &[Column] = &[
    NAME,
    col("AddressType", |o, _| text_at(o, "/addressType")),
    col("Ports", slice_ports),
    col("Endpoints", slice_endpoints),
    AGE,
];

static EVENT: &[Column] = &[
    col("Last Seen", event_last_seen),
    col("Type", |o, _| text_at(o, "/type")),
    col("Reason", |o, _| text_at(o, "/reason")),
    col("Object", event_object),
    wide("Subobject", |o, _| text_at(o, "/involvedObject/fieldPath")),
    wide("Source", event_source),
    col("Message", |o, _| text_at(o, "/message").trim().to_string()),
    wide("First Seen", |o, now| age_at(str_at(o, "/firstTimestamp").or_else(|| str_at(o, "/eventTime")), now)),
    wide("Count", event_count),
    wide("Name", |o, _| meta::name(o).to_string()),
];

static JOB: &[Column] = &[
    NAME,
    col("Status", job_status),
    col("Completions", job_completions),
    col("Duration", job_duration),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

static CRON_JOB: &[Column] = &[
    NAME,
    col("Schedule", |o, _| text_at(o, "/spec/schedule")),
    col("Suspend", |o, _| bool_word(o.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false))),
    col("Active", |o, _| len_at(o, "/status/active").to_string()),
    col("Last Schedule", |o, now| match str_at(o, "/status/lastScheduleTime") {
        Some(ts) => age_at(Some(ts), now),
        None => "<none>".to_string(),
    }),
    AGE,
    wide("Containers", |o, _| containers_at(o, "/spec/jobTemplate/spec/template/spec/containers", "name")),
    wide("Images", |o, _| containers_at(o, "/spec/jobTemplate/spec/template/spec/containers", "image")),
    wide("Selector", |o, _| label_selector(o.pointer("/spec/jobTemplate/spec/selector"))),
];

static POD_DISRUPTION_BUDGET: &[Column] = &[
    NAME,
    col("Min Available", |o, _| int_or_string(o.pointer("/spec/minAvailable"))),
    col("Max Unavailable", |o, _| int_or_string(o.pointer("/spec/maxUnavailable"))),
    col("Allowed Disruptions", |o, _| int_at(o, "/status/disruptionsAllowed").to_string()),
    AGE,
];

static LEASE: &[Column] = &[NAME, col("Holder", |o, _| text_at(o, "/spec/holderIdentity")), AGE];

static DEFAULT: &[Column] = &[NAME, AGE];

fn columns_of(kind: &Kind) -> &'static [Column] {
    match (kind.group, kind.kind) {
        ("", "Pod") => POD,
        ("", "Service") => SERVICE,
        ("", "Namespace") => NAMESPACE,
        ("", "Node") => NODE,
        ("", "ConfigMap") => CONFIG_MAP,
        ("", "Secret") => SECRET,
        ("", "ServiceAccount") => SERVICE_ACCOUNT,
        ("", "Endpoints") => ENDPOINTS,
        ("", "Event") => EVENT,
        ("apps", "Deployment") => DEPLOYMENT,
        ("apps", "ReplicaSet") => REPLICA_SET,
        ("apps", "StatefulSet") => STATEFUL_SET,
        ("apps", "DaemonSet") => DAEMON_SET,
        ("batch", "Job") => JOB,
        ("batch", "CronJob") => CRON_JOB,
        ("coordination.k8s.io", "Lease") => LEASE,
        ("discovery.k8s.io", "EndpointSlice") => ENDPOINT_SLICE,
        ("policy", "PodDisruptionBudget") => POD_DISRUPTION_BUDGET,
        _ => DEFAULT,
    }
}

/// An IntOrString field as kubectl prints it (`1`, `50%`), `N/A` when unset.
fn int_or_string(value: Option<&Value>) -> String {
    match value {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "N/A".to_string(),
    }
}

/// The column headers `get` prints for `kind` (without the NAMESPACE column `-A` adds).
pub fn columns(kind: &Kind, wide: bool) -> Vec<String> {
    columns_of(kind).iter().filter(|c| wide || !c.wide).map(|c| c.name.to_uppercase()).collect()
}

/// A column as a `meta.k8s.io/v1` Table defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub name: &'static str,
    /// `name` for the Name column (clients recognise the object's name by it), else empty.
    pub format: &'static str,
    /// 0 for the default columns, 1 for those only `-o wide` shows.
    pub priority: i32,
}

/// Every column of `kind`'s table, wide ones included, in order.
pub fn definitions(kind: &Kind) -> Vec<Definition> {
    columns_of(kind)
        .iter()
        .map(|c| Definition {
            name: c.name,
            format: if c.name == "Name" { "name" } else { "" },
            priority: i32::from(c.wide),
        })
        .collect()
}

/// One object's cells for every column of [`definitions`], with ages computed against `now`.
pub fn cells_at(kind: &Kind, object: &Value, now: Timestamp) -> Vec<String> {
    columns_of(kind).iter().map(|c| (c.cell)(object, now)).collect()
}

/// The cells of one object's row, matching [`columns`].
pub fn row(kind: &Kind, object: &Value, wide: bool) -> Vec<String> {
    row_at(kind, object, wide, Timestamp::now())
}

/// [`row`] with ages computed against `now`.
pub fn row_at(kind: &Kind, object: &Value, wide: bool, now: Timestamp) -> Vec<String> {
    columns_of(kind).iter().filter(|c| wide || !c.wide).map(|c| (c.cell)(object, now)).collect()
}

/// A `LabelSelector` in label-query syntax (`app=web,tier in (a,b)`), or `<none>`.
pub fn selector_text(selector: Option<&Value>) -> String {
    label_selector(selector)
}

#[cfg(test)]
mod tests;
