//! `logs POD [-c CONTAINER] [-f] [-p] [--tail N]`: a container's output, through the API's
//! `pods/{name}/log` (which the API server fetches from the pod's node).

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
