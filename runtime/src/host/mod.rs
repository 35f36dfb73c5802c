//! The wasmtime side of the agent: one [`Host`] per node owns the `Engine` (pooling allocator, epoch
//! interruption), compiles Wasm once per digest, and turns a compiled binary into a [`Workload`]:
//! a wasi:http handler (fresh instance per request, see [`http`]), a wasi:cli command or a WASI p1
//! module (run to completion, see [`command`]).
//!
//! Code is compiled by Cranelift (optimising). Hot swaps, where the time from a save to the new
//! version serving is what counts, can first run baseline code from Winch, a single-pass compiler
//! that is several times quicker to compile with, while Cranelift compiles in the background
//! ([`Host::prepare_baseline`]).

mod cache;
pub mod command;
pub mod http;
pub mod log;
mod lookup;
pub mod outbound;
mod state;
pub mod usage;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Module, OptLevel, PoolingAllocationConfig, RegallocAlgorithm, Strategy,
};
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
    pool: PoolSize,
    /// The Winch engine for baseline code, made on the first hot swap (its pool reserves address
    /// space, which agents that never swap need not pay for). `Err` where Winch does not run.
    baseline: OnceLock<Result<Engine, String>>,
    /// Baseline code of the latest few digests swapped in, oldest first: the replicas of one
    /// workload on this node swap to the same digest together, and share one compile.
    baseline_compiled: Mutex<VecDeque<(String, Arc<LinkCell>)>>,
}

