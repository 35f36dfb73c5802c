//! One probe attempt: what a probe's handler (`httpGet`, `tcpSocket`, `exec`) is, read from the
//! container spec, and how it is performed against a running container.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::host::command::{self, Outcome};
use crate::host::{GuestConfig, Workload};

/// What Kubernetes' prober sends as its `User-Agent` (the API version we serve).
const USER_AGENT: &str = "kube-probe/1.33";
/// A status line longer than this is not HTTP.
const MAX_STATUS_LINE: u64 = 8 * 1024;

/// How a probe checks a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `GET http://<host or pod IP>:<port><path>`; 200..=399 is a success.
    HttpGet { host: Option<String>, port: u16, path: String, headers: Vec<(String, String)> },
    /// A TCP connection to `<host or pod IP>:<port>` can be opened.
    TcpSocket { host: Option<String>, port: u16 },
    /// The container's workload run as a command with these arguments exits 0.
    Exec { command: Vec<String> },
    /// A probe this node cannot perform (gRPC, an unknown named port): every attempt fails.
    Invalid(String),
}

/// Why one probe attempt failed; the text is what Kubernetes writes in its `Unhealthy` events.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("HTTP probe failed with statuscode: {0}")]
    Status(u16),
    #[error("Get \"{url}\": {source}")]
    Request {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)")]
    RequestTimeout { url: String },
    #[error("Get \"{url}\": malformed HTTP response {line:?}")]
    Malformed { url: String, line: String },
    #[error("dial tcp {addr}: {source}")]
    Dial {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("dial tcp {addr}: i/o timeout")]
    DialTimeout { addr: String },
    #[error("the component does not export wasi:cli/run")]
    NotACommand,
    #[error("command {command:?} exited with code {code}")]
    Exited { command: String, code: i32 },
    #[error("command {command:?} timed out")]
    ExecTimeout { command: String },
    #[error("command {command:?} failed: {why}")]
    ExecFailed { command: String, why: String },
    #[error("{0}")]
    Invalid(String),
}

impl Action {
    /// Reads a probe's handler. Named ports resolve against the probed container first, then the
    /// pod's other containers; a name that is a number is that number, as in the kubelet.
    pub fn of(probe: &Probe, container: &Container, pod: &Pod) -> Self {
        let port = |port: &IntOrString| resolve_port(port, container, pod);
        if let Some(get) = &probe.http_get {
            if let Some(scheme) = get.scheme.as_deref().filter(|s| !s.eq_ignore_ascii_case("HTTP")) {
                return Action::Invalid(format!("scheme {scheme} is not supported: handlers serve plain HTTP"));
            }
            let path = get.path.clone().unwrap_or_default();
            let path = if path.starts_with('/') { path } else { format!("/{path}") };
            let headers = get.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
            return match port(&get.port) {
                Ok(port) => Action::HttpGet { host: non_empty(&get.host), port, path, headers },
                Err(e) => Action::Invalid(e),
            };
        }
        if let Some(tcp) = &probe.tcp_socket {
            return match port(&tcp.port) {
                Ok(port) => Action::TcpSocket { host: non_empty(&tcp.host), port },
                Err(e) => Action::Invalid(e),
            };
        }
        if let Some(exec) = &probe.exec {
            return Action::Exec { command: exec.command.clone().unwrap_or_default() };
        }
        if probe.grpc.is_some() {
            return Action::Invalid("gRPC probes are not supported".into());
        }
        Action::Invalid("the probe has no handler (httpGet, tcpSocket or exec)".into())
    }
}

fn non_empty(host: &Option<String>) -> Option<String> {
    host.clone().filter(|h| !h.is_empty())
}

fn resolve_port(port: &IntOrString, container: &Container, pod: &Pod) -> Result<u16, String> {
    let number = |n: i32| u16::try_from(n).ok().filter(|p| *p > 0).ok_or_else(|| format!("invalid port {n}"));
    let name = match port {
        IntOrString::Int(n) => return number(*n),
        IntOrString::String(name) => name,
    };
    let others = pod.spec.iter().flat_map(|s| s.containers.iter()).filter(|c| c.name != container.name);
    let named = std::iter::once(container)
        .chain(others)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name.as_str()));
    match (named, name.parse::<i32>()) {
        (Some(p), _) => number(p.container_port),
        (None, Ok(n)) => number(n),
        (None, Err(_)) => Err(format!("port {name} not found")),
    }
}

/// What an attempt runs against: the container's pod IP, and for `exec` its workload and settings.
pub struct Target<'a> {
    pub ip: IpAddr,
    pub name: &'a str,
    pub workload: &'a Workload,
    pub engine: &'a wasmtime::Engine,
    pub config: &'a GuestConfig,
}

/// Performs one attempt, giving up after `timeout`.
pub async fn perform(action: &Action, timeout: Duration, target: &Target<'_>) -> Result<(), Failure> {
    match action {
        Action::HttpGet { host, port, path, headers } => {
            let host = host.clone().unwrap_or_else(|| target.ip.to_string());
            http_get(&host, *port, path, headers, timeout).await
        }
        Action::TcpSocket { host, port } => {
            let host = host.clone().unwrap_or_else(|| target.ip.to_string());
            let addr = host_port(&host, *port);
            match tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), *port))).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(source)) => Err(Failure::Dial { addr, source }),
                Err(_) => Err(Failure::DialTimeout { addr }),
            }
        }
        Action::Exec { command } => exec(command, timeout, target).await,
        Action::Invalid(why) => Err(Failure::Invalid(why.clone())),
    }
}

