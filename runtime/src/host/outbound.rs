//! Where a guest's outgoing wasi:http requests go. A plain-HTTP request to a host name is sent to
//! the address the cluster DNS gives that name, looked up with the pod's search path
//! (`<ns>.svc.<domain>`, `svc.<domain>`, `<domain>`, as a pod's resolv.conf says in Kubernetes), so
//! `http://hello`, `http://hello.default` and `http://hello.default.svc.cluster.local` all reach
//! the `hello` Service (its ClusterIP is served by this node's proxy). The request keeps its
//! `Host` header. Names outside the cluster resolve through the same server, which forwards them
//! upstream. HTTPS requests are sent as the guest made them (the name is needed for TLS).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::Name;
use hickory_resolver::{Resolver, TokioResolver};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// The node's cluster DNS server and domain.
#[derive(Debug, Clone)]
pub struct ClusterDns {
    pub server: SocketAddr,
    pub domain: String,
}

/// One resolver per namespace (each has its own search path), made on first use.
#[derive(Debug)]
pub struct Names {
    dns: ClusterDns,
    by_namespace: Mutex<HashMap<String, Arc<TokioResolver>>>,
}

impl Names {
    pub fn new(dns: ClusterDns) -> Self {
        Self { dns, by_namespace: Mutex::new(HashMap::new()) }
    }

    /// The resolver for pods of `namespace`.
    pub fn for_namespace(&self, namespace: &str) -> Option<Arc<TokioResolver>> {
        let mut cached = self.by_namespace.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(resolver) = cached.get(namespace) {
            return Some(resolver.clone());
        }
        let resolver = Arc::new(resolver(&self.dns, namespace)?);
        cached.insert(namespace.to_string(), resolver.clone());
        Some(resolver)
    }
}

/// A resolver asking `dns` only, with Kubernetes' pod search path and `ndots: 5`.
fn resolver(dns: &ClusterDns, namespace: &str) -> Option<TokioResolver> {
    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()].map(|mut c| {
        c.port = dns.server.port();
        c
    });
    let server = NameServerConfig::new(dns.server.ip(), true, connections.to_vec());
    let domain = dns.domain.trim_end_matches('.');
    let search = [format!("{namespace}.svc.{domain}."), format!("svc.{domain}."), format!("{domain}.")];
    let search: Vec<Name> = search.iter().filter_map(|s| Name::from_ascii(s).ok()).collect();
    let config = ResolverConfig::from_parts(None, search, vec![server]);
    let mut opts = ResolverOpts::default();
    opts.ndots = 5;
    opts.use_hosts_file = ResolveHosts::Never;
    Resolver::builder_with_config(config, TokioRuntimeProvider::default()).with_options(opts).build().ok()
}

/// The hooks of one guest instance: where its requests go.
#[derive(Default)]
pub struct ClusterHooks {
    pub resolver: Option<Arc<TokioResolver>>,
}

type Sent = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

/// Which of several addresses for a name the next request takes.
static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl WasiHttpHooks for ClusterHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Sent,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, Sent), HttpError>> + Send> {
        let resolver = self.resolver.clone();
        // The guest's own request future (a body it failed to send) is not watched here, as in
        // the default implementation.
        drop(fut);
        Box::new(async move {
            use http_body_util::BodyExt;
            let request = match resolver {
                Some(resolver) => to_resolved_address(request, &resolver).await?,
                None => request,
            };
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Sent))
        })
    }
}

/// The request with its host name replaced by the address the cluster DNS gives it (plain HTTP
/// to a name only).
async fn to_resolved_address(
    mut request: http::Request<WasiBody>,
    resolver: &TokioResolver,
) -> Result<http::Request<WasiBody>, HttpError> {
    let uri = request.uri().clone();
    let Some(host) = uri.host().filter(|h| h.parse::<IpAddr>().is_err() && !h.starts_with('[')) else {
        return Ok(request);
    };
    if uri.scheme_str() != Some("http") {
        return Ok(request);
    }
    let not_found = || HttpError::DnsError { rcode: Some("NXDOMAIN".into()), info_code: None };
    let found = resolver.lookup_ip(host).await.map_err(|e| {
        if e.is_nx_domain() || e.is_no_records_found() {
            not_found()
        } else {
            HttpError::DnsError { rcode: Some("SERVFAIL".into()), info_code: None }
        }
    })?;
    // Several addresses (a headless Service's pods): take turns, IPv4 first.
    let mut addresses: Vec<IpAddr> = found.iter().filter(IpAddr::is_ipv4).collect();
    if addresses.is_empty() {
        addresses = found.iter().collect();
    }
    let turn = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ip = *addresses.get(turn % addresses.len().max(1)).ok_or_else(not_found)?;
    let port = uri.port_u16().unwrap_or(80);
    let authority = match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    };
    let mut parts = uri.into_parts();
    parts.authority = Some(authority.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?);
    *request.uri_mut() = http::Uri::from_parts(parts).map_err(|_| HttpError::HttpRequestUriInvalid)?;
    Ok(request)
}
