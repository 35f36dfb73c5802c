//! The table columns `get` prints for each kind, as kubectl prints them.
//!
//! Pure functions of the object's JSON (and the current time for ages), so the same code can later
//! serve `Table` responses server-side. Each kind is a list of [`Column`]s; a column marked `wide`
//! only shows with `-o wide`. Cell rules (pod STATUS, service PORT(S), ...) mirror kubectl's
//! printers in `pkg/printers/internalversion`.

use jiff::Timestamp;
use serde_json::Value;
use wasmkube_api::{Kind, meta};

mod cells;

use cells::*;

/// How a cell is computed from an object at a given time.
type Cell = fn(&Value, Timestamp) -> String;

/// One table column.
struct Column {
    header: &'static str,
    /// Only printed with `-o wide`.
    wide: bool,
    cell: Cell,
}

const fn col(header: &'static str, cell: Cell) -> Column {
    Column { header, wide: false, cell }
}

const fn wide(header: &'static str, cell: Cell) -> Column {
    Column { header, wide: true, cell }
}

const NAME: Column = col("NAME", |o, _| meta::name(o).to_string());
const AGE: Column = col("AGE", |o, now| age_at(str_at(o, "/metadata/creationTimestamp"), now));
const CONTAINERS: Column = wide("CONTAINERS", |o, _| template_containers(o, "name"));
const IMAGES: Column = wide("IMAGES", |o, _| template_containers(o, "image"));
const SELECTOR: Column = wide("SELECTOR", |o, _| label_selector(o.pointer("/spec/selector")));

static POD: &[Column] = &[
    NAME,
    col("READY", pod_ready),
    col("STATUS", pod_status),
    col("RESTARTS", pod_restarts),
    AGE,
    wide("IP", |o, _| or_none(str_at(o, "/status/podIP"))),
    wide("NODE", |o, _| or_none(str_at(o, "/spec/nodeName"))),
    wide("NOMINATED NODE", |o, _| or_none(str_at(o, "/status/nominatedNodeName"))),
    wide("READINESS GATES", pod_readiness_gates),
];

