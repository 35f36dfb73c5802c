//! Planning cases, each as Kubernetes' garbage collector decides it.

use super::*;
use serde_json::json;

fn kind(group: &str, resource: &str) -> &'static Kind {
    wasmkube_api::kinds::by_resource(group, "v1", resource).expect("registered")
}

fn reference(api_version: &str, kind: &str, name: &str, uid: &str, block: bool) -> OwnerRef {
    let raw = json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "blockOwnerDeletion": block});
    OwnerRef {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        block_owner_deletion: block,
        raw,
    }
}

fn deployment(name: &str, finalizers: &[&str], deleting: bool) -> Object {
    Object {
        kind: kind("apps", "deployments"),
        namespace: Some("default".into()),
        name: name.into(),
        uid: format!("uid-{name}"),
        resource_version: "1".into(),
        owners: Vec::new(),
        finalizers: finalizers.iter().map(|f| f.to_string()).collect(),
        deleting,
    }
}

fn replica_set(name: &str, owners: Vec<OwnerRef>) -> Object {
    Object { kind: kind("apps", "replicasets"), owners, ..deployment(name, &[], false) }
}

fn pod(name: &str, owners: Vec<OwnerRef>) -> Object {
    Object { kind: kind("", "pods"), owners, ..deployment(name, &[], false) }
}

fn owned_by_web(block: bool) -> Vec<OwnerRef> {
    vec![reference("apps/v1", "Deployment", "web", "uid-web", block)]
}

fn owned_by_rs(block: bool) -> Vec<OwnerRef> {
    vec![reference("apps/v1", "ReplicaSet", "rs", "uid-rs", block)]
}

fn delete(object: usize, propagation: Propagation, dangling: Vec<OwnerRef>) -> Action {
    Action::Delete { object, propagation, dangling }
}

#[test]
fn owners_that_exist_keep_their_dependents() {
    let graph = Graph::new(vec![deployment("web", &[], false), replica_set("rs", owned_by_web(true))]);
    assert_eq!(graph.plan(), vec![]);
}

#[test]
fn dependents_of_a_missing_owner_are_deleted_in_the_background() {
    let graph = Graph::new(vec![replica_set("rs", owned_by_web(true)), pod("p", owned_by_rs(true))]);
    // The pod's owner is still there: only the ReplicaSet goes now; the pod follows next pass.
    assert_eq!(graph.plan(), vec![delete(0, Propagation::Background, owned_by_web(true))]);
}

#[test]
fn a_dependent_with_another_owner_only_loses_the_dangling_reference() {
    let mut owners = owned_by_web(false);
    owners.push(reference("v1", "ConfigMap", "keeper", "uid-keeper", false));
    let keeper = Object { kind: kind("", "configmaps"), ..deployment("keeper", &[], false) };
    let graph = Graph::new(vec![keeper, replica_set("rs", owners)]);
    assert_eq!(
        graph.plan(),
        vec![Action::RemoveReferences { object: 1, uids: vec!["uid-web".into()], dangling: owned_by_web(false) }]
    );
}

#[test]
fn foreground_deletion_waits_for_blocking_dependents_and_deletes_subtrees_first() {
    let graph = Graph::new(vec![
        deployment("web", &["foregroundDeletion"], true),
        replica_set("rs", owned_by_web(true)),
        pod("p", owned_by_rs(true)),
    ]);
    // The ReplicaSet blocks its owner and has a pod: it goes in the foreground too.
    assert_eq!(graph.plan(), vec![delete(1, Propagation::Foreground, vec![])]);

    // Non-blocking dependents do not hold the owner, but are deleted all the same.
    let graph =
        Graph::new(vec![deployment("web", &["foregroundDeletion"], true), replica_set("rs", owned_by_web(false))]);
    assert_eq!(graph.plan(), vec![Action::FinishForeground { owner: 0 }, delete(1, Propagation::Background, vec![])]);

    // A blocking dependent already on its way out still holds the owner.
    let mut leaving = replica_set("rs", owned_by_web(true));
    leaving.deleting = true;
    let graph = Graph::new(vec![deployment("web", &["foregroundDeletion"], true), leaving]);
    assert_eq!(graph.plan(), vec![]);
}

#[test]
fn orphaning_removes_the_owner_from_its_dependents() {
    let graph = Graph::new(vec![
        deployment("web", &["orphan"], true),
        replica_set("rs", owned_by_web(true)),
        replica_set("other", vec![]),
    ]);
    assert_eq!(graph.plan(), vec![Action::Orphan { owner: 0, dependents: vec![1] }]);
    // An owner being deleted without GC finalizers needs nothing from the collector.
    let graph = Graph::new(vec![deployment("web", &[], true), replica_set("rs", owned_by_web(true))]);
    assert_eq!(graph.plan(), vec![]);
}

#[test]
fn a_dependents_own_finalizers_choose_its_propagation() {
    let mut rs = replica_set("rs", owned_by_web(true));
    rs.finalizers = vec!["orphan".into()];
    assert_eq!(Graph::new(vec![rs]).plan(), vec![delete(0, Propagation::Orphan, owned_by_web(true))]);
}

#[test]
fn references_are_resolved_by_kind_and_namespace() {
    // Same uid, other namespace: not this dependent's owner.
    let mut elsewhere = deployment("web", &[], false);
    elsewhere.namespace = Some("other".into());
    let graph = Graph::new(vec![elsewhere, replica_set("rs", owned_by_web(true))]);
    assert_eq!(graph.plan(), vec![delete(1, Propagation::Background, owned_by_web(true))]);
    // A kind the cluster does not serve: left alone.
    let unknown = vec![reference("example.com/v1", "Widget", "w", "uid-w", true)];
    assert_eq!(Graph::new(vec![replica_set("rs", unknown)]).plan(), vec![]);
    // The version does not matter, the group does.
    let old_version = vec![reference("apps/v1beta2", "Deployment", "web", "uid-web", true)];
    let graph = Graph::new(vec![deployment("web", &[], false), replica_set("rs", old_version)]);
    assert_eq!(graph.plan(), vec![]);
    // A cluster-scoped object cannot be owned by a namespaced one: never collected.
    let node =
        Object { kind: kind("", "nodes"), namespace: None, owners: owned_by_web(false), ..deployment("n", &[], false) };
    assert_eq!(Graph::new(vec![node]).plan(), vec![]);
}

#[test]
fn objects_are_read_from_their_json() {
    let value = json!({"metadata": {"name": "rs", "namespace": "default", "uid": "u1", "resourceVersion": "7",
        "finalizers": ["orphan"], "deletionTimestamp": "2026-01-01T00:00:00Z",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "uid-web",
                             "controller": true, "blockOwnerDeletion": true}]}});
    let object = Object::from_value(kind("apps", "replicasets"), &value).expect("parses");
    assert_eq!((object.name.as_str(), object.uid.as_str(), object.resource_version.as_str()), ("rs", "u1", "7"));
    assert!(object.deleting && object.has_finalizer("orphan"));
    assert_eq!(object.owners.len(), 1);
    assert!(object.owners[0].block_owner_deletion);
    assert!(Object::from_value(kind("apps", "replicasets"), &json!({"metadata": {"name": "x"}})).is_none(), "no uid");
}
