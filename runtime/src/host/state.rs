//! What one store (one instance) holds: its WASI context, resource table and memory limits, and
//! how a container's settings become that context.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::OutputFile;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Per-store state of a component instance.
pub struct Guest {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub limits: StoreLimits,
}

impl WasiView for Guest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Guest {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: Default::default() }
    }
}

/// Per-store state of a WASI preview 1 core module.
pub struct P1Guest {
    pub wasi: WasiP1Ctx,
    pub limits: StoreLimits,
}

/// A container's view of the world: what every instance of it is started with.
#[derive(Clone, Default)]
pub struct GuestConfig {
    /// argv, starting with the container name.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Host directory → guest path, read-only or not.
    pub preopens: Vec<(PathBuf, String, bool)>,
    /// Where the guest's stdout and stderr go (the container's current log file, opened once).
    pub log: Option<OutputFile>,
    /// `limits.memory`, in bytes.
    pub memory_limit: Option<usize>,
    /// The pod's IP: the guest may bind only there (and connect to loopback addresses).
    pub pod_ip: Option<IpAddr>,
}

impl GuestConfig {
    fn builder(&self) -> std::io::Result<WasiCtxBuilder> {
        let mut b = WasiCtxBuilder::new();
        b.args(&self.args).envs(&self.env);
        if let Some(log) = &self.log {
            b.stdout(log.clone()).stderr(log.clone());
        }
        for (host, guest, read_only) in &self.preopens {
            let perms = if *read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
            b.preopened_dir(host, guest, perms).map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        }
        // Deny by default: binds and listens only on the pod's own IP (or the wildcard an implicit
        // bind before a connect uses), connections only to loopback addresses, where pod IPs and
        // Service IPs live.
        let pod_ip = self.pod_ip;
        b.socket_addr_check(move |addr: SocketAddr, usage: SocketAddrUse| {
            let allowed = match usage {
                SocketAddrUse::TcpBind | SocketAddrUse::TcpListen | SocketAddrUse::UdpBind => {
                    Some(addr.ip()) == pod_ip || addr.ip().is_unspecified()
                }
                _ => addr.ip().is_loopback(),
            };
            Box::pin(async move { allowed })
        });
        b.allow_ip_name_lookup(true);
        Ok(b)
    }

    fn limits(&self) -> StoreLimits {
        let mut limits = StoreLimitsBuilder::new().trap_on_grow_failure(true);
        if let Some(bytes) = self.memory_limit {
            limits = limits.memory_size(bytes);
        }
        limits.build()
    }

    /// The state for one component instance.
    pub fn guest(&self) -> std::io::Result<Guest> {
        Ok(Guest {
            wasi: self.builder()?.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: self.limits(),
        })
    }

    /// The state for one WASI preview 1 module instance.
    pub fn p1_guest(&self) -> std::io::Result<P1Guest> {
        Ok(P1Guest { wasi: self.builder()?.build_p1(), limits: self.limits() })
    }
}
