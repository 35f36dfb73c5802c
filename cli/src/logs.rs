//! `logs POD [-c CONTAINER] [-f] [-p] [--tail N] [--timestamps] [--since 5m | --since-time T]
//! [--limit-bytes N]`: a container's output, through the API's `pods/{name}/log` (which the API
//! server fetches from the pod's node).

use std::io::Write;

use futures::AsyncBufReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};

use crate::error::Error;
use crate::{ClientOptions, config};

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The pod (`NAME` or `pod/NAME`).
    pub pod: String,
    /// The container; may be left out when the pod has only one.
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep streaming new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The previous run of the container (after a restart).
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<i64>,
    /// Start every line with the RFC 3339 time it was written.
    #[arg(long)]
    pub timestamps: bool,
    /// Only lines newer than this (`30s`, `5m`, `1h30m`).
    #[arg(long, value_parser = parse_since, conflicts_with = "since_time")]
    pub since: Option<i64>,
    /// Only lines written at or after this RFC 3339 time (`2026-11-22T01:02:03Z`).
    #[arg(long)]
    pub since_time: Option<jiff::Timestamp>,
    /// At most this many bytes of output.
    #[arg(long)]
    pub limit_bytes: Option<i64>,
}

/// A duration as kubectl takes it, in whole seconds (rounded up, as kubectl does).
fn parse_since(text: &str) -> Result<i64, String> {
    let duration: jiff::SignedDuration = text.parse().map_err(|e| format!("{text:?} is not a duration: {e}"))?;
    if !duration.is_positive() {
        return Err(format!("{text:?} is not a positive duration"));
    }
    let seconds = duration.as_secs() + i64::from(duration.subsec_nanos() > 0);
    Ok(seconds)
}

pub async fn run(args: &LogsArgs, options: &ClientOptions, out: &mut impl Write) -> Result<(), Error> {
    let cluster = config::connect(options).await?;
    let namespace = cluster.namespace_for(options);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &namespace);
    let name = args.pod.strip_prefix("pod/").or_else(|| args.pod.strip_prefix("pods/")).unwrap_or(&args.pod);
    let params = LogParams {
        container: args.container.clone(),
        follow: args.follow,
        previous: args.previous,
        tail_lines: args.tail,
        timestamps: args.timestamps,
        since_seconds: args.since,
        since_time: args.since_time,
        limit_bytes: args.limit_bytes,
        ..LogParams::default()
    };
    let stream = pods.log_stream(name, &params).await.map_err(|e| Error::request(&e))?;
    let mut lines = stream.lines();
    use futures::TryStreamExt;
    while let Some(line) = lines.try_next().await? {
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_as_kubectl_does() {
        for (text, want) in [("30s", Ok(30)), ("5m", Ok(300)), ("1h30m", Ok(5400)), ("1.5s", Ok(2)), ("300ms", Ok(1))] {
            assert_eq!(parse_since(text), want, "{text}");
        }
        for bad in ["0s", "soon", "-5m"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
