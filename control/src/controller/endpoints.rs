//! The endpoints controller: every Service with a selector gets EndpointSlices (and a legacy
//! Endpoints object of its name) listing the pods it selects, with their readiness, kept current
//! within a batching delay of any change, as kube-controller-manager's EndpointSlice and
//! Endpoints controllers do. [`desired`] holds the rules; this module the cache and the writes.
//!
//! It keeps Services and, only in namespaces that have a selector Service, pods, from the
//! store's watch: a busy cluster's pods elsewhere (most pod writes are agents' status reports)
//! are never decoded. A change marks the Services it can matter to (a pod's old and new labels
//! are both checked); after [`BATCH`] the marked ones are reconciled: their slices and Endpoints
//! are read, compared with what they should hold, and only differences are written. Slices and
//! Endpoints changed by anyone else mark their Service too, so they are put back. Both carry an
//! ownerReference to the Service, and go with it through the garbage collector.

pub mod desired;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wasmkube_api::Kind;

use super::{decode_stored, describe, list_typed};
use crate::objects::{Objects, Target, WriteOptions};
use crate::status::ApiError;
use crate::store::{Event, EventStream, RangeRequest};
use desired::Slice;

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who keeps a slice, and this controller's value for it.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// How long changes are gathered before the marked Services are reconciled.
const BATCH: Duration = Duration::from_millis(20);
/// How soon a Service whose reconcile failed is tried again.
const RETRY: Duration = Duration::from_secs(1);

fn kind(group: &str, resource: &str) -> &'static Kind {
    wasmkube_api::kinds::by_resource(group, "v1", resource).expect("built-in kinds are registered")
}

fn services() -> &'static Kind {
    kind("", "services")
}
fn pods() -> &'static Kind {
    kind("", "pods")
}
fn endpoints() -> &'static Kind {
    kind("", "endpoints")
}
fn slices() -> &'static Kind {
    kind("discovery.k8s.io", "endpointslices")
}

/// `(namespace, name)` of an object.
type Name = (String, String);

/// The namespace and name in a namespaced object's storage key.
fn name_in_key(kind: &Kind, key: &str) -> Option<Name> {
    let (namespace, name) = key.strip_prefix(&kind.key_prefix())?.split_once('/')?;
    Some((namespace.to_string(), name.to_string()))
}

/// What the controller knows.
#[derive(Default)]
struct Cache {
    /// Services with a selector, by namespace and name.
    services: HashMap<String, HashMap<String, Service>>,
    /// Pods of the namespaces that have a selector Service.
    pods: HashMap<String, HashMap<String, Pod>>,
    /// Services to reconcile.
    marked: BTreeSet<Name>,
}

impl Cache {
    async fn load(objects: &Objects) -> Result<Self, ApiError> {
        let mut cache = Self::default();
        for service in list_typed::<Service>(objects, services(), None).await? {
            cache.put_service(objects, service).await?;
        }
        Ok(cache)
    }

    /// Keeps a selector Service (starting to follow its namespace's pods) and marks it.
    async fn put_service(&mut self, objects: &Objects, service: Service) -> Result<(), ApiError> {
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        if !desired::managed(&service) {
            self.forget_service(&namespace, &name);
            return Ok(());
        }
        if !self.pods.contains_key(&namespace) {
            let listed = list_typed::<Pod>(objects, pods(), Some(&namespace)).await?;
            let by_name = listed.into_iter().map(|p| (p.metadata.name.clone().unwrap_or_default(), p)).collect();
            self.pods.insert(namespace.clone(), by_name);
        }
        self.services.entry(namespace.clone()).or_default().insert(name.clone(), service);
        self.marked.insert((namespace, name));
        Ok(())
    }

    fn forget_service(&mut self, namespace: &str, name: &str) {
        if let Some(in_namespace) = self.services.get_mut(namespace) {
            in_namespace.remove(name);
            if in_namespace.is_empty() {
                self.services.remove(namespace);
                self.pods.remove(namespace);
            }
        }
    }

