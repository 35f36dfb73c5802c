//! The REST API end to end: a real control plane on loopback, driven by the `kube` crate and raw
//! HTTP requests.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{TestCluster, eventually, status_of};

fn configmap(name: &str, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).expect("configmap")
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "web", "image": "hello:1"}]}},
        },
    }))
    .expect("deployment")
}

/// Sends a raw request and returns status, headers and the JSON body.
async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Value,
) -> (u16, http::HeaderMap, Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(serde_json::to_vec(&body).expect("json").into())
        .expect("request");
    let response = client.send(request).await.expect("response");
    let (parts, body) = response.into_parts();
    use http_body_util::BodyExt;
    let bytes = body.collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (parts.status.as_u16(), parts.headers, value)
}

#[tokio::test]
async fn configmaps_and_pods_round_trip_through_create_get_list_replace_and_delete() {
    let cluster = TestCluster::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let created = cms.create(&PostParams::default(), &configmap("one", json!({"k": "v"}))).await.expect("create");
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some() && meta.resource_version.is_some());
    let fetched = cms.get("one").await.expect("get");
    assert_eq!(fetched.data.as_ref().and_then(|d| d.get("k")).map(String::as_str), Some("v"));

    let mut changed = fetched.clone();
    changed.data = Some([("k".to_string(), "w".to_string())].into());
    let replaced = cms.replace("one", &PostParams::default(), &changed).await.expect("replace");
    let rv =
        |m: &ConfigMap| m.metadata.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok()).expect("numeric rv");
    assert!(rv(&replaced) > rv(&fetched), "a write moves the resourceVersion forward");
    assert_eq!(cms.list(&ListParams::default()).await.expect("list").items.len(), 1);
    cms.delete("one", &DeleteParams::default()).await.expect("delete");
    assert_eq!(status_of(cms.get("one").await).code, 404);

    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "hello:1"}]}}))
    .expect("pod");
    let created = pods.create(&PostParams::default(), &pod).await.expect("create pod");
    assert_eq!(created.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    assert_eq!(created.spec.and_then(|s| s.restart_policy).as_deref(), Some("Always"), "defaults applied");
    pods.delete("p", &DeleteParams::default()).await.expect("delete pod");
    assert_eq!(status_of(pods.get("p").await).code, 404, "an unscheduled pod goes at once");
}

#[tokio::test]
async fn errors_are_status_objects_with_kubernetes_reasons() {
    let cluster = TestCluster::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let first = cms.create(&PostParams::default(), &configmap("dup", json!({}))).await.expect("create");

    let exists = status_of(cms.create(&PostParams::default(), &configmap("dup", json!({}))).await);
    assert_eq!((exists.code, exists.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(exists.message, "configmaps \"dup\" already exists");

    let mut stale = first.clone();
    let mut newer = first.clone();
    newer.data = Some([("a".to_string(), "b".to_string())].into());
    cms.replace("dup", &PostParams::default(), &newer).await.expect("a replace at the current version");
    stale.data = Some([("x".to_string(), "y".to_string())].into());
    let conflict = status_of(cms.replace("dup", &PostParams::default(), &stale).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));

    let missing = status_of(cms.get("nope").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "configmaps \"nope\" not found");

    let in_missing_ns: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "ghost");
    let no_ns = status_of(in_missing_ns.create(&PostParams::default(), &configmap("a", json!({}))).await);
    assert_eq!((no_ns.code, no_ns.message.as_str()), (404, "namespaces \"ghost\" not found"));
}

#[tokio::test]
async fn invalid_objects_get_422_with_field_causes() {
    let cluster = TestCluster::start().await;
    let (code, _, status) = raw(
        &cluster.client,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"},
               "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 70000}]}]}}),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(status["reason"], "Invalid");
    let fields: Vec<&str> =
        status["details"]["causes"].as_array().expect("causes").iter().filter_map(|c| c["field"].as_str()).collect();
    for want in ["metadata.name", "spec.containers[0].image", "spec.containers[0].ports[0].containerPort"] {
        assert!(fields.contains(&want), "{want} missing from {fields:?}");
    }
    assert!(status["message"].as_str().expect("message").starts_with("Pod \"Bad_Name\" is invalid: ["));
}

#[tokio::test]
async fn requests_without_the_admin_token_get_401_but_health_needs_none() {
    let cluster = TestCluster::start().await;
    for token in [None, Some("wrong-token")] {
        let anonymous = cluster.client_with_token(token).await;
        let cms: Api<ConfigMap> = Api::namespaced(anonymous.clone(), "default");
        let status = status_of(cms.list(&ListParams::default()).await);
        assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"));
        for path in ["/healthz", "/livez", "/readyz"] {
            let (code, _, body) = raw(&anonymous, "GET", path, "application/json", Value::Null).await;
            assert_eq!((code, body), (200, Value::String("ok".into())), "{path}");
        }
    }
}

#[tokio::test]
async fn field_validation_strict_rejects_and_warn_warns_about_unknown_fields() {
    let cluster = TestCluster::start().await;
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "f"}, "bogusField": 1});
    let (code, _, status) = raw(
        &cluster.client,
        "POST",
        "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
        "application/json",
        body.clone(),
    )
    .await;
    assert_eq!((code, status["message"].as_str()), (400, Some("strict decoding error: unknown field \"bogusField\"")));
    let (code, headers, object) = raw(
        &cluster.client,
        "POST",
        "/api/v1/namespaces/default/configmaps?fieldValidation=Warn",
        "application/json",
        body,
    )
    .await;
    assert_eq!(code, 201);
    assert_eq!(
        headers.get("warning").and_then(|v| v.to_str().ok()),
        Some("299 - \"unknown field \\\"bogusField\\\"\"")
    );
    assert!(object.get("bogusField").is_none(), "unknown fields are not stored");
}

