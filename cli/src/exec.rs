//! `exec POD [-c CONTAINER] [-i] -- COMMAND...`: runs the container's component again as a command
//! with the given words (argv = container name + words), through the API's `pods/{name}/exec`
//! websocket, streaming stdin (with `-i`), stdout and stderr. Like kubectl, a non-zero exit ends
//! with `command terminated with exit code N` and exit status N.

use std::io::Write;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::Error;
use crate::{ClientOptions, config};

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The pod (`NAME` or `pod/NAME`).
    pub pod: String,
    /// The container; may be left out when the pod has only one.
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Pass this terminal's stdin to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// The command words, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub async fn run(args: &ExecArgs, options: &ClientOptions, out: &mut (impl Write + Send)) -> Result<(), Error> {
    let cluster = config::connect(options).await?;
    let namespace = cluster.namespace_for(options);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &namespace);
    let name = args.pod.strip_prefix("pod/").or_else(|| args.pod.strip_prefix("pods/")).unwrap_or(&args.pod);
    let mut params = AttachParams::default().stdin(args.stdin).stdout(true).stderr(true);
    if let Some(container) = &args.container {
        params = params.container(container.clone());
    }
    let mut process = pods.exec(name, args.command.clone(), &params).await.map_err(|e| Error::request(&e))?;
    let status = process.take_status();
    if let Some(mut remote) = process.stdin() {
        tokio::spawn(async move {
            let mut local = tokio::io::stdin();
            let _ = tokio::io::copy(&mut local, &mut remote).await;
            let _ = remote.shutdown().await;
        });
    }
    let mut stdout = process.stdout();
    let mut stderr = process.stderr();
    let copy_err = async {
        if let Some(stderr) = stderr.as_mut() {
            let _ = tokio::io::copy(stderr, &mut tokio::io::stderr()).await;
        }
    };
    let copy_out = async {
        let mut buf = vec![0u8; 16 * 1024];
        if let Some(stdout) = stdout.as_mut() {
            loop {
                let n = stdout.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
                out.flush()?;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let (written, ()) = tokio::join!(copy_out, copy_err);
    written?;
    let status = match status {
        Some(status) => status.await,
        None => None,
    };
    let _ = process.join().await;
    match status {
        Some(s) if s.status.as_deref() == Some("Failure") => {
            let code = s
                .details
                .as_ref()
                .and_then(|d| d.causes.as_ref())
                .into_iter()
                .flatten()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
                .and_then(|c| c.message.as_deref()?.parse::<i32>().ok());
            match code {
                Some(code) => Err(Error::Exit { code, message: format!("command terminated with exit code {code}") }),
                None => Err(Error::Request(format!("error: {}", s.message.unwrap_or_default()))),
            }
        }
        _ => Ok(()),
    }
}
