//! The two systems under test and the write each benchmark client repeats against them: a
//! ConfigMap create through wasmkube's Kubernetes API, a put through etcd's v3 JSON gateway.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

use wasmkube_bench::connection::{Connection, Endpoint};
use wasmkube_bench::load::LoadTarget;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Wasmkube,
    Etcd,
}

impl std::fmt::Display for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            System::Wasmkube => "wasmkube",
            System::Etcd => "etcd",
        })
    }
}

/// What one write sends, per system.
enum Write {
    /// `POST` a ConfigMap whose `data.value` is `value`, authenticated with `token`.
    ConfigMap { token: String, value: String },
    /// `POST /v3/kv/put` of `value_b64` (encoded once: every put stores the same bytes).
    EtcdPut { value_b64: String },
}

/// A system under test: where it listens and how to write one object to it.
pub struct Target {
    pub system: System,
    endpoint: Endpoint,
    write: Write,
}

/// Where ConfigMaps are created; etcd keys use the same storage key as wasmkube's store, so both
/// store keys of the same length.
const NAMESPACE: &str = "default";

impl Target {
    /// wasmkube, creating ConfigMaps with a `data.value` of `value_bytes` bytes.
    pub fn wasmkube(endpoint: Endpoint, token: String, value_bytes: usize) -> Self {
        let write = Write::ConfigMap { token, value: filler(value_bytes) };
        Self { system: System::Wasmkube, endpoint, write }
    }

    /// etcd, putting values of `value_bytes` bytes: pass the size of a ConfigMap as wasmkube
    /// stores it, so both systems persist the same number of bytes per write.
    pub fn etcd(endpoint: Endpoint, value_bytes: usize) -> Self {
        let write = Write::EtcdPut { value_b64: BASE64.encode(filler(value_bytes)) };
        Self { system: System::Etcd, endpoint, write }
    }

    pub async fn connect(&self) -> Result<Connection> {
        self.endpoint.connect().await
    }

    /// The request that writes a new object called `name`.
    pub fn create(&self, name: &str) -> Request<Full<Bytes>> {
        match &self.write {
            Write::ConfigMap { token, value } => {
                let body = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": { "name": name },
                    "data": { "value": value },
                });
                let path = format!("/api/v1/namespaces/{NAMESPACE}/configmaps");
                self.post(&path, Some(token), body.to_string())
            }
            Write::EtcdPut { value_b64 } => {
                let key = BASE64.encode(format!("/registry/core/configmaps/{NAMESPACE}/{name}"));
                let body = serde_json::json!({ "key": key, "value": value_b64 });
                self.post("/v3/kv/put", None, body.to_string())
            }
        }
    }

    /// The status of a successful write.
    pub fn created(&self) -> StatusCode {
        match self.system {
            System::Wasmkube => StatusCode::CREATED,
            System::Etcd => StatusCode::OK,
        }
    }

    /// The Prometheus counters whose ratio is "writes per durable commit": for wasmkube the
    /// store's batch-size histogram (sum = writes, count = commits); for etcd the puts applied and
    /// the WAL fsyncs.
    fn commit_counters(&self) -> (&'static str, &'static str) {
        match self.system {
            System::Wasmkube => ("store_commit_batch_size_sum", "store_commit_batch_size_count"),
            System::Etcd => ("etcd_mvcc_put_total", "etcd_disk_wal_fsync_duration_seconds_count"),
        }
    }

    /// Reads (writes, durable commits) so far from the server's `/metrics`.
    pub async fn commit_totals(&self) -> Result<CommitTotals> {
        let token = match &self.write {
            Write::ConfigMap { token, .. } => Some(token.as_str()),
            Write::EtcdPut { .. } => None,
        };
        let request = self.request(Method::GET, "/metrics", token, String::new());
        let (status, body) = self.connect().await?.send(request).await?;
        if status != StatusCode::OK {
            bail!("{} /metrics answered {status}", self.system);
        }
        let text = std::str::from_utf8(&body).context("/metrics is not UTF-8")?;
        let (writes, commits) = self.commit_counters();
        Ok(CommitTotals { writes: counter(text, writes)?, commits: counter(text, commits)? })
    }

    fn post(&self, path: &str, token: Option<&str>, body: String) -> Request<Full<Bytes>> {
        self.request(Method::POST, path, token, body)
    }

    fn request(&self, method: Method, path: &str, token: Option<&str>, body: String) -> Request<Full<Bytes>> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.endpoint.authority())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(Full::new(Bytes::from(body))).expect("static method, path and header names are valid")
    }
}

impl LoadTarget for Target {
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn request(&self, name: &str) -> Request<Full<Bytes>> {
        self.create(name)
    }

    fn success(&self) -> StatusCode {
        self.created()
    }
}

/// Server-side totals, read before and after a run.
#[derive(Debug, Clone, Copy)]
pub struct CommitTotals {
    pub writes: f64,
    pub commits: f64,
}

/// The value of an unlabelled metric (or the sum of its labelled series) in Prometheus text.
fn counter(text: &str, name: &str) -> Result<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let metric = series.split('{').next().unwrap_or(series);
        if metric == name {
            *found.get_or_insert(0.0) += value.parse::<f64>().with_context(|| format!("parsing `{line}`"))?;
        }
    }
    found.with_context(|| format!("metric {name} not found"))
}

/// `len` printable bytes: the content does not matter to either store (neither compresses).
fn filler(len: usize) -> String {
    "0123456789abcdef".chars().cycle().take(len).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_reads_plain_and_labelled_series() {
        let text = "# HELP x\nstore_commit_batch_size_sum 12.0\nput_total{a=\"1\"} 2\nput_total{a=\"2\"} 3\n";
        assert_eq!(counter(text, "store_commit_batch_size_sum").unwrap(), 12.0);
        assert_eq!(counter(text, "put_total").unwrap(), 5.0);
        assert!(counter(text, "missing").is_err());
    }

    #[test]
    fn filler_has_the_requested_length() {
        assert_eq!(filler(256).len(), 256);
        assert_eq!(filler(0), "");
    }
}
