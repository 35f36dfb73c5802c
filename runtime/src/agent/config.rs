//! Configuration into guests: a container's environment (`env` with `value` and `valueFrom`,
//! `envFrom`) and its volumes as WASI preopened directories (emptyDir, configMap, secret,
//! downwardAPI). A reference to a missing ConfigMap or Secret (that is not `optional`) is a
//! [`ConfigError`], which the container reports as `CreateContainerConfigError`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Volume};
use kube::api::Api;
use serde_json::Value;
use wasmkube_api::quantity::{cpu_millicores, memory_bytes};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    KeyNotFound { kind: &'static str, namespace: String, name: String, key: String },
    #[error("unsupported field path {0:?}")]
    FieldPath(String),
    #[error("volume {volume:?}: {reason}")]
    Volume { volume: String, reason: String },
    #[error("volumeMount {0:?} names no volume of the pod")]
    NoSuchVolume(String),
    #[error("reading {what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing volume files under {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads ConfigMaps and Secrets of the pod's namespace.
pub struct Sources<'a> {
    pub client: &'a kube::Client,
    pub namespace: &'a str,
    /// Directories `hostPath` volumes may point into.
    pub host_path_roots: &'a [PathBuf],
}

impl Sources<'_> {
    async fn config_map(&self, name: &str, optional: bool) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), self.namespace);
        match api.get_opt(name).await {
            Ok(Some(cm)) => {
                let mut data = cm.data.unwrap_or_default();
                for (k, v) in cm.binary_data.unwrap_or_default() {
                    data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                Ok(Some(data))
            }
            Ok(None) if optional => Ok(None),
            Ok(None) => Err(ConfigError::ConfigMapNotFound(name.to_string())),
            Err(source) => Err(ConfigError::Api { what: format!("configmap {name}"), source }),
        }
    }

    async fn secret(&self, name: &str, optional: bool) -> Result<Option<BTreeMap<String, Vec<u8>>>, ConfigError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), self.namespace);
        match api.get_opt(name).await {
            Ok(Some(secret)) => {
                let mut data: BTreeMap<String, Vec<u8>> =
                    secret.data.unwrap_or_default().into_iter().map(|(k, ByteString(v))| (k, v)).collect();
                for (k, v) in secret.string_data.unwrap_or_default() {
                    data.insert(k, v.into_bytes());
                }
                Ok(Some(data))
            }
            Ok(None) if optional => Ok(None),
            Ok(None) => Err(ConfigError::SecretNotFound(name.to_string())),
            Err(source) => Err(ConfigError::Api { what: format!("secret {name}"), source }),
        }
    }
}

