//! Wasm-specific pod settings, carried as `wasmkube.dev/…` annotations so stock manifests and
//! clients keep working. Parsed here once for admission (a bad value is a 422 naming the
//! annotation) and for the agent that applies them.
//!
//! - `wasmkube.dev/max-concurrency: "N"` — at most N requests in flight per wasi:http container
//!   of the pod; more wait for a slot, and the wait counts toward their deadline.
//! - `wasmkube.dev/request-timeout: "30s"` — the per-request deadline of the pod's wasi:http
//!   containers (Go-style durations: `500ms`, `5s`, `2m`, `1h30m`); past it the instance is
//!   stopped and the client gets 504. Default: the agent's (30 s).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

pub const MAX_CONCURRENCY: &str = "wasmkube.dev/max-concurrency";
pub const REQUEST_TIMEOUT: &str = "wasmkube.dev/request-timeout";

/// What a pod's annotations ask of the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WasmSettings {
    pub max_concurrency: Option<usize>,
    pub request_timeout: Option<Duration>,
}

/// A setting whose value cannot be used: the annotation, its value and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSetting {
    pub annotation: &'static str,
    pub value: String,
    pub detail: &'static str,
}

impl WasmSettings {
    /// Reads the settings from `metadata.annotations` (a JSON object, or absent).
    pub fn from_annotations(annotations: Option<&Value>) -> Result<Self, Vec<BadSetting>> {
        let get = |key: &str| annotations.and_then(|a| a.get(key)).and_then(Value::as_str);
        Self::read(get)
    }

    /// Reads the settings from typed annotations.
    pub fn from_map(annotations: Option<&BTreeMap<String, String>>) -> Result<Self, Vec<BadSetting>> {
        Self::read(|key| annotations.and_then(|a| a.get(key)).map(String::as_str))
    }

    fn read<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, Vec<BadSetting>> {
        let mut settings = Self::default();
        let mut bad = Vec::new();
        if let Some(value) = get(MAX_CONCURRENCY) {
            match value.trim().parse::<usize>() {
                Ok(n) if n > 0 => settings.max_concurrency = Some(n),
                _ => bad.push(BadSetting {
                    annotation: MAX_CONCURRENCY,
                    value: value.to_string(),
                    detail: "must be a positive integer",
                }),
            }
        }
        if let Some(value) = get(REQUEST_TIMEOUT) {
            match parse_duration(value) {
                Some(d) if !d.is_zero() => settings.request_timeout = Some(d),
                _ => bad.push(BadSetting {
                    annotation: REQUEST_TIMEOUT,
                    value: value.to_string(),
                    detail: "must be a positive duration such as 500ms, 30s or 2m",
                }),
            }
        }
        if bad.is_empty() { Ok(settings) } else { Err(bad) }
    }
}

/// A Go-style duration (`500ms`, `1.5s`, `1h30m`); negative values are refused.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let parsed: jiff::SignedDuration = text.trim().parse().ok()?;
    Duration::try_from(parsed).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn settings_come_from_annotations() {
        let annotations = json!({MAX_CONCURRENCY: "8", REQUEST_TIMEOUT: "1500ms", "other": "x"});
        let settings = WasmSettings::from_annotations(Some(&annotations)).expect("valid");
        assert_eq!(settings.max_concurrency, Some(8));
        assert_eq!(settings.request_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(WasmSettings::from_annotations(None), Ok(WasmSettings::default()));
    }

    #[test]
    fn bad_values_are_named() {
        for (key, value) in [
            (MAX_CONCURRENCY, "0"),
            (MAX_CONCURRENCY, "many"),
            (REQUEST_TIMEOUT, "10"),
            (REQUEST_TIMEOUT, "-1s"),
            (REQUEST_TIMEOUT, "0s"),
        ] {
            let bad = WasmSettings::from_annotations(Some(&json!({key: value}))).expect_err(value);
            assert_eq!((bad[0].annotation, bad[0].value.as_str()), (key, value));
        }
    }

    #[test]
    fn durations_read_like_go() {
        for (text, want) in [("5s", 5_000), ("500ms", 500), ("2m", 120_000), ("1h30m", 5_400_000), ("1.5s", 1_500)] {
            assert_eq!(parse_duration(text), Some(Duration::from_millis(want)), "{text}");
        }
        assert_eq!(parse_duration("soon"), None);
    }
}
