//! Reading the control plane's `/metrics` (Prometheus text): totals of counters, and latency
//! histograms turned into percentiles over a window, as the difference of two scrapes.
//!
//! A percentile read from a histogram is the upper bound of the bucket it falls in (the API
//! server's buckets double from 0.1 ms), so it says "at most", never an exact value.

use std::collections::BTreeMap;

use serde::Serialize;
use wasmkube_bench::summary::round;

/// The API server's request-latency histogram, labelled by `verb` and `resource`.
const API_LATENCY: &str = "apiserver_request_duration_seconds";
/// The store's writes per durable commit: `_sum` is writes, `_count` commits.
const COMMIT_BATCH: &str = "store_commit_batch_size";

/// One scrape of `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// One histogram series (or several summed): cumulative counts per upper bound, ascending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    buckets: Vec<(f64, f64)>,
    count: f64,
    sum: f64,
}

impl Scrape {
    /// Parses the text exposition format; lines it cannot read are skipped.
    pub fn parse(text: &str) -> Self {
        let samples = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(sample).collect();
        Self { samples }
    }

    /// The sum of every series called `name`, if there is one.
    pub fn total(&self, name: &str) -> Option<f64> {
        let mut series = self.samples.iter().filter(|s| s.name == name).peekable();
        series.peek()?;
        Some(series.map(|s| s.value).sum())
    }

    /// The histogram `family`, its series summed over every label except `by`, keyed by the
    /// values of `by` (in that order).
    pub fn histograms(&self, family: &str, by: &[&str]) -> BTreeMap<Vec<String>, Histogram> {
        let mut out: BTreeMap<Vec<String>, Histogram> = BTreeMap::new();
        for s in &self.samples {
            let Some(part) = s.name.strip_prefix(family) else { continue };
            let key: Vec<String> = by.iter().map(|l| s.label(l).unwrap_or_default().to_string()).collect();
            let h = out.entry(key).or_default();
            match part {
                "_count" => h.count += s.value,
                "_sum" => h.sum += s.value,
                "_bucket" => {
                    let Some(le) = s.label("le").and_then(parse_value) else { continue };
                    match h.buckets.iter_mut().find(|(bound, _)| *bound == le) {
                        Some((_, n)) => *n += s.value,
                        None => h.buckets.push((le, s.value)),
                    }
                }
                _ => {}
            }
        }
        for h in out.values_mut() {
            h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        out
    }
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// `name{a="x",b="y"} value` or `name value`.
fn sample(line: &str) -> Option<Sample> {
    let (series, value) = line.trim().rsplit_once(' ')?;
    let value = parse_value(value)?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some(Sample { name: series.to_string(), labels: Vec::new(), value });
    };
    let mut labels = Vec::new();
    let mut rest = rest.strip_suffix('}')?;
    while let Some((key, after)) = rest.split_once("=\"") {
        // The value runs to the first quote not escaped by a backslash.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = end?;
        labels.push((key.trim_start_matches(',').trim().to_string(), after[..end].replace("\\\"", "\"")));
        rest = &after[end + 1..];
    }
    Some(Sample { name: name.to_string(), labels, value })
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

impl Histogram {
    /// What was observed between `earlier` and this scrape.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let before = |le: f64| earlier.buckets.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, n)| *n);
        Histogram {
            buckets: self.buckets.iter().map(|&(le, n)| (le, n - before(le))).collect(),
            count: self.count - earlier.count,
            sum: self.sum - earlier.sum,
        }
    }

    /// The upper bound of the bucket holding quantile `q`, in seconds (infinite past the last
    /// finite bucket); none without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        self.buckets.iter().find(|(_, n)| *n >= rank).map(|(le, _)| *le).or(Some(f64::INFINITY))
    }
}

/// Request latency by verb (all resources), and by verb and resource, over one window.
#[derive(Debug, Serialize)]
pub struct ApiLatency {
    /// Where the numbers come from, and how to read them.
    pub source: &'static str,
    pub by_verb: Vec<VerbLatency>,
    pub by_verb_and_resource: Vec<VerbLatency>,
}

/// One verb's (or verb and resource's) requests in a window. Percentiles are bucket upper bounds
/// in ms (null: beyond the last bucket).
#[derive(Debug, Serialize)]
pub struct VerbLatency {
    pub verb: String,
    pub resource: Option<String>,
    pub requests: u64,
    pub p50_ms_at_most: Option<f64>,
    pub p99_ms_at_most: Option<f64>,
    pub mean_ms: f64,
}

