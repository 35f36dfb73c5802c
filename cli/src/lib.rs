//! The client verbs of the `wasmkube` binary — `apply`, `get`, `describe`, `delete`, `logs`, `exec`,
//! `rollout`, `scale`, `cordon`, `uncordon`, `drain`, `push`, `version` — a small kubectl that talks
//! to any Kubernetes-shaped API server through `kube::Api`.
//!
//! Start at [`run`]: it dispatches a parsed [`ClientCommand`]. [`config`] finds the kubeconfig and
//! builds the client (with [`connection`]), [`manifest`] turns `-f` files into resolved [`manifest::Document`]s before
//! anything is sent, and each verb lives in its own module with a testable core function taking a
//! `kube::Client` and an output writer ([`apply::apply`], [`get::get`], [`describe::describe`],
//! [`delete::delete`]); [`rollout`] holds its subcommands as kubectl nests them, and the pure parts
//! of every verb (status wording, history tables, patches, drain filters) are plain functions.
//! Table columns come from [`wasmkube_api::printers`], shared with the API server's Table responses.
//! Failures are one-line [`Error`]s worded like kubectl's.

pub mod apply;
pub mod config;
pub mod connection;
pub mod cordon;
pub mod delete;
pub mod describe;
pub mod dev;
pub mod drain;
pub mod duration;
pub mod error;
pub mod exec;
pub mod get;
pub mod local_images;
pub mod logs;
pub mod manifest;
pub mod output;
pub mod push;
pub mod resource;
pub mod rollout;
pub mod scale;
pub mod version;

use std::path::PathBuf;

pub use error::Error;

/// Options every client verb accepts. They are `global` so they may appear before or after the
/// verb (`wasmkube -n kube-system get pods`, `wasmkube get pods -n kube-system`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientOptions {
    /// Kubeconfig to use; a `:`-separated list is merged as kubectl does.
    /// Default: `$KUBECONFIG`, else `DATA_DIR/kubeconfig` (written by `wasmkube up`).
    #[arg(long, global = true, env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace for this request. Default: the kubeconfig context's namespace, else `default`.
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// The cluster's data directory.
    /// Default: `$XDG_DATA_HOME/wasmkube`, else `~/.local/share/wasmkube`.
    #[arg(long, global = true, env = "WASMKUBE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl ClientOptions {
    /// `--data-dir` if given, else [`config::default_data_dir`].
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(config::default_data_dir)
    }
}

/// The client verbs; the root binary flattens this enum into its own subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Create or update objects from manifest files (client-side apply, like kubectl).
    Apply(apply::ApplyArgs),
    /// List objects, or show named ones, as a table, YAML, JSON or names.
    Get(get::GetArgs),
    /// Show an object's details, conditions and events.
    Describe(describe::DescribeArgs),
    /// Delete objects by type and name, by label selector or from manifest files.
    Delete(delete::DeleteArgs),
    /// Print a container's logs.
    Logs(logs::LogsArgs),
    /// Run a container's component as a command with the given words (`exec POD -- WORDS...`).
    Exec(exec::ExecArgs),
    /// Upload a Wasm binary to the cluster registry as NAME:TAG.
    Push(push::PushArgs),
    /// Apply manifests, then rebuild, push and swap the running services in place on every
    /// source change (the inner loop; Ctrl-C to stop).
    Dev(dev::DevArgs),
    /// Manage a Deployment's rollout: status, history, undo, pause, resume, restart.
    Rollout(rollout::RolloutArgs),
    /// Set the number of replicas of a Deployment or ReplicaSet.
    Scale(scale::ScaleArgs),
    /// Mark a node unschedulable.
    Cordon(cordon::CordonArgs),
    /// Mark a node schedulable again.
    Uncordon(cordon::CordonArgs),
    /// Cordon a node and move its pods off it (evicting or deleting them).
    Drain(drain::DrainArgs),
    /// Print the client and server versions.
    Version(version::VersionArgs),
}

/// Runs one client verb, writing results to stdout and notes to stderr.
///
/// The returned error's `Display` is one line meant for stderr as-is (it carries its own
/// `error:` / `Error from server (..)` prefix, as kubectl's do); the caller then exits 1. When a
/// verb fails for several objects, all but the last message are already on stderr.
pub async fn run(cmd: ClientCommand, global: &ClientOptions) -> anyhow::Result<()> {
    // `Stdout` (not its lock) so the futures stay `Send`; each write locks briefly.
    let mut out = std::io::stdout();
    let result = match cmd {
        ClientCommand::Apply(args) => apply::run(&args, global, &mut out).await,
        ClientCommand::Get(args) => get::run(&args, global, &mut out).await,
        ClientCommand::Describe(args) => describe::run(&args, global, &mut out).await,
        ClientCommand::Delete(args) => delete::run(&args, global, &mut out).await,
        ClientCommand::Logs(args) => logs::run(&args, global, &mut out).await,
        ClientCommand::Exec(args) => exec::run(&args, global, &mut out).await,
        ClientCommand::Push(args) => push::run(&args, global, &mut out).await,
        ClientCommand::Dev(args) => dev::run(&args, global, &mut out).await,
        ClientCommand::Rollout(args) => rollout::run(&args, global, &mut out).await,
        ClientCommand::Scale(args) => scale::run(&args, global, &mut out).await,
        ClientCommand::Cordon(args) => cordon::run(&args, true, global, &mut out).await,
        ClientCommand::Uncordon(args) => cordon::run(&args, false, global, &mut out).await,
        ClientCommand::Drain(args) => drain::run(&args, global, &mut out).await,
        ClientCommand::Version(args) => version::run(&args, global, &mut out).await,
    };
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        global: ClientOptions,
        #[command(subcommand)]
        command: ClientCommand,
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_are_accepted_after_the_verb() {
        let cli = Cli::try_parse_from(["wasmkube", "get", "pods", "-n", "kube-system", "-o", "wide"])
            .expect("valid command line");
        assert_eq!(cli.global.namespace.as_deref(), Some("kube-system"));
        assert!(matches!(cli.command, ClientCommand::Get(_)));
    }

    #[test]
    fn rollout_and_node_verbs_take_kubectls_command_lines() {
        let parse = |line: &[&str]| Cli::try_parse_from(std::iter::once("wasmkube").chain(line.iter().copied()));
        let cli = parse(&["rollout", "status", "deploy/web", "--watch=false", "--timeout", "30s"]).expect("valid");
        let ClientCommand::Rollout(rollout::RolloutArgs { command: rollout::RolloutCommand::Status(status) }) =
            cli.command
        else {
            panic!("parsed as rollout status");
        };
        assert!(!status.watch);
        assert_eq!(status.timeout, Some(std::time::Duration::from_secs(30)));
        for line in [
            &["rollout", "history", "deployment", "web", "--revision", "2"][..],
            &["rollout", "undo", "deployments/web", "--to-revision=1"],
            &["rollout", "pause", "deploy/web"],
            &["rollout", "resume", "deploy/web"],
            &["rollout", "restart", "deploy/web", "-n", "apps"],
            &["scale", "deployment/web", "--replicas", "0"],
            &["cordon", "n1"],
            &["uncordon", "node/n1"],
            &["drain", "n1", "--ignore-daemonsets", "--force", "--grace-period", "0", "--delete-emptydir-data"],
        ] {
            assert!(parse(line).is_ok(), "{line:?}");
        }
        assert!(parse(&["rollout", "status"]).is_err(), "an object is required");
    }
}
