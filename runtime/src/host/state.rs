//! What one store (one instance) holds: its WASI context, resource table and memory limits, and
//! how a container's settings become that context.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use wasmtime::StoreLimitsBuilder;
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::log::ContainerLog;
use super::outbound::ClusterHooks;
use super::usage::{CpuQuota, Meter, Usage};

/// Per-store state of a component instance.
pub struct Guest {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    /// Where outgoing requests go (cluster names resolved).
    pub hooks: ClusterHooks,
    pub table: ResourceTable,
    pub limits: Meter,
}

impl WasiView for Guest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Guest {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Per-store state of a WASI preview 1 core module.
pub struct P1Guest {
    pub wasi: WasiP1Ctx,
    pub limits: Meter,
}

/// A container's view of the world: what every instance of it is started with.
#[derive(Clone, Default)]
pub struct GuestConfig {
    /// argv, starting with the container name.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Host directory → guest path, read-only or not.
    pub preopens: Vec<(PathBuf, String, bool)>,
    /// Where the guest's stdout and stderr go: the container's current run's log, opened once;
    /// every instance gets its own pair of streams into it.
    pub log: Option<ContainerLog>,
    /// `limits.memory`, in bytes.
    pub memory_limit: Option<usize>,
    /// The pod's IP: the guest may bind only there (and connect to loopback addresses).
    pub pod_ip: Option<IpAddr>,
    /// `workingDir`: the guest's initial working directory (`wasi:cli/environment.initial-cwd`).
    pub working_dir: Option<String>,
    /// Where the container's instances count what they use (for `/metrics`).
    pub usage: Arc<Usage>,
    /// `limits.cpu`, shared by the container's instances.
    pub cpu_quota: Option<Arc<CpuQuota>>,
    /// Interactive stdio (an `exec` session) instead of the log: stdin, stdout, stderr.
    pub stdio: Option<ExecStdio>,
    /// The container's own stdin (`stdin: true`), which `attach` sessions write into.
    pub stdin: Option<ContainerStdin>,
    /// Resolves the host names of outgoing HTTP requests with the cluster DNS (the pod's
    /// namespace search path); without one, the host resolves them.
    pub resolver: Option<Arc<hickory_resolver::TokioResolver>>,
}

/// Pipes for a guest's stdin, stdout and stderr (shared by every handle the guest opens).
#[derive(Clone)]
pub struct ExecStdio {
    stdin: Arc<AsyncStdinStream>,
    stdout: Arc<AsyncStdoutStream>,
    stderr: Arc<AsyncStdoutStream>,
}

impl ExecStdio {
    /// Bytes a guest may have in flight on an output before its writes wait.
    const BUDGET: usize = 64 * 1024;

    pub fn new(
        stdin: impl AsyncRead + Send + Sync + 'static,
        stdout: impl AsyncWrite + Send + Sync + 'static,
        stderr: impl AsyncWrite + Send + Sync + 'static,
    ) -> Self {
        Self {
            stdin: Arc::new(AsyncStdinStream::new(stdin)),
            stdout: Arc::new(AsyncStdoutStream::new(Self::BUDGET, stdout)),
            stderr: Arc::new(AsyncStdoutStream::new(Self::BUDGET, stderr)),
        }
    }
}

/// The reading end of a container's stdin pipe (the writing end is in [`crate::agent::exec`]'s
/// index, for `attach`).
#[derive(Clone)]
pub struct ContainerStdin(Arc<AsyncStdinStream>);

impl ContainerStdin {
    pub fn new(input: impl AsyncRead + Send + Sync + 'static) -> Self {
        Self(Arc::new(AsyncStdinStream::new(input)))
    }
}

impl GuestConfig {
    fn builder(&self) -> std::io::Result<WasiCtxBuilder> {
        let mut b = WasiCtxBuilder::new();
        b.args(&self.args).envs(&self.env);
        if let Some(log) = &self.log {
            b.stdout(log.stdout()).stderr(log.stderr());
        }
        if let Some(dir) = &self.working_dir {
            b.initial_cwd(dir);
        }
        if let Some(stdin) = &self.stdin {
            b.stdin(stdin.0.clone());
        }
        if let Some(io) = &self.stdio {
            b.stdin(io.stdin.clone()).stdout(io.stdout.clone()).stderr(io.stderr.clone());
        }
        for (host, guest, read_only) in &self.preopens {
            let perms = if *read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
            b.preopened_dir(host, guest, perms).map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        }
        // Sockets are off in wasmtime-wasi unless enabled; then every address goes through
        // `socket_rule`.
        let pod_ip = self.pod_ip;
        b.allow_tcp(true).allow_udp(true);
        b.socket_addr_check(move |addr: SocketAddr, usage: SocketAddrUse| {
            let allowed = socket_rule(pod_ip, addr, usage);
            Box::pin(async move { allowed })
        });
        b.allow_ip_name_lookup(true);
        Ok(b)
    }

