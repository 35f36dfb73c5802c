//! The object service: Kubernetes' generic registry semantics on top of the [`Store`].
//!
//! Each verb lives in its own module (`create`, `update` (also patch and subresources), `delete`,
//! `list` (also watch)). They share the encoding defined here: objects are stored as JSON without
//! `metadata.resourceVersion`, which is always the key's mod revision and is put back on read,
//! exactly as kube-apiserver does over etcd.

mod binding;
pub(crate) use binding::set_condition;
mod apply;
mod create;
mod defaults;
mod delete;
mod eviction;
mod fields;
mod fields_v1;
mod list;
mod services;
mod status_patch;
mod strategic;
mod update;

use std::sync::Arc;

use serde_json::{Value, json};
use wasmkube_api::Kind;

pub use delete::DeleteOptions;
pub use fields::FieldValidation;
pub use list::{ListOptions, Selectors, WatchEvent, WatchOptions};
pub use services::ServiceNetwork;
pub use update::{PatchKind, Subresource};

use crate::status::ApiError;
use crate::store::{KeyValue, Revision, Store};

/// Which object a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: &'static Kind,
    /// The namespace in the path (`None` for cluster-scoped kinds and all-namespace requests).
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Target {
    pub fn key(&self) -> Result<String, ApiError> {
        let name = self.name.as_deref().ok_or(ApiError::MethodNotAllowed)?;
        Ok(self.kind.key(self.namespace.as_deref(), name))
    }

    /// The key prefix of the collection this target lists.
    pub fn collection_prefix(&self) -> String {
        match (&self.namespace, self.kind.namespaced) {
            (Some(ns), true) => format!("{}{ns}/", self.kind.key_prefix()),
            _ => self.kind.key_prefix(),
        }
    }

    fn name_or_empty(&self) -> String {
        self.name.clone().unwrap_or_default()
    }
}

/// Options shared by the writing verbs.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: run every check, write nothing.
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    /// Who writes (`fieldManager`, else the client's user agent): a create, update or patch of the
    /// main resource records the fields it changed as this manager's (`metadata.managedFields`).
    /// None for the control plane's own writes.
    pub field_manager: Option<String>,
}

/// The result of a write: the object as stored plus warnings for the `Warning` header.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// The object service, cheap to clone.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn Store>,
    /// `tolerationSeconds` of the not-ready/unreachable tolerations pods get at create
    /// ([`defaults::tolerate_lost_nodes`]).
    default_toleration_seconds: i64,
    /// Services' ClusterIPs and node ports.
    services: Arc<services::Allocator>,
}

impl Objects {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            default_toleration_seconds: defaults::DEFAULT_TOLERATION_SECONDS,
            services: Arc::new(services::Allocator::new(ServiceNetwork::default())),
        }
    }

    /// Sets where Services' ClusterIPs and node ports come from.
    pub fn with_service_network(mut self, network: ServiceNetwork) -> Self {
        self.services = Arc::new(services::Allocator::new(network));
        self
    }

    /// Where Services' ClusterIPs and node ports come from.
    pub fn service_network(&self) -> &ServiceNetwork {
        self.services.network()
    }

    /// Sets how long new pods tolerate a not-ready or unreachable node (Kubernetes'
    /// `--default-not-ready-toleration-seconds` and `--default-unreachable-toleration-seconds`).
    pub fn with_default_toleration_seconds(mut self, seconds: i64) -> Self {
        self.default_toleration_seconds = seconds;
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reads one object.
    pub async fn get(&self, target: &Target) -> Result<Value, ApiError> {
        let kv = self.store.get(&target.key()?).await?;
        match kv {
            Some(kv) => decode(&kv),
            None => Err(ApiError::NotFound { kind: target.kind, name: target.name_or_empty() }),
        }
    }

    /// Reads one object with its revision, or `None`.
    async fn get_kv(&self, key: &str) -> Result<Option<(Value, Revision)>, ApiError> {
        match self.store.get(key).await? {
            Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// Fails unless the namespace of a namespaced write exists and is not terminating.
    async fn check_namespace(&self, target: &Target, name: &str) -> Result<(), ApiError> {
        let Some(ns) = target.namespace.as_deref().filter(|_| target.kind.namespaced) else {
            return Ok(());
        };
        let key = namespace_kind().key(None, ns);
        let Some(namespace) = self.store.get(&key).await? else {
            return Err(ApiError::NamespaceNotFound(ns.to_string()));
        };
        if terminating(&namespace.value)? {
            return Err(ApiError::Forbidden {
                kind: target.kind,
                name: name.to_string(),
                message: format!("unable to create new content in namespace {ns} because it is being terminated"),
            });
        }
        Ok(())
    }
}

/// Whether a stored object has a `metadata.deletionTimestamp`, read without building the whole
/// object (every create in a namespace asks this of the namespace).
fn terminating(stored: &[u8]) -> Result<bool, ApiError> {
    #[derive(serde::Deserialize)]
    struct Object {
        #[serde(default)]
        metadata: Metadata,
    }
    #[derive(serde::Deserialize, Default)]
    struct Metadata {
        #[serde(rename = "deletionTimestamp")]
        deletion_timestamp: Option<serde::de::IgnoredAny>,
    }
    let object: Object =
        serde_json::from_slice(stored).map_err(|e| ApiError::Internal(format!("stored object is not JSON: {e}")))?;
    Ok(object.metadata.deletion_timestamp.is_some())
}

pub(crate) fn namespace_kind() -> &'static Kind {
    wasmkube_api::kinds::by_resource("", "v1", "namespaces").expect("namespaces are registered")
}

/// Decodes a stored value and sets `metadata.resourceVersion` from its revision.
pub(crate) fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    decode_at(&kv.value, kv.mod_revision)
}

