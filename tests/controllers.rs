//! The Deployment controller and the garbage collector end to end, on a control plane without a
//! node agent. Pods name a scheduler that does not exist (`schedulerName: none`), so nothing but
//! these tests touches their status: a test marks pods Ready the way a kubelet would report them,
//! and the ReplicaSet controller turns that into the ReplicaSets' available counts.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::{Value, json};
use support::{TestCluster, eventually};
use wasmkube_control::controller::deployment::pod_template_hash;

const WITHIN: Duration = Duration::from_secs(30);
const HOLD: &str = "test.wasmkube.dev/hold";

struct Apis {
    deployments: Api<Deployment>,
    replica_sets: Api<ReplicaSet>,
    pods: Api<Pod>,
    events: Api<Event>,
    configmaps: Api<ConfigMap>,
}

fn apis(cluster: &TestCluster) -> Apis {
    let c = cluster.client.clone();
    Apis {
        deployments: Api::default_namespaced(c.clone()),
        replica_sets: Api::default_namespaced(c.clone()),
        pods: Api::default_namespaced(c.clone()),
        events: Api::default_namespaced(c.clone()),
        configmaps: Api::default_namespaced(c),
    }
}

fn deployment(name: &str, replicas: i32, image: &str, extra_spec: Value) -> Deployment {
    let mut spec = json!({
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"schedulerName": "none", "containers": [{"name": "web", "image": image}]}},
    });
    merge(&mut spec, &extra_spec);
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("deployment")
}

/// JSON merge patch (RFC 7386) of `patch` into `doc`.
fn merge(doc: &mut Value, patch: &Value) {
    match (doc, patch) {
        (Value::Object(doc), Value::Object(patch)) => {
            for (k, v) in patch {
                match v {
                    Value::Null => {
                        doc.remove(k);
                    }
                    _ => merge(doc.entry(k.clone()).or_insert(Value::Null), v),
                }
            }
        }
        (doc, patch) => *doc = patch.clone(),
    }
}

fn rolling(max_surge: i32, max_unavailable: i32) -> Value {
    let fenceposts = json!({"maxSurge": max_surge, "maxUnavailable": max_unavailable});
    json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": fenceposts}})
}

fn annotation(meta: &kube::core::ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref().and_then(|a| a.get(key)).cloned()
}

fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, "deployment.kubernetes.io/revision").and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn name(meta: &kube::core::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

/// The Deployment's ReplicaSets, lowest revision first.
async fn sets_of(a: &Apis, deployment: &str) -> Vec<ReplicaSet> {
    let selector = format!("app={deployment}");
    let mut sets = a.replica_sets.list(&ListParams::default().labels(&selector)).await.expect("list").items;
    sets.sort_by_key(revision);
    sets
}

async fn set_named(a: &Apis, rs: &str) -> ReplicaSet {
    a.replica_sets.get(rs).await.expect("get replica set")
}

/// The live pods a ReplicaSet controls.
async fn pods_of(a: &Apis, rs: &ReplicaSet) -> Vec<Pod> {
    let uid = rs.metadata.uid.clone();
    let all = a.pods.list(&ListParams::default()).await.expect("list pods").items;
    all.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.metadata.owner_references.iter().flatten().any(|r| Some(&r.uid) == uid.as_ref()))
        .collect()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Reports a pod running and ready, as a kubelet would.
async fn mark_ready(a: &Apis, pod: &Pod) {
    let now = wasmkube_api::meta::now_rfc3339();
    let patch = json!({"metadata": {"resourceVersion": pod.metadata.resource_version},
        "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now},
                           {"type": "ContainersReady", "status": "True", "lastTransitionTime": now}],
            "containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
                                   "started": true, "state": {"running": {"startedAt": now}}}]}});
    // A conflict means the pod changed meanwhile; the caller looks again.
    let _ = a.pods.patch_status(&name(&pod.metadata), &PatchParams::default(), &Patch::Merge(patch)).await;
}

/// Marks pods of the ReplicaSet ready until it reports `count` available.
async fn make_available(a: &Apis, rs_name: &str, count: i32) {
    eventually(WITHIN, &format!("{rs_name} to have {count} available"), || async move {
        let rs = set_named(a, rs_name).await;
        if available(&rs) >= count {
            return Some(());
        }
        let pods = pods_of(a, &rs).await;
        let ready = pods.iter().filter(|p| is_ready(p)).count() as i32;
        for pod in pods.iter().filter(|p| !is_ready(p)).take((count - ready).max(0) as usize) {
            mark_ready(a, pod).await;
        }
        None
    })
    .await;
}