#[tokio::test]
async fn merge_and_json_patches_apply_and_generation_tracks_spec_changes() {
    let cluster = TestCluster::start().await;
    let deploys: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    let created = deploys.create(&PostParams::default(), &deployment("web", 1)).await.expect("create");
    assert_eq!(created.metadata.generation, Some(1));

    let labelled = deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"tier": "a"}}})))
        .await
        .expect("merge patch");
    assert_eq!(labelled.metadata.generation, Some(1), "metadata changes keep the generation");

    let (code, _, patched) = raw(
        &cluster.client,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web",
        "application/json-patch+json",
        json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "hello:2"}]),
    )
    .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["metadata"]["generation"], 2);
    assert_eq!(patched["spec"]["template"]["spec"]["containers"][0]["image"], "hello:2");

    let status = deploys
        .patch_status("web", &PatchParams::default(), &Patch::Merge(json!({"status": {"replicas": 1}})))
        .await
        .expect("status patch");
    assert_eq!(status.status.and_then(|s| s.replicas), Some(1));
    assert_eq!(status.metadata.generation, Some(2), "status writes keep the generation");
    let mut replace = deploys.get("web").await.expect("get");
    replace.status = None;
    let kept = deploys.replace("web", &PostParams::default(), &replace).await.expect("replace");
    assert_eq!(kept.status.and_then(|s| s.replicas), Some(1), "main-resource writes keep the status");
}

#[tokio::test]
async fn the_scale_subresource_reads_and_writes_replicas() {
    let cluster = TestCluster::start().await;
    let deploys: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    deploys.create(&PostParams::default(), &deployment("s", 2)).await.expect("create");
    let scale = deploys.get_scale("s").await.expect("get scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(2));
    assert_eq!(scale.status.map(|s| s.selector), Some(Some("app=s".to_string())));
    let scaled = deploys
        .patch_scale("s", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 5}})))
        .await
        .expect("patch scale");
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(5));
    assert_eq!(deploys.get("s").await.expect("get").spec.and_then(|s| s.replicas), Some(5));
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists_and_pages_continue_at_one_revision() {
    let cluster = TestCluster::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    for (i, tier) in ["a", "b", "a", "c", "a"].iter().enumerate() {
        let mut cm = configmap(&format!("cm{i}"), json!({}));
        cm.metadata.labels = Some([("tier".to_string(), tier.to_string())].into());
        cms.create(&PostParams::default(), &cm).await.expect("create");
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        l.items.into_iter().filter_map(|c| c.metadata.name).collect()
    };
    for (selector, want) in [
        ("tier=a", vec!["cm0", "cm2", "cm4"]),
        ("tier!=a", vec!["cm1", "cm3"]),
        ("tier in (b,c)", vec!["cm1", "cm3"]),
        ("tier notin (a,b)", vec!["cm3"]),
        ("tier", vec!["cm0", "cm1", "cm2", "cm3", "cm4"]),
        ("!tier", vec![]),
    ] {
        let got = names(cms.list(&ListParams::default().labels(selector)).await.expect("list"));
        assert_eq!(got, want, "{selector}");
    }
    let by_name = names(cms.list(&ListParams::default().fields("metadata.name=cm3")).await.expect("list"));
    assert_eq!(by_name, vec!["cm3"]);
    let bad = status_of(cms.list(&ListParams::default().fields("spec.bogus=x")).await);
    assert_eq!((bad.code, bad.message.as_str()), (400, "field label not supported: spec.bogus"));

    // Page by two; a write between pages does not show up in later pages.
    let first = cms.list(&ListParams::default().limit(2)).await.expect("page 1");
    assert_eq!(names(first.clone()), vec!["cm0", "cm1"]);
    cms.create(&PostParams::default(), &configmap("cm1a", json!({}))).await.expect("create between pages");
    let token = first.metadata.continue_.clone().expect("continue token");
    let second = cms.list(&ListParams::default().limit(2).continue_token(&token)).await.expect("page 2");
    assert_eq!(second.metadata.resource_version, first.metadata.resource_version);
    assert_eq!(names(second.clone()), vec!["cm2", "cm3"]);
    let token = second.metadata.continue_.clone().expect("continue token");
    let third = cms.list(&ListParams::default().limit(2).continue_token(&token)).await.expect("page 3");
    assert_eq!(names(third.clone()), vec!["cm4"]);
    assert!(third.metadata.continue_.as_deref().unwrap_or("").is_empty());
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let cluster = TestCluster::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let mut cm = configmap("held", json!({}));
    cm.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &cm).await.expect("create");
    cms.delete("held", &DeleteParams::default()).await.expect("delete");
    let marked = cms.get("held").await.expect("still there");
    assert!(marked.metadata.deletion_timestamp.is_some());
    cms.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await
        .expect("remove finalizer");
    assert_eq!(status_of(cms.get("held").await).code, 404);
}

