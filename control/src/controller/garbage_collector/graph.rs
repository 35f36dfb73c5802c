//! The owner/dependent graph of one consistent snapshot, and what the garbage collector should do
//! about it. Pure: the caller lists the objects and carries out the [`Action`]s.
//!
//! Mirrors Kubernetes' `attemptToDeleteItem`, `processDeletingDependentsItem` and
//! `attemptToOrphan`: every owner reference of an object is *solid* (the owner exists), *dangling*
//! (it does not) or *waiting* (the owner is being deleted in the foreground). An object with a
//! solid owner stays, minus its dangling and waiting references; one without is deleted. An owner
//! deleted in the foreground loses its `foregroundDeletion` finalizer once no dependent that blocks
//! it is left; one deleted with `orphan` first has its references removed from every dependent.

use std::collections::HashMap;

use serde_json::Value;
use wasmkube_api::Kind;

use crate::objects::DeleteOptions;

const ORPHAN_FINALIZER: &str = DeleteOptions::ORPHAN_FINALIZER;
const FOREGROUND_FINALIZER: &str = DeleteOptions::FOREGROUND_FINALIZER;

/// How a delete treats the deleted object's dependents (`propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

impl Propagation {
    /// The `propagationPolicy` value.
    pub fn as_policy(self) -> &'static str {
        match self {
            Propagation::Orphan => "Orphan",
            Propagation::Background => "Background",
            Propagation::Foreground => "Foreground",
        }
    }
}

/// One owner reference, with the object it was written as (to write the rest back unchanged).
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub block_owner_deletion: bool,
    pub raw: Value,
}

/// What the collector reads of one object.
#[derive(Debug, Clone)]
pub struct Object {
    pub kind: &'static Kind,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub owners: Vec<OwnerRef>,
    pub finalizers: Vec<String>,
    pub deleting: bool,
}

impl Object {
    pub fn from_value(kind: &'static Kind, object: &Value) -> Option<Object> {
        let meta = object.get("metadata")?;
        let text = |key: &str| meta.get(key).and_then(Value::as_str).map(String::from);
        let owners = meta
            .get("ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let field = |key: &str| r.get(key).and_then(Value::as_str).map(String::from);
                Some(OwnerRef {
                    api_version: field("apiVersion")?,
                    kind: field("kind")?,
                    name: field("name")?,
                    uid: field("uid")?,
                    block_owner_deletion: r.get("blockOwnerDeletion").and_then(Value::as_bool).unwrap_or(false),
                    raw: r.clone(),
                })
            })
            .collect();
        let finalizers = meta
            .get("finalizers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(String::from))
            .collect();
        Some(Object {
            kind,
            namespace: text("namespace"),
            name: text("name")?,
            uid: text("uid")?,
            resource_version: text("resourceVersion").unwrap_or_default(),
            owners,
            finalizers,
            deleting: meta.get("deletionTimestamp").is_some_and(|t| !t.is_null()),
        })
    }

    fn has_finalizer(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f == finalizer)
    }

    /// Being deleted and waiting for its dependents to go first.
    fn deleting_dependents(&self) -> bool {
        self.deleting && self.has_finalizer(FOREGROUND_FINALIZER)
    }
}

/// The registered kind an owner reference names: by group and kind, whatever the version (as
/// Kubernetes' REST mapper resolves it).
pub fn owner_kind(reference: &OwnerRef) -> Option<&'static Kind> {
    let group = reference.api_version.rsplit_once('/').map_or("", |(group, _)| group);
    wasmkube_api::kinds::ALL.iter().find(|k| k.group == group && k.kind == reference.kind)
}

/// How an owner reference stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Solid,
    /// No such owner in the snapshot: to be confirmed with a live read before acting.
    Dangling,
    /// The owner is being deleted in the foreground.
    Waiting,
}

/// What the collector does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Delete an object none of whose owners remains, with the propagation its own finalizers ask
    /// for. `dangling` are the references judged gone, to be confirmed first.
    Delete { object: usize, propagation: Propagation, dangling: Vec<OwnerRef> },
    /// Keep an object for its remaining owners but drop the references to owners that are gone
    /// or being deleted in the foreground.
    RemoveReferences { object: usize, uids: Vec<String>, dangling: Vec<OwnerRef> },
    /// An owner deleted with `orphan`: remove its references from these dependents, then the
    /// finalizer.
    Orphan { owner: usize, dependents: Vec<usize> },
    /// An owner deleted in the foreground with no blocking dependent left: remove the finalizer.
    FinishForeground { owner: usize },
}

