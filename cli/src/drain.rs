//! `drain NODE [--ignore-daemonsets] [--force] [--grace-period S] [--timeout D]
//! [--delete-emptydir-data] [--pod-selector SEL] [--disable-eviction]`: cordon the node, then
//! remove its pods and wait until they are gone, as kubectl's drain does. Their controllers
//! recreate them elsewhere — or leave them Pending while no other node takes pods.
//!
//! Like kubectl, it evicts through `pods/{name}/eviction` when the server lists that subresource
//! (wasmkube's does), so PodDisruptionBudgets are honoured: an eviction a budget refuses (429) is
//! retried every 5 s until the timeout. It prints kubectl's lines (`evicting pod NS/NAME`,
//! `pod/NAME evicted`). Against a server without eviction, or with `--disable-eviction`, it
//! deletes with the grace period (`pod/NAME deleted`).

pub mod filter;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, EvictParams, ListParams};
use tokio::time::Instant;

use crate::cordon::{node_name, set_unschedulable};
use crate::error::{Error, is_not_found, render};
use crate::{ClientOptions, config, duration};

use filter::{Plan, Policy};

/// How long to wait before retrying an eviction a disruption budget refused (kubectl's default).
const EVICTION_RETRY: Duration = Duration::from_secs(5);
/// How often to check whether removed pods are gone (kubectl's interval).
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// The node (`NAME` or `node/NAME`).
    pub node: String,
    /// Drain even with pods that declare no controller (they are deleted for good).
    #[arg(long)]
    pub force: bool,
    /// Leave DaemonSet-managed pods where they are instead of refusing to drain.
    #[arg(long)]
    pub ignore_daemonsets: bool,
    /// Drain even with pods using emptyDir volumes (their data is lost).
    #[arg(long)]
    pub delete_emptydir_data: bool,
    /// Seconds each pod gets to terminate; negative uses the pod's own default.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i64,
    /// Give up after this long (`30s`, `5m`); 0 or absent waits for ever.
    #[arg(long, value_parser = duration::parse)]
    pub timeout: Option<Duration>,
    /// Only remove the node's pods matching this label selector.
    #[arg(long)]
    pub pod_selector: Option<String>,
    /// Delete even where the server supports eviction (bypasses disruption budgets).
    #[arg(long)]
    pub disable_eviction: bool,
}

pub async fn run(args: &DrainArgs, options: &ClientOptions, out: &mut impl Write) -> Result<(), Error> {
    let cluster = config::connect(options).await?;
    let name = node_name(&args.node);
    set_unschedulable(cluster.client.clone(), name, true, out).await?;
    match drain(cluster.client, name, args, out).await {
        Ok(()) => {
            writeln!(out, "node/{name} drained")?;
            Ok(())
        }
        Err(DrainError::Output(e)) => Err(Error::Output(e)),
        Err(DrainError::Failed(message)) => {
            eprintln!("error: unable to drain node {name:?} due to error: {message}, continuing command...");
            eprintln!("There are pending nodes to be drained:\n {name}");
            Err(Error::Request(format!("error: {message}")))
        }
    }
}