#[tokio::test]
async fn deleting_a_namespace_terminates_it_removes_its_content_then_itself() {
    let cluster = TestCluster::start().await;
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for builtin in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.contains(&builtin.to_string()), "{builtin} exists from the start");
    }
    let forbidden = status_of(namespaces.delete("kube-system", &DeleteParams::default()).await);
    assert_eq!(
        (forbidden.code, forbidden.message.as_str()),
        (403, "namespaces \"kube-system\" is forbidden: this namespace may not be deleted")
    );
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).expect("ns");
    namespaces.create(&PostParams::default(), &ns).await.expect("create ns");
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "doomed");
    cms.create(&PostParams::default(), &configmap("inside", json!({}))).await.expect("create cm");

    namespaces.delete("doomed", &DeleteParams::default()).await.expect("delete ns");
    // Right after the delete it is Terminating (unless the controller already finished).
    if let Ok(terminating) = namespaces.get("doomed").await {
        assert_eq!(terminating.status.and_then(|s| s.phase).as_deref(), Some("Terminating"));
        if let Err(e) = cms.create(&PostParams::default(), &configmap("late", json!({}))).await {
            let status = status_of::<()>(Err(e));
            assert!(matches!(status.code, 403 | 404), "{status:?}");
        }
    }
    eventually(Duration::from_secs(20), "the namespace to go", || {
        let namespaces = namespaces.clone();
        async move { namespaces.get("doomed").await.is_err().then_some(()) }
    })
    .await;
    assert_eq!(status_of(cms.get("inside").await).code, 404);
}

