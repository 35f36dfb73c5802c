//! Running a wasi:cli command or a WASI p1 module to completion, as one container process.

use tokio_util::sync::CancellationToken;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::I32Exit;

use super::{GuestConfig, Workload};

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The guest returned or called exit with this code.
    Exited(i32),
    /// It tried to grow its memory past `limits.memory` (Kubernetes' OOMKilled).
    OutOfMemory,
    /// It trapped; the message says where.
    Trapped(String),
    /// It was stopped from outside (pod deleted, agent shutting down).
    Stopped,
}

impl Outcome {
    fn from_error(e: &wasmtime::Error) -> Self {
        if let Some(exit) = e.downcast_ref::<I32Exit>() {
            return Outcome::Exited(exit.0);
        }
        let text = format!("{e:#}");
        if text.contains("forcing trap when growing memory") { Outcome::OutOfMemory } else { Outcome::Trapped(text) }
    }
}

/// Gives every instance a slice of CPU, then yields to the executor so neighbours get theirs:
/// a busy loop cannot starve other pods on the node.
pub fn share_cpu<T: 'static>(store: &mut Store<T>) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
}

/// Runs a command or module until it exits or `stop` fires.
pub async fn run(
    workload: &Workload,
    engine: &wasmtime::Engine,
    config: &GuestConfig,
    stop: &CancellationToken,
) -> Outcome {
    let run = async {
        match workload {
            Workload::Command(pre) => {
                let mut store = Store::new(engine, config.guest().map_err(wasmtime::Error::from)?);
                store.limiter(|g| &mut g.limits);
                share_cpu(&mut store);
                let command = pre.instantiate_async(&mut store).await?;
                match command.wasi_cli_run().call_run(&mut store).await? {
                    Ok(()) => Ok(0),
                    Err(()) => Ok(1),
                }
            }
            Workload::Module(pre) => {
                let mut store = Store::new(engine, config.p1_guest().map_err(wasmtime::Error::from)?);
                store.limiter(|g| &mut g.limits);
                share_cpu(&mut store);
                let instance = pre.instantiate_async(&mut store).await?;
                let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                start.call_async(&mut store, ()).await?;
                Ok(0)
            }
            Workload::Http(_) => Err(wasmtime::Error::msg("a wasi:http handler is served, not run")),
        }
    };
    tokio::select! {
        result = run => match result {
            Ok(code) => Outcome::Exited(code),
            Err(e) => Outcome::from_error(&e),
        },
        _ = stop.cancelled() => Outcome::Stopped,
    }
}
