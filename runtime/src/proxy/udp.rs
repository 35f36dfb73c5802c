//! UDP for Services: datagrams from one client address form a session bound to one backend
//! (chosen as TCP connections are), relayed through a socket of the session's own so replies
//! find their way back; a session idle for [`SESSION_IDLE`] ends. At most [`MAX_SESSIONS`] per
//! listener: datagrams of new clients beyond that are dropped until sessions end. A backend on
//! another host is reached through its node's tunnel, one tunnel connection per session, with the
//! datagrams framed on it (see [`super::tunnel`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::io::AsyncRead;
use tokio::net::UdpSocket;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::routes::{Backend, Route};
use super::tunnel::{self, Transport};
use super::{Balance, CONNECT_TIMEOUT, candidates, remember};

/// How long a UDP session lives without a datagram either way (as conntrack's default for
/// replied UDP streams is of this order).
pub const SESSION_IDLE: Duration = Duration::from_secs(30);
/// Client sessions one UDP listener relays at once.
pub const MAX_SESSIONS: usize = 4096;
/// The largest datagram relayed.
const DATAGRAM: usize = 65_535;

/// A UDP socket at `addr`, shared with other processes' (`SO_REUSEPORT`).
pub(super) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Datagrams queued for one tunnel before more are dropped (as a full socket buffer drops them).
const TUNNEL_QUEUE: usize = 256;

/// Where a session's datagrams go: a socket connected to a backend on this host, or the queue of
/// the task writing them into the tunnel to one on another host (so a stalled tunnel never holds
/// up the listener's other clients).
#[derive(Clone)]
enum Upstream {
    Socket(Arc<UdpSocket>),
    Tunnel(mpsc::Sender<Vec<u8>>),
}

impl Upstream {
    async fn send(&self, datagram: &[u8]) -> std::io::Result<()> {
        match self {
            Upstream::Socket(socket) => socket.send(datagram).await.map(drop),
            Upstream::Tunnel(queue) => {
                queue.try_send(datagram.to_vec()).map_err(|_| std::io::Error::other("the tunnel is full or closed"))
            }
        }
    }
}

/// Where a session's replies come from: the socket, or the task reading them off the tunnel
/// (a channel, so waiting for a reply can be given up without losing half a frame).
enum Downstream {
    Socket(Arc<UdpSocket>),
    Tunnel(mpsc::Receiver<Vec<u8>>),
}

impl Downstream {
    /// The next reply; `None` when the backend refused or the tunnel closed.
    async fn recv(&mut self, buffer: &mut [u8]) -> Option<Vec<u8>> {
        match self {
            Downstream::Socket(socket) => socket.recv(buffer).await.ok().map(|n| buffer[..n].to_vec()),
            Downstream::Tunnel(replies) => replies.recv().await,
        }
    }
}