pub(crate) fn decode_at(bytes: &[u8], revision: Revision) -> Result<Value, ApiError> {
    let mut object: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::Internal(format!("stored object is not JSON: {e}")))?;
    set_resource_version(&mut object, revision);
    Ok(object)
}

pub(crate) fn set_resource_version(object: &mut Value, revision: Revision) {
    if let Some(meta) = metadata_mut(object) {
        meta.insert("resourceVersion".into(), json!(revision.to_string()));
    }
}

/// The stored form: the object without `metadata.resourceVersion` (the store's revision is
/// the truth). Serialized straight from `object`, skipping that one field, rather than from a
/// stripped copy: every write goes through here.
pub(crate) fn encode(object: &Value) -> Vec<u8> {
    serde_json::to_vec(&Stored(object)).expect("a JSON value always serialises")
}

/// Serializes an object as [`encode`] stores it.
struct Stored<'a>(&'a Value);

/// Serializes `metadata` without `resourceVersion`.
struct StoredMetadata<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for Stored<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(fields) = self.0 else { return self.0.serialize(serializer) };
        let mut map = serializer.serialize_map(Some(fields.len()))?;
        for (key, value) in fields {
            match value {
                Value::Object(meta) if key == "metadata" => map.serialize_entry(key, &StoredMetadata(meta))?,
                _ => map.serialize_entry(key, value)?,
            }
        }
        map.end()
    }
}

impl serde::Serialize for StoredMetadata<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let kept = self.0.iter().filter(|(key, _)| *key != "resourceVersion");
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in kept {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// `object` as read back after a write committed at `revision`: the same value with that
/// `resourceVersion` (no need to parse the stored bytes again).
pub(crate) fn committed(mut object: Value, revision: Revision) -> Value {
    set_resource_version(&mut object, revision);
    object
}

/// Whether objects of `kind` hold Service addresses.
fn is_service(kind: &Kind) -> bool {
    kind.group.is_empty() && kind.kind == "Service"
}

pub(crate) fn metadata_mut(object: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    let obj = object.as_object_mut()?;
    obj.entry("metadata").or_insert_with(|| json!({})).as_object_mut()
}

pub(crate) use wasmkube_api::meta::now_rfc3339;

/// Parses a `resourceVersion` string as a revision.
pub(crate) fn parse_revision(rv: &str) -> Result<Revision, ApiError> {
    rv.parse::<Revision>()
        .map_err(|_| ApiError::BadRequest(format!("invalid resource version \"{rv}\": must be a decimal number")))
}

/// An object service on a fresh store, for the tests of its writes.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use serde_json::json;

    use super::{Objects, Target, WriteOptions};
    use crate::store::redb::{RedbConfig, RedbStore};

    /// A store in `dir` holding the built-in namespaces and the pod `default/web` (not bound),
    /// and that pod's target.
    pub(crate) async fn objects_with_pod(dir: &std::path::Path) -> (Objects, Target) {
        let metrics = crate::metrics::Metrics::new();
        let store = RedbStore::open(&dir.join("store.redb"), RedbConfig::default(), metrics.store).expect("store");
        let objects = Objects::new(Arc::new(store));
        crate::controller::namespace::ensure_built_in(&objects).await.expect("namespaces");
        let kind = wasmkube_api::kinds::by_resource("", "v1", "pods").expect("pods");
        let all = Target { kind, namespace: Some("default".into()), name: None };
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "app", "image": "hello:1"}]}});
        objects.create(&all, pod, &WriteOptions::default()).await.expect("create");
        (objects, Target { name: Some("web".into()), ..all })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_is_terminating_once_it_has_a_deletion_timestamp() {
        let stored = |v: Value| serde_json::to_vec(&v).expect("serializes");
        let active =
            json!({"metadata": {"name": "a", "deletionTimestamp": null}, "spec": {"finalizers": ["kubernetes"]}});
        let deleting = json!({"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"}});
        assert!(!terminating(&stored(active)).expect("decodes"));
        assert!(terminating(&stored(deleting)).expect("decodes"));
        assert!(!terminating(&stored(json!({}))).expect("decodes"));
        assert!(terminating(b"not json").is_err());
    }
}