    fn limits(&self) -> Meter {
        let mut limits = StoreLimitsBuilder::new().trap_on_grow_failure(true);
        if let Some(bytes) = self.memory_limit {
            limits = limits.memory_size(bytes);
        }
        Meter::new(limits.build(), self.usage.clone())
    }

    /// The state for one component instance.
    pub fn guest(&self) -> std::io::Result<Guest> {
        Ok(Guest {
            wasi: self.builder()?.build(),
            http: WasiHttpCtx::new(),
            hooks: ClusterHooks { resolver: self.resolver.clone() },
            table: ResourceTable::new(),
            limits: self.limits(),
        })
    }

    /// The state for one WASI preview 1 module instance.
    pub fn p1_guest(&self) -> std::io::Result<P1Guest> {
        Ok(P1Guest { wasi: self.builder()?.build_p1(), limits: self.limits() })
    }
}

/// Which socket addresses a guest may use. Deny by default: it binds and listens only on its pod's
/// IP (a wildcard only with port 0, which is the implicit bind before a connect or send: binding
/// `0.0.0.0:PORT` would take the port on every host address, across pods); it connects and sends
/// only to loopback addresses, where pod IPs and Service IPs live.
fn socket_rule(pod_ip: Option<IpAddr>, addr: SocketAddr, usage: SocketAddrUse) -> bool {
    let own_ip = Some(addr.ip()) == pod_ip;
    match usage {
        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => own_ip || (addr.ip().is_unspecified() && addr.port() == 0),
        SocketAddrUse::TcpListen => own_ip,
        _ => addr.ip().is_loopback(),
    }
}

#[cfg(test)]
mod socket_tests {
    use super::*;

    #[test]
    fn guests_bind_only_their_pod_ip_and_reach_only_loopback() {
        let pod: IpAddr = "127.64.0.5".parse().expect("ip");
        let at = |a: &str| a.parse::<SocketAddr>().expect("addr");
        let cases = [
            ("127.64.0.5:8080", SocketAddrUse::TcpBind, true),
            ("127.64.0.5:8080", SocketAddrUse::TcpListen, true),
            ("0.0.0.0:0", SocketAddrUse::TcpBind, true),
            ("0.0.0.0:8080", SocketAddrUse::TcpBind, false),
            ("0.0.0.0:0", SocketAddrUse::TcpListen, false),
            ("127.64.0.6:8080", SocketAddrUse::TcpBind, false),
            ("127.64.0.6:8080", SocketAddrUse::TcpConnect, true),
            ("10.0.0.1:80", SocketAddrUse::TcpConnect, false),
            ("0.0.0.0:0", SocketAddrUse::UdpBind, true),
            ("127.32.0.10:53", SocketAddrUse::UdpSend, true),
        ];
        for (addr, usage, want) in cases {
            assert_eq!(socket_rule(Some(pod), at(addr), usage), want, "{addr} {usage:?}");
        }
    }
}
