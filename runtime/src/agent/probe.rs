//! Container probes with Kubernetes' semantics. A startup probe runs first and gates the others;
//! then liveness and readiness run side by side. Readiness drives the container's `ready`; a
//! liveness (or startup) probe failing `failureThreshold` times in a row kills the run, which then
//! ends like a crash and follows the restart policy. Start at [`Probes::alongside`]; the counting
//! is the pure [`Counter`], and one attempt (`httpGet`, `tcpSocket`, `exec`) lives in [`check`].

mod check;

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::container::Spec;
use super::sandbox::{PodContext, Shared};
use crate::host::{GuestConfig, Workload};
pub use check::{Action, Failure};

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    /// As events capitalise it: "Liveness probe failed: ...".
    fn title(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }

    fn lower(self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Liveness => "liveness",
            Kind::Readiness => "readiness",
        }
    }

    /// The result before any attempt, as in the kubelet: a container is not ready until a
    /// readiness probe succeeds, alive until a liveness probe fails, and not yet started either way.
    fn initial(self) -> Option<bool> {
        match self {
            Kind::Startup => None,
            Kind::Liveness => Some(true),
            Kind::Readiness => Some(false),
        }
    }
}

/// A probe's schedule and thresholds, with Kubernetes' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(kind: Kind, probe: &Probe) -> Self {
        let seconds =
            |v: Option<i32>, default: i32, min: i32| Duration::from_secs(v.unwrap_or(default).max(min) as u64);
        let count = |v: Option<i32>, default: i32| v.unwrap_or(default).max(1) as u32;
        Self {
            initial_delay: seconds(probe.initial_delay_seconds, 0, 0),
            period: seconds(probe.period_seconds, 10, 1),
            timeout: seconds(probe.timeout_seconds, 1, 1),
            // The API only admits 1 for liveness and startup probes; enforce it rather than trust it.
            success_threshold: if kind == Kind::Readiness { count(probe.success_threshold, 1) } else { 1 },
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// Turns attempts into a result: it changes only after `successThreshold` successes or
/// `failureThreshold` failures in a row (the kubelet's prober worker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    success_threshold: u32,
    failure_threshold: u32,
    /// The last attempt and how many in a row ended the same way.
    last: Option<bool>,
    run: u32,
    settled: Option<bool>,
}

impl Counter {
    pub fn new(kind: Kind, timing: &Timing) -> Self {
        Self {
            success_threshold: timing.success_threshold,
            failure_threshold: timing.failure_threshold,
            last: None,
            run: 0,
            settled: kind.initial(),
        }
    }

    /// Records one attempt; returns the new result when it changes.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let threshold = if ok { self.success_threshold } else { self.failure_threshold };
        if self.run < threshold || self.settled == Some(ok) {
            return None;
        }
        self.settled = Some(ok);
        Some(ok)
    }
}

/// A liveness or startup probe gave up on the container.
#[derive(Debug)]
pub struct Kill {
    pub kind: Kind,
    pub failure: Failure,
}

impl Kill {
    /// The terminated state's message: "liveness probe failed: HTTP probe failed with statuscode: 500".
    pub fn message(&self) -> String {
        format!("{} probe failed: {}", self.kind.lower(), self.failure)
    }
}

struct Prober {
    kind: Kind,
    action: Action,
    timing: Timing,
}

/// A container's probes, read from its spec.
pub struct Probes {
    startup: Option<Prober>,
    liveness: Option<Prober>,
    readiness: Option<Prober>,
}

/// One run of a container, as its probes see it.
pub struct Run<'a> {
    pub pod: &'a PodContext,
    pub spec: &'a Spec,
    pub shared: &'a Shared,
    pub workload: &'a Workload,
    pub config: &'a GuestConfig,
    /// When the run started; initial delays count from here.
    pub started: Instant,
}

