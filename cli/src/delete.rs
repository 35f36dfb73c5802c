//! `delete`: by type and name, by selector, or from manifests; then (by default) wait until the
//! objects are really gone, as kubectl does.

use std::io::Write;
use std::time::Duration;

use kube::api::{DeleteParams, ListParams, PropagationPolicy};
use tokio::time::Instant;
use wasmkube_api::Kind;

use crate::error::{Error, is_not_found, is_unreachable, render, render_during};
use crate::output::Report;
use crate::resource::Target;
use crate::{ClientOptions, config, manifest, resource};

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// What to delete: `TYPE NAME...` or `TYPE/NAME...` (or `TYPE` with `-l` / `--all`).
    #[arg(value_name = "TYPE [NAME...]")]
    pub resources: Vec<String>,
    /// Delete the objects in these manifests (file, directory or `-`); repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-", conflicts_with = "resources")]
    pub files: Vec<String>,
    /// Delete every object of the type matching this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Delete every object of the type in the namespace.
    #[arg(long)]
    pub all: bool,
    /// Seconds the object gets to terminate; negative uses the object's own default.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i64,
    /// Delete immediately (grace period 0) without waiting for confirmation.
    #[arg(long)]
    pub force: bool,
    /// What happens to dependents: deleted in the background, deleted first (foreground), or kept.
    #[arg(long, value_enum, default_value_t = Cascade::Background)]
    pub cascade: Cascade,
    /// Wait until the objects are gone (`--wait=false` to return at once).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", require_equals = true)]
    pub wait: bool,
    /// How long to wait, e.g. `30s` or `2m`; unlimited by default.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Treat objects that do not exist as deleted.
    #[arg(long)]
    pub ignore_not_found: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cascade {
    #[value(alias = "true")]
    Background,
    Foreground,
    #[value(alias = "false")]
    Orphan,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = text.parse().map_err(|e| format!("invalid duration {text:?}: {e}"))?;
    Duration::try_from(signed).map_err(|_| format!("invalid duration {text:?}: must not be negative"))
}

/// One object to delete, and the file it came from (for messages) when from `-f`.
#[derive(Debug, Clone)]
pub struct Victim {
    pub kind: &'static Kind,
    pub namespace: Option<String>,
    pub name: String,
    pub file: Option<String>,
}

/// How to delete.
#[derive(Debug, Clone)]
pub struct DeleteOptions {
    pub params: DeleteParams,
    pub wait: bool,
    pub timeout: Option<Duration>,
    pub ignore_not_found: bool,
}

impl DeleteArgs {
    fn options(&self) -> DeleteOptions {
        let grace = match (self.grace_period, self.force) {
            (g, _) if g >= 0 => u32::try_from(g).ok(),
            (_, true) => Some(0),
            _ => None,
        };
        let policy = match self.cascade {
            Cascade::Background => PropagationPolicy::Background,
            Cascade::Foreground => PropagationPolicy::Foreground,
            Cascade::Orphan => PropagationPolicy::Orphan,
        };
        let params =
            DeleteParams { grace_period_seconds: grace, propagation_policy: Some(policy), ..DeleteParams::default() };
        // Forced deletion does not wait: the object may linger on its node.
        DeleteOptions {
            params,
            wait: self.wait && !self.force,
            timeout: self.timeout,
            ignore_not_found: self.ignore_not_found,
        }
    }
}

pub async fn run(args: &DeleteArgs, options: &ClientOptions, out: &mut impl Write) -> Result<(), Error> {
    if args.files.is_empty() && args.resources.is_empty() {
        return Err(Error::Usage("You must provide one or more resources by argument or filename.".to_string()));
    }
    // Manifests are read (blocking, stdin included) before anything else runs.
    let documents = if args.files.is_empty() { Vec::new() } else { manifest::read(&args.files)? };
    if !args.files.is_empty() && documents.is_empty() {
        return Err(Error::Usage("no objects passed to delete".to_string()));
    }
    let targets = if args.files.is_empty() { resource::parse_targets(&args.resources)? } else { Vec::new() };
    let listing = args.selector.is_some() || args.all;
    if targets.iter().any(|t| t.names.is_empty()) && !listing {
        return Err(Error::Usage("resource(s) were provided, but no name was specified".to_string()));
    }
    let cluster = config::connect(options).await?;
    let victims = if documents.is_empty() {
        let namespace = cluster.namespace_for(options);
        let selector = args.selector.as_deref();
        from_targets(cluster.client.clone(), &targets, &namespace, selector).await?
    } else {
        from_documents(documents, &cluster.namespace, options.namespace.as_deref())?
    };
    let mut report = Report::default();
    if victims.is_empty() && listing {
        report.notes.push("No resources found".to_string());
    }
    if args.force {
        eprintln!(
            "Warning: Immediate deletion does not wait for confirmation that the running resource \
             has been terminated. The resource may continue to run on the cluster indefinitely."
        );
    }
    report.errors = delete(cluster.client, &victims, &args.options(), out).await?;
    report.finish()
}