async fn deployment_status(a: &Apis, name: &str) -> k8s_openapi::api::apps::v1::DeploymentStatus {
    a.deployments.get(name).await.expect("get deployment").status.unwrap_or_default()
}

fn condition(status: &k8s_openapi::api::apps::v1::DeploymentStatus, type_: &str) -> Option<(String, String, String)> {
    let c = status.conditions.iter().flatten().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
}

/// What `kubectl rollout status` waits for: the generation observed, every replica updated and
/// available, none old left.
async fn rolled_out(a: &Apis, name: &str, replicas: i32) -> bool {
    let d = a.deployments.get(name).await.expect("get deployment");
    let s = d.status.clone().unwrap_or_default();
    s.observed_generation >= d.metadata.generation
        && s.updated_replicas.unwrap_or(0) == replicas
        && s.replicas.unwrap_or(0) == replicas
        && s.available_replicas.unwrap_or(0) == replicas
}

async fn event_messages(a: &Apis, involved: &str) -> Vec<String> {
    let events = a.events.list(&ListParams::default()).await.expect("list events").items;
    events
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(involved) && e.reason.as_deref() == Some("ScalingReplicaSet")
        })
        .filter_map(|e| e.message)
        .collect()
}

async fn set_image(a: &Apis, name: &str, image: &str) {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}});
    a.deployments.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.expect("patch image");
}

/// Waits for the Deployment's ReplicaSet of `revision` and returns its name.
async fn set_of_revision(a: &Apis, deployment: &str, rev: i64) -> String {
    eventually(WITHIN, &format!("revision {rev} of {deployment}"), || async move {
        sets_of(a, deployment).await.into_iter().find(|rs| revision(rs) == rev).map(|rs| name(&rs.metadata))
    })
    .await
}

#[tokio::test]
async fn a_deployment_creates_its_replica_set_named_labelled_and_owned_as_kubernetes_does() {
    let cluster = TestCluster::start().await;
    let a = apis(&cluster);
    let mut d = deployment("web", 3, "web:1", json!({}));
    d.metadata.annotations = Some(BTreeMap::from([("kubernetes.io/change-cause".into(), "first".into())]));
    let d = a.deployments.create(&PostParams::default(), &d).await.expect("create");
    let spec = d.spec.clone().expect("spec");
    let hash = pod_template_hash(&spec.template, None);
    let rs = eventually(WITHIN, "the replica set", || async {
        a.replica_sets.get_opt(&format!("web-{hash}")).await.ok().flatten()
    })
    .await;

    let labels = rs.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(labels.get("pod-template-hash"), Some(&hash));
    let rs_spec = rs.spec.clone().expect("spec");
    assert_eq!(rs_spec.replicas, Some(3));
    assert_eq!(rs_spec.selector.match_labels.unwrap_or_default().get("pod-template-hash"), Some(&hash));
    let template_labels = rs_spec.template.and_then(|t| t.metadata).and_then(|m| m.labels).unwrap_or_default();
    assert_eq!(template_labels.get("pod-template-hash"), Some(&hash));
    for (key, want) in [
        ("deployment.kubernetes.io/revision", "1"),
        ("deployment.kubernetes.io/desired-replicas", "3"),
        ("deployment.kubernetes.io/max-replicas", "4"), // 3 + 25% rounded up
        ("kubernetes.io/change-cause", "first"),
    ] {
        assert_eq!(annotation(&rs.metadata, key).as_deref(), Some(want), "{key}");
    }
    let owner = rs.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owner.len(), 1);
    assert_eq!(
        (owner[0].api_version.as_str(), owner[0].kind.as_str(), owner[0].name.as_str()),
        ("apps/v1", "Deployment", "web")
    );
    assert_eq!(Some(&owner[0].uid), d.metadata.uid.as_ref());
    assert_eq!((owner[0].controller, owner[0].block_owner_deletion), (Some(true), Some(true)));

    // The ReplicaSet controller makes the pods; the Deployment records its revision and an event.
    eventually(WITHIN, "three pods", || async { (pods_of(&a, &rs).await.len() == 3).then_some(()) }).await;
    eventually(WITHIN, "the deployment's revision", || async {
        let d = a.deployments.get("web").await.ok()?;
        (annotation(&d.metadata, "deployment.kubernetes.io/revision").as_deref() == Some("1")).then_some(())
    })
    .await;
    let events = a.events.list(&ListParams::default()).await.expect("events").items;
    let scaled = events.iter().find(|e| e.reason.as_deref() == Some("ScalingReplicaSet")).expect("a scaling event");
    assert_eq!(scaled.message.as_deref(), Some(format!("Scaled up replica set web-{hash} from 0 to 3").as_str()));
    assert_eq!(scaled.source.as_ref().and_then(|s| s.component.as_deref()), Some("deployment-controller"));
    assert_eq!(
        (scaled.involved_object.kind.as_deref(), scaled.involved_object.name.as_deref()),
        (Some("Deployment"), Some("web"))
    );
    assert!(name(&scaled.metadata).starts_with("web."), "{:?}", scaled.metadata.name);

    // Status as `kubectl rollout status` reads it, before and after the pods are available.
    let s = deployment_status(&a, "web").await;
    assert_eq!(condition(&s, "Available").map(|c| c.1), Some("MinimumReplicasUnavailable".into()));
    make_available(&a, &name(&rs.metadata), 3).await;
    eventually(WITHIN, "the rollout to complete", || async { rolled_out(&a, "web", 3).await.then_some(()) }).await;
    let s = deployment_status(&a, "web").await;
    assert_eq!(s.ready_replicas, Some(3));
    assert_eq!(s.unavailable_replicas, None, "zero, omitted");
    assert_eq!(
        condition(&s, "Available"),
        Some(("True".into(), "MinimumReplicasAvailable".into(), "Deployment has minimum availability.".into()))
    );
    assert_eq!(
        condition(&s, "Progressing"),
        Some((
            "True".into(),
            "NewReplicaSetAvailable".into(),
            format!("ReplicaSet \"web-{hash}\" has successfully progressed.")
        ))
    );
}

