//! Where the client finds its cluster: the data directory, the kubeconfig and the default namespace.
//!
//! The order follows DESIGN §2: `--kubeconfig`, then `$KUBECONFIG` (clap folds both into
//! [`ClientOptions::kubeconfig`], the flag winning), then `DATA_DIR/kubeconfig` as written by
//! `wasmkube up`. Path logic is pure ([`data_dir_from`], [`kubeconfig_paths`]) so it is tested
//! without touching the process environment.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

use crate::ClientOptions;

/// The kubeconfig file name inside the data directory.
pub const KUBECONFIG_FILE: &str = "kubeconfig";

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("error: no kubeconfig found (tried {}); run `wasmkube up` to start a cluster, or pass --kubeconfig", list(.tried))]
    NotFound { tried: Vec<PathBuf> },
    #[error("error: reading kubeconfig {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("error: loading kubeconfig: {0}")]
    Load(#[source] KubeconfigError),
    #[error("error: building the API client: {0}")]
    Client(#[source] kube::Error),
}

fn list(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// A connected client and the namespace requests default to.
pub struct Cluster {
    pub client: kube::Client,
    /// The kubeconfig context's namespace, else `default` (not yet overridden by `-n`).
    pub namespace: String,
}

impl Cluster {
    /// The namespace for this invocation: `-n` if given, else the context's.
    pub fn namespace_for(&self, options: &ClientOptions) -> String {
        options.namespace.clone().unwrap_or_else(|| self.namespace.clone())
    }
}

/// `$WASMKUBE_DATA_DIR`, else `$XDG_DATA_HOME/wasmkube`, else `~/.local/share/wasmkube`.
pub fn default_data_dir() -> PathBuf {
    data_dir_from(std::env::var_os("WASMKUBE_DATA_DIR"), std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"))
}

/// [`default_data_dir`] from the given variable values; empty values count as unset, and a
/// relative `XDG_DATA_HOME` is ignored as the XDG spec requires.
pub fn data_dir_from(wasmkube: Option<OsString>, xdg_data_home: Option<OsString>, home: Option<OsString>) -> PathBuf {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(wasmkube) {
        return dir;
    }
    if let Some(xdg) = set(xdg_data_home).filter(|p| p.is_absolute()) {
        return xdg.join("wasmkube");
    }
    set(home).unwrap_or_else(|| PathBuf::from(".")).join(".local/share/wasmkube")
}

/// The kubeconfig files to read: the explicit list (`--kubeconfig` or `$KUBECONFIG`, split on the
/// platform's path separator) if any, else `DATA_DIR/kubeconfig`.
pub fn kubeconfig_paths(explicit: Option<&OsStr>, data_dir: &Path) -> Vec<PathBuf> {
    let listed: Vec<PathBuf> = explicit
        .map(|value| std::env::split_paths(value).filter(|p| !p.as_os_str().is_empty()).collect())
        .unwrap_or_default();
    if listed.is_empty() { vec![data_dir.join(KUBECONFIG_FILE)] } else { listed }
}

/// Reads and merges the kubeconfig files that exist (the first file's entries win, as kubectl
/// merges `$KUBECONFIG`); none existing is [`ConfigError::NotFound`].
pub fn read_kubeconfig(paths: &[PathBuf]) -> Result<Kubeconfig, ConfigError> {
    let mut merged: Option<Kubeconfig> = None;
    for path in paths.iter().filter(|p| p.is_file()) {
        let next = Kubeconfig::read_from(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        merged = Some(match merged {
            None => next,
            Some(first) => first.merge(next).map_err(|source| ConfigError::Read { path: path.clone(), source })?,
        });
    }
    merged.ok_or_else(|| ConfigError::NotFound { tried: paths.to_vec() })
}

/// Loads the kubeconfig the options point at and builds a client from its current context.
pub async fn connect(options: &ClientOptions) -> Result<Cluster, ConfigError> {
    let paths = kubeconfig_paths(options.kubeconfig.as_deref().map(Path::as_os_str), &options.data_dir());
    tracing::debug!(?paths, "reading kubeconfig");
    let kubeconfig = read_kubeconfig(&paths)?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(ConfigError::Load)?;
    // kube retries 429/503/504 by itself for up to minutes by default. kubectl does not (client-go
    // waits only when the server sends Retry-After), and verbs need to see a 429 themselves:
    // `drain` reports a disruption budget's refusal and retries on kubectl's schedule.
    config.default_retry = false;
    let namespace = config.default_namespace.clone();
    let client = crate::connection::client(config).map_err(ConfigError::Client)?;
    Ok(Cluster { client, namespace })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    #[test]
    fn data_dir_prefers_wasmkube_then_xdg_then_home() {
        assert_eq!(data_dir_from(os("/w"), os("/x"), os("/h")), PathBuf::from("/w"));
        assert_eq!(data_dir_from(None, os("/x"), os("/h")), PathBuf::from("/x/wasmkube"));
        assert_eq!(data_dir_from(os(""), os(""), os("/h")), PathBuf::from("/h/.local/share/wasmkube"));
        assert_eq!(data_dir_from(None, os("relative"), os("/h")), PathBuf::from("/h/.local/share/wasmkube"));
    }

    #[test]
    fn an_explicit_kubeconfig_wins_over_the_data_dir() {
        let data = Path::new("/data");
        assert_eq!(kubeconfig_paths(Some(OsStr::new("/k/config")), data), vec![PathBuf::from("/k/config")]);
        assert_eq!(kubeconfig_paths(Some(OsStr::new("/a:/b")), data), vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(kubeconfig_paths(None, data), vec![PathBuf::from("/data/kubeconfig")]);
        assert_eq!(kubeconfig_paths(Some(OsStr::new("")), data), vec![PathBuf::from("/data/kubeconfig")]);
    }

    #[test]
    fn a_missing_kubeconfig_names_every_path_tried_and_suggests_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tried = vec![dir.path().join("a"), dir.path().join("b")];
        let err = read_kubeconfig(&tried).expect_err("nothing exists");
        let line = err.to_string();
        assert!(line.contains(&dir.path().join("a").display().to_string()), "{line}");
        assert!(line.contains(&dir.path().join("b").display().to_string()), "{line}");
        assert!(line.contains("wasmkube up"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn existing_files_are_read_and_missing_ones_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_kubeconfig(dir.path());
        let config = read_kubeconfig(&[dir.path().join("missing"), path]).expect("one file exists");
        assert_eq!(config.current_context.as_deref(), Some("c"));
    }

    #[tokio::test]
    async fn the_context_namespace_is_the_default_and_dash_n_overrides_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_kubeconfig(dir.path());
        let mut options = ClientOptions { kubeconfig: Some(path), ..ClientOptions::default() };
        let cluster = connect(&options).await.expect("the client builds without contacting the server");
        assert_eq!(cluster.namespace, "apps");
        assert_eq!(cluster.namespace_for(&options), "apps");
        options.namespace = Some("other".to_string());
        assert_eq!(cluster.namespace_for(&options), "other");
    }

    /// A one-context kubeconfig (namespace `apps`) in `dir`.
    fn write_kubeconfig(dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:6443\n\
             users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: k\n    user: u\n    namespace: apps\n",
        )
        .expect("write kubeconfig");
        path
    }
}
