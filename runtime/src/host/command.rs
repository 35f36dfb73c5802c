//! Running a wasi:cli command or a WASI p1 module to completion, as one container process.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::I32Exit;

use super::usage::{CpuQuota, Timed};
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
/// a busy loop cannot starve other pods on the node. With a `limits.cpu` quota, a container that
/// spent its share is parked until its period ends.
pub fn share_cpu<T: 'static>(store: &mut Store<T>, quota: Option<Arc<CpuQuota>>) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(match quota.as_ref().and_then(|q| q.throttle()) {
            Some(wait) => UpdateDeadline::YieldCustom(1, Box::pin(tokio::time::sleep(wait))),
            None => UpdateDeadline::Yield(1),
        })
    });
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
                share_cpu(&mut store, config.cpu_quota.clone());
                let started = Instant::now();
                let command = pre.instantiate_async(&mut store).await?;
                config.usage.observe_instantiation(started);
                match command.wasi_cli_run().call_run(&mut store).await? {
                    Ok(()) => Ok(0),
                    Err(()) => Ok(1),
                }
            }
            Workload::Module(pre) => {
                let mut store = Store::new(engine, config.p1_guest().map_err(wasmtime::Error::from)?);
                store.limiter(|g| &mut g.limits);
                share_cpu(&mut store, config.cpu_quota.clone());
                let started = Instant::now();
                let instance = pre.instantiate_async(&mut store).await?;
                config.usage.observe_instantiation(started);
                let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                start.call_async(&mut store, ()).await?;
                Ok(0)
            }
            Workload::Http(_) => Err(wasmtime::Error::msg("a wasi:http handler is served, not run")),
        }
    };
    tokio::select! {
        result = Timed::new(run, config.usage.clone()) => match result {
            Ok(code) => Outcome::Exited(code),
            Err(e) => Outcome::from_error(&e),
        },
        _ = stop.cancelled() => Outcome::Stopped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::log::ContainerLog;
    use crate::host::{Host, PoolSize};

    /// A section: its id, its size (small enough for one LEB128 byte) and content.
    fn section(id: u8, content: &[u8]) -> Vec<u8> {
        let len = u8::try_from(content.len()).ok().filter(|l| *l < 0x80).expect("a small section");
        [&[id, len][..], content].concat()
    }

    fn name(text: &str) -> Vec<u8> {
        [&[text.len() as u8][..], text.as_bytes()].concat()
    }

    /// A WASI p1 module whose `_start` writes "from p1\n" with `fd_write` to fd 1, then fd 2.
    fn p1_module() -> Vec<u8> {
        let write_to = |fd: u8| [0x41, fd, 0x41, 0, 0x41, 1, 0x41, 32, 0x10, 0, 0x1a]; // fd_write(fd, iov 0, 1, 32); drop
        let body = [&[0u8][..], &write_to(1), &write_to(2), &[0x0b]].concat();
        let segment = |at: u8, bytes: &[u8]| [&[0, 0x41, at, 0x0b, bytes.len() as u8][..], bytes].concat();
        [
            &b"\0asm\x01\0\0\0"[..],
            // Types: (i32 i32 i32 i32) -> i32, and () -> ().
            &section(1, &[2, 0x60, 4, 0x7f, 0x7f, 0x7f, 0x7f, 1, 0x7f, 0x60, 0, 0]),
            &section(2, &[&[1][..], &name("wasi_snapshot_preview1"), &name("fd_write"), &[0, 0]].concat()),
            &section(3, &[1, 1]),
            &section(5, &[1, 0, 1]),
            &section(7, &[&[2][..], &name("memory"), &[2, 0], &name("_start"), &[0, 1]].concat()),
            &section(10, &[&[1, body.len() as u8][..], &body].concat()),
            // The text at 16, and at 0 the iovec pointing at it.
            &section(11, &[&[2][..], &segment(16, b"from p1\n"), &segment(0, &[16, 0, 0, 0, 8, 0, 0, 0])].concat()),
        ]
        .concat()
    }

    /// A WASI p1 module whose `_start` loops forever without calling the host.
    fn spinning_module() -> Vec<u8> {
        let body = [0u8, 0x03, 0x40, 0x0c, 0, 0x0b, 0x0b]; // loop; br 0; end
        [
            &b"\0asm\x01\0\0\0"[..],
            &section(1, &[1, 0x60, 0, 0]),
            &section(3, &[1, 0]),
            &section(7, &[&[1][..], &name("_start"), &[0, 0]].concat()),
            &section(10, &[&[1, body.len() as u8][..], &body].concat()),
        ]
        .concat()
    }

    #[test]
    fn baseline_code_checks_epochs_so_a_busy_guest_can_be_stopped() {
        let host = Host::new(&PoolSize { instances: 4, max_memory: 1 << 20 }, None).expect("host");
        let module = spinning_module();
        let workload = host.prepare_baseline(&module, &Host::digest(&module)).expect("Winch compiles it");
        let Workload::Module(pre) = &workload else { panic!("a p1 module, not a {}", workload.kind()) };
        let engine = pre.module().engine().clone();
        assert!(!wasmtime::Engine::same(&engine, host.engine()), "compiled by the baseline engine");
        // On a thread of its own: without epoch checks the guest would never give the thread back.
        let (done, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let stop = CancellationToken::new();
            let stopping = stop.clone();
            let outcome = runtime.block_on(async move {
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    stopping.cancel();
                });
                run(&workload, &engine, &GuestConfig::default(), &stop).await
            });
            let _ = done.send(outcome);
        });
        let outcome = outcome.recv_timeout(std::time::Duration::from_secs(60)).expect("the busy guest stopped");
        assert_eq!(outcome, Outcome::Stopped);
    }

    #[test]
    fn pods_swapping_to_one_digest_share_its_baseline_code() {
        let host = Host::new(&PoolSize { instances: 4, max_memory: 1 << 20 }, None).expect("host");
        let code = |bytes: &[u8]| match host.prepare_baseline(bytes, &Host::digest(bytes)) {
            Some(Workload::Module(pre)) => pre.module().image_range(),
            _ => panic!("Winch compiles a p1 module"),
        };
        let (spinning, printing) = (spinning_module(), p1_module());
        let first = code(&spinning);
        assert_eq!(code(&spinning), first, "the second pod gets the same compiled code");
        assert_ne!(code(&printing), first, "another digest is compiled on its own");
    }

    #[tokio::test]
    async fn a_p1_modules_stdout_and_stderr_are_logged_as_cri_records() {
        let host = Host::new(&PoolSize { instances: 4, max_memory: 1 << 20 }, None).expect("host");
        let (_, workload, _) = host.prepare(&p1_module()).expect("a p1 module");
        assert_eq!(workload.kind(), "WASI p1 module");
        let dir = tempfile::tempdir().expect("tempdir");
        let log = ContainerLog::open(dir.path().join("0.log"), dir.path().join("0.log.1"), 1 << 20).expect("log");
        let config = GuestConfig { log: Some(log), ..GuestConfig::default() };
        let outcome = run(&workload, host.engine(), &config, &CancellationToken::new()).await;
        assert_eq!(outcome, Outcome::Exited(0));
        let text = std::fs::read_to_string(dir.path().join("0.log")).expect("the log");
        let records: Vec<&str> = text.lines().map(|l| l.split_once(' ').expect("a timestamp").1).collect();
        assert_eq!(records, ["stdout F from p1", "stderr F from p1"], "{text}");
    }
}
