//! NodeResourcesFit and NodeResourcesBalancedAllocation: whether the node has room for the
//! pod's requests (filter), how much room it has left (LeastAllocated score), and how evenly its
//! CPU and memory would be used (balanced score).

use crate::scheduler::framework::{FilterPlugin, Fit, MAX_SCORE, NodeInfo, PodInfo, ScorePlugin, Snapshot};

pub struct NodeResourcesFit;

pub struct NodeResourcesBalancedAllocation;

impl FilterPlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    /// Kubernetes checks pods, then cpu, then memory, and reports every shortage; a [`Fit`] holds
    /// one reason, so the first shortage in that order is the one counted.
    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Fit {
        if node.pods.len() as u64 + 1 > node.allocatable.pods {
            return Fit::no("Too many pods");
        }
        let wanted = pod.requests.requested;
        let free = |allocatable: u64, requested: u64| allocatable.saturating_sub(requested);
        if wanted.milli_cpu > free(node.allocatable.milli_cpu, node.requested.milli_cpu) {
            return Fit::no("Insufficient cpu");
        }
        if wanted.memory > free(node.allocatable.memory, node.requested.memory) {
            return Fit::no("Insufficient memory");
        }
        Fit::Fits
    }
}

impl ScorePlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    /// LeastAllocated: the share of CPU and memory still free once the pod is placed, averaged
    /// with equal weights. Requests use the scoring defaults, so pods requesting nothing still
    /// count against a node.
    fn score(&self, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> i64 {
        let mut requested = node.requested_for_scoring;
        requested.add(&pod.requests.for_scoring);
        let pairs = [(requested.milli_cpu, node.allocatable.milli_cpu), (requested.memory, node.allocatable.memory)];
        // A resource the node reports none of is left out rather than scored zero.
        let (mut sum, mut counted) = (0, 0);
        for (r, a) in pairs.into_iter().filter(|&(_, a)| a > 0) {
            sum += least_requested(r, a);
            counted += 1;
        }
        if counted == 0 { 0 } else { sum / counted }
    }
}

/// Free capacity on a 0..=MAX_SCORE scale.
fn least_requested(requested: u64, capacity: u64) -> i64 {
    if requested > capacity {
        return 0;
    }
    ((capacity - requested) as u128 * MAX_SCORE as u128 / capacity as u128) as i64
}

