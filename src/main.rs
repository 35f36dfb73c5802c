//! `wasmkube`: the one binary. It wires the crates together — `up` and `server` run the control
//! plane ([`wasmkube_control`]), the client verbs come from [`wasmkube_cli`] — and owns process
//! concerns: flags, logging, signals, the kubeconfig file and exit codes.

mod kubeconfig;
mod node_dns;

/// mimalloc, not glibc's malloc: the control plane allocates and frees many small JSON values
/// per request, which glibc's allocator serves far more slowly under two busy threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use wasmkube_cli::{ClientCommand, ClientOptions};
use wasmkube_control::{ControlPlane, ControlPlaneConfig};
use wasmkube_runtime::agent::{Agent, AgentConfig};

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
    /// Start an all-in-one cluster on this machine (control plane and a node agent); state
    /// survives restarts.
    Up {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Start the control plane alone (API server, store, controllers).
    Server(ServerArgs),
    /// Start a node agent that joins the control plane at `--server`.
    Agent(AgentArgs),
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

    /// Seconds a node may go without renewing its Lease or posting its Ready heartbeat before the
    /// control plane marks it Unknown and taints it `node.kubernetes.io/unreachable:NoExecute`.
    #[arg(long, value_name = "SECS", default_value_t = 40)]
    node_monitor_grace_period: u64,

    /// `tolerationSeconds` of the not-ready/unreachable NoExecute tolerations given to pods created
    /// without their own: how long such pods stay on a lost node before they are evicted.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    default_toleration_seconds: u32,

    /// Where Services' ClusterIPs come from (IPv4, at least a /28). The `kubernetes` Service gets
    /// its first address, `kube-dns` its tenth.
    #[arg(long, value_name = "CIDR", default_value = "127.32.0.0/12")]
    service_cidr: String,

    /// The ports NodePort and LoadBalancer Services are given on every node.
    #[arg(long, value_name = "LOW-HIGH", default_value = "30000-32767")]
    service_node_port_range: String,

    /// Extra IP addresses the API server certificate is valid for (besides 127.0.0.1 and the
    /// listen address).
    #[arg(long = "tls-san-ip", value_name = "IP")]
    tls_san_ips: Vec<std::net::IpAddr>,

    /// Manifests to apply once the cluster serves (a file or a directory of them; repeatable), as
    /// `wasmkube apply -f` would: local `.wasm` images are pushed to the cluster registry.
    #[arg(long = "apply", value_name = "FILE|DIR")]
    apply: Vec<String>,
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// The node's name. Default: this machine's hostname.
    #[arg(long, env = "WASMKUBE_NODE_NAME")]
    node_name: Option<String>,

    /// The node's IP: NodePorts bind here, other nodes reach its pods through it.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: std::net::IpAddr,

    /// Seconds of the first CrashLoopBackOff delay (doubling to 5 minutes).
    #[arg(long, default_value_t = 10)]
    backoff_base: u64,

    /// Port of the node API (pod logs for the API server) on the node IP; 0 picks a free one.
    #[arg(long, default_value_t = 10250)]
    node_api_port: u16,

    /// Size at which a container's log file is rotated, as a quantity (`10Mi`, `512Ki`); a
    /// container keeps its current and previous runs' logs, at most two files each.
    #[arg(long, default_value = "10Mi", value_parser = parse_log_size)]
    container_log_max_size: u64,

    /// A directory under which pods may mount `hostPath` volumes; repeatable. Default: none, so
    /// hostPath volumes are refused.
    #[arg(long = "host-path-root", value_name = "DIR")]
    host_path_roots: Vec<std::path::PathBuf>,

    #[command(flatten)]
    dns: node_dns::DnsArgs,
}

/// A log file size: a Kubernetes quantity of at least 1 KiB (smaller would rotate every line).
fn parse_log_size(text: &str) -> Result<u64, String> {
    let bytes =
        wasmkube_api::quantity::memory_bytes(text).ok_or_else(|| format!("{text:?} is not a quantity such as 10Mi"))?;
    if bytes < 1024 {
        return Err(format!("{text:?} is less than 1Ki"));
    }
    Ok(bytes as u64)
}

#[derive(Debug, Args)]
struct AgentArgs {
    /// The API server's URL, e.g. https://10.0.0.1:6443.
    #[arg(long)]
    server: String,

    /// File holding the bearer token to authenticate with.
    #[arg(long)]
    token_file: std::path::PathBuf,

    /// The cluster CA certificate (PEM). Default: DATA_DIR/pki/ca.crt.
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,

