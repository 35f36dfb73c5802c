//! The node's L4 proxy for Services: it listens on every Service's `ClusterIP:port` and on
//! `NODE_IP:nodePort` for NodePort and LoadBalancer Services, and splices each TCP connection to
//! a ready endpoint ([`udp`] relays datagrams per client the same way). [`routes`] says where
//! connections may go; this module keeps the listeners in step with it and carries the bytes.
//!
//! - **Policy**: round robin over a port's ready endpoints, per listener. An endpoint that refuses
//!   or does not answer within [`CONNECT_TIMEOUT`] is skipped for the next one; a connection no
//!   endpoint takes is closed. With `sessionAffinity: ClientIP` a client goes back to the endpoint
//!   it last reached while that is still ready, for the affinity timeout.
//! - **Changes** (from watches of Services, EndpointSlices, Nodes and other nodes' pods) swap a
//!   listener's route in place, so established connections are untouched; a listener whose
//!   Service went stops accepting, and its connections finish on their own (draining). Endpoints
//!   that leave keep their established connections the same way.
//! - **Bounds**: at most [`MAX_CONNECTIONS`] proxied connections per node at once (more wait in
//!   the accept queue), and a connection idle in both directions for [`IDLE_TIMEOUT`] is closed.
//! - Listeners set `SO_REUSEPORT`: several agents on one host (each pod IP and ClusterIP is a
//!   loopback address) share them, and the kernel spreads connections over their proxies.
//! - Endpoints on this host (pod IPs of this host's agents are local loopback addresses) are
//!   dialled directly; endpoints on other hosts through their node's [`tunnel`] (UDP sessions
//!   too, framed on it).

pub mod routes;
pub mod tunnel;
mod udp;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use routes::{Backend, Listen, Me, Protocol, Route, Routes};

/// Watch events queued for the proxy's loop at most.
const CHANGE_QUEUE: usize = 1024;
/// How long a connection to one endpoint may take before the next is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A proxied connection with no bytes either way for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Proxied connections open at once on one node.
pub const MAX_CONNECTIONS: usize = 16_384;
/// How soon a listener that could not be opened is tried again.
const BIND_RETRY: Duration = Duration::from_secs(2);

/// One listener: its current route (swapped in place on changes) and its stop switch.
struct Listener {
    route: Arc<RwLock<Route>>,
    stop: CancellationToken,
}

/// Per-route connection state: the round-robin position and the ClientIP affinities.
#[derive(Default)]
struct Balance {
    next: AtomicUsize,
    affinity: Mutex<HashMap<IpAddr, (Backend, Instant)>>,
}

/// Runs the proxy for node `me` until `cancel`; `token` opens other nodes' tunnels.
pub async fn run(client: kube::Client, me: Me, token: String, cancel: CancellationToken) {
    let token: Arc<str> = token.into();
    // Bounded: a burst of watch events waits in the watches (and the API server's buffers) while
    // the table is being worked out, rather than piling up here.
    let (changes, mut changed) = mpsc::channel::<Change>(CHANGE_QUEUE);
    let (service, slice): (fn(_) -> _, fn(_) -> _) = (|e| Change::Service(Box::new(e)), |e| Change::Slice(Box::new(e)));
    let node: fn(_) -> _ = |e| Change::Node(Box::new(e));
    let pod: fn(_) -> _ = |e| Change::Pod(Box::new(e));
    let all = watcher::Config::default;
    // Only pods on other nodes that have an address: the server filters, so this node's own pods
    // (its agent watches those) cost the proxy nothing.
    let remote_pods = all().fields(&format!("spec.nodeName!={},status.podIP!=", me.node_name));
    tokio::spawn(follow::<Service>(Api::all(client.clone()), all(), changes.clone(), service, cancel.clone()));
    tokio::spawn(follow::<Node>(Api::all(client.clone()), all(), changes.clone(), node, cancel.clone()));
    tokio::spawn(follow::<Pod>(Api::all(client.clone()), remote_pods, changes.clone(), pod, cancel.clone()));
    tokio::spawn(follow::<EndpointSlice>(Api::all(client), all(), changes, slice, cancel.clone()));
    let mut routes = Routes::default();
    let mut feed = Feed::default();
    let mut listeners: HashMap<Listen, Listener> = HashMap::new();
    let room = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Set when a listener could not be opened (its address not yet on this host, say).
    let mut retry = false;
    loop {
        let change = tokio::select! {
            _ = cancel.cancelled() => break,
            change = changed.recv() => match change { Some(c) => Some(c), None => break },
            _ = tokio::time::sleep(BIND_RETRY), if retry => None,
        };
        let mut changed_any = retry;
        retry = false;
        if let Some(change) = change {
            changed_any |= feed.apply(change, &mut routes);
        }
        // Take in the rest of a burst before working out the table again.
        while let Ok(change) = changed.try_recv() {
            changed_any |= feed.apply(change, &mut routes);
        }
        if !changed_any || feed.incomplete() {
            continue;
        }
        let table = routes.table(&me);
        listeners.retain(|addr, listener| {
            let keep = table.contains_key(addr);
            if !keep {
                listener.stop.cancel();
            }
            keep
        });
        for (listen_at, route) in table {
            if let Some(listener) = listeners.get(&listen_at) {
                *listener.route.write().unwrap_or_else(|p| p.into_inner()) = route;
                continue;
            }
            let (protocol, addr) = listen_at;
            let route = Arc::new(RwLock::new(route));
            let stop = cancel.child_token();
            let started = match protocol {
                Protocol::Tcp => listen(addr).map(|socket| {
                    tokio::spawn(accept(socket, route.clone(), room.clone(), token.clone(), stop.clone()));
                }),
                Protocol::Udp => udp::bind(addr).map(|socket| {
                    tokio::spawn(udp::relay(socket, route.clone(), token.clone(), stop.clone()));
                }),
            };
            match started {
                Ok(()) => {
                    listeners.insert(listen_at, Listener { route, stop });
                }
                Err(e) => {
                    tracing::warn!(%addr, ?protocol, error = %e, "the Service proxy cannot listen here; trying again");
                    retry = true;
                }
            }
        }
    }
    for listener in listeners.values() {
        listener.stop.cancel();
    }
}

