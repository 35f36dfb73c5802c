//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded to JSON.
//!
//! kubectl's typed commands (`create namespace|configmap|secret|deployment|service|job…`, `auth
//! can-i`) send objects only in Kubernetes' protobuf encoding, with no JSON fallback: the bytes
//! `k8s\0`, then a `runtime.Unknown` whose `typeMeta` names the kind and whose `raw` is the object.
//! The object is decoded by reflection over `kubernetes.fds`, the descriptor set of Kubernetes'
//! `generated.proto` files (rebuilt by `tools/kubernetes-protos`), and rendered in the JSON form
//! Kubernetes' own encoder gives, so the rest of the server never knows the difference.
//!
//! Three things keep that JSON faithful (see [`message`]): Go writes every non-pointer field even
//! when it is zero, so zero scalars are dropped unless the field is optional in the API
//! ([`KEEP_ZERO`]); a few message types have their own JSON form (times, quantities,
//! int-or-string, raw JSON); and Go's embedded structs appear as a nested message in the proto
//! but flattened in JSON ([`INLINE`]).

use std::collections::HashSet;
use std::sync::LazyLock;

use base64::Engine as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, MapKey, MessageDescriptor, ReflectMessage, Value,
};
use serde_json::{Map, Value as Json};

use crate::status::ApiError;

pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(include_bytes!("kubernetes.fds").as_ref()).expect("the embedded descriptor set decodes")
});

/// Fields that are Go embedded structs: in JSON their fields sit in the parent object.
const INLINE: &[&str] = &[
    "api.core.v1.Volume.volumeSource",
    "api.core.v1.PersistentVolumeSpec.persistentVolumeSource",
    "api.core.v1.Probe.handler",
    "api.core.v1.EphemeralContainer.ephemeralContainerCommon",
    "api.core.v1.SecretProjection.localObjectReference",
    "api.core.v1.ConfigMapVolumeSource.localObjectReference",
    "api.core.v1.ConfigMapProjection.localObjectReference",
    "api.core.v1.ConfigMapKeySelector.localObjectReference",
    "api.core.v1.SecretKeySelector.localObjectReference",
    "api.core.v1.ConfigMapEnvSource.localObjectReference",
    "api.core.v1.SecretEnvSource.localObjectReference",
    "api.networking.v1.IngressRule.ingressRuleValue",
    "api.admissionregistration.v1.RuleWithOperations.rule",
    "api.admissionregistration.v1.NamedRuleWithOperations.ruleWithOperations",
];