/// The objects named by manifests, in file order, with namespaces resolved as `apply` does.
fn from_documents(
    mut documents: Vec<manifest::Document>,
    default_namespace: &str,
    explicit: Option<&str>,
) -> Result<Vec<Victim>, Error> {
    manifest::assign_namespaces(&mut documents, default_namespace, explicit)?;
    Ok(documents
        .into_iter()
        .map(|d| Victim {
            kind: d.kind,
            namespace: d.namespace().map(str::to_string),
            name: d.name().to_string(),
            file: Some(d.source.file),
        })
        .collect())
}

/// The objects named on the command line, or listed by selector when a target has no names.
async fn from_targets(
    client: kube::Client,
    targets: &[Target],
    namespace: &str,
    selector: Option<&str>,
) -> Result<Vec<Victim>, Error> {
    let mut victims = Vec::new();
    for target in targets {
        let scope = target.kind.namespaced.then(|| namespace.to_string());
        let names = if target.names.is_empty() {
            list_names(client.clone(), target.kind, scope.as_deref(), selector).await?
        } else {
            target.names.clone()
        };
        victims.extend(names.into_iter().map(|name| Victim {
            kind: target.kind,
            namespace: scope.clone(),
            name,
            file: None,
        }));
    }
    Ok(victims)
}

async fn list_names(
    client: kube::Client,
    kind: &Kind,
    namespace: Option<&str>,
    selector: Option<&str>,
) -> Result<Vec<String>, Error> {
    let params = ListParams { label_selector: selector.map(str::to_string), ..ListParams::default() };
    let list = resource::api(client, kind, namespace).list(&params).await.map_err(|e| Error::request(&e))?;
    Ok(list.items.into_iter().filter_map(|o| o.metadata.name).collect())
}

/// Deletes each object, printing `pod "x" deleted`; then, if asked, waits until all are gone.
/// Returns one kubectl-style line per object that could not be deleted.
pub async fn delete(
    client: kube::Client,
    victims: &[Victim],
    options: &DeleteOptions,
    out: &mut impl Write,
) -> Result<Vec<String>, Error> {
    let mut errors = Vec::new();
    let mut pending = Vec::new();
    for victim in victims {
        let api = resource::api(client.clone(), victim.kind, victim.namespace.as_deref());
        match api.delete(&victim.name, &options.params).await {
            Ok(result) => {
                writeln!(out, "{} \"{}\" deleted", victim.kind.qualified_singular(), victim.name)?;
                // `Left` is the object still present (finalizers, graceful termination).
                if let Some(object) = result.left() {
                    pending.push((victim, object.metadata.uid));
                }
            }
            Err(err) if is_not_found(&err) && options.ignore_not_found => {}
            Err(err) if is_unreachable(&err) => return Err(Error::request(&err)),
            Err(err) => errors.push(match &victim.file {
                Some(file) => render_during(&err, Some(("deleting", file))),
                None => render(&err),
            }),
        }
    }
    if options.wait {
        for (victim, uid) in pending {
            wait_gone(client.clone(), victim, uid.as_deref(), options.timeout).await?;
        }
    }
    Ok(errors)
}

/// Polls until the object is gone or replaced by a new one with another uid. Polling (at most once
/// a second) rather than watching works against any server, and the wait is usually short.
async fn wait_gone(
    client: kube::Client,
    victim: &Victim,
    uid: Option<&str>,
    timeout: Option<Duration>,
) -> Result<(), Error> {
    let api = resource::api(client, victim.kind, victim.namespace.as_deref());
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut delay = Duration::from_millis(100);
    loop {
        match api.get_opt(&victim.name).await {
            Ok(None) => return Ok(()),
            Ok(Some(object)) if object.metadata.uid.as_deref() != uid => return Ok(()),
            Ok(Some(_)) => {}
            Err(err) => return Err(Error::request(&err)),
        }
        if deadline.is_some_and(|d| Instant::now() + delay > d) {
            return Err(Error::Usage(format!(
                "timed out waiting for the condition on {}/{}",
                victim.kind.qualified_plural(),
                victim.name
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: DeleteArgs,
    }

    fn parse(args: &[&str]) -> DeleteArgs {
        Cli::try_parse_from(std::iter::once("delete").chain(args.iter().copied())).expect("valid").args
    }

    #[test]
    fn defaults_wait_in_the_background_with_the_objects_grace_period() {
        let options = parse(&["pod", "x"]).options();
        assert!(options.wait);
        assert_eq!(options.params.grace_period_seconds, None);
        assert!(matches!(options.params.propagation_policy, Some(PropagationPolicy::Background)));
    }

    #[test]
    fn flags_map_to_delete_parameters() {
        let options = parse(&["pod", "x", "--grace-period", "5", "--cascade", "foreground", "--wait=false"]).options();
        assert!(!options.wait);
        assert_eq!(options.params.grace_period_seconds, Some(5));
        assert!(matches!(options.params.propagation_policy, Some(PropagationPolicy::Foreground)));
        let options = parse(&["pod", "x", "--force", "--cascade=false"]).options();
        assert_eq!(options.params.grace_period_seconds, Some(0));
        assert!(matches!(options.params.propagation_policy, Some(PropagationPolicy::Orphan)));
        assert!(!options.wait);
        let args = parse(&["pod", "x", "--wait", "--timeout", "1m30s"]);
        assert_eq!(args.resources, ["pod", "x"]);
        assert_eq!(args.timeout, Some(Duration::from_secs(90)));
    }
}