/// The objects of a snapshot, indexed by uid and by the owners they name.
pub struct Graph {
    pub objects: Vec<Object>,
    by_uid: HashMap<String, usize>,
    dependents: HashMap<String, Vec<usize>>,
}

impl Graph {
    pub fn new(objects: Vec<Object>) -> Graph {
        let by_uid = objects.iter().enumerate().map(|(i, o)| (o.uid.clone(), i)).collect();
        let mut graph = Graph { objects, by_uid, dependents: HashMap::new() };
        for (i, object) in graph.objects.iter().enumerate() {
            for reference in &object.owners {
                if graph.owner(object, reference).is_some() {
                    graph.dependents.entry(reference.uid.clone()).or_default().push(i);
                }
            }
        }
        graph
    }

    /// The owner a reference of `dependent` names, when it is in the snapshot: same uid and kind,
    /// and for a namespaced owner, the dependent's namespace (references never cross namespaces).
    fn owner(&self, dependent: &Object, reference: &OwnerRef) -> Option<usize> {
        let kind = owner_kind(reference)?;
        let &i = self.by_uid.get(&reference.uid)?;
        let owner = &self.objects[i];
        let same_kind = owner.kind.group == kind.group && owner.kind.kind == kind.kind;
        (same_kind && (!kind.namespaced || owner.namespace == dependent.namespace)).then_some(i)
    }

    pub fn standing(&self, dependent: &Object, reference: &OwnerRef) -> Standing {
        let Some(kind) = owner_kind(reference) else {
            // A kind this cluster does not serve: not ours to judge.
            return Standing::Solid;
        };
        if kind.namespaced && !dependent.kind.namespaced {
            // Kubernetes never resolves a namespaced owner of a cluster-scoped object; it stays.
            return Standing::Solid;
        }
        match self.owner(dependent, reference) {
            Some(i) if self.objects[i].deleting_dependents() => Standing::Waiting,
            Some(_) => Standing::Solid,
            None => Standing::Dangling,
        }
    }

    fn has_dependents(&self, object: &Object) -> bool {
        self.dependents.get(&object.uid).is_some_and(|d| !d.is_empty())
    }

    /// Every action the snapshot calls for.
    pub fn plan(&self) -> Vec<Action> {
        let mut actions = Vec::new();
        for (i, object) in self.objects.iter().enumerate() {
            if object.deleting {
                actions.extend(self.plan_owner(i, object));
            } else if let Some(action) = self.plan_dependent(i, object) {
                actions.push(action);
            }
        }
        actions
    }

    /// An object being deleted: orphan its dependents, or finish a foreground deletion.
    fn plan_owner(&self, i: usize, owner: &Object) -> Option<Action> {
        let dependents = self.dependents.get(&owner.uid).cloned().unwrap_or_default();
        if owner.has_finalizer(ORPHAN_FINALIZER) {
            return Some(Action::Orphan { owner: i, dependents });
        }
        if !owner.has_finalizer(FOREGROUND_FINALIZER) {
            return None;
        }
        let blocked = dependents
            .iter()
            .any(|&d| self.objects[d].owners.iter().any(|r| r.uid == owner.uid && r.block_owner_deletion));
        (!blocked).then_some(Action::FinishForeground { owner: i })
    }

    /// An object not being deleted: keep it, trim its references, or delete it.
    fn plan_dependent(&self, i: usize, object: &Object) -> Option<Action> {
        if object.owners.is_empty() {
            return None;
        }
        let (mut solid, mut dangling, mut waiting) = (false, Vec::new(), Vec::new());
        for reference in &object.owners {
            match self.standing(object, reference) {
                Standing::Solid => solid = true,
                Standing::Dangling => dangling.push(reference.clone()),
                Standing::Waiting => waiting.push(reference.clone()),
            }
        }
        if solid {
            if dangling.is_empty() && waiting.is_empty() {
                return None;
            }
            let uids = dangling.iter().chain(&waiting).map(|r| r.uid.clone()).collect();
            return Some(Action::RemoveReferences { object: i, uids, dangling });
        }
        let propagation = if !waiting.is_empty() && self.has_dependents(object) {
            // An owner waits for this object, and this object has dependents of its own: they go
            // first, so the owner keeps waiting until the whole subtree is gone.
            Propagation::Foreground
        } else if object.has_finalizer(ORPHAN_FINALIZER) {
            Propagation::Orphan
        } else if object.has_finalizer(FOREGROUND_FINALIZER) {
            Propagation::Foreground
        } else {
            Propagation::Background
        };
        Some(Action::Delete { object: i, propagation, dangling })
    }
}

#[cfg(test)]
mod tests;