    /// Marks the Services of `namespace` that select any of `pods`.
    fn mark_selecting(&mut self, namespace: &str, pods: &[&Pod]) {
        for (name, service) in self.services.get(namespace).into_iter().flatten() {
            if pods.iter().any(|pod| desired::selects(service, pod)) {
                self.marked.insert((namespace.to_string(), name.clone()));
            }
        }
    }

    /// Takes in one store event.
    async fn apply(&mut self, objects: &Objects, event: &Event) -> Result<(), ApiError> {
        let key = event.key.as_str();
        if let Some((namespace, name)) = name_in_key(pods(), key) {
            if !self.pods.contains_key(&namespace) {
                return Ok(());
            }
            let now = event.value.as_deref().and_then(|v| decode_stored::<Pod>(v, event.revision));
            let before = self.pods.get_mut(&namespace).and_then(|pods| pods.remove(&name));
            let touched: Vec<&Pod> = now.iter().chain(before.iter()).collect();
            self.mark_selecting(&namespace, &touched);
            if let (Some(pod), Some(pods)) = (now, self.pods.get_mut(&namespace)) {
                pods.insert(name, pod);
            }
        } else if let Some((namespace, name)) = name_in_key(services(), key) {
            match event.value.as_deref().and_then(|v| decode_stored::<Service>(v, event.revision)) {
                Some(service) => self.put_service(objects, service).await?,
                None => self.forget_service(&namespace, &name),
            }
        } else if let Some((namespace, name)) = name_in_key(endpoints(), key) {
            self.mark_if_managed(namespace, name);
        } else if let Some((namespace, _)) = name_in_key(slices(), key) {
            // The Service a slice belongs to is in its label (of either version).
            let label = |bytes: &[u8]| {
                let slice: EndpointSlice = serde_json::from_slice(bytes).ok()?;
                slice.metadata.labels?.get(SERVICE_NAME_LABEL).cloned()
            };
            let names = [event.value.as_deref(), event.prev.as_ref().map(|p| p.value.as_slice())];
            for name in names.into_iter().flatten().filter_map(label) {
                self.mark_if_managed(namespace.clone(), name);
            }
        }
        Ok(())
    }

    fn mark_if_managed(&mut self, namespace: String, name: String) {
        if self.services.get(&namespace).is_some_and(|s| s.contains_key(&name)) {
            self.marked.insert((namespace, name));
        }
    }
}

/// Runs until `cancel` fires.
pub async fn run(objects: Objects, cancel: CancellationToken) {
    loop {
        let store = objects.store().clone();
        let revision = store.revision();
        let mut changes: futures::stream::SelectAll<EventStream> = futures::stream::select_all(
            [services(), pods(), endpoints(), slices()].map(|k| store.watch(&k.key_prefix(), revision)),
        );
        let mut cache = match Cache::load(&objects).await {
            Ok(cache) => cache,
            Err(e) => {
                tracing::warn!(error = %describe(&e), "loading the endpoints controller's cache failed");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        // Events between the revision noted and the read are taken in again below: harmless.
        'following: loop {
            let failed = reconcile_marked(&objects, &mut cache).await;
            let event = tokio::select! {
                _ = cancel.cancelled() => return,
                event = changes.next() => event,
                // What failed is still marked: the next pass tries it again.
                _ = tokio::time::sleep(RETRY), if failed => continue,
            };
            // A watch that fails ends (the others would go on without it): read everything again.
            let Some(Ok(event)) = event else { break };
            if !take_in(&objects, &mut cache, &event).await {
                break;
            }
            // Gather the rest of a burst (a Deployment's pods turning ready) into one pass.
            tokio::time::sleep(BATCH).await;
            while let Some(next) = futures::FutureExt::now_or_never(changes.next()) {
                match next {
                    Some(Ok(event)) if take_in(&objects, &mut cache, &event).await => {}
                    _ => break 'following,
                }
            }
        }
        // The watch broke (compaction, shutdown) or the cache could not be kept: start over.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Applies one event; false (logged) if the cache could not take it in and must be read again.
async fn take_in(objects: &Objects, cache: &mut Cache, event: &Event) -> bool {
    match cache.apply(objects, event).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %describe(&e), "the endpoints controller lost track; reading everything again");
            false
        }
    }
}