static DEPLOYMENT: &[Column] = &[
    NAME,
    col("READY", |o, _| format!("{}/{}", int_at(o, "/status/readyReplicas"), replicas(o))),
    col("UP-TO-DATE", |o, _| int_at(o, "/status/updatedReplicas").to_string()),
    col("AVAILABLE", |o, _| int_at(o, "/status/availableReplicas").to_string()),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

static REPLICA_SET: &[Column] = &[
    NAME,
    col("DESIRED", |o, _| replicas(o).to_string()),
    col("CURRENT", |o, _| int_at(o, "/status/replicas").to_string()),
    col("READY", |o, _| int_at(o, "/status/readyReplicas").to_string()),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

static STATEFUL_SET: &[Column] = &[
    NAME,
    col("READY", |o, _| format!("{}/{}", int_at(o, "/status/readyReplicas"), replicas(o))),
    AGE,
    CONTAINERS,
    IMAGES,
];

static DAEMON_SET: &[Column] = &[
    NAME,
    col("DESIRED", |o, _| int_at(o, "/status/desiredNumberScheduled").to_string()),
    col("CURRENT", |o, _| int_at(o, "/status/currentNumberScheduled").to_string()),
    col("READY", |o, _| int_at(o, "/status/numberReady").to_string()),
    col("UP-TO-DATE", |o, _| int_at(o, "/status/updatedNumberScheduled").to_string()),
    col("AVAILABLE", |o, _| int_at(o, "/status/numberAvailable").to_string()),
    col("NODE SELECTOR", |o, _| pairs(o.pointer("/spec/template/spec/nodeSelector"))),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

static SERVICE: &[Column] = &[
    NAME,
    col("TYPE", |o, _| str_at(o, "/spec/type").unwrap_or("ClusterIP").to_string()),
    col("CLUSTER-IP", |o, _| or_none(str_at(o, "/spec/clusterIP"))),
    col("EXTERNAL-IP", service_external_ip),
    col("PORT(S)", service_ports),
    AGE,
    wide("SELECTOR", |o, _| pairs(o.pointer("/spec/selector"))),
];

static NAMESPACE: &[Column] = &[NAME, col("STATUS", |o, _| text_at(o, "/status/phase")), AGE];

static NODE: &[Column] = &[
    NAME,
    col("STATUS", node_status),
    col("ROLES", node_roles),
    AGE,
    col("VERSION", |o, _| text_at(o, "/status/nodeInfo/kubeletVersion")),
    wide("INTERNAL-IP", |o, _| node_address(o, "InternalIP")),
    wide("EXTERNAL-IP", |o, _| node_address(o, "ExternalIP")),
    wide("OS-IMAGE", |o, _| unknown_if_empty(str_at(o, "/status/nodeInfo/osImage"))),
    wide("KERNEL-VERSION", |o, _| unknown_if_empty(str_at(o, "/status/nodeInfo/kernelVersion"))),
    wide("CONTAINER-RUNTIME", |o, _| unknown_if_empty(str_at(o, "/status/nodeInfo/containerRuntimeVersion"))),
];

static CONFIG_MAP: &[Column] =
    &[NAME, col("DATA", |o, _| (len_at(o, "/data") + len_at(o, "/binaryData")).to_string()), AGE];

static SECRET: &[Column] =
    &[NAME, col("TYPE", |o, _| text_at(o, "/type")), col("DATA", |o, _| len_at(o, "/data").to_string()), AGE];

static SERVICE_ACCOUNT: &[Column] = &[NAME, col("SECRETS", |o, _| len_at(o, "/secrets").to_string()), AGE];

static ENDPOINTS: &[Column] = &[NAME, col("ENDPOINTS", endpoints), AGE];

static EVENT: &[Column] = &[
    col("LAST SEEN", event_last_seen),
    col("TYPE", |o, _| text_at(o, "/type")),
    col("REASON", |o, _| text_at(o, "/reason")),
    col("OBJECT", event_object),
    col("MESSAGE", |o, _| text_at(o, "/message").trim().to_string()),
];

static JOB: &[Column] = &[
    NAME,
    col("STATUS", job_status),
    col("COMPLETIONS", job_completions),
    col("DURATION", job_duration),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

static CRON_JOB: &[Column] = &[
    NAME,
    col("SCHEDULE", |o, _| text_at(o, "/spec/schedule")),
    col("SUSPEND", |o, _| bool_word(o.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false))),
    col("ACTIVE", |o, _| len_at(o, "/status/active").to_string()),
    col("LAST SCHEDULE", |o, now| match str_at(o, "/status/lastScheduleTime") {
        Some(ts) => age_at(Some(ts), now),
        None => "<none>".to_string(),
    }),
    AGE,
    wide("CONTAINERS", |o, _| containers_at(o, "/spec/jobTemplate/spec/template/spec/containers", "name")),
    wide("IMAGES", |o, _| containers_at(o, "/spec/jobTemplate/spec/template/spec/containers", "image")),
    wide("SELECTOR", |o, _| label_selector(o.pointer("/spec/jobTemplate/spec/selector"))),
];

static POD_DISRUPTION_BUDGET: &[Column] = &[
    NAME,
    col("MIN AVAILABLE", |o, _| int_or_string(o.pointer("/spec/minAvailable"))),
    col("MAX UNAVAILABLE", |o, _| int_or_string(o.pointer("/spec/maxUnavailable"))),
    col("ALLOWED DISRUPTIONS", |o, _| int_at(o, "/status/disruptionsAllowed").to_string()),
    AGE,
];

static LEASE: &[Column] = &[NAME, col("HOLDER", |o, _| text_at(o, "/spec/holderIdentity")), AGE];

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
        ("policy", "PodDisruptionBudget") => POD_DISRUPTION_BUDGET,
        _ => DEFAULT,
    }
}

/// The column headers `get` prints for `kind` (without the NAMESPACE column `-A` adds).
/// An IntOrString field as kubectl prints it (`1`, `50%`), `N/A` when unset.
fn int_or_string(value: Option<&Value>) -> String {
    match value {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "N/A".to_string(),
    }
}

pub fn columns(kind: &Kind, wide: bool) -> Vec<&'static str> {
    columns_of(kind).iter().filter(|c| wide || !c.wide).map(|c| c.header).collect()
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
