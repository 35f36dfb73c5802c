//! The node's cluster DNS server (crate `wasmkube-dns`), started next to its agent: the flags,
//! the address (the default port falls back to a free one when another node on this host holds
//! it), the upstream and the watch that feeds the zone.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use clap::Args;
use tokio_util::sync::CancellationToken;
use wasmkube_dns::server::{self, Handler};
use wasmkube_dns::zone::Zone;

/// Where a node's DNS server listens unless told otherwise.
const DEFAULT_ADDR: &str = "127.0.0.1:5353";

#[derive(Debug, Args)]
pub struct DnsArgs {
    /// Where this node's cluster DNS server listens, on UDP and TCP. Default 127.0.0.1:5353, or a
    /// free port when another process holds that one (the `ready:` line says which); `off` runs
    /// none.
    #[arg(long, value_name = "ADDR|off")]
    dns_addr: Option<String>,

    /// Where names outside the cluster domain are forwarded: `system` (the nameservers in
    /// /etc/resolv.conf), `none` (they are refused), or comma-separated IP[:PORT] addresses.
    #[arg(long, value_name = "system|none|ADDRS", default_value = "system")]
    dns_upstream: String,

    /// The cluster's DNS domain.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
}

/// A running DNS server; dropping it stops it.
pub struct NodeDns {
    pub addr: SocketAddr,
    /// The cluster domain it serves.
    pub domain: String,
    cancel: CancellationToken,
}

impl Drop for NodeDns {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts the server unless `--dns-addr off`.
pub async fn start(client: kube::Client, args: &DnsArgs) -> anyhow::Result<Option<NodeDns>> {
    let explicit = match args.dns_addr.as_deref() {
        Some("off") => return Ok(None),
        Some(addr) => Some(addr.parse::<SocketAddr>().with_context(|| format!("--dns-addr {addr:?}: not an IP:PORT"))?),
        None => None,
    };
    let own = explicit.unwrap_or_else(|| DEFAULT_ADDR.parse().expect("the default address parses"));
    let upstream = match args.dns_upstream.as_str() {
        "none" => None,
        "system" => server::system_upstream(own).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no upstream DNS: names outside the cluster are refused");
            None
        }),
        list => Some(server::upstream_at(&parse_upstreams(list)?).map_err(anyhow::Error::msg)?),
    };
    let zone = Arc::new(RwLock::new(Zone::new(&args.cluster_domain)));
    let cancel = CancellationToken::new();
    let handler = || Handler::new(zone.clone(), upstream.clone());
    let running = match explicit {
        Some(addr) => {
            server::serve(addr, handler(), cancel.clone()).await.with_context(|| format!("--dns-addr {addr}"))?
        }
        None => match server::serve(own, handler(), cancel.clone()).await {
            Ok(running) => running,
            Err(e) => {
                tracing::info!(error = %e, "{DEFAULT_ADDR} is taken: the DNS server takes a free port");
                let any = SocketAddr::new(own.ip(), 0);
                server::serve(any, handler(), cancel.clone()).await.context("starting the DNS server")?
            }
        },
    };
    tokio::spawn(wasmkube_dns::watch::follow(client, zone, cancel.clone()));
    Ok(Some(NodeDns { addr: running.addr, domain: args.cluster_domain.clone(), cancel }))
}

/// `10.0.0.2,10.0.0.3:5300` → socket addresses (port 53 unless given).
fn parse_upstreams(list: &str) -> anyhow::Result<Vec<SocketAddr>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            item.parse::<SocketAddr>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .with_context(|| format!("--dns-upstream: {item:?} is not an IP or IP:PORT"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_addresses_with_port_53_by_default() {
        let parsed = parse_upstreams("10.0.0.2, 10.0.0.3:5300").expect("parses");
        assert_eq!(parsed, ["10.0.0.2:53".parse().unwrap(), "10.0.0.3:5300".parse().unwrap()]);
        assert!(parse_upstreams("nope").unwrap_err().to_string().contains("\"nope\""));
    }
}