/// A change the watches saw.
enum Change {
    Service(Box<Event<Service>>),
    Slice(Box<Event<EndpointSlice>>),
    Node(Box<Event<Node>>),
    Pod(Box<Event<Pod>>),
}

/// Full reads in progress: their objects replace a kind at once when complete.
#[derive(Default)]
struct Feed {
    services: Option<Vec<Service>>,
    slices: Option<Vec<EndpointSlice>>,
    nodes: Option<Vec<Node>>,
    pods: Option<Vec<Pod>>,
    /// Which kinds have been read in full once (services, slices, nodes, pods).
    read: [bool; 4],
}

impl Feed {
    /// Whether the routes are not yet whole: a kind never read in full, or being read again (half
    /// a read would look like Services gone, or like other hosts' pods being local).
    fn incomplete(&self) -> bool {
        self.read.contains(&false)
            || self.services.is_some()
            || self.slices.is_some()
            || self.nodes.is_some()
            || self.pods.is_some()
    }

    /// Takes in one change; says whether the routes may have changed (a Node's heartbeat or a
    /// pod's status update does not change them).
    fn apply(&mut self, change: Change, routes: &mut Routes) -> bool {
        let [services, slices, nodes, pods] = &mut self.read;
        match change {
            Change::Service(event) => feed(
                *event,
                (&mut self.services, services),
                routes,
                Routes::replace_services,
                |r, s| {
                    r.put_service(s);
                    true
                },
                |r, s| {
                    r.remove_service(s);
                    true
                },
            ),
            Change::Slice(event) => feed(
                *event,
                (&mut self.slices, slices),
                routes,
                Routes::replace_slices,
                |r, s| {
                    r.put_slice(s);
                    true
                },
                |r, s| {
                    r.remove_slice(s);
                    true
                },
            ),
            Change::Node(event) => feed(
                *event,
                (&mut self.nodes, nodes),
                routes,
                Routes::replace_nodes,
                |r, n| r.put_node(&n),
                Routes::remove_node,
            ),
            Change::Pod(event) => feed(
                *event,
                (&mut self.pods, pods),
                routes,
                Routes::replace_pods,
                |r, p| r.put_pod(&p),
                Routes::remove_pod,
            ),
        }
    }
}

/// One watch event of a kind into `routes`: a full read is gathered in `pending` and replaces
/// the kind when done (then `read` is set); single changes go in at once. Says whether the
/// routes may have changed.
fn feed<T>(
    event: Event<T>,
    (pending, read): (&mut Option<Vec<T>>, &mut bool),
    routes: &mut Routes,
    replace: fn(&mut Routes, Vec<T>),
    put: fn(&mut Routes, T) -> bool,
    remove: fn(&mut Routes, &T) -> bool,
) -> bool {
    match event {
        Event::Init => *pending = Some(Vec::new()),
        Event::InitApply(object) => pending.get_or_insert_with(Vec::new).push(object),
        Event::InitDone => {
            *read = true;
            replace(routes, pending.take().unwrap_or_default());
        }
        Event::Apply(object) => return put(routes, object),
        Event::Delete(object) => return remove(routes, &object),
    }
    true
}

/// Follows every object of one kind into `changes` until `cancel`.
async fn follow<K>(
    api: Api<K>,
    config: watcher::Config,
    changes: mpsc::Sender<Change>,
    wrap: fn(Event<K>) -> Change,
    cancel: CancellationToken,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let mut events = watcher::watcher(api, config).boxed();
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            Some(Ok(event)) => {
                if changes.send(wrap(event)).await.is_err() {
                    return;
                }
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "the Service proxy's watch failed; it lists again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None => return,
        }
    }
}