/// Reconciles every marked Service; true if one failed (it stays marked).
async fn reconcile_marked(objects: &Objects, cache: &mut Cache) -> bool {
    let marked = std::mem::take(&mut cache.marked);
    let mut failed = false;
    for (namespace, name) in marked {
        let Some(service) = cache.services.get(&namespace).and_then(|s| s.get(&name)) else { continue };
        let pods =
            cache.pods.get(&namespace).into_iter().flat_map(|p| p.values()).filter(|p| desired::selects(service, p));
        let wanted = desired::slices(service, pods);
        if let Err(e) = reconcile(objects, service, &wanted).await {
            tracing::debug!(error = %describe(&e), service = %name, %namespace, "reconciling endpoints failed");
            cache.marked.insert((namespace, name));
            failed = true;
        }
    }
    failed
}

/// Writes what differs between `wanted` and the Service's stored slices and Endpoints.
async fn reconcile(objects: &Objects, service: &Service, wanted: &[Slice]) -> Result<(), ApiError> {
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let name = service.metadata.name.clone().unwrap_or_default();
    let opts = WriteOptions::default();
    let in_namespace = |kind| Target { kind, namespace: Some(namespace.clone()), name: None };
    let one = |kind, name: &str| Target { kind, namespace: Some(namespace.clone()), name: Some(name.to_string()) };

    // Slices are named `<service>-<suffix>`: read only those, not the whole namespace's.
    let request =
        RangeRequest { prefix: slices().key(Some(&namespace), &format!("{name}-")), ..RangeRequest::default() };
    let listed = objects.store().range(request).await?.items;
    let mut existing: Vec<EndpointSlice> = listed
        .iter()
        .filter_map(|kv| decode_stored::<EndpointSlice>(&kv.value, kv.mod_revision))
        .filter(|s| {
            let labels = s.metadata.labels.as_ref();
            labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) == Some(&name)
                && labels.and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str) == Some(MANAGED_BY)
        })
        .collect();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    // An empty Service still has one (empty) slice, as in Kubernetes.
    let empty = [Slice { ports: Vec::new(), endpoints: Vec::new() }];
    let wanted = if wanted.is_empty() { &empty[..] } else { wanted };
    for (i, slice) in wanted.iter().enumerate() {
        let (ports, endpoints) = slice_content(slice, &namespace);
        match existing.get(i) {
            Some(current) if current.ports == ports && current.endpoints == endpoints => {}
            Some(current) => {
                let mut updated = current.clone();
                updated.ports = ports;
                updated.endpoints = endpoints;
                let current_name = current.metadata.name.clone().unwrap_or_default();
                objects
                    .update(&one(slices(), &current_name), to_value(&updated), crate::objects::Subresource::Main, &opts)
                    .await?;
            }
            None => {
                let created = EndpointSlice {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{name}-")),
                        labels: Some(
                            [
                                (SERVICE_NAME_LABEL.to_string(), name.clone()),
                                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                            ]
                            .into(),
                        ),
                        owner_references: Some(vec![owner(service)]),
                        ..ObjectMeta::default()
                    },
                    address_type: "IPv4".into(),
                    endpoints,
                    ports,
                };
                objects.create(&in_namespace(slices()), to_value(&created), &opts).await?;
            }
        }
    }
    for extra in existing.iter().skip(wanted.len()) {
        let extra_name = extra.metadata.name.clone().unwrap_or_default();
        match objects.delete(&one(slices(), &extra_name), &crate::objects::DeleteOptions::default()).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }

    // The legacy Endpoints object, named after the Service.
    let publish = service.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let subsets = subsets(wanted, &namespace, publish);
    let subsets = (!subsets.is_empty()).then_some(subsets);
    match objects.get(&one(endpoints(), &name)).await {
        Ok(current) => {
            let mut current: Endpoints = serde_json::from_value(current)
                .map_err(|e| ApiError::Internal(format!("stored Endpoints {namespace}/{name}: {e}")))?;
            if current.subsets != subsets {
                current.subsets = subsets;
                objects
                    .update(&one(endpoints(), &name), to_value(&current), crate::objects::Subresource::Main, &opts)
                    .await?;
            }
        }
        Err(ApiError::NotFound { .. }) => {
            let created = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: service.metadata.labels.clone(),
                    owner_references: Some(vec![owner(service)]),
                    ..ObjectMeta::default()
                },
                subsets,
            };
            match objects.create(&in_namespace(endpoints()), to_value(&created), &opts).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