impl ScorePlugin for NodeResourcesBalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }

    /// `(1 - std) * MAX_SCORE` where std is the standard deviation of the CPU and memory fractions
    /// the node would have in use, from actual requests (no defaults). Pods requesting nothing are
    /// not scored (0 everywhere), as in Kubernetes since 1.33: balancing around a zero request
    /// piled best-effort pods onto one node.
    fn score(&self, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> i64 {
        let wanted = pod.requests.requested;
        if wanted.milli_cpu == 0 && wanted.memory == 0 {
            return 0;
        }
        let pairs = [
            (node.requested.milli_cpu + wanted.milli_cpu, node.allocatable.milli_cpu),
            (node.requested.memory + wanted.memory, node.allocatable.memory),
        ];
        // With two resources the standard deviation is half their difference; with fewer, zero.
        let std = match pairs {
            [(cpu, cpu_a), (memory, memory_a)] if cpu_a > 0 && memory_a > 0 => {
                let fraction = |r: u64, a: u64| (r as f64 / a as f64).min(1.0);
                ((fraction(cpu, cpu_a) - fraction(memory, memory_a)) / 2.0).abs()
            }
            _ => 0.0,
        };
        ((1.0 - std) * MAX_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{NodeBuilder, PodBuilder, filter, node, pod, scores, snapshot};

    #[test]
    fn the_filter_reports_the_first_shortage_in_pods_cpu_memory_order() {
        let bound =
            |cpu: &str, memory: &str| PodBuilder::new("b").request("cpu", cpu).request("memory", memory).build();
        // (allocatable cpu, memory, pods; bound pods; incoming requests; expected)
        for (i, (allocatable, bound_pods, wanted, expected)) in [
            (("2", "4Gi", 110), vec![], (Some("1"), Some("1Gi")), Fit::Fits),
            (("2", "4Gi", 110), vec![bound("1", "1Gi")], (Some("1"), Some("3Gi")), Fit::Fits),
            (("2", "4Gi", 110), vec![bound("1500m", "1Gi")], (Some("600m"), None), Fit::no("Insufficient cpu")),
            (("2", "4Gi", 110), vec![bound("1", "3Gi")], (None, Some("2Gi")), Fit::no("Insufficient memory")),
            (("2", "4Gi", 110), vec![bound("2", "4Gi")], (Some("1"), Some("1Gi")), Fit::no("Insufficient cpu")),
            (("2", "4Gi", 1), vec![bound("0", "0")], (None, None), Fit::no("Too many pods")),
            (("2", "4Gi", 1), vec![bound("2", "4Gi")], (Some("1"), Some("1Gi")), Fit::no("Too many pods")),
            // Requesting nothing fits a full node that still has a pod slot.
            (("2", "4Gi", 110), vec![bound("2", "4Gi")], (None, None), Fit::Fits),
            // Bound pods may already overcommit a node (allocatable shrank): nothing more fits.
            (("1", "1Gi", 110), vec![bound("2", "2Gi")], (Some("1m"), None), Fit::no("Insufficient cpu")),
        ]
        .into_iter()
        .enumerate()
        {
            let (cpu, memory, pods) = allocatable;
            let snapshot = snapshot(vec![(NodeBuilder::new("n").allocatable(cpu, memory, pods).build(), bound_pods)]);
            assert_eq!(filter(&NodeResourcesFit, &pod(wanted.0, wanted.1), &snapshot, "n"), expected, "case {i}");
        }
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node_counting_defaults_for_empty_requests() {
        let snapshot = snapshot(vec![
            (node("empty", "4", "8Gi"), vec![]),
            (node("half", "4", "8Gi"), vec![pod(Some("2"), Some("4Gi"))]),
            (node("unrequested", "4", "8Gi"), vec![pod(None, None)]),
        ]);
        // cpu (4000-1000)/4000 = 75, memory (8-2)/8 = 75 → 75; half: 25 and 25 → 25;
        // unrequested: 100m + 1000m of 4000 → 72, 200Mi + 2Gi of 8Gi → 72.
        assert_eq!(scores(&NodeResourcesFit, &pod(Some("1"), Some("2Gi")), &snapshot), vec![75, 25, 72]);
        // A node reporting no memory is scored on cpu alone; one reporting nothing scores 0.
        let bare = snapshot_of(vec![
            NodeBuilder::new("cpu-only").allocatable("4", "0", 110),
            NodeBuilder::new("none").allocatable("0", "0", 110),
        ]);
        assert_eq!(scores(&NodeResourcesFit, &pod(Some("1"), None), &bare), vec![75, 0]);
    }

    fn snapshot_of(nodes: Vec<NodeBuilder>) -> Snapshot {
        snapshot(nodes.into_iter().map(|n| (n.build(), vec![])).collect())
    }

    #[test]
    fn balanced_allocation_prefers_even_cpu_and_memory_use() {
        let snapshot = snapshot(vec![
            (node("cpu-heavy", "4", "8Gi"), vec![pod(Some("3"), Some("1Gi"))]),
            (node("even", "4", "8Gi"), vec![pod(Some("1"), Some("2Gi"))]),
            (node("full", "4", "8Gi"), vec![pod(Some("8"), None)]),
        ]);
        // cpu-heavy: 4/4 and 2/8 → std .375 → 62; even: 2/4, 3/8 → std .0625 → 93;
        // full: cpu capped at 1, memory 1/8 → 56.
        assert_eq!(scores(&NodeResourcesBalancedAllocation, &pod(Some("1"), Some("1Gi")), &snapshot), vec![62, 93, 56]);
        assert_eq!(scores(&NodeResourcesBalancedAllocation, &pod(None, None), &snapshot), vec![0, 0, 0]);
    }
}