/// The value of a `fieldRef` (downward API) for this pod.
pub fn field_value(pod: &Pod, path: &str) -> Result<String, ConfigError> {
    let json = serde_json::to_value(pod).unwrap_or(Value::Null);
    let text = |pointer: &str| json.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
    let map_lines = |pointer: &str| {
        let map = json.pointer(pointer).and_then(Value::as_object).cloned().unwrap_or_default();
        map.iter().map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join("\n")
    };
    if let Some(key) = path.strip_prefix("metadata.labels['").and_then(|k| k.strip_suffix("']")) {
        return Ok(json
            .pointer("/metadata/labels")
            .and_then(|l| l.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .into());
    }
    if let Some(key) = path.strip_prefix("metadata.annotations['").and_then(|k| k.strip_suffix("']")) {
        return Ok(json
            .pointer("/metadata/annotations")
            .and_then(|l| l.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .into());
    }
    Ok(match path {
        "metadata.name" => text("/metadata/name"),
        "metadata.namespace" => text("/metadata/namespace"),
        "metadata.uid" => text("/metadata/uid"),
        "metadata.labels" => map_lines("/metadata/labels"),
        "metadata.annotations" => map_lines("/metadata/annotations"),
        "spec.nodeName" => text("/spec/nodeName"),
        "spec.serviceAccountName" => text("/spec/serviceAccountName"),
        "status.podIP" => text("/status/podIP"),
        "status.hostIP" => text("/status/hostIP"),
        other => return Err(ConfigError::FieldPath(other.to_string())),
    })
}

/// The value of a `resourceFieldRef` (`limits.memory`, `requests.cpu`, ...), in Kubernetes' units
/// with the default divisor 1 (cpu rounded up to whole cores, memory in bytes).
fn resource_value(container: &Container, resource: &str) -> Result<String, ConfigError> {
    let (kind, name) = resource.split_once('.').ok_or_else(|| ConfigError::FieldPath(resource.to_string()))?;
    let resources = container.resources.clone().unwrap_or_default();
    let map = match kind {
        "limits" => resources.limits,
        "requests" => resources.requests,
        _ => return Err(ConfigError::FieldPath(resource.to_string())),
    }
    .unwrap_or_default();
    let Some(quantity) = map.get(name) else { return Ok("0".into()) };
    Ok(match name {
        "memory" => memory_bytes(&quantity.0).map(|b| b.to_string()).unwrap_or_default(),
        "cpu" => cpu_millicores(&quantity.0).map(|m| m.div_ceil(1000).to_string()).unwrap_or_default(),
        _ => quantity.0.clone(),
    })
}

/// The container's environment, in order, as Kubernetes builds it (`envFrom` first, then `env`,
/// later entries overriding earlier ones).
pub async fn environment(
    sources: &Sources<'_>,
    pod: &Pod,
    container: &Container,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env: Vec<(String, String)> = Vec::new();
    // `workingDir` goes to the guest as wasi:cli's initial-cwd (see `GuestConfig::working_dir`)
    // and, since wasi-libc does not read that yet, as `PWD` too (an explicit `PWD` still wins).
    if let Some(dir) = container.working_dir.as_ref().filter(|d| !d.is_empty()) {
        env.push(("PWD".to_string(), dir.clone()));
    }
    let mut set = |name: String, value: String| match env.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(cm) = &from.config_map_ref
            && let Some(data) = sources.config_map(&cm.name, cm.optional.unwrap_or(false)).await?
        {
            for (k, v) in data {
                set(format!("{prefix}{k}"), v);
            }
        }
        if let Some(secret) = &from.secret_ref
            && let Some(data) = sources.secret(&secret.name, secret.optional.unwrap_or(false)).await?
        {
            for (k, v) in data {
                set(format!("{prefix}{k}"), String::from_utf8_lossy(&v).into_owned());
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(from)) => {
                if let Some(r) = &from.config_map_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    match sources.config_map(&r.name, optional).await? {
                        Some(data) => match data.get(&r.key) {
                            Some(v) => Some(v.clone()),
                            None if optional => None,
                            None => return Err(key_missing("configmap", sources, &r.name, &r.key)),
                        },
                        None => None,
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    match sources.secret(&r.name, optional).await? {
                        Some(data) => match data.get(&r.key) {
                            Some(v) => Some(String::from_utf8_lossy(v).into_owned()),
                            None if optional => None,
                            None => return Err(key_missing("secret", sources, &r.name, &r.key)),
                        },
                        None => None,
                    }
                } else if let Some(f) = &from.field_ref {
                    Some(field_value(pod, &f.field_path)?)
                } else if let Some(r) = &from.resource_field_ref {
                    Some(resource_value(container, &r.resource)?)
                } else {
                    None
                }
            }
            (None, None) => Some(String::new()),
        };
        if let Some(value) = value {
            set(var.name.clone(), value);
        }
    }
    Ok(env)
}

fn key_missing(kind: &'static str, sources: &Sources<'_>, name: &str, key: &str) -> ConfigError {
    ConfigError::KeyNotFound {
        kind,
        namespace: sources.namespace.to_string(),
        name: name.to_string(),
        key: key.to_string(),
    }
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), ConfigError> {
    let io = |source| ConfigError::Io { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, contents).map_err(io)
}

/// Fills the pod's volume directories under `dir` (one sub-directory per volume). emptyDir
/// volumes are created empty once and shared by the pod's containers.
pub async fn materialize_volumes(sources: &Sources<'_>, pod: &Pod, dir: &Path) -> Result<(), ConfigError> {
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let root = dir.join(&volume.name);
        std::fs::create_dir_all(&root).map_err(|source| ConfigError::Io { path: root.clone(), source })?;
        materialize(sources, pod, volume, &root).await?;
    }
    Ok(())
}