fn to_value<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("a Kubernetes object serializes")
}

/// The Service as the owner of its slices and Endpoints.
fn owner(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.metadata.name.clone().unwrap_or_default(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn pod_reference(namespace: &str, endpoint: &desired::Endpoint) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: Some(namespace.to_string()),
        name: Some(endpoint.pod.clone()),
        uid: Some(endpoint.uid.clone()),
        ..ObjectReference::default()
    }
}

/// A slice's ports and endpoints as the API types hold them.
fn slice_content(slice: &Slice, namespace: &str) -> (Option<Vec<SlicePort>>, Vec<Endpoint>) {
    let ports = slice
        .ports
        .iter()
        .map(|p| SlicePort {
            name: Some(p.name.clone()),
            port: Some(p.port),
            protocol: Some(p.protocol.clone()),
            app_protocol: None,
        })
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        .map(|e| Endpoint {
            addresses: vec![e.ip.clone()],
            conditions: Some(EndpointConditions {
                ready: Some(e.ready),
                serving: Some(e.serving),
                terminating: Some(e.terminating),
            }),
            hostname: e.hostname.clone(),
            node_name: e.node.clone(),
            target_ref: Some(pod_reference(namespace, e)),
            ..Endpoint::default()
        })
        .collect();
    (Some(ports), endpoints)
}

/// The Endpoints subsets: per port set, ready and not-ready addresses, terminating pods left out
/// unless the Service publishes not-ready addresses.
fn subsets(slices: &[Slice], namespace: &str, publish_not_ready: bool) -> Vec<EndpointSubset> {
    let mut by_ports: Vec<(&[desired::Port], EndpointSubset)> = Vec::new();
    for slice in slices {
        let live: Vec<&desired::Endpoint> =
            slice.endpoints.iter().filter(|e| publish_not_ready || !e.terminating).collect();
        if live.is_empty() {
            continue;
        }
        let index = match by_ports.iter().position(|(ports, _)| *ports == slice.ports.as_slice()) {
            Some(i) => i,
            None => {
                let ports = slice
                    .ports
                    .iter()
                    .map(|p| EndpointPort {
                        name: Some(p.name.clone()).filter(|n| !n.is_empty()),
                        port: p.port,
                        protocol: Some(p.protocol.clone()),
                        app_protocol: None,
                    })
                    .collect();
                by_ports.push((&slice.ports, EndpointSubset { ports: Some(ports), ..EndpointSubset::default() }));
                by_ports.len() - 1
            }
        };
        let subset = &mut by_ports[index].1;
        for endpoint in live {
            let address = EndpointAddress {
                ip: endpoint.ip.clone(),
                hostname: endpoint.hostname.clone(),
                node_name: endpoint.node.clone(),
                target_ref: Some(pod_reference(namespace, endpoint)),
            };
            let list = if endpoint.ready { &mut subset.addresses } else { &mut subset.not_ready_addresses };
            list.get_or_insert_with(Vec::new).push(address);
        }
    }
    by_ports.into_iter().map(|(_, subset)| subset).collect()
}