    #[command(flatten)]
    node: NodeArgs,
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
            // Server errors get the `error:` prefix of the exit-code contract.
            Command::Up { server, node } => {
                serve(server, Some(node), &cli.global).await.map_err(|e| anyhow::anyhow!("error: {e:#}"))
            }
            Command::Server(args) => serve(args, None, &cli.global).await.map_err(|e| anyhow::anyhow!("error: {e:#}")),
            Command::Agent(args) => agent(args, &cli.global).await.map_err(|e| anyhow::anyhow!("error: {e:#}")),
            // Client errors carry their own kubectl-style prefix (`error:`, `Error from server (…)`).
            Command::Client(cmd) => wasmkube_cli::run(cmd, &cli.global).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `exec` exits with the remote command's code, as kubectl does.
        Err(ref e) if let Some(wasmkube_cli::Error::Exit { code, message }) = e.downcast_ref() => {
            eprintln!("{message}");
            ExitCode::from(u8::try_from(*code).unwrap_or(1).max(1))
        }
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

/// Runs the control plane (and, for `up`, a node agent) until SIGINT or SIGTERM.
async fn serve(args: ServerArgs, node: Option<NodeArgs>, global: &ClientOptions) -> anyhow::Result<()> {
    init_logging();
    if args.store != "redb" {
        anyhow::bail!("--store {}: only the embedded redb store is supported so far", args.store);
    }
    let data_dir = global.data_dir();
    let mut config = ControlPlaneConfig::new(&data_dir, args.api_addr);
    config.event_window = args.watch_window.max(1);
    config.bookmark_interval = Duration::from_secs(args.bookmark_interval.max(1));
    config.extra_ips = args.tls_san_ips;
    config.node_monitor_grace_period = Duration::from_secs(args.node_monitor_grace_period.max(1));
    config.default_toleration_seconds = i64::from(args.default_toleration_seconds);
    config.service_network =
        wasmkube_control::objects::ServiceNetwork::new(&args.service_cidr, &args.service_node_port_range)
            .map_err(|e| anyhow::anyhow!("--service-cidr / --service-node-port-range: {e}"))?;
    let control = ControlPlane::start(config).await?;
    let url = client_url(control.addr);
    let kubeconfig_path = data_dir.join("kubeconfig");
    kubeconfig::write(&kubeconfig_path, &url, &control.pki.ca_pem, &control.pki.admin_token)?;
    let (agent, dns) = match node {
        Some(node) => {
            let client = kubeconfig::client(&url, &control.pki.ca_pem, &control.pki.admin_token).await?;
            let (agent, dns) = start_agent(client, &url, &control.pki.admin_token, node, &data_dir).await?;
            (Some(agent), dns)
        }
        None => (None, None),
    };
    let dns_field = dns.as_ref().map(|d| format!(" dns={}", d.addr)).unwrap_or_default();
    println!("ready: api={url}{dns_field} kubeconfig={}", kubeconfig_path.display());
    if !args.apply.is_empty() {
        apply_at_start(&args.apply, &kubeconfig_path).await;
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    drop(dns);
    if let Some(agent) = agent {
        agent.shutdown();
        agent.stopped().await;
    }
    control.shutdown();
    control.stopped().await;
    Ok(())
}

/// `--apply`: applies manifests through the cluster's own API, like `wasmkube apply -f`. A
/// failure is reported and the cluster keeps serving (the manifests can be fixed and applied
/// again by hand).
async fn apply_at_start(files: &[String], kubeconfig: &std::path::Path) {
    let options = ClientOptions { kubeconfig: Some(kubeconfig.to_path_buf()), ..ClientOptions::default() };
    let args = wasmkube_cli::apply::ApplyArgs { files: files.to_vec() };
    if let Err(e) = wasmkube_cli::apply::run(&args, &options, &mut std::io::stdout()).await {
        eprintln!("{e}");
    }
}

/// Raises this process's open-files soft limit to the hard limit: each pod holds a listening
/// socket and a log file, and distributions' default soft limit (1024) would stop a node at a few
/// hundred pods.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-files limit"),
    }
}

async fn start_agent(
    client: kube::Client,
    server: &str,
    token: &str,
    node: NodeArgs,
    data_dir: &std::path::Path,
) -> anyhow::Result<(Agent, Option<node_dns::NodeDns>)> {
    raise_open_files_limit();
    let name = node.node_name.unwrap_or_else(default_node_name);
    let mut config = AgentConfig::new(name, node.node_ip, data_dir.join("agent"));
    config.backoff_base = Duration::from_secs(node.backoff_base.max(1));
    config.node_api_port = node.node_api_port;
    config.container_log_max_bytes = node.container_log_max_size;
    config.host_path_roots = node.host_path_roots;
    config.api_token = token.to_string();
    config.server_authority = server.parse::<http::Uri>().ok().and_then(|u| u.authority().map(|a| a.to_string()));
    let dns = node_dns::start(client.clone(), &node.dns).await?;
    // Guests' outgoing HTTP requests resolve names through it, with their pod's search path.
    config.cluster_dns = dns
        .as_ref()
        .map(|dns| wasmkube_runtime::host::outbound::ClusterDns { server: dns.addr, domain: dns.domain.clone() });
    Ok((Agent::start(client, config).await?, dns))
}

/// Runs a node agent against a remote control plane until SIGINT or SIGTERM.
async fn agent(args: AgentArgs, global: &ClientOptions) -> anyhow::Result<()> {
    use anyhow::Context as _;
    init_logging();
    let data_dir = global.data_dir();
    let ca_file = args.ca_file.unwrap_or_else(|| data_dir.join("pki/ca.crt"));
    let ca =
        std::fs::read_to_string(&ca_file).with_context(|| format!("reading the cluster CA {}", ca_file.display()))?;
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading the token {}", args.token_file.display()))?;
    let client = kubeconfig::client(&args.server, &ca, token.trim()).await?;
    let (agent, dns) = start_agent(client, &args.server, token.trim(), args.node, &data_dir).await?;
    let dns_field = dns.as_ref().map(|d| format!(" dns={}", d.addr)).unwrap_or_default();
    println!("ready: node={} podCIDR={}{dns_field}", agent.node_name, agent.pod_cidr);
    shutdown_signal().await;
    drop(dns);
    agent.shutdown();
    agent.stopped().await;
    Ok(())
}

/// This machine's hostname, lower-cased (node names are DNS subdomains).
fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node-1".to_string())
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