#[tokio::test]
async fn with_max_unavailable_zero_old_pods_go_only_as_new_ones_become_available() {
    let cluster = TestCluster::start().await;
    let a = apis(&cluster);
    a.deployments.create(&PostParams::default(), &deployment("web", 3, "web:1", rolling(1, 0))).await.expect("create");
    let first = set_of_revision(&a, "web", 1).await;
    make_available(&a, &first, 3).await;
    eventually(WITHIN, "revision 1 rolled out", || async { rolled_out(&a, "web", 3).await.then_some(()) }).await;

    set_image(&a, "web", "web:2").await;
    let second = set_of_revision(&a, "web", 2).await;
    // The surge pod exists and the controller has seen it (status updated), yet no old pod went.
    eventually(WITHIN, "the surge pod to be counted", || async {
        let s = deployment_status(&a, "web").await;
        (s.observed_generation == Some(2) && s.updated_replicas == Some(1)).then_some(())
    })
    .await;
    assert_eq!(replicas(&set_named(&a, &first).await), 3);
    assert_eq!(replicas(&set_named(&a, &second).await), 1);

    for step in 1..=3 {
        make_available(&a, &second, step).await;
        eventually(WITHIN, &format!("step {step}"), || async {
            let old = set_named(&a, &first).await;
            let new = set_named(&a, &second).await;
            assert!(
                available(&old) + available(&new) >= 3,
                "availability dropped: {} + {}",
                available(&old),
                available(&new)
            );
            (replicas(&old) == 3 - step && replicas(&new) == (step + 1).min(3)).then_some(())
        })
        .await;
    }
    eventually(WITHIN, "revision 2 rolled out", || async { rolled_out(&a, "web", 3).await.then_some(()) }).await;
    let messages = event_messages(&a, "web").await;
    for want in [
        format!("Scaled up replica set {second} from 0 to 1"),
        format!("Scaled down replica set {first} from 3 to 2"),
        format!("Scaled up replica set {second} from 1 to 2"),
        format!("Scaled down replica set {first} from 1 to 0"),
    ] {
        assert!(messages.contains(&want), "{want:?} not in {messages:?}");
    }
}