/// The API server's request latencies between two scrapes; none if it exposes no such histogram.
pub fn api_latency(before: &Scrape, after: &Scrape) -> Option<ApiLatency> {
    let rows = |by: &[&str]| -> Vec<VerbLatency> {
        let earlier = before.histograms(API_LATENCY, by);
        after
            .histograms(API_LATENCY, by)
            .into_iter()
            .map(|(key, h)| (key.clone(), h.since(&earlier.get(&key).cloned().unwrap_or_default())))
            .filter(|(_, h)| h.count >= 1.0)
            .map(|(key, h)| {
                let ms = |q: f64| h.quantile(q).filter(|s| s.is_finite()).map(|s| round(s * 1000.0, 2));
                VerbLatency {
                    verb: key[0].clone(),
                    resource: key.get(1).cloned(),
                    requests: h.count as u64,
                    p50_ms_at_most: ms(0.50),
                    p99_ms_at_most: ms(0.99),
                    mean_ms: round(h.sum / h.count * 1000.0, 2),
                }
            })
            .collect()
    };
    let by_verb = rows(&["verb"]);
    if after.histograms(API_LATENCY, &["verb"]).is_empty() {
        return None;
    }
    Some(ApiLatency {
        source: "apiserver_request_duration_seconds (scraped before and after the window); percentiles are \
            the upper bound of the histogram bucket they fall in",
        by_verb,
        by_verb_and_resource: rows(&["verb", "resource"]),
    })
}

/// The store's durable commits between two scrapes and the writes they carried.
#[derive(Debug, Serialize)]
pub struct Commits {
    pub commits: u64,
    pub writes: u64,
    pub writes_per_commit: Option<f64>,
}

pub fn commits(before: &Scrape, after: &Scrape) -> Option<Commits> {
    let delta = |suffix: &str| {
        let name = format!("{COMMIT_BATCH}{suffix}");
        Some(after.total(&name)? - before.total(&name).unwrap_or(0.0))
    };
    let (writes, commits) = (delta("_sum")?, delta("_count")?);
    Some(Commits {
        commits: commits as u64,
        writes: writes as u64,
        writes_per_commit: (commits > 0.0).then(|| round(writes / commits, 2)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP apiserver_request_duration_seconds x
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_sum{verb="create",resource="pods"} 0.5
apiserver_request_duration_seconds_count{verb="create",resource="pods"} 10
apiserver_request_duration_seconds_bucket{le="0.001",verb="create",resource="pods"} 5
apiserver_request_duration_seconds_bucket{le="0.002",verb="create",resource="pods"} 9
apiserver_request_duration_seconds_bucket{le="+Inf",verb="create",resource="pods"} 10
apiserver_request_duration_seconds_sum{verb="create",resource="configmaps"} 0.1
apiserver_request_duration_seconds_count{verb="create",resource="configmaps"} 10
apiserver_request_duration_seconds_bucket{le="0.001",verb="create",resource="configmaps"} 10
apiserver_request_duration_seconds_bucket{le="0.002",verb="create",resource="configmaps"} 10
apiserver_request_duration_seconds_bucket{le="+Inf",verb="create",resource="configmaps"} 10
store_commit_batch_size_sum 40.0
store_commit_batch_size_count 10
"#;

    #[test]
    fn series_of_one_family_are_summed_over_the_labels_not_grouped_by() {
        let scrape = Scrape::parse(TEXT);
        let by_verb = scrape.histograms(API_LATENCY, &["verb"]);
        let create = &by_verb[&vec!["create".to_string()]];
        assert_eq!(create.count, 20.0);
        assert_eq!(create.buckets, vec![(0.001, 15.0), (0.002, 19.0), (f64::INFINITY, 20.0)]);
        assert_eq!(create.quantile(0.5), Some(0.001));
        assert_eq!(create.quantile(0.8), Some(0.002));
        assert_eq!(create.quantile(0.99), Some(f64::INFINITY));
        assert_eq!(scrape.total("store_commit_batch_size_sum"), Some(40.0));
        assert_eq!(scrape.total("missing"), None);
    }

    #[test]
    fn a_window_is_the_difference_of_two_scrapes() {
        let before = Scrape::parse(TEXT);
        let after = Scrape::parse(&TEXT.replace("} 10\n", "} 30\n").replace("count 10", "count 20"));
        let commits = commits(&before, &after).unwrap();
        assert_eq!((commits.commits, commits.writes, commits.writes_per_commit), (10, 0, Some(0.0)));
        let latency = api_latency(&before, &after).unwrap();
        let create = &latency.by_verb[0];
        assert_eq!((create.verb.as_str(), create.requests), ("create", 40));
        // Of the 40 new requests, 20 fell past the last finite bucket.
        assert_eq!(create.p99_ms_at_most, None);
        assert_eq!(create.p50_ms_at_most, Some(1.0));
    }

    #[test]
    fn no_latency_histogram_means_no_latency_report() {
        let scrape = Scrape::parse("store_commit_batch_size_sum 1\n");
        assert!(api_latency(&scrape, &scrape).is_none());
    }

    #[test]
    fn labels_may_hold_escaped_quotes_and_commas() {
        let s = sample(r#"m{a="x,\"y\"",b="z"} 2"#).unwrap();
        assert_eq!(s.labels, vec![("a".into(), "x,\"y\"".into()), ("b".into(), "z".into())]);
        assert_eq!(s.value, 2.0);
    }
}
