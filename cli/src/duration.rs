//! Durations as kubectl's `--timeout` flags take them: `30s`, `2m`, `1h30m`, and a bare `0` (which
//! kubectl reads as "no limit").

use std::time::Duration;

/// Parses a non-negative duration; `0` (any unit) means no limit and comes back as zero.
pub fn parse(text: &str) -> Result<Duration, String> {
    // Go's time.ParseDuration accepts a unitless "0"; jiff's friendly format needs a unit.
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    let signed: jiff::SignedDuration = text.parse().map_err(|e| format!("invalid duration {text:?}: {e}"))?;
    Duration::try_from(signed).map_err(|_| format!("invalid duration {text:?}: must not be negative"))
}

/// A limit from a parsed flag: none when absent or zero.
pub fn limit(flag: Option<Duration>) -> Option<Duration> {
    flag.filter(|d| !d.is_zero())
}

/// A duration the way Go prints one (`1m0s`, `30s`, `1h2m3s`), for messages that quote a flag.
pub fn go_format(duration: Duration) -> String {
    let total = duration.as_secs();
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    let millis = duration.subsec_millis();
    let seconds = if millis > 0 {
        format!("{seconds}.{}s", format!("{millis:03}").trim_end_matches('0'))
    } else {
        format!("{seconds}s")
    };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_durations_parse_and_zero_means_no_limit() {
        for (text, want) in [("30s", 30), ("2m", 120), ("1m30s", 90), ("1h", 3600), ("0", 0), ("0s", 0)] {
            assert_eq!(parse(text), Ok(Duration::from_secs(want)), "{text}");
        }
        for bad in ["soon", "-5s", ""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(limit(Some(Duration::ZERO)), None);
        assert_eq!(limit(Some(Duration::from_secs(1))), Some(Duration::from_secs(1)));
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        for (secs, want) in [(30, "30s"), (60, "1m0s"), (90, "1m30s"), (3723, "1h2m3s")] {
            assert_eq!(go_format(Duration::from_secs(secs)), want);
        }
        assert_eq!(go_format(Duration::from_millis(1500)), "1.5s");
    }
}