/// Starts the tasks that write queued datagrams into a tunnel and read its replies out; both end
/// when the tunnel closes or the session (holding the queue's sender) ends.
fn through_tunnel(read: impl AsyncRead + Send + Unpin + 'static, mut write: OwnedWriteHalf) -> (Upstream, Downstream) {
    let (queue, mut queued) = mpsc::channel::<Vec<u8>>(TUNNEL_QUEUE);
    let (replied, replies) = mpsc::channel::<Vec<u8>>(TUNNEL_QUEUE);
    tokio::spawn(async move {
        while let Some(datagram) = queued.recv().await {
            if tunnel::write_frame(&mut write, &datagram).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut read = read;
        while let Some(reply) = tunnel::read_frame(&mut read).await {
            if replied.send(reply).await.is_err() {
                break;
            }
        }
    });
    (Upstream::Tunnel(queue), Downstream::Tunnel(replies))
}

/// One client's session: where its datagrams go, and when it last carried one.
struct Session {
    upstream: Upstream,
    last: Arc<Mutex<Instant>>,
}

/// Relays datagrams between clients of `listener` and the route's backends until `stop`; `token`
/// opens other nodes' tunnels.
pub(super) async fn relay(listener: UdpSocket, route: Arc<RwLock<Route>>, token: Arc<str>, stop: CancellationToken) {
    let listener = Arc::new(listener);
    let balance = Balance::default();
    let sessions: Arc<Mutex<HashMap<SocketAddr, Session>>> = Arc::default();
    let mut buffer = vec![0u8; DATAGRAM];
    loop {
        let (n, client) = tokio::select! {
            _ = stop.cancelled() => return,
            received = listener.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(e) => {
                    tracing::debug!(error = %e, "receiving a Service datagram failed");
                    continue;
                }
            },
        };
        let existing = {
            let sessions = sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.get(&client).map(|s| (s.upstream.clone(), s.last.clone()))
        };
        let (upstream, last) = match existing {
            Some(session) => session,
            None => {
                if sessions.lock().unwrap_or_else(|p| p.into_inner()).len() >= MAX_SESSIONS {
                    continue;
                }
                let current = route.read().unwrap_or_else(|p| p.into_inner()).clone();
                let Some((upstream, downstream, backend)) = open(&current, &balance, client.ip(), &token).await else {
                    continue;
                };
                remember(&current, &balance, client.ip(), backend);
                let last = Arc::new(Mutex::new(Instant::now()));
                sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(client, Session { upstream: upstream.clone(), last: last.clone() });
                tokio::spawn(replies(
                    listener.clone(),
                    downstream,
                    client,
                    last.clone(),
                    sessions.clone(),
                    stop.clone(),
                ));
                (upstream, last)
            }
        };
        *last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        if let Err(e) = upstream.send(&buffer[..n]).await {
            tracing::debug!(%client, error = %e, "relaying a datagram to its endpoint failed");
        }
    }
}

/// The way to the first backend that takes the session: a socket connected to it (UDP cannot
/// tell refusal at connect, so this is the first local one whose address can be connected to),
/// or a tunnel its node opened.
async fn open(
    route: &Route,
    balance: &Balance,
    client: IpAddr,
    token: &str,
) -> Option<(Upstream, Downstream, Backend)> {
    for backend in candidates(route, balance, client) {
        if let Some(via) = backend.via {
            // Bounded as a TCP dial is: the relay waits on this, so a host that is gone must not
            // hold up the listener's other clients for the kernel's SYN timeout.
            let dialled = tokio::time::timeout(CONNECT_TIMEOUT, tunnel::dial(via, backend.addr, token, Transport::Udp))
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
            match dialled {
                Ok((stream, early)) => {
                    let (read, write) = stream.into_split();
                    let read = tokio::io::AsyncReadExt::chain(std::io::Cursor::new(early), read);
                    let (upstream, downstream) = through_tunnel(read, write);
                    return Some((upstream, downstream, backend));
                }
                Err(e) => {
                    tracing::debug!(backend = %backend.addr, %via, error = %e, "no UDP tunnel; trying the next endpoint");
                    continue;
                }
            }
        }
        let local: SocketAddr = if backend.addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let Ok(socket) = UdpSocket::bind(local).await else { continue };
        if socket.connect(backend.addr).await.is_ok() {
            let socket = Arc::new(socket);
            return Some((Upstream::Socket(socket.clone()), Downstream::Socket(socket), backend));
        }
    }
    None
}

/// Sends the backend's replies of one session back to its client, and ends the session once idle.
async fn replies(
    listener: Arc<UdpSocket>,
    mut downstream: Downstream,
    client: SocketAddr,
    last: Arc<Mutex<Instant>>,
    sessions: Arc<Mutex<HashMap<SocketAddr, Session>>>,
    stop: CancellationToken,
) {
    let mut buffer = vec![0u8; DATAGRAM];
    loop {
        let idle_for = last.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
        if idle_for >= SESSION_IDLE {
            break;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(SESSION_IDLE - idle_for) => continue,
            received = downstream.recv(&mut buffer) => match received {
                Some(reply) => {
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                    let _ = listener.send_to(&reply, client).await;
                }
                // A refused datagram (ICMP port unreachable), a closed socket or tunnel: the
                // session ends.
                None => break,
            },
        }
    }
    sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&client);
}