/// How many digests' baseline code is kept. It is short-lived (optimised code replaces it within
/// a second), so this only needs to cover the workloads swapping at the same moment.
const BASELINE_KEPT: usize = 4;

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
        let engine = Self::engine_for(pool, Strategy::Cranelift)?;
        let disk = match cache_dir {
            Some(dir) => Some(cache::DiskCache::new(dir, &engine).map_err(|e| HostError::Engine(e.to_string()))?),
            None => None,
        };
        let host = Arc::new(Self {
            engine,
            compiled: Mutex::new(HashMap::new()),
            disk,
            pool: pool.clone(),
            baseline: OnceLock::new(),
            baseline_compiled: Mutex::new(VecDeque::new()),
        });
        let weak = Arc::downgrade(&host);
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while let Some(host) = weak.upgrade() {
                    host.engine.increment_epoch();
                    if let Some(Ok(baseline)) = host.baseline.get() {
                        baseline.increment_epoch();
                    }
                    drop(host);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| HostError::Engine(e.to_string()))?;
        Ok(host)
    }

    /// An engine with the node's settings, compiling with `strategy`.
    fn engine_for(pool: &PoolSize, strategy: Strategy) -> Result<Engine, HostError> {
        let mut config = Config::new();
        config.strategy(strategy);
        if matches!(strategy, Strategy::Winch) {
            // Winch leaves the trampolines between host and guest to Cranelift, and they are most
            // of its compile time (measured on the hello sample: 90 ms, and 65 ms with these).
            // Unoptimised trampolines cost little at run time, and the baseline code is replaced
            // soon anyway.
            config.cranelift_opt_level(OptLevel::None);
            config.cranelift_regalloc_algorithm(RegallocAlgorithm::SinglePass);
        }
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
        Engine::new(&config).map_err(|e| HostError::Engine(format!("{e:#}")))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// `sha256:<hex>` of a binary.
    pub fn digest(bytes: &[u8]) -> String {
        format!("sha256:{:x}", Sha256::digest(bytes))
    }

    /// Whether `prepare` of this digest needs no compiling: it is loaded, or in the disk cache.
    pub fn is_compiled(&self, digest: &str) -> bool {
        let loaded = self.compiled.lock().expect("compile cache lock").get(digest).is_some_and(|c| c.get().is_some());
        loaded || self.disk.as_ref().is_some_and(|d| d.has(digest))
    }

    /// Compiles the binary to baseline code with Winch and links it, for a hot swap that should
    /// serve before Cranelift is done. Kept only for the few latest digests (pods swapping
    /// together share it): the optimised code from [`Host::prepare`] replaces it. `None` where
    /// Winch does not run or cannot compile this binary (a proposal it lacks): the caller uses
    /// `prepare`, which also reports real errors. Blocking: call from `spawn_blocking`.
    pub fn prepare_baseline(&self, bytes: &[u8], digest: &str) -> Option<Workload> {
        let engine = match self.baseline.get_or_init(|| {
            Self::engine_for(&self.pool, Strategy::Winch).map_err(|e| {
                tracing::info!(error = %e, "no baseline compiler on this node; hot swaps wait for Cranelift");
                e.to_string()
            })
        }) {
            Ok(engine) => engine,
            Err(_) => return None,
        };
        let cell = {
            let mut kept = self.baseline_compiled.lock().expect("baseline cache lock");
            match kept.iter().find(|(d, _)| d == digest) {
                Some((_, cell)) => cell.clone(),
                None => {
                    if kept.len() == BASELINE_KEPT {
                        kept.pop_front();
                    }
                    let cell = Arc::new(LinkCell::new());
                    kept.push_back((digest.to_string(), cell.clone()));
                    cell
                }
            }
        };
        // Others swapping to this digest meanwhile wait here for the one compile.
        let linked = cell.get_or_init(|| Self::link(engine, None, bytes, digest).map(|(w, _)| w).map_err(Arc::new));
        match linked {
            Ok(workload) => Some(workload.clone()),
            Err(e) => {
                tracing::debug!(error = %e, "baseline compile failed; falling back to Cranelift");
                None
            }
        }
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
            let result = Self::link(&self.engine, self.disk.as_ref(), bytes, &digest).map_err(Arc::new);
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

    /// Compiles with `engine` (or loads from `disk`) and links.
    fn link(
        engine: &Engine,
        disk: Option<&cache::DiskCache>,
        bytes: &[u8],
        digest: &str,
    ) -> Result<(Workload, Source), HostError> {
        const MAGIC: &[u8] = b"\0asm";
        if bytes.len() < 8 || &bytes[..4] != MAGIC {
            return Err(HostError::NotWasm);
        }
        let link_err = |e: wasmtime::Error| HostError::Link(format!("{e:#}"));
        // Byte 6 is the layer: 0 for core modules, 1 for components.
        if bytes[6] == 0 {
            let (module, source) = match disk.and_then(|d| d.module(engine, digest)) {
                Some(module) => (module, Source::Disk),
                None => {
                    let module = Module::new(engine, bytes).map_err(|e| HostError::Compile(format!("{e:#}")))?;
                    if let Some(disk) = disk {
                        disk.store(digest, module.serialize());
                    }
                    (module, Source::Compiled)
                }
            };
            if module.get_export("_start").is_none() {
                return Err(HostError::NoEntryPoint);
            }
            let mut linker = wasmtime::Linker::new(engine);
            wasmtime_wasi::p1::add_to_linker_async(&mut linker, |g: &mut P1Guest| &mut g.wasi).map_err(link_err)?;
            return Ok((Workload::Module(linker.instantiate_pre(&module).map_err(link_err)?), source));
        }
        let (component, source) = match disk.and_then(|d| d.component(engine, digest)) {
            Some(component) => (component, Source::Disk),
            None => {
                let component = Component::new(engine, bytes).map_err(|e| HostError::Compile(format!("{e:#}")))?;
                if let Some(disk) = disk {
                    disk.store(digest, component.serialize());
                }
                (component, Source::Compiled)
            }
        };
        let exports: Vec<String> =
            component.component_type().exports(engine).map(|(name, _)| name.to_string()).collect();
        let exports_interface = |prefix: &str| exports.iter().any(|e| e.starts_with(prefix));
        let mut linker: Linker<Guest> = Linker::new(engine);
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