/// Scalar fields that are optional (pointers in Go's types), so an explicit zero is meaningful and
/// kept: `kubectl create deployment --replicas=0` must not become the default of 1.
const KEEP_ZERO: &[&str] = &[
    "api.apps.v1.DeploymentSpec.replicas",
    "api.apps.v1.DeploymentSpec.revisionHistoryLimit",
    "api.apps.v1.DeploymentSpec.progressDeadlineSeconds",
    "api.apps.v1.ReplicaSetSpec.replicas",
    "api.apps.v1.StatefulSetSpec.replicas",
    "api.apps.v1.StatefulSetSpec.revisionHistoryLimit",
    "api.apps.v1.DaemonSetSpec.revisionHistoryLimit",
    "api.apps.v1.RollingUpdateStatefulSetStrategy.partition",
    "api.coordination.v1.LeaseSpec.leaseDurationSeconds",
    "api.coordination.v1.LeaseSpec.leaseTransitions",
    "api.autoscaling.v2.HPAScalingRules.stabilizationWindowSeconds",
    "api.core.v1.ClientIPConfig.timeoutSeconds",
    "api.batch.v1.JobSpec.parallelism",
    "api.batch.v1.JobSpec.completions",
    "api.batch.v1.JobSpec.activeDeadlineSeconds",
    "api.batch.v1.JobSpec.backoffLimit",
    "api.batch.v1.JobSpec.backoffLimitPerIndex",
    "api.batch.v1.JobSpec.maxFailedIndexes",
    "api.batch.v1.JobSpec.ttlSecondsAfterFinished",
    "api.batch.v1.JobSpec.suspend",
    "api.batch.v1.JobSpec.manualSelector",
    "api.batch.v1.CronJobSpec.suspend",
    "api.batch.v1.CronJobSpec.startingDeadlineSeconds",
    "api.batch.v1.CronJobSpec.successfulJobsHistoryLimit",
    "api.batch.v1.CronJobSpec.failedJobsHistoryLimit",
    "api.core.v1.PodSpec.terminationGracePeriodSeconds",
    "api.core.v1.PodSpec.activeDeadlineSeconds",
    "api.core.v1.PodSpec.automountServiceAccountToken",
    "api.core.v1.PodSpec.shareProcessNamespace",
    "api.core.v1.PodSpec.priority",
    "api.core.v1.PodSpec.enableServiceLinks",
    "api.core.v1.PodSpec.setHostnameAsFQDN",
    "api.core.v1.PodSpec.hostUsers",
    "api.core.v1.SecurityContext.runAsUser",
    "api.core.v1.SecurityContext.runAsGroup",
    "api.core.v1.SecurityContext.runAsNonRoot",
    "api.core.v1.SecurityContext.privileged",
    "api.core.v1.SecurityContext.readOnlyRootFilesystem",
    "api.core.v1.SecurityContext.allowPrivilegeEscalation",
    "api.core.v1.PodSecurityContext.runAsUser",
    "api.core.v1.PodSecurityContext.runAsGroup",
    "api.core.v1.PodSecurityContext.runAsNonRoot",
    "api.core.v1.PodSecurityContext.fsGroup",
    "api.core.v1.Probe.terminationGracePeriodSeconds",
    "api.core.v1.ConfigMap.immutable",
    "api.core.v1.Secret.immutable",
    "api.core.v1.ServiceAccount.automountServiceAccountToken",
    "api.core.v1.SecretVolumeSource.defaultMode",
    "api.core.v1.SecretVolumeSource.optional",
    "api.core.v1.ConfigMapVolumeSource.defaultMode",
    "api.core.v1.ConfigMapVolumeSource.optional",
    "api.core.v1.ProjectedVolumeSource.defaultMode",
    "api.core.v1.KeyToPath.mode",
    "api.core.v1.ConfigMapKeySelector.optional",
    "api.core.v1.SecretKeySelector.optional",
    "api.core.v1.ConfigMapEnvSource.optional",
    "api.core.v1.SecretEnvSource.optional",
    "api.core.v1.Toleration.tolerationSeconds",
    "api.core.v1.ServiceSpec.allocateLoadBalancerNodePorts",
    "api.autoscaling.v2.HorizontalPodAutoscalerSpec.minReplicas",
    "api.policy.v1.PodDisruptionBudgetSpec.unhealthyPodEvictionPolicy",
    "api.scheduling.v1.PriorityClass.preemptionPolicy",
    "apimachinery.pkg.apis.meta.v1.ObjectMeta.deletionGracePeriodSeconds",
    "apimachinery.pkg.apis.meta.v1.DeleteOptions.gracePeriodSeconds",
    "apimachinery.pkg.apis.meta.v1.DeleteOptions.orphanDependents",
];

static KEEP_ZERO_SET: LazyLock<HashSet<&'static str>> = LazyLock::new(|| KEEP_ZERO.iter().copied().collect());

fn unsupported(message: String) -> ApiError {
    ApiError::UnsupportedMediaType(message)
}

/// Decodes a protobuf request body to the object's JSON, `apiVersion` and `kind` included.
pub fn decode(body: &[u8]) -> Result<Json, ApiError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| ApiError::BadRequest("the protobuf body does not start with the k8s\\0 prefix".into()))?;
    let unknown_type =
        POOL.get_message_by_name("apimachinery.pkg.runtime.Unknown").expect("runtime.Unknown is described");
    let invalid = |e: prost::DecodeError| ApiError::BadRequest(format!("the protobuf body could not be decoded: {e}"));
    let unknown = DynamicMessage::decode(unknown_type, rest).map_err(invalid)?;
    let text = |message: &DynamicMessage, field: &str| {
        message.get_field_by_name(field).and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
    };
    let type_meta = unknown.get_field_by_name("typeMeta");
    let type_meta = type_meta.as_deref().and_then(Value::as_message);
    let (api_version, kind) = match type_meta {
        Some(meta) => (text(meta, "apiVersion"), text(meta, "kind")),
        None => Default::default(),
    };
    for field in ["contentEncoding", "contentType"] {
        let value = text(&unknown, field);
        if !value.is_empty() {
            return Err(unsupported(format!("protobuf bodies with {field} {value:?} are not supported")));
        }
    }
    let descriptor = message_type(&api_version, &kind)
        .ok_or_else(|| unsupported(format!("no protobuf encoding is known for {api_version} {kind}")))?;
    let raw = unknown.get_field_by_name("raw");
    let raw = raw.as_deref().and_then(Value::as_bytes).map(|b| b.as_ref()).unwrap_or_default();
    let object = DynamicMessage::decode(descriptor, raw).map_err(invalid)?;
    let mut json = Map::new();
    json.insert("apiVersion".into(), Json::String(api_version));
    json.insert("kind".into(), Json::String(kind));
    if let Json::Object(fields) = message(&object) {
        json.extend(fields);
    }
    Ok(Json::Object(json))
}