impl Probes {
    pub fn of(container: &Container, pod: &Pod) -> Self {
        let prober = |kind: Kind, probe: &Option<Probe>| {
            probe.as_ref().map(|p| Prober { kind, action: Action::of(p, container, pod), timing: Timing::of(kind, p) })
        };
        Self {
            startup: prober(Kind::Startup, &container.startup_probe),
            liveness: prober(Kind::Liveness, &container.liveness_probe),
            readiness: prober(Kind::Readiness, &container.readiness_probe),
        }
    }

    /// Whether the container counts as started as soon as it runs: no startup probe holds it.
    pub fn started_at_start(&self) -> bool {
        self.startup.is_none()
    }

    /// Whether the container is ready as soon as it runs: no startup or readiness probe holds it.
    pub fn ready_at_start(&self) -> bool {
        self.startup.is_none() && self.readiness.is_none()
    }

    /// Runs a container's `work` beside its probes. `work` must end when `run_stop` is cancelled:
    /// a kill cancels it and waits for it to wind down (a handler drains its requests), so the
    /// kill is graceful. Returns what `work` returned and the kill, if there was one.
    pub async fn alongside<T>(
        &self,
        run: &Run<'_>,
        run_stop: &CancellationToken,
        work: impl Future<Output = T>,
    ) -> (T, Option<Kill>) {
        tokio::pin!(work);
        tokio::select! {
            out = &mut work => (out, None),
            kill = self.watch(run) => {
                // Not ready from the moment it is being killed.
                run.shared.update(run.spec.index, |s| s.ready = false);
                run_stop.cancel();
                (work.await, Some(kill))
            }
        }
    }

    /// Probes until a liveness or startup probe kills the container; never returns otherwise.
    async fn watch(&self, run: &Run<'_>) -> Kill {
        if let Some(startup) = &self.startup {
            if let Some(kill) = startup.until_started(run).await {
                return kill;
            }
            // Started; with no readiness probe to wait for, that also makes it ready.
            let ready = self.readiness.is_none();
            run.shared.update(run.spec.index, |s| {
                s.started = true;
                s.ready |= ready;
            });
        }
        let liveness = async {
            match &self.liveness {
                Some(prober) => prober.until_dead(run).await,
                None => std::future::pending().await,
            }
        };
        let readiness = async {
            if let Some(prober) = &self.readiness {
                prober.track_readiness(run).await;
            }
            std::future::pending::<Kill>().await
        };
        tokio::select! {
            kill = liveness => kill,
            kill = readiness => kill,
        }
    }
}

impl Prober {
    /// Attempts on schedule (after the initial delay, counted from the run's start) until the
    /// result changes; returns the new result, a failure with the attempt that made it one.
    async fn next_change(&self, run: &Run<'_>, ticks: &mut Interval, counter: &mut Counter) -> Result<(), Failure> {
        let engine = run.pod.host.engine();
        let target = check::Target {
            ip: run.pod.ip.into(),
            name: &run.spec.name,
            workload: run.workload,
            engine,
            config: run.config,
        };
        loop {
            ticks.tick().await;
            let result = check::perform(&self.action, self.timing.timeout, &target).await;
            if let Err(failure) = &result {
                tracing::debug!(pod = %run.pod.name, container = %run.spec.name, probe = self.kind.lower(), %failure, "probe failed");
                let message = format!("{} probe failed: {failure}", self.kind.title());
                run.pod.event("Warning", "Unhealthy", &message).await;
            }
            if counter.record(result.is_ok()).is_some() {
                return result;
            }
        }
    }

    fn schedule(&self, run: &Run<'_>) -> (Interval, Counter) {
        let mut ticks = tokio::time::interval_at(run.started + self.timing.initial_delay, self.timing.period);
        // A slow attempt (timeout longer than the period) pushes the next one back, never bunches them.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        (ticks, Counter::new(self.kind, &self.timing))
    }

    /// A startup probe: `None` once it succeeded, the kill once it failed for good.
    async fn until_started(&self, run: &Run<'_>) -> Option<Kill> {
        let (mut ticks, mut counter) = self.schedule(run);
        match self.next_change(run, &mut ticks, &mut counter).await {
            Ok(()) => None,
            Err(failure) => Some(self.kill(run, failure).await),
        }
    }