/// `host:port`, bracketing IPv6 addresses.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// One `GET` over a fresh connection; only the status line is read. A raw HTTP/1.1 request keeps
/// the agent free of an HTTP client for what needs only a status code. Redirects are not
/// followed: a 3xx is already a success.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(), Failure> {
    let authority = host_port(host, port);
    let url = format!("http://{authority}{path}");
    if let Some((name, _)) =
        headers.iter().find(|(n, v)| n.is_empty() || n.contains([':', '\r', '\n']) || v.contains(['\r', '\n']))
    {
        return Err(Failure::Invalid(format!("invalid HTTP header {name:?}")));
    }
    // The user's headers replace the defaults of the same name, as in the kubelet.
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    for (name, value) in [("Host", authority.as_str()), ("User-Agent", USER_AGENT), ("Accept", "*/*")] {
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let exchange = async {
        let mut stream = TcpStream::connect((host, port)).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(stream.take(MAX_STATUS_LINE)).read_line(&mut line).await?;
        Ok::<_, std::io::Error>(line)
    };
    let line = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(line)) => line,
        Ok(Err(source)) => return Err(Failure::Request { url, source }),
        Err(_) => return Err(Failure::RequestTimeout { url }),
    };
    match status_code(&line) {
        Some(code) if (200..400).contains(&code) => Ok(()),
        Some(code) => Err(Failure::Status(code)),
        None => Err(Failure::Malformed { url, line: line.trim_end().to_string() }),
    }
}

/// The code of an HTTP/1.x status line (`HTTP/1.1 200 OK`).
fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.split_ascii_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok().filter(|c| (100..600).contains(c))
}

/// Runs the container's workload as a command: argv is the container name then the probe's
/// command, with the container's environment and volumes.
async fn exec(command: &[String], timeout: Duration, target: &Target<'_>) -> Result<(), Failure> {
    if matches!(target.workload, Workload::Http(_)) {
        return Err(Failure::NotACommand);
    }
    let shown = command.join(" ");
    let mut config = target.config.clone();
    config.args = std::iter::once(target.name.to_string()).chain(command.iter().cloned()).collect();
    // A probe's output is not the container's: the kubelet keeps it out of the container's log.
    config.log = None;
    // Nor is its input: the container's stdin pipe stays the container's.
    config.stdin = None;
    // Timing out drops the run, and with it the store: the probe's instance stops there.
    let never = CancellationToken::new();
    let run = command::run(target.workload, target.engine, &config, &never);
    match tokio::time::timeout(timeout, run).await {
        Ok(Outcome::Exited(0)) => Ok(()),
        Ok(Outcome::Exited(code)) => Err(Failure::Exited { command: shown, code }),
        Ok(Outcome::OutOfMemory) => Err(Failure::ExecFailed { command: shown, why: "memory limit exceeded".into() }),
        Ok(Outcome::Trapped(why)) => Err(Failure::ExecFailed { command: shown, why }),
        Ok(Outcome::Stopped) => Err(Failure::ExecFailed { command: shown, why: "stopped".into() }),
        Err(_) => Err(Failure::ExecTimeout { command: shown }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).expect("probe")
    }

    #[test]
    fn handlers_are_read_with_named_ports_resolved_across_the_pod() {
        let pod: Pod = serde_json::from_value(json!({"spec": {"containers": [
            {"name": "web", "ports": [{"name": "http", "containerPort": 8080}]},
            {"name": "side", "ports": [{"name": "admin", "containerPort": 9090}]},
        ]}}))
        .expect("pod");
        let web = &pod.spec.as_ref().expect("spec").containers[0];
        let cases = [
            (
                json!({"httpGet": {"path": "ready", "port": "http", "httpHeaders": [{"name": "X-A", "value": "1"}]}}),
                Action::HttpGet {
                    host: None,
                    port: 8080,
                    path: "/ready".into(),
                    headers: vec![("X-A".into(), "1".into())],
                },
            ),
            (
                json!({"httpGet": {"port": 81, "host": "127.0.0.9"}}),
                Action::HttpGet { host: Some("127.0.0.9".into()), port: 81, path: "/".into(), headers: vec![] },
            ),
            (json!({"tcpSocket": {"port": "admin"}}), Action::TcpSocket { host: None, port: 9090 }),
            (json!({"tcpSocket": {"port": "7000"}}), Action::TcpSocket { host: None, port: 7000 }),
            (json!({"tcpSocket": {"port": "nope"}}), Action::Invalid("port nope not found".into())),
            (json!({"exec": {"command": ["ok"]}}), Action::Exec { command: vec!["ok".into()] }),
            (
                json!({"httpGet": {"port": 80, "scheme": "HTTPS"}}),
                Action::Invalid("scheme HTTPS is not supported: handlers serve plain HTTP".into()),
            ),
            (json!({"grpc": {"port": 80}}), Action::Invalid("gRPC probes are not supported".into())),
        ];
        for (spec, want) in cases {
            assert_eq!(Action::of(&probe(spec.clone()), web, &pod), want, "{spec}");
        }
    }

    #[test]
    fn status_lines_parse_to_codes() {
        for (line, want) in [
            ("HTTP/1.1 200 OK\r\n", Some(200)),
            ("HTTP/1.0 503 Service Unavailable\r\n", Some(503)),
            ("HTTP/1.1 302\r\n", Some(302)),
            ("SSH-2.0-OpenSSH\r\n", None),
            ("HTTP/1.1 abc\r\n", None),
            ("", None),
        ] {
            assert_eq!(status_code(line), want, "{line:?}");
        }
    }
}
