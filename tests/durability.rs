//! Durability across SIGKILL: every create the server acknowledged must be there after a restart,
//! with the same resourceVersion, and revisions must keep growing.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts `wasmkube server` on `data_dir` and returns it with a client once it printed `ready:`.
async fn start_server(data_dir: &Path) -> (Child, kube::Client) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmkube"))
        .args(["server", "--api-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn wasmkube server");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(rest) = line.strip_prefix("ready: ") {
                return rest.to_string();
            }
        }
        panic!("server exited before it was ready");
    })
    .await
    .expect("server ready in time");
    let url = ready
        .split_whitespace()
        .find_map(|field| field.strip_prefix("api="))
        .expect("ready line names the api")
        .to_string();
    let ca = std::fs::read_to_string(data_dir.join("pki/ca.crt")).expect("ca");
    let token = std::fs::read_to_string(data_dir.join("admin-token")).expect("token");
    let client = support::client_for(&url, &ca, Some(token.trim())).await;
    (child, client)
}

#[tokio::test]
async fn every_acknowledged_create_survives_sigkill_with_its_resource_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, client) = start_server(dir.path()).await;
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();

    let mut writers = Vec::new();
    for w in 0..16 {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i}");
                let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name},
                    "data": {"payload": "x".repeat(200)}}))
                .expect("cm");
                match cms.create(&PostParams::default(), &cm).await {
                    Ok(created) => {
                        let rv = created.metadata.resource_version.expect("rv");
                        acked.lock().expect("lock").push((name, rv));
                    }
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    // Kill mid-stream once a few hundred creates were acknowledged.
    support::eventually(Duration::from_secs(60), "300 acknowledged creates", || {
        let n = acked.lock().expect("lock").len();
        async move { (n >= 300).then_some(()) }
    })
    .await;
    server.start_kill().expect("SIGKILL");
    server.wait().await.expect("server reaped");
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    let acked = acked.lock().expect("lock").clone();

    let (_server, client) = start_server(dir.path()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut highest = 0u64;
    for (name, rv) in &acked {
        let found = cms.get(name).await.unwrap_or_else(|e| panic!("{name} (acknowledged at {rv}) lost: {e}"));
        assert_eq!(found.metadata.resource_version.as_deref(), Some(rv.as_str()), "{name}");
        highest = highest.max(rv.parse().expect("numeric rv"));
    }
    let after: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "after-restart"}})).expect("cm");
    let created = cms.create(&PostParams::default(), &after).await.expect("create after restart");
    let rv: u64 = created.metadata.resource_version.expect("rv").parse().expect("numeric");
    assert!(rv > highest, "revisions keep growing after a restart: {rv} <= {highest}");
}
