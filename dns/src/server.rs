//! The DNS server: hickory's UDP and TCP serving around a handler that answers from the
//! [`Zone`] and forwards every other name upstream.
//!
//! Answers from the zone are authoritative, with [`TTL`]; NXDOMAIN and NODATA carry the zone's SOA
//! so resolvers cache the absence only briefly. Until the zone has been read in full, names under
//! its domain get SERVFAIL (clients retry) rather than a wrong NXDOMAIN. UDP answers are cut to the client's EDNS size (512
//! bytes without EDNS) with the TC bit set, and clients ask again over TCP. Without an upstream
//! (or for names it cannot resolve) other names are refused or get the upstream's answer.

use std::iter;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, CNAME, PTR, SOA, SRV};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::zone::{Answer, Data, Kind, Zone};

/// TTL of the zone's records, as CoreDNS' kubernetes plugin answers (its default is 5 s):
/// changes reach clients that cache within this long.
pub const TTL: u32 = 5;
/// How long an idle TCP connection is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The zone, shared between the server and what keeps it current.
pub type SharedZone = Arc<RwLock<Zone>>;

/// Answers queries from the zone, forwarding the rest.
pub struct Handler {
    zone: SharedZone,
    upstream: Option<TokioResolver>,
}

impl Handler {
    pub fn new(zone: SharedZone, upstream: Option<TokioResolver>) -> Self {
        Self { zone, upstream }
    }
}

/// A running server: its address, and a token that stops it.
pub struct Running {
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl Running {
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Serves `handler` on UDP and TCP at `addr` (port 0 picks one free for both) until `cancel`.
pub async fn serve(addr: SocketAddr, handler: Handler, cancel: CancellationToken) -> std::io::Result<Running> {
    let (udp, tcp) = bind_both(addr).await?;
    let addr = udp.local_addr()?;
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, 32);
    let stop = server.shutdown_token().clone();
    let stopping = stop.clone();
    tokio::spawn(async move {
        cancel.cancelled().await;
        stopping.cancel();
    });
    tokio::spawn(async move {
        if let Err(e) = server.block_until_done().await {
            tracing::warn!(error = %e, "the DNS server stopped");
        }
    });
    Ok(Running { addr, stop })
}

/// A UDP socket and a TCP listener on the same address; for port 0, a port free for both.
async fn bind_both(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        return Ok((UdpSocket::bind(addr).await?, TcpListener::bind(addr).await?));
    }
    let mut last = None;
    for _ in 0..32 {
        let udp = UdpSocket::bind(addr).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port free for both UDP and TCP")))
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut handle: R) -> ResponseInfo {
        // Answer within the client's EDNS size, and say ours.
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().max(512)).set_version(0);
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        if request.metadata.message_type != MessageType::Query || request.metadata.op_code != OpCode::Query {
            return send(&mut handle, request, builder.error_msg(&request.metadata, ResponseCode::NotImp)).await;
        }
        let Ok(info) = request.request_info() else {
            return send(&mut handle, request, builder.error_msg(&request.metadata, ResponseCode::FormErr)).await;
        };
        let name = info.query.original().name().clone();
        let qtype = info.query.query_type();
        let answer = if info.query.query_class() == DNSClass::IN {
            let zone = self.zone.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            let text = name.to_ascii();
            // Not read in full yet: "no such name" could be wrong, and would be cached.
            let early = !zone.is_complete() && zone.covers(&text);
            (!early).then(|| (zone.answer(&text, kind_of(qtype)), zone.domain().to_string()))
        } else {
            Some((Answer::NotOurs, String::new()))
        };
        let Some(answer) = answer else {
            return send(&mut handle, request, builder.error_msg(&request.metadata, ResponseCode::ServFail)).await;
        };
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = self.upstream.is_some();
        match answer {
            (Answer::Records(records), _) => {
                meta.authoritative = true;
                let records: Vec<Record> = records.iter().filter_map(|(owner, data)| record(owner, data)).collect();
                let response = builder.build(meta, records.iter(), iter::empty(), iter::empty(), iter::empty());
                send(&mut handle, request, response).await
            }
            (negative @ (Answer::NoData | Answer::NxDomain), domain) => {
                meta.authoritative = true;
                if negative == Answer::NxDomain {
                    meta.response_code = ResponseCode::NXDomain;
                }
                let soa = soa(&domain);
                let response = builder.build(meta, iter::empty(), iter::empty(), soa.iter(), iter::empty());
                send(&mut handle, request, response).await
            }
            (Answer::NotOurs, _) => self.forward(request, builder, meta, name, qtype, &mut handle).await,
        }
    }
}