    /// A liveness probe: returns the kill once it failed for good.
    async fn until_dead(&self, run: &Run<'_>) -> Kill {
        let (mut ticks, mut counter) = self.schedule(run);
        loop {
            // Its result starts as a success, so the only change is to a failure.
            if let Err(failure) = self.next_change(run, &mut ticks, &mut counter).await {
                return self.kill(run, failure).await;
            }
        }
    }

    /// A readiness probe: sets the container's `ready` whenever its result changes.
    async fn track_readiness(&self, run: &Run<'_>) {
        let (mut ticks, mut counter) = self.schedule(run);
        loop {
            let ready = self.next_change(run, &mut ticks, &mut counter).await.is_ok();
            run.shared.update(run.spec.index, |s| s.ready = ready);
        }
    }

    async fn kill(&self, run: &Run<'_>, failure: Failure) -> Kill {
        let mut message = format!("Container {} failed {} probe", run.spec.name, self.kind.lower());
        if run.pod.restart_policy != "Never" {
            message.push_str(", will be restarted");
        }
        run.pod.event("Normal", "Killing", &message).await;
        Kill { kind: self.kind, failure }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(success_threshold: u32, failure_threshold: u32) -> Timing {
        Timing {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold,
            failure_threshold,
        }
    }

    #[test]
    fn results_change_only_after_threshold_attempts_in_a_row() {
        // (kind, success threshold, failure threshold, attempts, the changes they cause)
        type Case = (Kind, u32, u32, &'static [bool], &'static [Option<bool>]);
        let cases: &[Case] = &[
            (Kind::Readiness, 1, 3, &[true], &[Some(true)]),
            (Kind::Readiness, 1, 3, &[false, false, false], &[None, None, None]),
            (Kind::Readiness, 1, 3, &[true, false, false, false], &[Some(true), None, None, Some(false)]),
            (Kind::Readiness, 1, 3, &[true, false, false, true, false], &[Some(true), None, None, None, None]),
            (Kind::Readiness, 2, 1, &[true, false, true, true, true], &[None, None, None, Some(true), None]),
            (Kind::Liveness, 1, 3, &[true, true, false, false], &[None, None, None, None]),
            (Kind::Liveness, 1, 3, &[false, false, false], &[None, None, Some(false)]),
            (Kind::Liveness, 1, 1, &[false], &[Some(false)]),
            (Kind::Liveness, 1, 2, &[false, true, false, true], &[None, None, None, None]),
            (Kind::Startup, 1, 3, &[false, false, true], &[None, None, Some(true)]),
            (Kind::Startup, 1, 2, &[false, false], &[None, Some(false)]),
        ];
        for (kind, success, failure, attempts, want) in cases {
            let mut counter = Counter::new(*kind, &timing(*success, *failure));
            let got: Vec<Option<bool>> = attempts.iter().map(|ok| counter.record(*ok)).collect();
            assert_eq!(&got, want, "{kind:?} {success}/{failure} {attempts:?}");
        }
    }

    #[test]
    fn timing_has_kubernetes_defaults_and_floors() {
        let probe = |v: serde_json::Value| serde_json::from_value::<Probe>(v).expect("probe");
        let defaults = Timing::of(Kind::Readiness, &probe(serde_json::json!({})));
        assert_eq!(
            defaults,
            Timing {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        let odd = probe(serde_json::json!({"initialDelaySeconds": -5, "periodSeconds": 0, "timeoutSeconds": 0,
            "successThreshold": 4, "failureThreshold": 0}));
        let liveness = Timing::of(Kind::Liveness, &odd);
        assert_eq!(
            (liveness.initial_delay, liveness.period, liveness.timeout),
            (Duration::ZERO, Duration::from_secs(1), Duration::from_secs(1))
        );
        assert_eq!((liveness.success_threshold, liveness.failure_threshold), (1, 1));
        assert_eq!(Timing::of(Kind::Readiness, &odd).success_threshold, 4);
    }
}
