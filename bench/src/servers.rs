//! Starting the servers under test as child processes, waiting until they answer, and stopping
//! them again. Each logs its stderr to a file in the benchmark's one temporary dir (next to its
//! data dir, if it has one), so both a failed start and a slow run can be read afterwards.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use http::{Request, StatusCode, header};
use http_body_util::Full;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::connection::Endpoint;

/// How long a server may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The running servers. [`Servers::stop`] kills and reaps them; if the benchmark panics instead,
/// `kill_on_drop` still kills them.
#[derive(Default)]
pub struct Servers {
    children: Vec<Child>,
}

/// A started wasmkube control plane (`server`) or all-in-one cluster (`up`).
pub struct Wasmkube {
    pub pid: u32,
    pub addr: SocketAddr,
    pub token: String,
    pub ca_pem: Vec<u8>,
    /// The rest of its `ready: api=` line (`dns=ADDR` and the like).
    pub announced: String,
}

/// A started single-member etcd.
pub struct Etcd {
    pub pid: u32,
    pub addr: SocketAddr,
}

impl Servers {
    /// Runs `wasmkube ARGS --data-dir DIR --api-addr 127.0.0.1:0` (ARGS being `server`, or `up`
    /// and its node flags) and waits for its `ready: api=URL ...` line.
    pub async fn start_wasmkube(&mut self, binary: &Path, args: &[&str], dir: &Path) -> Result<Wasmkube> {
        let mut command = Command::new(binary);
        command.args(args).arg("--data-dir").arg(dir).args(["--api-addr", "127.0.0.1:0"]);
        let (pid, rest) = self.start_announcing(command, &dir.with_extension("log"), "ready: api=").await?;
        let url = rest.split_whitespace().next().unwrap_or_default();
        let addr = url
            .strip_prefix("https://")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("unexpected API URL {url}"))?;
        let token = std::fs::read_to_string(dir.join("admin-token")).context("reading admin-token")?;
        let ca_pem = std::fs::read(dir.join("pki/ca.crt")).context("reading pki/ca.crt")?;
        Ok(Wasmkube { pid, addr, token: token.trim().to_string(), ca_pem, announced: rest.trim().to_string() })
    }

    /// Runs etcd with its client and peer URLs on free loopback ports and its data in `dir`, with
    /// every durability default kept (the WAL is fsynced before a put is answered), and waits until
    /// `/health` says it is healthy.
    pub async fn start_etcd(&mut self, binary: &Path, dir: &Path) -> Result<Etcd> {
        let log = dir.with_extension("log");
        let [client, peer] = free_ports()?.map(|addr| format!("http://{addr}"));
        let mut command = Command::new(binary);
        command
            .args(["--name", "bench"])
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("bench={peer}")]);
        let child = self.spawn(command, &log, append_to(&log)?.into())?;
        let pid = child.id().context("etcd exited at once")?;
        let addr: SocketAddr = client.trim_start_matches("http://").parse()?;
        let deadline = Instant::now() + START_TIMEOUT;
        while !etcd_healthy(addr).await {
            if let Some(status) = child.try_wait()? {
                bail!("etcd exited ({status}) before becoming healthy; its log ends:\n{}", log_tail(&log));
            }
            if Instant::now() > deadline {
                bail!("etcd did not become healthy in {START_TIMEOUT:?}; its log ends:\n{}", log_tail(&log));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Etcd { pid, addr })
    }

    /// Kills every server and waits for it to exit, so its data dir can be removed.
    pub async fn stop(&mut self) {
        for mut child in self.children.drain(..) {
            // Already exited is fine; the benchmark is over either way.
            let _ = child.kill().await;
        }
    }

    /// Starts `command`, which announces itself with a stdout line starting `prefix`, and returns
    /// its pid and the rest of that line. The rest of stdout is drained, so the server never blocks
    /// on a full pipe; stderr goes to `log`.
    pub async fn start_announcing(&mut self, command: Command, log: &Path, prefix: &str) -> Result<(u32, String)> {
        let program = PathBuf::from(command.as_std().get_program());
        let child = self.spawn(command, log, Stdio::piped())?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let pid = child.id().context("exited at once")?;
        let line = match tokio::time::timeout(START_TIMEOUT, line_after(stdout, prefix)).await {
            Ok(line) => line,
            Err(_) => Err(anyhow!("no `{prefix}` line within {START_TIMEOUT:?}")),
        };
        let rest = line.with_context(|| format!("starting {}; its log ends:\n{}", program.display(), log_tail(log)))?;
        Ok((pid, rest))
    }

    /// Starts `command`, with stdout and stderr appended to `log`, and waits until `addr` accepts
    /// TCP connections. Returns its pid.
    pub async fn start_listening(&mut self, command: Command, log: &Path, addr: SocketAddr) -> Result<u32> {
        let program = PathBuf::from(command.as_std().get_program());
        let child = self.spawn(command, log, append_to(log)?.into())?;
        let pid = child.id().context("exited at once")?;
        let deadline = Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Some(status) = child.try_wait()? {
                bail!("{} exited ({status}) before listening; its log ends:\n{}", program.display(), log_tail(log));
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on {addr} in {START_TIMEOUT:?}; its log ends:\n{}",
                    program.display(),
                    log_tail(log)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(pid)
    }

    /// Starts `command` with stderr appended to `log`.
    fn spawn(&mut self, mut command: Command, log: &Path, stdout: Stdio) -> Result<&mut Child> {
        let program = PathBuf::from(command.as_std().get_program());
        command.stdin(Stdio::null()).stdout(stdout).stderr(append_to(log)?).kill_on_drop(true);
        let child = command.spawn().with_context(|| format!("starting {}", program.display()))?;
        self.children.push(child);
        Ok(self.children.last_mut().expect("just pushed"))
    }
}

/// Opens `log` for appending, so stdout and stderr can share it without overwriting each other.
fn append_to(log: &Path) -> Result<std::fs::File> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log);
    file.with_context(|| format!("opening {}", log.display()))
}

/// Reads `stdout` up to a line starting with `prefix` and returns the rest of that line. The rest
/// of stdout is drained on a task so the server never blocks on a full pipe.
async fn line_after(stdout: ChildStdout, prefix: &str) -> Result<String> {
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        let Some(rest) = line.strip_prefix(prefix) else { continue };
        let rest = rest.to_string();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        return Ok(rest);
    }
    bail!("stdout closed before a `{prefix}` line")
}

async fn etcd_healthy(addr: SocketAddr) -> bool {
    let Ok(mut connection) = Endpoint::plain(addr).connect().await else { return false };
    let request = Request::get("/health")
        .header(header::HOST, addr.to_string())
        .body(Full::default())
        .expect("static request is valid");
    match connection.send(request).await {
        Ok((status, body)) => status == StatusCode::OK && String::from_utf8_lossy(&body).contains("true"),
        Err(_) => false,
    }
}

/// Two loopback addresses whose ports were free a moment ago (both held while choosing, so they
/// differ). etcd (and `wasmtime serve`) cannot be told to pick their own ports and report them, so
/// this is the usual bind-and-release; a collision would fail startup loudly, not skew results.
pub fn free_ports() -> Result<[SocketAddr; 2]> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok([a.local_addr()?, b.local_addr()?])
}

/// The last lines of a server log, for startup errors.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return "(nothing logged)".to_string();
    }
    lines[lines.len().saturating_sub(20)..].join("\n")
}
