//! The kubeconfig `up` and `server` write: cluster CA, server URL and the admin bearer token, usable
//! unmodified by kubectl and by the CLI's own client.

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use kube::config::Kubeconfig;
use serde_json::json;

/// The name of the cluster, user and context in the written kubeconfig.
pub const CONTEXT: &str = "wasmkube";

/// A kubeconfig for `server` trusting `ca_pem`, as `user` with `token`. Built as JSON and decoded
/// into kube's typed Kubeconfig so it has exactly that schema.
fn build(server: &str, ca_pem: &str, user: &str, token: &str) -> anyhow::Result<Kubeconfig> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user, "namespace": "default"}}],
        "current-context": CONTEXT,
    }))
    .context("building the kubeconfig")
}

/// Writes (atomically, owner-readable only) a kubeconfig for `server`.
pub fn write(path: &Path, server: &str, ca_pem: &str, token: &str) -> anyhow::Result<()> {
    let config = build(server, ca_pem, "admin", token)?;
    let yaml = serde_yaml_ng::to_string(&config).context("encoding the kubeconfig")?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(yaml.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A kube client for `server`, trusting `ca_pem` and authenticating with `token`: how `up` and
/// `agent` reach the API (the same path a remote agent takes).
pub async fn client(server: &str, ca_pem: &str, token: &str) -> anyhow::Result<kube::Client> {
    let config = build(server, ca_pem, "agent", token)?;
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default()).await?;
    Ok(wasmkube_cli::connection::client(config)?)
}