impl Handler {
    /// Asks the upstream resolver, answering with what it says (REFUSED without one).
    async fn forward<R: ResponseHandler>(
        &self,
        request: &Request,
        builder: MessageResponseBuilder<'_>,
        mut meta: Metadata,
        name: Name,
        qtype: RecordType,
        handle: &mut R,
    ) -> ResponseInfo {
        let Some(upstream) = &self.upstream else {
            return send(handle, request, builder.error_msg(&request.metadata, ResponseCode::Refused)).await;
        };
        match upstream.lookup(name, qtype).await {
            Ok(lookup) => {
                let response = builder.build(
                    meta,
                    lookup.answers().iter(),
                    lookup.authorities().iter(),
                    iter::empty(),
                    lookup.additionals().iter(),
                );
                send(handle, request, response).await
            }
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => {
                if e.is_nx_domain() {
                    meta.response_code = ResponseCode::NXDomain;
                }
                let soa: Option<Record> = e.into_soa().map(|s| s.into_record_of_rdata());
                let response = builder.build(meta, iter::empty(), iter::empty(), soa.iter(), iter::empty());
                send(handle, request, response).await
            }
            Err(e) => {
                tracing::debug!(error = %e, "upstream DNS lookup failed");
                meta.response_code = ResponseCode::ServFail;
                send(handle, request, builder.build_no_records(meta)).await
            }
        }
    }
}

fn kind_of(qtype: RecordType) -> Kind {
    match qtype {
        RecordType::A => Kind::A,
        RecordType::AAAA => Kind::Aaaa,
        RecordType::CNAME => Kind::Cname,
        RecordType::SRV => Kind::Srv,
        RecordType::PTR => Kind::Ptr,
        _ => Kind::Other,
    }
}

fn name(text: &str) -> Option<Name> {
    Name::from_ascii(text).ok()
}

/// One zone record as hickory's.
fn record(owner: &str, data: &Data) -> Option<Record> {
    let rdata = match data {
        Data::A(ip) => RData::A(A(*ip)),
        Data::Cname(target) => RData::CNAME(CNAME(name(target)?)),
        Data::Srv { priority, weight, port, target } => RData::SRV(SRV::new(*priority, *weight, *port, name(target)?)),
        Data::Ptr(target) => RData::PTR(PTR(name(target)?)),
    };
    Some(Record::from_rdata(name(owner)?, TTL, rdata))
}

/// The zone's SOA, for negative answers.
fn soa(domain: &str) -> Option<Record> {
    let soa =
        SOA::new(name(&format!("ns.dns.{domain}"))?, name(&format!("hostmaster.{domain}"))?, 1, 7200, 1800, 86400, TTL);
    Some(Record::from_rdata(name(domain)?, TTL, RData::SOA(soa)))
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    request: &Request,
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "sending a DNS response failed");
            let mut metadata = Metadata::new(request.metadata.id, MessageType::Response, request.metadata.op_code);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
        }
    }
}

/// The upstream resolver from the host's `/etc/resolv.conf` (its nameservers only: the search
/// list is the client's business), leaving out `own` so the server never asks itself.
pub fn system_upstream(own: SocketAddr) -> Result<Option<TokioResolver>, String> {
    use hickory_resolver::Resolver;
    use hickory_resolver::config::{ResolveHosts, ResolverConfig, ResolverOpts};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    let (system, system_opts) =
        hickory_resolver::system_conf::read_system_conf().map_err(|e| format!("reading /etc/resolv.conf: {e}"))?;
    let servers: Vec<_> =
        system.name_servers().iter().filter(|s| s.ip != own.ip() || own.port() != 53).cloned().collect();
    if servers.is_empty() {
        return Ok(None);
    }
    let mut opts = ResolverOpts::default();
    opts.timeout = system_opts.timeout;
    opts.attempts = system_opts.attempts;
    opts.use_hosts_file = ResolveHosts::Never;
    let config = ResolverConfig::from_name_servers(servers);
    let resolver = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| format!("building the upstream resolver: {e}"))?;
    Ok(Some(resolver))
}

/// An upstream resolver asking the nameservers at `servers` (UDP, then TCP on truncation).
pub fn upstream_at(servers: &[SocketAddr]) -> Result<TokioResolver, String> {
    use hickory_resolver::Resolver;
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    let name_servers = servers
        .iter()
        .map(|addr| {
            let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()].map(|mut c| {
                c.port = addr.port();
                c
            });
            NameServerConfig::new(addr.ip(), true, connections.to_vec())
        })
        .collect();
    let mut opts = ResolverOpts::default();
    opts.use_hosts_file = ResolveHosts::Never;
    Resolver::builder_with_config(ResolverConfig::from_name_servers(name_servers), TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| format!("building the upstream resolver: {e}"))
}