#[tokio::test]
async fn a_json_patched_rollback_makes_the_old_replica_set_the_newest_revision() {
    let cluster = TestCluster::start().await;
    let a = apis(&cluster);
    a.deployments.create(&PostParams::default(), &deployment("web", 1, "web:1", rolling(1, 0))).await.expect("create");
    let first = set_of_revision(&a, "web", 1).await;
    make_available(&a, &first, 1).await;
    set_image(&a, "web", "web:2").await;
    let second = set_of_revision(&a, "web", 2).await;
    make_available(&a, &second, 1).await;
    eventually(WITHIN, "revision 2 rolled out", || async {
        (rolled_out(&a, "web", 1).await && replicas(&set_named(&a, &first).await) == 0).then_some(())
    })
    .await;

    // What `kubectl rollout undo` sends: the old template, without its hash label, as a JSON patch.
    let mut template = serde_json::to_value(set_named(&a, &first).await.spec.and_then(|s| s.template)).expect("json");
    template["metadata"]["labels"].as_object_mut().expect("labels").remove("pod-template-hash");
    let undo = json!([{"op": "replace", "path": "/spec/template", "value": template}]);
    let undo = Patch::<()>::Json(serde_json::from_value(undo).expect("a JSON patch"));
    a.deployments.patch("web", &PatchParams::default(), &undo).await.expect("undo");

    eventually(WITHIN, "the old set to become revision 3", || async {
        let rs = set_named(&a, &first).await;
        (revision(&rs) == 3 && replicas(&rs) == 1).then_some(())
    })
    .await;
    let rs = set_named(&a, &first).await;
    assert_eq!(annotation(&rs.metadata, "deployment.kubernetes.io/revision-history").as_deref(), Some("1"));
    assert_eq!(sets_of(&a, "web").await.len(), 2, "no new replica set for an old template");
    make_available(&a, &first, 1).await;
    eventually(WITHIN, "the rollback to complete", || async {
        let d = a.deployments.get("web").await.ok()?;
        let revision = annotation(&d.metadata, "deployment.kubernetes.io/revision");
        (rolled_out(&a, "web", 1).await && revision.as_deref() == Some("3")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn old_replica_sets_beyond_the_revision_history_limit_are_pruned() {
    let cluster = TestCluster::start().await;
    let a = apis(&cluster);
    let extra = json!({"revisionHistoryLimit": 1, "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}});
    a.deployments.create(&PostParams::default(), &deployment("web", 1, "web:1", extra)).await.expect("create");
    for rev in 1..=3 {
        if rev > 1 {
            set_image(&a, "web", &format!("web:{rev}")).await;
        }
        let rs = set_of_revision(&a, "web", rev).await;
        make_available(&a, &rs, 1).await;
        eventually(WITHIN, &format!("revision {rev} rolled out"), || async {
            rolled_out(&a, "web", 1).await.then_some(())
        })
        .await;
    }
    eventually(WITHIN, "revision 1 to be pruned", || async {
        let revisions: Vec<i64> = sets_of(&a, "web").await.iter().map(revision).collect();
        (revisions == [2, 3]).then_some(())
    })
    .await;
}

#[tokio::test]
async fn recreate_scales_old_pods_away_before_the_new_replica_set_exists() {
    let cluster = TestCluster::start().await;
    let a = apis(&cluster);
    let d = deployment("web", 2, "web:1", json!({"strategy": {"type": "Recreate"}}));
    a.deployments.create(&PostParams::default(), &d).await.expect("create");
    let first = set_of_revision(&a, "web", 1).await;
    make_available(&a, &first, 2).await;
    // Keep one old pod around after its deletion, like a slow graceful shutdown.
    let held = name(&pods_of(&a, &set_named(&a, &first).await).await[0].metadata);
    let hold = json!({"metadata": {"finalizers": [HOLD]}});
    a.pods.patch(&held, &PatchParams::default(), &Patch::Merge(hold)).await.expect("hold");

    set_image(&a, "web", "web:2").await;
    // Old set at 0 and counted as such by the Deployment, but its pod is still terminating.
    eventually(WITHIN, "the old set to be scaled away", || async {
        let s = deployment_status(&a, "web").await;
        let old = set_named(&a, &first).await;
        let terminating = a.pods.get(&held).await.ok()?.metadata.deletion_timestamp.is_some();
        (replicas(&old) == 0 && terminating && s.observed_generation == Some(2) && s.replicas.is_none()).then_some(())
    })
    .await;
    assert_eq!(sets_of(&a, "web").await.len(), 1, "no new replica set while an old pod is left");

    let release = json!({"metadata": {"finalizers": null}});
    a.pods.patch(&held, &PatchParams::default(), &Patch::Merge(release)).await.expect("release");
    let second = set_of_revision(&a, "web", 2).await;
    assert_eq!(replicas(&set_named(&a, &second).await), 2, "straight to full size");
    make_available(&a, &second, 2).await;
    eventually(WITHIN, "revision 2 rolled out", || async { rolled_out(&a, "web", 2).await.then_some(()) }).await;
    let messages = event_messages(&a, "web").await;
    assert!(messages.contains(&format!("Scaled down replica set {first} from 2 to 0")), "{messages:?}");
    assert!(messages.contains(&format!("Scaled up replica set {second} from 0 to 2")), "{messages:?}");
}

#[tokio::test]
async fn scaling_through_the_scale_subresource_resizes_the_replica_set() {
    let cluster = TestCluster::start().await;
    let a = apis(&cluster);
    a.deployments.create(&PostParams::default(), &deployment("web", 2, "web:1", json!({}))).await.expect("create");
    let rs = set_of_revision(&a, "web", 1).await;
    for (to, verb, from) in [(5, "up", 2), (1, "down", 5)] {
        let scale = json!({"spec": {"replicas": to}});
        a.deployments.patch_scale("web", &PatchParams::default(), &Patch::Merge(scale)).await.expect("scale");
        eventually(WITHIN, &format!("{to} replicas"), || async {
            let set = set_named(&a, &rs).await;
            let desired = annotation(&set.metadata, "deployment.kubernetes.io/desired-replicas");
            (replicas(&set) == to && desired == Some(to.to_string())).then_some(())
        })
        .await;
        // The controller records the event after resizing the set, so it may land a moment later.
        let want = format!("Scaled {verb} replica set {rs} from {from} to {to}");
        eventually(WITHIN, &want, || async { event_messages(&a, "web").await.contains(&want).then_some(()) }).await;
    }
    assert_eq!(sets_of(&a, "web").await.len(), 1);
}

#[tokio::test]
async fn a_paused_deployment_does_not_roll_out_until_resumed() {
    let cluster = TestCluster::start().await;
    let a = apis(&cluster);
    a.deployments.create(&PostParams::default(), &deployment("web", 1, "web:1", json!({}))).await.expect("create");
    set_of_revision(&a, "web", 1).await;
    let pause =
        json!({"spec": {"paused": true, "template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}});
    a.deployments.patch("web", &PatchParams::default(), &Patch::Merge(pause)).await.expect("pause");
    eventually(WITHIN, "the paused condition", || async {
        let s = deployment_status(&a, "web").await;
        let paused = condition(&s, "Progressing").map(|c| (c.0, c.1));
        (s.observed_generation == Some(2) && paused == Some(("Unknown".into(), "DeploymentPaused".into())))
            .then_some(())
    })
    .await;
    assert_eq!(sets_of(&a, "web").await.len(), 1, "no rollout while paused");
    let resume = json!({"spec": {"paused": false}});
    a.deployments.patch("web", &PatchParams::default(), &Patch::Merge(resume)).await.expect("resume");
    set_of_revision(&a, "web", 2).await;
}

#[tokio::test]
async fn a_rollout_without_progress_exceeds_its_deadline() {
    let cluster = TestCluster::start().await;
    let a = apis(&cluster);
    let d = deployment("stuck", 1, "web:1", json!({"progressDeadlineSeconds": 1}));
    a.deployments.create(&PostParams::default(), &d).await.expect("create");
    let rs = set_of_revision(&a, "stuck", 1).await;
    let (status, reason, message) = eventually(WITHIN, "the deadline to pass", || async {
        let c = condition(&deployment_status(&a, "stuck").await, "Progressing")?;
        (c.1 == "ProgressDeadlineExceeded").then_some(c)
    })
    .await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ProgressDeadlineExceeded"));
    assert_eq!(message, format!("ReplicaSet \"{rs}\" has timed out progressing."));
}

/// A kubeconfig for the real kubectl, or `None` where kubectl is not installed (CI installs it).
fn kubeconfig(cluster: &TestCluster) -> Option<std::path::PathBuf> {
    use base64::Engine as _;
    if std::process::Command::new("kubectl").args(["version", "--client"]).output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "kubectl must be installed under CI");
        return None;
    }
    let ca = base64::engine::general_purpose::STANDARD.encode(&cluster.control.pki.ca_pem);
    let config = json!({"apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": cluster.url(), "certificate-authority-data": ca}}],
        "users": [{"name": "u", "user": {"token": cluster.control.pki.admin_token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "default"}}],
        "current-context": "c"});
    let path = cluster.dir.path().join("kubeconfig");
    std::fs::write(&path, config.to_string()).expect("write kubeconfig");
    Some(path)
}

async fn kubectl(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new("kubectl");
    command.args(args).env("KUBECONFIG", config);
    command.output().await.expect("kubectl runs")
}

#[tokio::test]
async fn kubectl_rollout_status_undo_and_history_work_against_the_controller() {
    let cluster = TestCluster::start().await;
    let Some(config) = kubeconfig(&cluster) else { return };
    let a = apis(&cluster);
    a.deployments.create(&PostParams::default(), &deployment("web", 2, "web:1", rolling(1, 0))).await.expect("create");
    let first = set_of_revision(&a, "web", 1).await;
    make_available(&a, &first, 2).await;
    let out = kubectl(&config, &["rollout", "status", "deployment/web", "--timeout=30s"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("successfully rolled out"), "{out:?}");

    set_image(&a, "web", "web:2").await;
    let second = set_of_revision(&a, "web", 2).await;
    make_available(&a, &second, 2).await;
    eventually(WITHIN, "revision 2 rolled out", || async { rolled_out(&a, "web", 2).await.then_some(()) }).await;

    let out = kubectl(&config, &["rollout", "undo", "deployment/web"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually(WITHIN, "revision 1 to come back as 3", || async {
        (revision(&set_named(&a, &first).await) == 3).then_some(())
    })
    .await;
    make_available(&a, &first, 2).await;
    let out = kubectl(&config, &["rollout", "status", "deployment/web", "--timeout=30s"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = kubectl(&config, &["rollout", "history", "deployment/web"]).await;
    let history = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let revisions: Vec<&str> =
        history.lines().filter_map(|l| l.split_whitespace().next()).filter(|w| w.parse::<i64>().is_ok()).collect();
    assert_eq!(revisions, ["2", "3"], "{history}");

    // A rollout that cannot progress: kubectl reports the exceeded deadline.
    let stuck = deployment("stuck", 1, "web:1", json!({"progressDeadlineSeconds": 1}));
    a.deployments.create(&PostParams::default(), &stuck).await.expect("create");
    let out = kubectl(&config, &["rollout", "status", "deployment/stuck", "--timeout=30s"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exceeded its progress deadline"), "{out:?}");
}

/// Creates a Deployment `web` of 2 replicas; once its first ReplicaSet has created both pods,
/// returns that ReplicaSet's name.
async fn web_with_two_pods(a: &Apis) -> String {
    a.deployments.create(&PostParams::default(), &deployment("web", 2, "web:1", json!({}))).await.expect("create");
    let rs = set_of_revision(a, "web", 1).await;
    eventually(WITHIN, "two pods", || async { (pods_of(a, &set_named(a, &rs).await).await.len() == 2).then_some(()) })
        .await;
    rs
}

#[tokio::test]
async fn deleting_an_owner_in_the_background_deletes_its_dependents() {
    let cluster = TestCluster::start().await;
    let a = apis(&cluster);
    web_with_two_pods(&a).await;

    a.deployments.delete("web", &DeleteParams::default()).await.expect("delete");
    assert!(a.deployments.get_opt("web").await.expect("get").is_none(), "the owner goes at once");
    eventually(WITHIN, "the replica set and pods to go", || async {
        let sets = a.replica_sets.list(&ListParams::default()).await.ok()?.items;
        let pods = a.pods.list(&ListParams::default()).await.ok()?.items;
        (sets.is_empty() && pods.is_empty()).then_some(())
    })
    .await;
}

fn owned_configmap(name: &str, owners: Value, finalizers: &[&str]) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": owners, "finalizers": finalizers}}))
        .expect("configmap")
}

fn owner_ref(kind: &str, api_version: &str, name: &str, uid: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "blockOwnerDeletion": true})
}

#[tokio::test]
async fn foreground_deletion_keeps_the_owner_until_its_dependents_are_gone() {
    let cluster = TestCluster::start().await;
    let a = apis(&cluster);
    let d =
        a.deployments.create(&PostParams::default(), &deployment("web", 2, "web:1", json!({}))).await.expect("create");
    let uid = d.metadata.uid.clone().expect("uid");
    set_of_revision(&a, "web", 1).await;
    // A dependent that lingers after its deletion, blocking its owner meanwhile.
    let cm = owned_configmap("state", json!([owner_ref("Deployment", "apps/v1", "web", &uid)]), &[HOLD]);
    a.configmaps.create(&PostParams::default(), &cm).await.expect("create configmap");

    let foreground = DeleteParams { propagation_policy: Some(PropagationPolicy::Foreground), ..Default::default() };
    a.deployments.delete("web", &foreground).await.expect("delete");
    eventually(WITHIN, "the replica set and pods to go first", || async {
        let sets = a.replica_sets.list(&ListParams::default()).await.ok()?.items;
        let pods = a.pods.list(&ListParams::default()).await.ok()?.items;
        let cm_deleting = a.configmaps.get("state").await.ok()?.metadata.deletion_timestamp.is_some();
        (sets.is_empty() && pods.is_empty() && cm_deleting).then_some(())
    })
    .await;
    let held = a.deployments.get("web").await.expect("the owner is still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.metadata.finalizers, Some(vec!["foregroundDeletion".to_string()]));

    let release = json!({"metadata": {"finalizers": null}});
    a.configmaps.patch("state", &PatchParams::default(), &Patch::Merge(release)).await.expect("release");
    eventually(WITHIN, "the owner to go", || async {
        a.deployments.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn orphaning_leaves_dependents_without_the_owner_reference() {
    let cluster = TestCluster::start().await;
    let a = apis(&cluster);
    let rs = web_with_two_pods(&a).await;

    // A dry run shows what a real Orphan delete does first: mark the object and add `orphan`.
    let orphan = DeleteParams { propagation_policy: Some(PropagationPolicy::Orphan), ..Default::default() };
    let dry = DeleteParams { dry_run: true, ..orphan.clone() };
    let marked = a.deployments.delete("web", &dry).await.expect("dry run").left().expect("the object, not a status");
    assert_eq!(marked.metadata.finalizers, Some(vec!["orphan".to_string()]));
    assert!(marked.metadata.deletion_timestamp.is_some());

    a.deployments.delete("web", &orphan).await.expect("delete");
    eventually(WITHIN, "the owner to go", || async {
        a.deployments.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
    let set = set_named(&a, &rs).await;
    assert_eq!(set.metadata.owner_references.unwrap_or_default(), vec![], "orphaned");
    assert_eq!(pods_of(&a, &set_named(&a, &rs).await).await.len(), 2, "the replica set keeps its pods");
}

#[tokio::test]
async fn dangling_owner_references_are_collected_or_dropped() {
    let cluster = TestCluster::start().await;
    let a = apis(&cluster);
    let keeper =
        a.configmaps.create(&PostParams::default(), &owned_configmap("keeper", json!([]), &[])).await.expect("keeper");
    let keeper_uid = keeper.metadata.uid.clone().expect("uid");
    let ghost = owner_ref("ConfigMap", "v1", "ghost", "00000000-0000-0000-0000-000000000000");
    let orphan = owned_configmap("orphaned", json!([ghost]), &[]);
    a.configmaps.create(&PostParams::default(), &orphan).await.expect("create");
    let shared = owned_configmap("shared", json!([ghost, owner_ref("ConfigMap", "v1", "keeper", &keeper_uid)]), &[]);
    a.configmaps.create(&PostParams::default(), &shared).await.expect("create");
    eventually(WITHIN, "the dangling reference to be handled", || async {
        let gone = a.configmaps.get_opt("orphaned").await.ok()?.is_none();
        let refs = a.configmaps.get("shared").await.ok()?.metadata.owner_references.unwrap_or_default();
        (gone && refs.len() == 1 && refs[0].uid == keeper_uid).then_some(())
    })
    .await;
    // An owner created just now is not mistaken for a missing one.
    let fresh =
        a.configmaps.create(&PostParams::default(), &owned_configmap("fresh", json!([]), &[])).await.expect("fresh");
    let child = owned_configmap(
        "child",
        json!([owner_ref("ConfigMap", "v1", "fresh", &fresh.metadata.uid.expect("uid"))]),
        &[],
    );
    a.configmaps.create(&PostParams::default(), &child).await.expect("child");
    a.configmaps.delete("fresh", &DeleteParams::default()).await.expect("delete owner");
    eventually(WITHIN, "the child to follow its owner", || async {
        a.configmaps.get_opt("child").await.ok()?.is_none().then_some(())
    })
    .await;
}