/// A listening socket at `addr`, shared with other processes' (`SO_REUSEPORT`).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept(
    listener: TcpListener,
    route: Arc<RwLock<Route>>,
    room: Arc<Semaphore>,
    token: Arc<str>,
    stop: CancellationToken,
) {
    let balance = Arc::new(Balance::default());
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            permit = room.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
        };
        let (client, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: do not spin on it.
                    tracing::debug!(error = %e, "accepting a Service connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let current = route.read().unwrap_or_else(|p| p.into_inner()).clone();
        let balance = balance.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Some((backend, early)) = connect(&current, &balance, peer.ip(), &token).await else {
                // Refused, as when nothing listens: a reset, not a clean close.
                tracing::debug!(service = %current.name, "no endpoint took the connection");
                reset(&client);
                return;
            };
            let mut client = client;
            if !early.is_empty() && tokio::io::AsyncWriteExt::write_all(&mut client, &early).await.is_err() {
                return;
            }
            splice(client, backend, IDLE_TIMEOUT).await;
        });
    }
}

/// The order in which to try the route's backends for `client`: its affine one first (while
/// ready), then round robin.
fn candidates(route: &Route, balance: &Balance, client: IpAddr) -> Vec<Backend> {
    let backends = &route.backends;
    if backends.is_empty() {
        return Vec::new();
    }
    let now = Instant::now();
    let sticky = route.affinity.and_then(|timeout| {
        let mut affinity = balance.affinity.lock().unwrap_or_else(|p| p.into_inner());
        affinity.retain(|_, (_, at)| now.duration_since(*at) < timeout);
        affinity.get(&client).map(|(backend, _)| *backend).filter(|b| backends.contains(b))
    });
    let start = balance.next.fetch_add(1, Ordering::Relaxed);
    sticky.into_iter().chain((0..backends.len()).map(|i| backends[(start + i) % backends.len()])).collect()
}

/// Notes that `client` reached `backend`, for ClientIP affinity.
fn remember(route: &Route, balance: &Balance, client: IpAddr, backend: Backend) {
    if route.affinity.is_some() {
        balance.affinity.lock().unwrap_or_else(|p| p.into_inner()).insert(client, (backend, Instant::now()));
    }
}

/// A connection to one of the route's backends (the client's affine one first, then round
/// robin), with the bytes it sent while a tunnel opened.
async fn connect(route: &Route, balance: &Balance, client: IpAddr, token: &str) -> Option<(TcpStream, Bytes)> {
    for backend in candidates(route, balance, client) {
        let dial = async {
            match backend.via {
                None => TcpStream::connect(backend.addr).await.map(|s| (s, Bytes::new())),
                Some(via) => tunnel::dial(via, backend.addr, token, tunnel::Transport::Tcp).await,
            }
        };
        let addr = backend.addr;
        match tokio::time::timeout(CONNECT_TIMEOUT, dial).await {
            Ok(Ok((stream, early))) => {
                remember(route, balance, client, backend);
                let _ = stream.set_nodelay(true);
                return Some((stream, early));
            }
            Ok(Err(e)) => tracing::debug!(%addr, via = ?backend.via, error = %e, "endpoint refused; trying the next"),
            Err(_) => tracing::debug!(%addr, via = ?backend.via, "endpoint did not answer in time; trying the next"),
        }
    }
    None
}

/// Copies both ways until both sides are done, or nothing moved for `idle`. A side that fails
/// (a reset) resets the other too, so neither end mistakes a broken stream for a finished one.
async fn splice(mut client: TcpStream, mut backend: TcpStream, idle: Duration) {
    let _ = client.set_nodelay(true);
    let broken = {
        let (mut client_read, mut client_write) = client.split();
        let (mut backend_read, mut backend_write) = backend.split();
        let last = Mutex::new(Instant::now());
        let up = pump(&mut client_read, &mut backend_write, &last);
        let down = pump(&mut backend_read, &mut client_write, &last);
        let watchdog = async {
            loop {
                let since = last.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
                if since >= idle {
                    return;
                }
                tokio::time::sleep(idle - since).await;
            }
        };
        tokio::select! {
            done = futures::future::try_join(up, down) => done.is_err(),
            _ = watchdog => {
                tracing::debug!("closing an idle Service connection");
                false
            }
        }
    };
    if broken {
        reset(&client);
        reset(&backend);
    }
}

/// Makes closing `stream` send a reset (linger zero, which never blocks), not a clean FIN.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Copies `from` to `to` until EOF, then shuts `to`'s writing side (a half close, passed on);
/// an error on either side is returned.
async fn pump<R, W>(from: &mut R, to: &mut W, last: &Mutex<Instant>) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        to.write_all(&buffer[..n]).await?;
        *last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
    to.shutdown().await
}
