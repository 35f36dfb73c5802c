//! The wasmtime side of the agent: one [`Host`] per node owns the `Engine` (pooling allocator, epoch
//! interruption), compiles Wasm once per digest, and turns a compiled binary into a [`Workload`]:
//! a wasi:http handler (fresh instance per request, see [`http`]), a wasi:cli command or a WASI p1
//! module (run to completion, see [`command`]).

mod cache;
pub mod command;
pub mod http;
pub mod log;
mod lookup;
pub mod outbound;
mod state;
pub mod usage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Module, PoolingAllocationConfig};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

pub use cache::Source;
pub use state::{ContainerStdin, ExecStdio, Guest, GuestConfig, P1Guest};

/// How often the epoch advances; CPU deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("configuring the wasmtime engine: {0}")]
    Engine(String),
    #[error("not a WebAssembly binary (bad magic number)")]
    NotWasm,
    #[error("invalid WebAssembly: {0}")]
    Compile(String),
    #[error("the component exports neither wasi:http/incoming-handler nor wasi:cli/run")]
    NoEntryPoint,
    #[error("the component's imports cannot be satisfied: {0}")]
    Link(String),
    /// The same failure, met by another start of the same binary at the same time.
    #[error("{0}")]
    Shared(Arc<HostError>),
}

/// What a container's binary is, ready to instantiate.
#[derive(Clone)]
pub enum Workload {
    /// Exports `wasi:http/incoming-handler`: served, one instance per request.
    Http(ProxyPre<Guest>),
    /// Exports `wasi:cli/run`: runs as a process.
    Command(CommandPre<Guest>),
    /// A core module with `_start`: runs as a WASI preview 1 process.
    Module(wasmtime::InstancePre<P1Guest>),
}

impl Workload {
    pub fn kind(&self) -> &'static str {
        match self {
            Workload::Http(_) => "wasi:http handler",
            Workload::Command(_) => "wasi:cli command",
            Workload::Module(_) => "WASI p1 module",
        }
    }
}

/// One digest's link result, shared by every start of that binary.
type LinkCell = OnceLock<Result<Workload, Arc<HostError>>>;

/// The node's wasmtime engine and what it has compiled.
pub struct Host {
    engine: Engine,
    /// Linked workloads by digest; a cell is filled once, by whoever compiles first.
    compiled: Mutex<HashMap<String, Arc<LinkCell>>>,
    disk: Option<cache::DiskCache>,
}

/// Sizes of the pooling allocator: hard caps on what can be instantiated at once.
#[derive(Debug, Clone)]
pub struct PoolSize {
    /// Concurrent instances (component and core) across the node.
    pub instances: u32,
    /// Largest linear memory any instance may have (bytes).
    pub max_memory: usize,
}

impl Default for PoolSize {
    fn default() -> Self {
        Self { instances: 1000, max_memory: 256 << 20 }
    }
}

