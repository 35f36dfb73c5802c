//! What the creates and the watch's timeline say about scheduling: rates, per-pod latencies,
//! and how the pods spread over nodes and zones.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmkube_bench::summary::{Latency, round};

use crate::hollow;
use crate::pods::{self, Created};
use crate::watch::Seen;

/// The scheduling of one set of created pods.
#[derive(Debug, Serialize)]
pub struct Scheduled {
    pub pods_created: usize,
    pub pods_bound: usize,
    pub pods_running: usize,
    /// Pods bound / (last bound seen − first create sent): the headline rate.
    pub scheduled_pods_per_sec: f64,
    /// Pods bound between the 10th- and 90th-percentile bound instants / the time between them:
    /// the rate once the scheduler is busy, without the ramp-up and the tail.
    pub steady_pods_per_sec: Option<f64>,
    /// First create sent → last create answered.
    pub create_secs: f64,
    pub creates_per_sec: f64,
    pub first_create_to_last_bound_secs: f64,
    /// First create sent → last pod seen Running, if every created pod was.
    pub first_create_to_all_running_secs: Option<f64>,
    /// Sent → `201 Created` read.
    pub create_ms: Latency,
    /// Sent → seen bound on the watch.
    pub create_to_bound_ms: Latency,
    /// Sent → seen Running on the watch (bound, plus the hollow kubelet's patch).
    pub create_to_running_ms: Latency,
    pub spread: Spread,
}

/// How the bound pods spread: a sanity check that scheduling spreads, not a measure of quality.
#[derive(Debug, Serialize)]
pub struct Spread {
    pub nodes: usize,
    pub nodes_used: usize,
    pub min_pods_per_node: usize,
    pub max_pods_per_node: usize,
    pub min_pods_per_zone: usize,
    pub max_pods_per_zone: usize,
}

impl Scheduled {
    /// The scheduling of `created` as `seen` by the watch, on `nodes` nodes in `zones` zones.
    pub fn of(created: &[Created], seen: &Seen, nodes: &[String], zones: usize) -> Self {
        let first_sent = created.iter().map(|c| c.sent).min().unwrap_or_else(Instant::now);
        let last_answered = created.iter().map(|c| c.answered).max().unwrap_or(first_sent);
        let since_sent = |c: &Created, at: Instant| at.saturating_duration_since(c.sent);
        let bound: Vec<(Duration, Instant)> =
            created.iter().filter_map(|c| seen.bound.get(&c.name).map(|b| (since_sent(c, b.at), b.at))).collect();
        let running: Vec<(Duration, Instant)> =
            created.iter().filter_map(|c| seen.running.get(&c.name).map(|&at| (since_sent(c, at), at))).collect();
        let mut bound_at: Vec<Instant> = bound.iter().map(|b| b.1).collect();
        bound_at.sort_unstable();
        let last_bound = bound_at.last().copied().unwrap_or(first_sent);
        let last_running = running.iter().map(|r| r.1).max();
        let secs = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64();
        let create_secs = secs(first_sent, last_answered);
        Self {
            pods_created: created.len(),
            pods_bound: bound.len(),
            pods_running: running.len(),
            scheduled_pods_per_sec: per_sec(bound.len(), secs(first_sent, last_bound)),
            steady_pods_per_sec: steady_rate(&bound_at),
            create_secs: round(create_secs, 2),
            creates_per_sec: per_sec(created.len(), create_secs),
            first_create_to_last_bound_secs: round(secs(first_sent, last_bound), 2),
            first_create_to_all_running_secs: last_running
                .filter(|_| running.len() == created.len())
                .map(|at| round(secs(first_sent, at), 2)),
            create_ms: Latency::of_unsorted(pods::create_latencies(created)),
            create_to_bound_ms: Latency::of_unsorted(bound.iter().map(|b| b.0).collect()),
            create_to_running_ms: Latency::of_unsorted(running.iter().map(|r| r.0).collect()),
            spread: Spread::of(created, seen, nodes, zones),
        }
    }
}

fn per_sec(count: usize, secs: f64) -> f64 {
    if secs > 0.0 { round(count as f64 / secs, 1) } else { 0.0 }
}

/// Pods bound per second between the 10th- and 90th-percentile bound instants (sorted).
fn steady_rate(sorted: &[Instant]) -> Option<f64> {
    if sorted.len() < 10 {
        return None;
    }
    let at = |q: f64| ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    let (from, to) = (at(0.10), at(0.90));
    let secs = sorted[to].saturating_duration_since(sorted[from]).as_secs_f64();
    (secs > 0.0).then(|| round((to - from) as f64 / secs, 1))
}

impl Spread {
    fn of(created: &[Created], seen: &Seen, nodes: &[String], zones: usize) -> Self {
        let mut per_node: HashMap<&str, usize> = nodes.iter().map(|n| (n.as_str(), 0)).collect();
        let zones = zones.max(1);
        let mut per_zone = vec![0usize; zones];
        for bound in created.iter().filter_map(|c| seen.bound.get(&c.name)) {
            *per_node.entry(bound.node.as_str()).or_default() += 1;
            if let Some(i) = hollow::node_index(&bound.node) {
                per_zone[i % zones] += 1;
            }
        }
        Self {
            nodes: per_node.len(),
            nodes_used: per_node.values().filter(|&&n| n > 0).count(),
            min_pods_per_node: per_node.values().copied().min().unwrap_or(0),
            max_pods_per_node: per_node.values().copied().max().unwrap_or(0),
            min_pods_per_zone: per_zone.iter().copied().min().unwrap_or(0),
            max_pods_per_zone: per_zone.iter().copied().max().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steady_rate_counts_the_pods_between_the_10th_and_90th_percentile() {
        let start = Instant::now();
        // 100 pods, one every 10 ms: 80 intervals in 0.8 s.
        let sorted: Vec<Instant> = (0..100).map(|i| start + Duration::from_millis(10 * i)).collect();
        assert_eq!(steady_rate(&sorted), Some(100.0));
        assert_eq!(steady_rate(&sorted[..5]), None);
    }
}
