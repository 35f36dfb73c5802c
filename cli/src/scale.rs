//! `scale TYPE NAME --replicas N [--current-replicas M] [--timeout D]`: sets `spec.replicas`
//! through the `scale` subresource, as kubectl does — a merge patch of the Scale, or, with a
//! precondition, a read-check-replace of it (the resourceVersion guards the replace).

use std::io::Write;
use std::time::Duration;

use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::error::{Error, render};
use crate::output::Report;
use crate::{ClientOptions, config, duration, resource};

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// `TYPE NAME...` or `TYPE/NAME...`: deployments, replicasets (any kind with a scale subresource).
    #[arg(required = true, value_name = "TYPE NAME | TYPE/NAME")]
    pub resources: Vec<String>,
    /// The new number of replicas.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub replicas: i32,
    /// Only scale if the current replica count is this (-1: no condition).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub current_replicas: i32,
    /// Wait up to this long (`30s`, `2m`) for the replicas to be there; 0 or absent does not wait.
    #[arg(long, value_parser = duration::parse)]
    pub timeout: Option<Duration>,
}

/// The merge patch kubectl sends to the scale subresource.
pub fn scale_patch(replicas: i32) -> Value {
    json!({"spec": {"replicas": replicas}})
}

pub async fn run(args: &ScaleArgs, options: &ClientOptions, out: &mut impl Write) -> Result<(), Error> {
    if args.replicas < 0 {
        return Err(Error::Usage(
            "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0".to_string(),
        ));
    }
    let targets = resource::parse_targets(&args.resources)?;
    if targets.iter().any(|t| t.names.is_empty()) {
        return Err(Error::Usage("resource(s) were provided, but no name was specified".to_string()));
    }
    let cluster = config::connect(options).await?;
    let namespace = cluster.namespace_for(options);
    let mut report = Report::default();
    for target in &targets {
        let api = resource::api(cluster.client.clone(), target.kind, Some(&namespace));
        for name in &target.names {
            match scale(&api, name, args).await {
                Ok(()) => writeln!(out, "{}/{name} scaled", target.kind.qualified_singular())?,
                // kubectl stops at the first object it cannot scale.
                Err(line) => {
                    report.errors.push(line);
                    return report.finish();
                }
            }
        }
    }
    report.finish()
}

type DynamicApi = kube::Api<kube::core::DynamicObject>;

/// Scales one object; a failure comes back as the whole line to print.
async fn scale(api: &DynamicApi, name: &str, args: &ScaleArgs) -> Result<(), String> {
    let replicas = args.replicas;
    if args.current_replicas >= 0 {
        let mut current = api.get_scale(name).await.map_err(|e| render(&e))?;
        let actual = current.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        if actual != args.current_replicas {
            return Err(format!("error: Expected replicas to be {}, was {actual}", args.current_replicas));
        }
        current.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
        api.replace_scale(name, &PostParams::default(), &current).await.map_err(|e| render(&e))?;
    } else {
        let patch = scale_patch(replicas);
        api.patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| render(&e))?;
    }
    match duration::limit(args.timeout) {
        Some(limit) => wait_for_replicas(api, name, replicas, limit).await,
        None => Ok(()),
    }
}

/// Polls the Scale once a second (kubectl's interval) until its status has the wanted replicas,
/// or someone else changed the wanted count meanwhile.
async fn wait_for_replicas(api: &DynamicApi, name: &str, replicas: i32, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let scale = api.get_scale(name).await.map_err(|e| render(&e))?;
        let wanted = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let has = scale.status.as_ref().map_or(0, |s| s.replicas);
        if wanted != replicas || has == replicas {
            return Ok(());
        }
        if Instant::now() + Duration::from_secs(1) > deadline {
            return Err("error: timed out waiting for the condition".to_string());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ScaleArgs,
    }

    #[test]
    fn the_patch_sets_only_spec_replicas() {
        assert_eq!(scale_patch(0), json!({"spec": {"replicas": 0}}));
        assert_eq!(scale_patch(3).to_string(), r#"{"spec":{"replicas":3}}"#);
    }

    #[test]
    fn flags_may_come_before_or_after_the_object() {
        let args = Cli::try_parse_from(["scale", "--replicas", "3", "deployment/web"]).expect("valid").args;
        assert_eq!((args.replicas, args.resources.as_slice()), (3, ["deployment/web".to_string()].as_slice()));
        let args =
            Cli::try_parse_from(["scale", "rs", "web-1", "--replicas=0", "--timeout", "1m"]).expect("valid").args;
        assert_eq!((args.replicas, args.timeout), (0, Some(Duration::from_secs(60))));
        assert_eq!(Cli::try_parse_from(["scale", "deploy/web"]).expect("parses").args.replicas, -1);
    }
}
