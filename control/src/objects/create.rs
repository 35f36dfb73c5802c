//! POST on a collection: canonicalize, default, validate, set the server-owned metadata, write once.

use rand::Rng;
use serde_json::{Value, json};

use super::{
    Objects, Target, WriteOptions, Written, committed, defaults, encode, fields, is_service, metadata_mut, now_rfc3339,
};
use crate::status::ApiError;
use crate::store::{Precondition, Write, WriteOutcome};

/// The alphabet Kubernetes uses for `generateName` suffixes (no vowels, no look-alikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

impl Objects {
    /// Creates `body` in the collection `target` names (its `name` is ignored).
    pub async fn create(&self, target: &Target, body: Value, opts: &WriteOptions) -> Result<Written, ApiError> {
        let (object, warnings) = fields::canonicalize(target.kind, body, opts.field_validation)?;
        let written = self.create_canonical(target, object, opts).await?;
        Ok(Written { warnings, ..written })
    }

    /// [`Objects::create`] for an object the control plane serialized from its typed form (an
    /// Event it records): already canonical, so not decoded through its type a second time.
    pub(crate) async fn create_canonical(
        &self,
        target: &Target,
        mut object: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let kind = target.kind;
        let warnings = Vec::new();
        self.place_in_namespace(target, &mut object)?;
        let name = assign_name(&mut object)?;
        defaults::apply(kind, &mut object);
        defaults::tolerate_lost_nodes(kind, &mut object, self.default_toleration_seconds);
        defaults::prepare_status_for_create(kind, &mut object);
        let meta = metadata_mut(&mut object).expect("canonical objects have metadata");
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.insert("generation".into(), json!(1));
        for server_owned in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
            meta.remove(server_owned);
        }
        let causes = wasmkube_api::validation::validate(kind, &object);
        if !causes.is_empty() {
            return Err(ApiError::Invalid { kind, name, causes });
        }
        self.check_namespace(target, &name).await?;
        let key = kind.key(target.namespace.as_deref(), &name);
        // A Service's addresses are chosen and written under the allocator's lock.
        let mut services = if is_service(kind) { Some(self.services.lock(&*self.store).await?) } else { None };
        let held = match &mut services {
            Some(locked) => Some(locked.assign(&key, &name, None, &mut object)?),
            None => None,
        };
        if let Some(manager) = &opts.field_manager {
            super::apply::record_update(crate::schema::schemas(), kind, (None, &mut object), manager, "");
        }
        if opts.dry_run {
            if self.store.get(&key).await?.is_some() {
                return Err(ApiError::AlreadyExists { kind, name });
            }
            return Ok(Written { object, warnings });
        }
        let bytes = encode(&object);
        let write = Write::Put { key: key.clone(), value: bytes, precondition: Some(Precondition::Absent) };
        match self.store.write(write).await? {
            WriteOutcome::Committed(rev) => {
                if let (Some(locked), Some(held)) = (&mut services, held) {
                    locked.commit(&key, held);
                }
                Ok(Written { object: committed(object, rev), warnings })
            }
            WriteOutcome::PreconditionFailed { .. } | WriteOutcome::NotFound => {
                Err(ApiError::AlreadyExists { kind, name })
            }
        }
    }

    /// Puts the object in the request's namespace (or none, for cluster-scoped kinds).
    fn place_in_namespace(&self, target: &Target, object: &mut Value) -> Result<(), ApiError> {
        let meta = metadata_mut(object).ok_or_else(|| ApiError::BadRequest("metadata must be an object".into()))?;
        if !target.kind.namespaced {
            meta.remove("namespace");
            return Ok(());
        }
        let path_ns = target.namespace.as_deref().ok_or(ApiError::MethodNotAllowed)?;
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != path_ns => Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            )),
            _ => {
                meta.insert("namespace".into(), json!(path_ns));
                Ok(())
            }
        }
    }
}

/// The object's name, generated from `metadata.generateName` when it has none.
fn assign_name(object: &mut Value) -> Result<String, ApiError> {
    let meta = metadata_mut(object).expect("canonical objects have metadata");
    if let Some(name) = meta.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
        return Ok(name.to_string());
    }
    let Some(prefix) = meta.get("generateName").and_then(Value::as_str) else {
        // Validation reports the missing name with its field path.
        return Ok(String::new());
    };
    let mut rng = rand::rng();
    let suffix: String = (0..5).map(|_| NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())] as char).collect();
    let name = format!("{prefix}{suffix}");
    meta.insert("name".into(), json!(name));
    Ok(name)
}