/// The message of `kind` in `apiVersion`: `apps/v1` `Deployment` is `api.apps.v1.Deployment`.
fn message_type(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = match group {
        "" => "api.core".to_string(),
        "meta.k8s.io" => "apimachinery.pkg.apis.meta".to_string(),
        group => format!("api.{}", group.split('.').next().unwrap_or(group)),
    };
    POOL.get_message_by_name(&format!("{package}.{version}.{kind}"))
        .or_else(|| POOL.get_message_by_name(&format!("apimachinery.pkg.apis.meta.v1.{kind}")))
}

/// A message in Kubernetes' JSON form.
fn message(m: &DynamicMessage) -> Json {
    let descriptor = m.descriptor();
    let field = |name: &str| m.get_field_by_name(name).map(|v| v.into_owned());
    match descriptor.full_name() {
        "apimachinery.pkg.apis.meta.v1.Time" => return time(m, false),
        "apimachinery.pkg.apis.meta.v1.MicroTime" => return time(m, true),
        "apimachinery.pkg.apis.meta.v1.Duration" => {
            let nanos = field("duration").and_then(|v| v.as_i64()).unwrap_or(0);
            return Json::String(go_duration(nanos));
        }
        "apimachinery.pkg.api.resource.Quantity" => {
            return field("string").and_then(|v| v.as_str().map(Json::from)).unwrap_or(Json::Null);
        }
        "apimachinery.pkg.util.intstr.IntOrString" => {
            return match field("type").and_then(|v| v.as_i64()) {
                Some(1) => field("strVal").and_then(|v| v.as_str().map(Json::from)).unwrap_or_default(),
                _ => Json::from(field("intVal").and_then(|v| v.as_i32()).unwrap_or(0)),
            };
        }
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            let raw = field("raw");
            return raw.as_ref().and_then(Value::as_bytes).map(|b| raw_json(b)).unwrap_or(Json::Null);
        }
        _ => {}
    }
    // Named string slices (`ExtraValue`, `Verbs`) are one repeated field in the proto, a list in JSON.
    if matches!(descriptor.name(), "ExtraValue" | "Verbs") && descriptor.fields().len() == 1 {
        let only = descriptor.fields().next().expect("one field");
        return value(&only, &m.get_field(&only));
    }
    let mut object = Map::new();
    for (f, v) in m.fields() {
        if INLINE.contains(&f.full_name()) {
            if let Json::Object(inner) = value(&f, v) {
                object.extend(inner);
            }
            continue;
        }
        let zero = matches!(v, Value::String(s) if s.is_empty())
            || matches!(v, Value::Bool(false) | Value::I32(0) | Value::I64(0));
        if zero && !KEEP_ZERO_SET.contains(f.full_name()) {
            continue;
        }
        let rendered = value(&f, v);
        if !rendered.is_null() {
            object.insert(json_name(&f).to_string(), rendered);
        }
    }
    Json::Object(object)
}

/// The JSON name of a field: the proto names are Kubernetes' JSON names, but for a few
/// go-to-protobuf spelled from the Go field instead.
fn json_name(f: &FieldDescriptor) -> &str {
    match f.name() {
        "aPIGroup" => "apiGroup",
        "uID" => "uid",
        "Expression" => "expression",
        "Name" => "name",
        "Webhooks" => "webhooks",
        other => other,
    }
}

fn value(f: &FieldDescriptor, v: &Value) -> Json {
    match v {
        Value::List(items) => Json::Array(items.iter().map(scalar).collect()),
        Value::Map(entries) => {
            let value_field = f.kind().as_message().map(|m| m.map_entry_value_field());
            let mut object = Map::new();
            for (key, v) in entries {
                let key = match key {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(i) => i.to_string(),
                    MapKey::I64(i) => i.to_string(),
                    MapKey::U32(i) => i.to_string(),
                    MapKey::U64(i) => i.to_string(),
                };
                let rendered = match &value_field {
                    Some(field) => value(field, v),
                    None => scalar(v),
                };
                object.insert(key, rendered);
            }
            Json::Object(object)
        }
        other => scalar(other),
    }
}

fn scalar(v: &Value) -> Json {
    match v {
        Value::Bool(b) => Json::from(*b),
        Value::I32(i) => Json::from(*i),
        // Kubernetes' JSON writes int64 as a number (proto3 JSON would quote it).
        Value::I64(i) => Json::from(*i),
        Value::U32(i) => Json::from(*i),
        Value::U64(i) => Json::from(*i),
        Value::F32(x) => Json::from(f64::from(*x)),
        Value::F64(x) => Json::from(*x),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::EnumNumber(n) => Json::from(*n),
        Value::Message(m) => message(m),
        Value::List(items) => Json::Array(items.iter().map(scalar).collect()),
        Value::Map(_) => Json::Null,
    }
}