impl Host {
    /// Builds the engine and starts the epoch ticker thread (it stops when the `Host` is dropped).
    /// `cache_dir`, if given, keeps compiled code across restarts.
    pub fn new(pool: &PoolSize, cache_dir: Option<std::path::PathBuf>) -> Result<Arc<Self>, HostError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Reserve only what an instance may use (plus the guard) instead of the default multi-GiB
        // static reservation: with thousands of pool slots per node, the default would ask the
        // kernel for tens of TiB of address space. Bounds checks become explicit, a small cost.
        config.memory_reservation(pool.max_memory as u64);
        config.memory_guard_size(2 << 20);
        let mut pooling = PoolingAllocationConfig::default();
        pooling.total_component_instances(pool.instances);
        pooling.total_core_instances(pool.instances);
        pooling.total_memories(pool.instances);
        pooling.total_tables(pool.instances);
        pooling.max_memory_size(pool.max_memory);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config).map_err(|e| HostError::Engine(format!("{e:#}")))?;
        let disk = match cache_dir {
            Some(dir) => Some(cache::DiskCache::new(dir, &engine).map_err(|e| HostError::Engine(e.to_string()))?),
            None => None,
        };
        let host = Arc::new(Self { engine, compiled: Mutex::new(HashMap::new()), disk });
        let weak = Arc::downgrade(&host);
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while let Some(host) = weak.upgrade() {
                    host.engine.increment_epoch();
                    drop(host);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| HostError::Engine(e.to_string()))?;
        Ok(host)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// `sha256:<hex>` of a binary.
    pub fn digest(bytes: &[u8]) -> String {
        format!("sha256:{:x}", Sha256::digest(bytes))
    }

    /// Compiles (or reuses) the binary and links it into a workload. Blocking: call from
    /// `spawn_blocking`.
    pub fn prepare(&self, bytes: &[u8]) -> Result<(String, Workload, Source), HostError> {
        let digest = Self::digest(bytes);
        // One compile per digest even when many pods of the same image start at once: the first
        // caller compiles (or loads from disk) while the others wait on the same cell.
        let cell = self.compiled.lock().expect("compile cache lock").entry(digest.clone()).or_default().clone();
        let mut fresh = None;
        let linked = cell.get_or_init(|| {
            let result = self.link(bytes, &digest).map_err(Arc::new);
            if let Ok((_, source)) = &result {
                fresh = Some(*source);
            }
            result.map(|(workload, _)| workload)
        });
        match linked {
            Ok(workload) => Ok((digest, workload.clone(), fresh.unwrap_or(Source::Memory))),
            Err(e) => {
                // A failed link is not kept: the next start of this digest tries again.
                self.compiled.lock().expect("compile cache lock").remove(&digest);
                Err(HostError::Shared(e.clone()))
            }
        }
    }

    fn link(&self, bytes: &[u8], digest: &str) -> Result<(Workload, Source), HostError> {
        const MAGIC: &[u8] = b"\0asm";
        if bytes.len() < 8 || &bytes[..4] != MAGIC {
            return Err(HostError::NotWasm);
        }
        let link_err = |e: wasmtime::Error| HostError::Link(format!("{e:#}"));
        // Byte 6 is the layer: 0 for core modules, 1 for components.
        if bytes[6] == 0 {
            let (module, source) = match self.disk.as_ref().and_then(|d| d.module(&self.engine, digest)) {
                Some(module) => (module, Source::Disk),
                None => {
                    let module = Module::new(&self.engine, bytes).map_err(|e| HostError::Compile(format!("{e:#}")))?;
                    if let Some(disk) = &self.disk {
                        disk.store(digest, module.serialize());
                    }
                    (module, Source::Compiled)
                }
            };
            if module.get_export("_start").is_none() {
                return Err(HostError::NoEntryPoint);
            }
            let mut linker = wasmtime::Linker::new(&self.engine);
            wasmtime_wasi::p1::add_to_linker_async(&mut linker, |g: &mut P1Guest| &mut g.wasi).map_err(link_err)?;
            return Ok((Workload::Module(linker.instantiate_pre(&module).map_err(link_err)?), source));
        }
        let (component, source) = match self.disk.as_ref().and_then(|d| d.component(&self.engine, digest)) {
            Some(component) => (component, Source::Disk),
            None => {
                let component =
                    Component::new(&self.engine, bytes).map_err(|e| HostError::Compile(format!("{e:#}")))?;
                if let Some(disk) = &self.disk {
                    disk.store(digest, component.serialize());
                }
                (component, Source::Compiled)
            }
        };
        let exports: Vec<String> =
            component.component_type().exports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let exports_interface = |prefix: &str| exports.iter().any(|e| e.starts_with(prefix));
        let mut linker: Linker<Guest> = Linker::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_err)?;
        lookup::add_to_linker(&mut linker).map_err(link_err)?;
        if exports_interface("wasi:http/incoming-handler") {
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link_err)?;
            let pre = linker.instantiate_pre(&component).map_err(link_err)?;
            return Ok((Workload::Http(ProxyPre::new(pre).map_err(link_err)?), source));
        }
        if exports_interface("wasi:cli/run") {
            // Commands may also make outgoing HTTP requests.
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link_err)?;
            let pre = linker.instantiate_pre(&component).map_err(link_err)?;
            return Ok((Workload::Command(CommandPre::new(pre).map_err(link_err)?), source));
        }
        Err(HostError::NoEntryPoint)
    }
}