async fn materialize(sources: &Sources<'_>, pod: &Pod, volume: &Volume, root: &Path) -> Result<(), ConfigError> {
    let unsupported = |reason: &str| ConfigError::Volume { volume: volume.name.clone(), reason: reason.to_string() };
    if volume.empty_dir.is_some() {
        return Ok(());
    }
    if let Some(cm) = &volume.config_map {
        let Some(data) = sources.config_map(&cm.name, cm.optional.unwrap_or(false)).await? else { return Ok(()) };
        let files: Vec<(String, Vec<u8>)> = data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        return project(
            root,
            files,
            cm.items.as_deref().unwrap_or_default().iter().map(|i| (i.key.clone(), i.path.clone())),
        );
    }
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        let Some(data) = sources.secret(&name, secret.optional.unwrap_or(false)).await? else { return Ok(()) };
        return project(
            root,
            data.into_iter().collect(),
            secret.items.as_deref().unwrap_or_default().iter().map(|i| (i.key.clone(), i.path.clone())),
        );
    }
    if let Some(downward) = &volume.downward_api {
        for item in downward.items.iter().flatten() {
            let value = match &item.field_ref {
                Some(f) => field_value(pod, &f.field_path)?,
                None => return Err(unsupported("only fieldRef items are supported in downwardAPI volumes")),
            };
            write_file(&root.join(&item.path), value.as_bytes())?;
        }
        return Ok(());
    }
    if let Some(host_path) = &volume.host_path {
        allowed_host_path(&host_path.path, host_path.type_.as_deref(), sources.host_path_roots)
            .map_err(|reason| unsupported(&reason))?;
        return Ok(());
    }
    Err(unsupported("unsupported volume type (supported: emptyDir, configMap, secret, downwardAPI, hostPath)"))
}

/// Writes `files` (all of them, or only the listed `items` under their paths).
fn project(
    root: &Path,
    files: Vec<(String, Vec<u8>)>,
    items: impl Iterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let items: Vec<(String, String)> = items.collect();
    if items.is_empty() {
        for (key, value) in files {
            write_file(&root.join(key), &value)?;
        }
        return Ok(());
    }
    let files: BTreeMap<String, Vec<u8>> = files.into_iter().collect();
    for (key, path) in items {
        if let Some(value) = files.get(&key) {
            write_file(&root.join(path), value)?;
        }
    }
    Ok(())
}

/// The directory a `hostPath` volume names, if it is under one of `roots` (both canonicalized, so
/// `..` and symlinks cannot leave a root). `DirectoryOrCreate` creates it; other types but
/// directories are refused, since WASI preopens are directories.
pub fn allowed_host_path(path: &str, kind: Option<&str>, roots: &[PathBuf]) -> Result<PathBuf, String> {
    if roots.is_empty() {
        return Err("hostPath volumes are not allowed on this node (no --host-path-root is configured)".into());
    }
    match kind.unwrap_or("") {
        "" | "Directory" => {}
        "DirectoryOrCreate" => {
            let inside = roots.iter().any(|r| Path::new(path).starts_with(r));
            if inside {
                std::fs::create_dir_all(path).map_err(|e| format!("creating hostPath {path}: {e}"))?;
            }
        }
        other => return Err(format!("hostPath type {other} is not supported (a Wasm guest mounts directories only)")),
    }
    let canonical = std::fs::canonicalize(path).map_err(|e| format!("hostPath {path}: {e}"))?;
    if !canonical.is_dir() {
        return Err(format!("hostPath {path} is not a directory"));
    }
    let inside = roots.iter().filter_map(|r| std::fs::canonicalize(r).ok()).any(|r| canonical.starts_with(r));
    if !inside {
        let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return Err(format!("hostPath {path} is outside the allowed roots ({})", roots.join(", ")));
    }
    Ok(canonical)
}

/// The preopens of a container: (host dir, guest path, read-only) for each volumeMount.
pub fn mounts(
    pod: &Pod,
    container: &Container,
    dir: &Path,
    host_path_roots: &[PathBuf],
) -> Result<Vec<(PathBuf, String, bool)>, ConfigError> {
    let volumes: Vec<&Volume> = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).collect();
    let mut out = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .ok_or_else(|| ConfigError::NoSuchVolume(mount.name.clone()))?;
        // configMap, secret and downwardAPI volumes are always read-only, as in Kubernetes.
        let always_read_only = volume.config_map.is_some() || volume.secret.is_some() || volume.downward_api.is_some();
        let read_only = always_read_only || mount.read_only.unwrap_or(false);
        let host_dir = match &volume.host_path {
            Some(h) => allowed_host_path(&h.path, h.type_.as_deref(), host_path_roots)
                .map_err(|reason| ConfigError::Volume { volume: volume.name.clone(), reason })?,
            None => dir.join(&mount.name),
        };
        out.push((host_dir, mount.mount_path.clone(), read_only));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_refs_read_the_downward_api_fields() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"podIP": "127.64.0.5"},
        }))
        .expect("pod");
        for (path, want) in [
            ("metadata.name", "p"),
            ("metadata.namespace", "ns"),
            ("metadata.uid", "u1"),
            ("metadata.labels['app']", "web"),
            ("metadata.labels", "app=\"web\""),
            ("spec.nodeName", "n1"),
            ("status.podIP", "127.64.0.5"),
        ] {
            assert_eq!(field_value(&pod, path).expect(path), want, "{path}");
        }
        assert!(field_value(&pod, "spec.bogus").is_err());
    }
}