/// A `meta.v1.Time` (whole seconds) or `MicroTime`; Go writes the zero time as an empty message.
fn time(m: &DynamicMessage, micro: bool) -> Json {
    if !m.has_field_by_name("seconds") && !m.has_field_by_name("nanos") {
        return Json::Null;
    }
    let seconds = m.get_field_by_name("seconds").and_then(|v| v.as_i64()).unwrap_or(0);
    let nanos =
        if micro { m.get_field_by_name("nanos").and_then(|v| v.as_i32()).unwrap_or(0) / 1000 * 1000 } else { 0 };
    match jiff::Timestamp::new(seconds, nanos) {
        Ok(ts) if micro => Json::String(ts.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()),
        Ok(ts) => Json::String(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        Err(_) => Json::Null,
    }
}

/// `raw` bytes that hold JSON. Anything else (a nested protobuf object among them) is kept as
/// base64: decoding nested objects would let a small body recurse without bound.
fn raw_json(bytes: &[u8]) -> Json {
    if bytes.is_empty() {
        return Json::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Json::String(base64::engine::general_purpose::STANDARD.encode(bytes)))
}

/// A duration as Go prints one (`1h2m3s`, `1.5s`, `250ms`, `0s`): `meta.v1.Duration` is a string in JSON.
fn go_duration(nanos: i64) -> String {
    fn fraction(value: u64, unit: u64) -> String {
        let (whole, rest) = (value / unit, value % unit);
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.ilog10() as usize;
        format!("{whole}.{}", format!("{rest:0digits$}").trim_end_matches('0'))
    }
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let mut n = nanos.unsigned_abs();
    let text = if n < 1_000 {
        format!("{n}ns")
    } else if n < 1_000_000 {
        format!("{}µs", fraction(n, 1_000))
    } else if n < 1_000_000_000 {
        format!("{}ms", fraction(n, 1_000_000))
    } else {
        let hours = n / 3_600_000_000_000;
        n %= 3_600_000_000_000;
        let minutes = n / 60_000_000_000;
        n %= 60_000_000_000;
        let mut out = String::new();
        if hours > 0 {
            out.push_str(&format!("{hours}h"));
        }
        if hours > 0 || minutes > 0 {
            out.push_str(&format!("{minutes}m"));
        }
        out.push_str(&format!("{}s", fraction(n, 1_000_000_000)));
        out
    };
    format!("{sign}{text}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A body as kubectl 1.32 sent it (captured from `kubectl create …` and `auth can-i`).
    fn captured(name: &str) -> Json {
        let path = format!("{}/src/apiserver/protobuf/testdata/{name}.pb", env!("CARGO_MANIFEST_DIR"));
        decode(&std::fs::read(&path).expect("a captured body")).expect("decodes")
    }

    #[test]
    fn kubectl_create_bodies_decode_to_kubernetes_json() {
        assert_eq!(
            captured("namespace"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}, "spec": {}, "status": {}})
        );
        assert_eq!(
            captured("secret"),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"}, "data": {"k": "dg=="}})
        );
        let deployment = captured("deployment");
        assert_eq!(deployment["spec"]["replicas"], 0, "an explicit zero replicas is kept: {deployment}");
        assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.27");
        assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["ports"], json!([{"containerPort": 8080}]));
        assert!(deployment["metadata"].get("namespace").is_none(), "Go's empty strings are not values: {deployment}");
        let service = captured("service");
        assert_eq!(
            service["spec"]["ports"],
            json!([{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}])
        );
        assert_eq!(captured("configmap")["data"], json!({"a": "b"}));
        let job = captured("job");
        assert_eq!(job["kind"], "Job");
        let _: k8s_openapi::api::batch::v1::Job = serde_json::from_value(job).expect("a Job");
        let review = captured("selfsubjectaccessreview");
        assert_eq!(
            review["spec"]["resourceAttributes"],
            json!({"namespace": "default", "resource": "pods", "verb": "get"})
        );
        // Every decoded body is a valid object of its kind.
        let _: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(deployment).expect("a Deployment");
        let _: k8s_openapi::api::core::v1::Service = serde_json::from_value(service).expect("a Service");
    }

    #[test]
    fn malformed_bodies_are_refused_with_a_reason() {
        assert!(matches!(decode(b"{}"), Err(ApiError::BadRequest(m)) if m.contains("k8s\\0")));
        assert!(matches!(decode(b"k8s\0\x0a\xff"), Err(ApiError::BadRequest(m)) if m.contains("could not be decoded")));
    }

    #[test]
    fn go_durations() {
        for (nanos, text) in [
            (0, "0s"),
            (1_500_000_000, "1.5s"),
            (3_723_000_000_000, "1h2m3s"),
            (250_000_000, "250ms"),
            (60_000_000_000, "1m0s"),
        ] {
            assert_eq!(go_duration(nanos), text);
        }
    }
}