/// Why removing a node's pods stopped: kubectl's message (which `run` also reports as the node
/// left pending), or stdout going away.
#[derive(Debug, thiserror::Error)]
enum DrainError {
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Output(#[from] std::io::Error),
}

fn failed(err: &kube::Error) -> DrainError {
    DrainError::Failed(render(err))
}

/// Removes the (already cordoned) node's pods that the filters allow and waits until they are gone.
async fn drain(client: kube::Client, node: &str, args: &DrainArgs, out: &mut impl Write) -> Result<(), DrainError> {
    let deadline = duration::limit(args.timeout).map(|t| Instant::now() + t);
    let plan = plan(client.clone(), node, args).await?;
    if !plan.errors.is_empty() {
        return Err(DrainError::Failed(aggregate(&plan.errors)));
    }
    if let Some(warnings) = &plan.warnings {
        eprintln!("Warning: {warnings}");
    }
    if plan.pods.is_empty() {
        return Ok(());
    }
    let grace = u32::try_from(args.grace_period).ok();
    let params = DeleteParams { grace_period_seconds: grace, ..DeleteParams::default() };
    if !args.disable_eviction && supports_eviction(&client).await? {
        let evicted = evict(&client, plan.pods, &params, deadline, out).await?;
        wait_gone(&client, evicted, "evicted", deadline, out).await
    } else {
        // No eviction subresource, or eviction disabled: delete with the grace period, as
        // kubectl does.
        for pod in &plan.pods {
            let (namespace, name) = identity(pod);
            match Api::<Pod>::namespaced(client.clone(), namespace).delete(name, &params).await {
                Ok(_) => {}
                Err(err) if is_not_found(&err) => {}
                Err(err) => return Err(failed(&err)),
            }
        }
        wait_gone(&client, plan.pods, "deleted", deadline, out).await
    }
}

/// The node's pods (all namespaces, optionally by label) sorted by kubectl's filters.
async fn plan(client: kube::Client, node: &str, args: &DrainArgs) -> Result<Plan, DrainError> {
    let params = ListParams {
        field_selector: Some(format!("spec.nodeName={node}")),
        label_selector: args.pod_selector.clone(),
        ..ListParams::default()
    };
    let pods = Api::<Pod>::all(client.clone()).list(&params).await.map_err(|e| failed(&e))?.items;
    let mut daemon_sets = BTreeMap::new();
    for key in pods.iter().filter_map(filter::daemon_set_of) {
        let api: Api<DaemonSet> = Api::namespaced(client.clone(), &key.0);
        let found = match api.get(&key.1).await {
            Ok(_) => filter::DaemonSet::Found,
            Err(err) if is_not_found(&err) => filter::DaemonSet::Missing(status_message(&err)),
            Err(err) => filter::DaemonSet::Failed(status_message(&err)),
        };
        daemon_sets.insert(key, found);
    }
    let policy = Policy {
        force: args.force,
        ignore_daemonsets: args.ignore_daemonsets,
        delete_emptydir_data: args.delete_emptydir_data,
    };
    Ok(filter::plan(pods, policy, &daemon_sets))
}

/// The API's own message (`daemonsets.apps "x" not found`), as Go's error string gives it.
fn status_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// Several errors as Go's aggregate prints them: one alone as itself, more as `[a, b]`.
fn aggregate(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

fn identity(pod: &Pod) -> (&str, &str) {
    (pod.metadata.namespace.as_deref().unwrap_or("default"), pod.metadata.name.as_deref().unwrap_or_default())
}

/// Whether the server lists `pods/eviction` (kind Eviction, with its group version) in core v1.
async fn supports_eviction(client: &kube::Client) -> Result<bool, DrainError> {
    let resources = client.list_core_api_resources("v1").await.map_err(|e| failed(&e))?;
    Ok(resources.resources.iter().any(|r| {
        r.name == "pods/eviction"
            && r.kind == "Eviction"
            && r.group.as_deref().is_some_and(|g| !g.is_empty())
            && r.version.as_deref().is_some_and(|v| !v.is_empty())
    }))
}

/// Asks for each pod's eviction, retrying while a disruption budget says 429; returns the pods
/// to wait for (a pod already gone needs no waiting).
async fn evict(
    client: &kube::Client,
    pods: Vec<Pod>,
    params: &DeleteParams,
    deadline: Option<Instant>,
    out: &mut impl Write,
) -> Result<Vec<Pod>, DrainError> {
    let mut evicted = Vec::new();
    for pod in pods {
        let (namespace, name) = identity(&pod);
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let eviction = EvictParams { delete_options: Some(params.clone()), ..EvictParams::default() };
        loop {
            writeln!(out, "evicting pod {namespace}/{name}")?;
            out.flush()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let message = format!("error when evicting pods/{name:?} -n {namespace:?}: global timeout reached");
                return Err(DrainError::Failed(message));
            }
            match api.evict(name, &eviction).await {
                Ok(_) => {
                    evicted.push(pod.clone());
                    break;
                }
                Err(err) if is_not_found(&err) => break,
                Err(err) if matches!(&err, kube::Error::Api(s) if s.code == 429) => {
                    eprintln!(
                        "error when evicting pods/{name:?} -n {namespace:?} (will retry after {}): {}",
                        duration::go_format(EVICTION_RETRY),
                        status_message(&err)
                    );
                    tokio::time::sleep(EVICTION_RETRY).await;
                }
                Err(err) => {
                    let message =
                        format!("error when evicting pods/{name:?} -n {namespace:?}: {}", status_message(&err));
                    return Err(DrainError::Failed(message));
                }
            }
        }
    }
    Ok(evicted)
}

/// Polls until every pod is gone (or replaced by a new pod of the same name), printing
/// `pod/NAME <verb>` as each goes.
async fn wait_gone(
    client: &kube::Client,
    mut pending: Vec<Pod>,
    verb: &str,
    deadline: Option<Instant>,
    out: &mut impl Write,
) -> Result<(), DrainError> {
    loop {
        let mut still = Vec::new();
        for pod in pending {
            let (namespace, name) = identity(&pod);
            let current = Api::<Pod>::namespaced(client.clone(), namespace).get_opt(name).await;
            match current.map_err(|e| failed(&e))? {
                Some(p) if p.metadata.uid == pod.metadata.uid => still.push(pod),
                _ => {
                    writeln!(out, "pod/{name} {verb}")?;
                    out.flush()?;
                }
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() + POLL > d) {
            let (namespace, name) = identity(&still[0]);
            return Err(DrainError::Failed(format!(
                "error when waiting for pod {name:?} in namespace {namespace:?} to terminate: \
                 timed out waiting for the condition"
            )));
        }
        pending = still;
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: DrainArgs,
    }

    #[test]
    fn flags_parse_as_kubectls() {
        let args = Cli::try_parse_from([
            "drain",
            "node/n1",
            "--ignore-daemonsets",
            "--force",
            "--grace-period",
            "5",
            "--timeout",
            "2m",
            "--delete-emptydir-data",
        ])
        .expect("valid")
        .args;
        assert_eq!(node_name(&args.node), "n1");
        assert!(args.ignore_daemonsets && args.force && args.delete_emptydir_data && !args.disable_eviction);
        assert_eq!((args.grace_period, args.timeout), (5, Some(Duration::from_secs(120))));
        let defaults = Cli::try_parse_from(["drain", "n1"]).expect("valid").args;
        assert_eq!((defaults.grace_period, defaults.timeout), (-1, None));
    }

    #[test]
    fn several_refusals_read_as_gos_aggregate() {
        assert_eq!(aggregate(&["a".to_string()]), "a");
        assert_eq!(aggregate(&["a".to_string(), "b".to_string()]), "[a, b]");
    }
}