#[tokio::test]
async fn metrics_report_requests_commits_watches_and_objects() {
    let cluster = TestCluster::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    cms.create(&PostParams::default(), &configmap("m", json!({}))).await.expect("create");
    let request = http::Request::builder().uri("/metrics").body(Vec::new()).expect("request");
    let text = cluster.client.request_text(request).await.expect("metrics");
    for needle in [
        "apiserver_request_total{verb=\"create\",resource=\"configmaps\",code=\"201\"} 1",
        "apiserver_request_duration_seconds_bucket",
        "store_commit_duration_seconds_count",
        "store_commit_batch_size_bucket",
        "apiserver_registered_watchers",
        "apiserver_storage_objects{resource=\"configmaps\"} 1",
        "apiserver_storage_objects{resource=\"namespaces\"} 4",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[tokio::test]
async fn delete_preconditions_dry_run_and_all_namespace_lists_behave_like_kubernetes() {
    let cluster = TestCluster::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let created = cms.create(&PostParams::default(), &configmap("pre", json!({}))).await.expect("create");

    let wrong_uid = DeleteParams {
        preconditions: Some(kube::api::Preconditions { uid: Some("not-it".into()), resource_version: None }),
        ..Default::default()
    };
    let conflict = status_of(cms.delete("pre", &wrong_uid).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(cms.get("pre").await.is_ok(), "a failed precondition deletes nothing");

    let dry = PostParams { dry_run: true, ..Default::default() };
    cms.create(&dry, &configmap("dry", json!({}))).await.expect("dry-run create");
    assert_eq!(status_of(cms.get("dry").await).code, 404, "dryRun=All writes nothing");
    cms.delete("pre", &DeleteParams { dry_run: true, ..Default::default() }).await.expect("dry-run delete");
    assert!(cms.get("pre").await.is_ok(), "dry-run delete keeps the object");

    let right = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: created.metadata.uid.clone(),
            resource_version: created.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    cms.delete("pre", &right).await.expect("delete with matching preconditions");

    let other: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "kube-system");
    other.create(&PostParams::default(), &configmap("sys", json!({}))).await.expect("create in kube-system");
    cms.create(&PostParams::default(), &configmap("dflt", json!({}))).await.expect("create in default");
    let all: Api<ConfigMap> = Api::all(cluster.client.clone());
    let mut seen: Vec<(String, String)> = all
        .list(&ListParams::default())
        .await
        .expect("all-namespace list")
        .items
        .into_iter()
        .map(|c| (c.metadata.namespace.unwrap_or_default(), c.metadata.name.unwrap_or_default()))
        .collect();
    seen.sort();
    assert_eq!(seen, vec![("default".into(), "dflt".into()), ("kube-system".into(), "sys".into())]);
}

#[tokio::test]
async fn self_subject_reviews_answer_for_the_caller() {
    let cluster = TestCluster::start().await;
    let review =
        |spec: Value| json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": spec});
    let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let asked = review(json!({"resourceAttributes": {"verb": "delete", "resource": "pods", "namespace": "x"}}));
    let (code, _, answer) = raw(&cluster.client, "POST", path, "application/json", asked).await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(answer["status"]["allowed"], true, "the cluster token may do everything");
    assert_eq!(answer["spec"]["resourceAttributes"]["verb"], "delete");
    let (code, _, answer) = raw(&cluster.client, "POST", path, "application/json", review(json!({}))).await;
    assert_eq!(code, 400, "a review must name what it asks about: {answer}");

    let rules = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": "default"}});
    let rules_path = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews";
    let (code, _, answer) = raw(&cluster.client, "POST", rules_path, "application/json", rules).await;
    assert_eq!((code, &answer["status"]["resourceRules"][0]["verbs"]), (201, &json!(["*"])));

    // A caller without the token is not answered at all.
    let anonymous = cluster.client_with_token(None).await;
    let asked = review(json!({"resourceAttributes": {"verb": "get", "resource": "pods"}}));
    let (code, _, _) = raw(&anonymous, "POST", path, "application/json", asked).await;
    assert_eq!(code, 401);
}

#[tokio::test]
async fn server_side_apply_of_a_status_owns_status_fields_only_and_conflicts_by_subresource() {
    use k8s_openapi::api::core::v1::Service;
    let cluster = TestCluster::start().await;
    let services: Api<Service> = Api::namespaced(cluster.client.clone(), "default");
    let service: Service =
        serde_json::from_value(json!({"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}})).expect("svc");
    services.create(&PostParams::default(), &service).await.expect("create");
    let condition = |status: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
               "spec": {"ports": [{"port": 9999}]},
               "status": {"conditions": [{"type": "Ready", "status": status, "reason": "Checked", "message": "",
                                          "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    };

    // What an operator does with kube's `patch_status(Patch::Apply)`.
    let applied = services
        .patch_status("svc", &PatchParams::apply("operator-a"), &Patch::Apply(condition("True")))
        .await
        .expect("apply the status");
    let conditions = applied.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    assert_eq!(conditions.len(), 1);
    assert_eq!(conditions[0].status, "True");
    // The intent's spec is not the status subresource's to change.
    assert_eq!(applied.spec.as_ref().and_then(|s| s.ports.as_ref()).map(|p| p[0].port), Some(80));
    let managed = applied.metadata.managed_fields.clone().unwrap_or_default();
    let entry = managed.iter().find(|e| e.manager.as_deref() == Some("operator-a")).expect("the operator's entry");
    assert_eq!(entry.operation.as_deref(), Some("Apply"));
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    let fields = serde_json::to_value(entry.fields_v1.as_ref().expect("fieldsV1")).expect("json");
    assert_eq!(fields.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()), Some(vec!["f:status".to_string()]));

    // Another manager setting the same condition differently conflicts, in Kubernetes' words,
    // until it forces.
    let err = status_of(
        services.patch_status("svc", &PatchParams::apply("operator-b"), &Patch::Apply(condition("False"))).await,
    );
    assert_eq!(err.code, 409);
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"operator-a\" with subresource \"status\": \
         .status.conditions[type=\"Ready\"].status"
    );
    let forced = services
        .patch_status("svc", &PatchParams::apply("operator-b").force(), &Patch::Apply(condition("False")))
        .await
        .expect("forced");
    assert_eq!(forced.status.and_then(|s| s.conditions).unwrap_or_default()[0].status, "False");

    // A status apply to a missing object does not create it.
    let missing =
        services.patch_status("nosuch", &PatchParams::apply("operator-a"), &Patch::Apply(condition("True"))).await;
    assert_eq!(status_of(missing).code, 404);
}
