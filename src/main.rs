//! `wasmkube`: the one binary. It wires the crates together — `up` and `server` run the control
//! plane ([`wasmkube_control`]), the client verbs come from [`wasmkube_cli`] — and owns process
//! concerns: flags, logging, signals, the kubeconfig file and exit codes.

mod kubeconfig;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use wasmkube_cli::{ClientCommand, ClientOptions};
use wasmkube_control::{ControlPlane, ControlPlaneConfig};

#[derive(Debug, Parser)]
#[command(name = "wasmkube", version, about = "A Kubernetes-shaped orchestrator for WebAssembly workloads")]
struct Cli {
    #[command(flatten)]
    global: ClientOptions,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start an all-in-one cluster on this machine; state survives restarts.
    Up(ServerArgs),
    /// Start the control plane alone (API server, store, controllers).
    Server(ServerArgs),
    #[command(flatten)]
    Client(ClientCommand),
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Address of the Kubernetes API (HTTPS). Port 0 picks a free port.
    #[arg(long, env = "WASMKUBE_API_ADDR", default_value = "127.0.0.1:6443")]
    api_addr: SocketAddr,

    /// The store backend. Only the embedded `redb` store exists so far.
    #[arg(long, default_value = "redb")]
    store: String,

    /// How many store events are kept for watch resumption and paged lists; a watch or `continue`
    /// from an older revision gets 410 Gone.
    #[arg(long, default_value_t = 100_000)]
    watch_window: u64,

    /// Seconds between BOOKMARK events on watches that ask for them.
    #[arg(long, default_value_t = 60)]
    bookmark_interval: u64,

    /// Extra IP addresses the API server certificate is valid for (besides 127.0.0.1 and the
    /// listen address).
    #[arg(long = "tls-san-ip", value_name = "IP")]
    tls_san_ips: Vec<std::net::IpAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) | Command::Server(args) => {
                // Server errors get the `error:` prefix of DESIGN's exit-code contract.
                serve(args, &cli.global).await.map_err(|e| anyhow::anyhow!("error: {e:#}"))
            }
            // Client errors carry their own kubectl-style prefix (`error:`, `Error from server (…)`).
            Command::Client(cmd) => wasmkube_cli::run(cmd, &cli.global).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Runs the control plane until SIGINT or SIGTERM.
async fn serve(args: ServerArgs, global: &ClientOptions) -> anyhow::Result<()> {
    init_logging();
    if args.store != "redb" {
        anyhow::bail!("--store {}: only the embedded redb store is supported so far", args.store);
    }
    let data_dir = global.data_dir();
    let mut config = ControlPlaneConfig::new(&data_dir, args.api_addr);
    config.event_window = args.watch_window.max(1);
    config.bookmark_interval = Duration::from_secs(args.bookmark_interval.max(1));
    config.extra_ips = args.tls_san_ips;
    let control = ControlPlane::start(config).await?;
    let url = client_url(control.addr);
    let kubeconfig_path = data_dir.join("kubeconfig");
    kubeconfig::write(&kubeconfig_path, &url, &control.pki.ca_pem, &control.pki.admin_token)?;
    println!("ready: api={url} kubeconfig={}", kubeconfig_path.display());
    shutdown_signal().await;
    tracing::info!("shutting down");
    control.shutdown();
    control.stopped().await;
    Ok(())
}

/// The URL clients should use: a wildcard listen address is reached through loopback.
fn client_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { addr.ip() };
    format!("https://{}", SocketAddr::new(ip, addr.port()))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
