//! UDP for Services: datagrams from one client address form a session bound to one backend
//! (chosen as TCP connections are), relayed through a socket of the session's own so replies
//! find their way back; a session idle for [`SESSION_IDLE`] ends. At most [`MAX_SESSIONS`] per
//! listener: datagrams of new clients beyond that are dropped until sessions end.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::routes::{Backend, Route};
use super::{Balance, candidates, remember};

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

/// One client's session: the socket connected to its backend, and when it last carried a datagram.
struct Session {
    upstream: Arc<UdpSocket>,
    last: Arc<Mutex<Instant>>,
}

/// Relays datagrams between clients of `listener` and the route's backends until `stop`.
pub(super) async fn relay(listener: UdpSocket, route: Arc<RwLock<Route>>, stop: CancellationToken) {
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
                let Some((upstream, backend)) = open(&current, &balance, client.ip()).await else { continue };
                remember(&current, &balance, client.ip(), backend);
                let upstream = Arc::new(upstream);
                let last = Arc::new(Mutex::new(Instant::now()));
                sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(client, Session { upstream: upstream.clone(), last: last.clone() });
                tokio::spawn(replies(
                    listener.clone(),
                    upstream.clone(),
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

/// A socket connected to the first backend that takes one (UDP cannot tell refusal at connect,
/// so this is the first in order whose address can be connected to).
/// Endpoints on other hosts are passed over: datagrams do not go through the node tunnel.
async fn open(route: &Route, balance: &Balance, client: IpAddr) -> Option<(UdpSocket, Backend)> {
    for backend in candidates(route, balance, client).into_iter().filter(|b| b.via.is_none()) {
        let local: SocketAddr = if backend.addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let Ok(socket) = UdpSocket::bind(local).await else { continue };
        if socket.connect(backend.addr).await.is_ok() {
            return Some((socket, backend));
        }
    }
    None
}

/// Sends the backend's replies of one session back to its client, and ends the session once idle.
async fn replies(
    listener: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
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
            received = upstream.recv(&mut buffer) => match received {
                Ok(n) => {
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                    let _ = listener.send_to(&buffer[..n], client).await;
                }
                // A refused datagram (ICMP port unreachable) or a closed socket: the session ends.
                Err(_) => break,
            },
        }
    }
    sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&client);
}
