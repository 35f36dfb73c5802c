//! What a container's instances use, counted as they run: live instances, linear memory, CPU time
//! and (for handlers) requests. One [`Usage`] per container, shared by all its instances; the
//! agent's `/metrics` reads it.
//!
//! CPU time is the time the executor spends polling the guest's future ([`Timed`]): a Wasm guest
//! runs synchronously inside those polls (host calls included) and yields at epoch ticks, so this
//! is the time the container occupied a core, without per-thread CPU clocks.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use wasmtime::{ResourceLimiter, StoreLimits};

/// Counters of one container.
#[derive(Debug, Default)]
pub struct Usage {
    /// The node's instantiation-latency histogram, if the agent keeps one.
    pub instantiate_seconds: Option<Histogram>,
    /// Instances alive now.
    pub instances: AtomicI64,
    /// Instances ever created.
    pub instantiations: AtomicU64,
    /// Bytes of linear memory held by live instances.
    pub memory_bytes: AtomicI64,
    /// Nanoseconds spent running the guest.
    pub cpu_nanos: AtomicU64,
    /// Requests a handler answered, and how many of those were 5xx (failures, deadlines).
    pub requests: AtomicU64,
    pub request_errors: AtomicU64,
}

/// A store's resource limiter: the container's memory limit, with the memory it grants counted in
/// the container's [`Usage`] (and given back when the store goes).
pub struct Meter {
    limits: StoreLimits,
    usage: Arc<Usage>,
    held: usize,
}

impl Meter {
    pub fn new(limits: StoreLimits, usage: Arc<Usage>) -> Self {
        usage.instances.fetch_add(1, Ordering::Relaxed);
        usage.instantiations.fetch_add(1, Ordering::Relaxed);
        Self { limits, usage, held: 0 }
    }
}

impl Usage {
    /// A container's counters, recording instantiation latency into the node's histogram.
    pub fn new(instantiate_seconds: Histogram) -> Self {
        Self { instantiate_seconds: Some(instantiate_seconds), ..Self::default() }
    }

    pub fn observe_instantiation(&self, started: Instant) {
        if let Some(h) = &self.instantiate_seconds {
            h.observe(started.elapsed().as_secs_f64());
        }
    }
}

impl Meter {
    pub fn usage(&self) -> &Usage {
        &self.usage
    }
}

impl ResourceLimiter for Meter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            let grown = desired.saturating_sub(current);
            self.held += grown;
            self.usage.memory_bytes.fetch_add(grown as i64, Ordering::Relaxed);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.usage.instances.fetch_sub(1, Ordering::Relaxed);
        self.usage.memory_bytes.fetch_sub(self.held as i64, Ordering::Relaxed);
    }
}

/// `limits.cpu`: the share of a core a container may use, enforced like the kernel's CFS quota.
/// Within each 100 ms period the container may run `millicores / 1000 × 100 ms`; once its
/// [`Usage`] says it has, its guests are parked at their next epoch tick until the period ends.
#[derive(Debug)]
pub struct CpuQuota {
    millicores: u64,
    usage: Arc<Usage>,
    period: Mutex<Period>,
}

#[derive(Debug)]
struct Period {
    started: Instant,
    cpu_at_start: u64,
}

/// The accounting period of [`CpuQuota`], as in CFS.
const QUOTA_PERIOD: Duration = Duration::from_millis(100);

impl CpuQuota {
    pub fn new(millicores: u64, usage: Arc<Usage>) -> Self {
        let period = Period { started: Instant::now(), cpu_at_start: usage.cpu_nanos.load(Ordering::Relaxed) };
        Self { millicores, usage, period: Mutex::new(period) }
    }

    /// How long the container's guests must pause to stay within the limit, if it is spent.
    pub fn throttle(&self) -> Option<Duration> {
        let now = Instant::now();
        let cpu = self.usage.cpu_nanos.load(Ordering::Relaxed);
        let mut period = self.period.lock().expect("cpu quota lock");
        let elapsed = now.duration_since(period.started);
        if elapsed >= QUOTA_PERIOD {
            *period = Period { started: now, cpu_at_start: cpu };
            return None;
        }
        let allowed = QUOTA_PERIOD.as_nanos() as u64 * self.millicores / 1000;
        // Asked at an epoch tick from inside a running poll, whose time is not counted until the
        // poll ends: charge the tick it has been running for.
        let in_flight = super::EPOCH_TICK.as_nanos() as u64;
        (cpu.saturating_sub(period.cpu_at_start) + in_flight >= allowed).then(|| QUOTA_PERIOD - elapsed)
    }
}

/// A future whose polls are timed into a container's CPU counter.
pub struct Timed<F> {
    inner: Pin<Box<F>>,
    usage: Arc<Usage>,
}

impl<F: Future> Timed<F> {
    pub fn new(inner: F, usage: Arc<Usage>) -> Self {
        Self { inner: Box::pin(inner), usage }
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let started = Instant::now();
        let result = self.inner.as_mut().poll(cx);
        let spent = started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        self.usage.cpu_nanos.fetch_add(spent, Ordering::Relaxed);
        result
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::StoreLimitsBuilder;

    use super::*;

    #[test]
    fn a_spent_quota_parks_the_container_until_the_period_ends() {
        let usage = Arc::new(Usage::default());
        let quota = CpuQuota::new(500, usage.clone()); // 50 ms per 100 ms
        assert_eq!(quota.throttle(), None);
        usage.cpu_nanos.fetch_add(30_000_000, Ordering::Relaxed);
        assert_eq!(quota.throttle(), None, "30 ms used (+ a tick in flight) of 50");
        usage.cpu_nanos.fetch_add(15_000_000, Ordering::Relaxed);
        let wait = quota.throttle().expect("over the quota");
        assert!(wait <= QUOTA_PERIOD && wait > Duration::from_millis(50), "{wait:?}");
    }

    #[test]
    fn memory_is_counted_while_granted_and_returned_when_the_store_goes() {
        let usage = Arc::new(Usage::default());
        let limits = StoreLimitsBuilder::new().memory_size(1 << 20).build();
        let mut meter = Meter::new(limits, usage.clone());
        assert!(meter.memory_growing(0, 65536, None).expect("grow"));
        assert!(!meter.memory_growing(65536, 2 << 20, None).expect("past the limit"));
        assert_eq!(usage.memory_bytes.load(Ordering::Relaxed), 65536);
        assert_eq!(usage.instances.load(Ordering::Relaxed), 1);
        drop(meter);
        assert_eq!(usage.memory_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(usage.instances.load(Ordering::Relaxed), 0);
        assert_eq!(usage.instantiations.load(Ordering::Relaxed), 1);
    }
}
