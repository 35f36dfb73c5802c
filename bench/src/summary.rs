//! What every benchmark reports the same way: latency percentiles, failed requests, rounding, and
//! the JSON file.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::machine::Machine;

/// Nearest-rank percentiles and the mean of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// The percentiles of `sorted` latencies (ascending).
    pub fn of(sorted: &[Duration]) -> Self {
        let ms = |d: Duration| round(d.as_secs_f64() * 1000.0, 2);
        let at = |q: f64| match sorted.len() {
            0 => 0.0,
            n => ms(sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1]),
        };
        let total: Duration = sorted.iter().sum();
        let mean = if sorted.is_empty() { Duration::ZERO } else { total / sorted.len() as u32 };
        Self { p50: at(0.50), p90: at(0.90), p99: at(0.99), max: at(1.0), mean: ms(mean) }
    }

    /// The percentiles of `latencies` in any order.
    pub fn of_unsorted(mut latencies: Vec<Duration>) -> Self {
        latencies.sort_unstable();
        Self::of(&latencies)
    }
}

/// Requests that failed, with the first few distinct messages. Failures are counted, never retried
/// into successes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Failures {
    pub count: u64,
    pub examples: Vec<String>,
}

impl Failures {
    pub fn record(&mut self, message: String) {
        self.count += 1;
        if self.examples.len() < 3 && !self.examples.contains(&message) {
            self.examples.push(message);
        }
    }

    /// Adds `other`'s count, and its examples while there is room.
    pub fn merge(&mut self, other: Failures) {
        self.count += other.count;
        for message in other.examples {
            if self.examples.len() < 3 && !self.examples.contains(&message) {
                self.examples.push(message);
            }
        }
    }
}

/// `x` rounded to `decimals` places, so the JSON reads like the printed table.
pub fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// `a / b` to two places, or NaN (JSON `null`) when there is nothing to divide by.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { round(a / b, 2) } else { f64::NAN }
}

/// Writes `report` as pretty JSON to `path`, creating its directory.
/// What every benchmark report starts with: which benchmark, when, on what machine, which
/// wasmkube build, and the workload it ran (flattened into the report's top level).
#[derive(Debug, Serialize)]
pub struct Header<W> {
    pub benchmark: &'static str,
    pub date: String,
    pub machine: Machine,
    pub wasmkube: String,
    pub workload: W,
}

impl<W> Header<W> {
    /// Dated now.
    pub fn new(benchmark: &'static str, machine: Machine, wasmkube: String, workload: W) -> Self {
        Self { benchmark, date: jiff::Timestamp::now().to_string(), machine, wasmkube, workload }
    }
}

pub fn write_json(report: &impl Serialize, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(&sorted);
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(l.mean, 50.5);
    }

    #[test]
    fn percentiles_of_nothing_are_zero() {
        assert_eq!(Latency::of(&[]).p99, 0.0);
    }

    #[test]
    fn a_ratio_over_nothing_is_not_a_number() {
        assert_eq!(ratio(3.0, 2.0), 1.5);
        assert!(ratio(1.0, 0.0).is_nan());
    }
}
