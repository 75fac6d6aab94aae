//! The admin listener's connections: how many may be open, and how long a client may take.
//!
//! Data enters as TCP connections on `[admin] listen`. Each is admitted only under
//! `[admin] max_connections` in all and `max_connections_per_address` per source address (an
//! IPv6 address counted by its /64; never more than half the descriptors the SFTP budget leaves
//! to the rest of the server, so SFTP, the store and the intake always keep theirs). Over the
//! per-address cap it is closed at once, before a byte is read, and counted in a warning logged
//! at most once a second. At the cap in all, the oldest connection with no request in hand (no
//! whole request head yet, or idle after its answers) is closed to make room, so silent or
//! half-sent connections from a few addresses cannot shut everyone else out; only when every
//! connection is in a request is the newcomer refused. An admitted connection is served as
//! HTTP/1.1 by hyper with a timer, under `[admin] client_timeout_secs`:
//!
//! - a request's head (request line and headers) must be complete within that long of the
//!   connection opening or of the previous answer, so a silent or half-sent request, and an
//!   idle keep-alive connection, is closed then (hyper's `header_read_timeout`);
//! - a request body that sends nothing for that long, or falls that long behind a stream of
//!   [`MIN_BODY_RATE`] bytes a second (bytes sent ahead earn no credit), fails ([`TimedBody`]):
//!   the handler reading it answers with an error and the connection closes;
//! - an answer the client stops reading for that long ends the connection ([`StalledWrite`]).
//!
//! Requests leave to the axum router with the peer address as `ConnectInfo<SocketAddr>`.

mod deadlines;

use crate::config::ConfigHandle;
use crate::logs::EverySecond;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use bytes::Bytes;
use deadlines::{StalledWrite, TimedBody};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The slowest a request body may arrive on average, once `client_timeout_secs` has passed
/// (bytes a second): slower, it is cut off.
pub(crate) const MIN_BODY_RATE: u64 = 1024;

/// The most connections the admin listener may hold under the process's descriptor limit:
/// half of what the SFTP budget leaves (`crate::descriptors::DESCRIPTOR_RESERVE`, or three quarters
/// of a small limit).
pub(crate) fn connection_ceiling() -> usize {
    let limit = crate::descriptors::raise_descriptor_limit();
    let reserve = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(crate::descriptors::descriptor_budget(limit));
    (reserve / 2).max(1)
}

/// Open connections, in all and per source address (IPv6 by /64).
#[derive(Clone, Default)]
struct Admission {
    inner: Arc<Mutex<Counts>>,
}

/// One admitted connection, as the admission sees it.
struct Entry {
    group: IpAddr,
    /// Requests whose head has arrived and whose answer is not yet sent whole.
    busy: Arc<AtomicUsize>,
    /// Cancelled to close the connection for a newcomer.
    evict: CancellationToken,
}

#[derive(Default)]
struct Counts {
    /// Admitted connections by admission order (oldest first).
    open: BTreeMap<u64, Entry>,
    by_group: HashMap<IpAddr, usize>,
    next_id: u64,
}

impl Counts {
    fn forget(&mut self, id: u64) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        if let Some(n) = self.by_group.get_mut(&entry.group) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_group.remove(&entry.group);
            }
        }
        Some(entry)
    }

    /// Makes room for a newcomer from `newcomer` (an address or /64) by closing one connection
    /// of an address that holds at least two more than the newcomer's: the oldest of them with
    /// no request in hand (no whole head yet, or idle after an answer), else the oldest of the
    /// address holding the most. False when no address holds that many: the newcomer is refused.
    /// So a few addresses that keep connections open (half-sent heads, F3; or sign-ins whose
    /// body never comes, found by the re-read of s15) cannot shut others out, and cannot push
    /// out each other's places or a newcomer's just-admitted one.
    fn make_room(&mut self, newcomer: IpAddr) -> bool {
        let mine = self.by_group.get(&newcomer).copied().unwrap_or(0);
        let crowded = |c: &Counts, g: &IpAddr| c.by_group.get(g).copied().unwrap_or(0) >= mine + 2;
        let idle = (self.open.iter())
            .find(|(_, e)| e.busy.load(Ordering::SeqCst) == 0 && crowded(self, &e.group))
            .map(|(id, _)| *id);
        let largest = (self.by_group.iter().max_by_key(|(_, n)| **n))
            .map(|(g, _)| *g)
            .filter(|g| crowded(self, g));
        let oldest_of_largest = largest.and_then(|g| {
            (self.open.iter())
                .find(|(_, e)| e.group == g)
                .map(|(id, _)| *id)
        });
        let Some(entry) = idle.or(oldest_of_largest).and_then(|id| self.forget(id)) else {
            return false;
        };
        entry.evict.cancel();
        true
    }
}

/// An admitted connection's place; given back when dropped.
struct Ticket {
    admission: Admission,
    id: u64,
    busy: Arc<AtomicUsize>,
    evict: CancellationToken,
}

impl Admission {
    fn with<T>(&self, f: impl FnOnce(&mut Counts) -> T) -> T {
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// A place for a connection from `addr`, unless its address (or /64) holds `per_address`.
    /// When `total` are open, a connection of a more crowded address makes room (see
    /// [`Counts::make_room`]); else the newcomer is refused.
    fn admit(&self, addr: IpAddr, total: usize, per_address: usize) -> Option<Ticket> {
        let group = crate::sftp::admission::address_group(addr);
        let (busy, evict) = (Arc::new(AtomicUsize::new(0)), CancellationToken::new());
        let id = self.with(|c| {
            let mine = c.by_group.get(&group).copied().unwrap_or(0);
            if mine >= per_address.max(1) {
                return None;
            }
            if c.open.len() >= total.max(1) && !c.make_room(group) {
                return None;
            }
            let id = c.next_id;
            c.next_id += 1;
            let entry = Entry {
                group,
                busy: busy.clone(),
                evict: evict.clone(),
            };
            c.open.insert(id, entry);
            *c.by_group.entry(group).or_insert(0) += 1;
            Some(id)
        })?;
        Some(Ticket {
            admission: self.clone(),
            id,
            busy,
            evict,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let id = self.id;
        self.admission.with(|c| c.forget(id));
    }
}

/// Accepts connections on `listener` and serves `app` on them until `stop` turns true; then
/// stops accepting, lets each connection finish the request in hand, and returns when all are
/// closed. The connections are this future's tasks: dropping it (`RunningAdmin::stop` past its
/// bound) ends every one of them, with whatever request it had in hand.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    config: ConfigHandle,
    mut stop: watch::Receiver<bool>,
) {
    let ceiling = connection_ceiling();
    let admission = Admission::default();
    let mut connections = tokio::task::JoinSet::new();
    let mut refused = EverySecond::default();
    let mut failed = EverySecond::default();
    {
        let admin = &config.current().admin;
        tracing::info!(
            max_connections = admin.max_connections.min(ceiling),
            max_connections_per_address = admin.max_connections_per_address,
            client_timeout_secs = admin.client_timeout_secs,
            "admin listener limits"
        );
    }
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stopped(&mut stop) => break,
            // Finished connections are reaped as they end, so the set holds open ones only.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, most likely: wait a little instead of spinning.
                if let Some(n) = failed.hit() {
                    tracing::warn!(failures = n, "admin listener: accept failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let cfg = config.current();
        let total = cfg.admin.max_connections.min(ceiling);
        let per_address = cfg.admin.max_connections_per_address;
        let timeout = Duration::from_secs(cfg.admin.client_timeout_secs.max(1));
        drop(cfg);
        let Some(ticket) = admission.admit(peer.ip(), total, per_address) else {
            drop(stream);
            if let Some(n) = refused.hit() {
                tracing::warn!(
                    refused = n,
                    max_connections = total,
                    max_connections_per_address = per_address,
                    "admin connection refused: too many connections open (in all or from this \
                     address)"
                );
            }
            continue;
        };
        let (app, stop) = (app.clone(), stop.clone());
        connections.spawn(async move {
            serve_connection(stream, peer, app, timeout, stop, &ticket).await;
            drop(ticket);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Returns once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves one connection as HTTP/1.1 with the timeouts of the module doc.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
    ticket: &Ticket,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(StalledWrite::new(stream, timeout));
    let service = TowerToHyperService::new(PeerService {
        app,
        peer,
        timeout,
        busy: ticket.busy.clone(),
    });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        // A newcomer took its place (it had no request in hand): closed as it is.
        () = ticket.evict.cancelled() => {
            tracing::debug!(%peer, "admin connection closed for a newcomer: no request in hand");
            return;
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "admin connection ended: {e}");
    }
}

/// The router, with the peer address put into each request and its body timed; the
/// connection counts as busy from a request's head until its answer is sent whole.
#[derive(Clone)]
struct PeerService {
    app: Router,
    peer: SocketAddr,
    timeout: Duration,
    busy: Arc<AtomicUsize>,
}

/// One request in hand on a connection (see [`PeerService`]); dropped with the answer's body.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(busy: &Arc<AtomicUsize>) -> Busy {
        busy.fetch_add(1, Ordering::SeqCst);
        Busy(busy.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An answer's body that holds the connection's [`Busy`] until it is sent (or dropped).
struct BusyBody {
    inner: axum::body::Body,
    _busy: Busy,
}

impl HttpBody for BusyBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> tower_service::Service<Request<B>> for PeerService
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, std::convert::Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let timeout = self.timeout;
        let mut req = req.map(|body| TimedBody::new(body, timeout));
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let busy = Busy::new(&self.busy);
        let answer = tower_service::Service::call(&mut self.app, req);
        Box::pin(async move {
            let resp = answer.await?;
            Ok(resp.map(|inner| axum::body::Body::new(BusyBody { inner, _busy: busy })))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_caps_in_all_and_per_address() {
        let a = Admission::default();
        let ip = |last: u8| IpAddr::from([127, 0, 0, last]);
        let (t1, t2, t3) = (
            a.admit(ip(1), 4, 3).unwrap(),
            a.admit(ip(1), 4, 3).unwrap(),
            a.admit(ip(1), 4, 3).unwrap(),
        );
        assert!(a.admit(ip(1), 4, 3).is_none(), "per address");
        let t4 = a.admit(ip(2), 4, 3).unwrap();
        // Full in all: the oldest connection without a request in hand, of an address holding
        // two more than the newcomer's, gives its place.
        let t1_busy = Busy::new(&t1.busy);
        let t5 = a.admit(ip(2), 4, 3).unwrap();
        assert!(!t1.evict.is_cancelled(), "t1 has a request in hand");
        assert!(t2.evict.is_cancelled(), "the oldest idle one was evicted");
        // Every one busy: the oldest of the address holding the most, if it holds two more
        // than the newcomer's; an address as crowded as the others is refused.
        let (_b3, _b4, _b5) = (
            Busy::new(&t3.busy),
            Busy::new(&t4.busy),
            Busy::new(&t5.busy),
        );
        assert!(
            a.admit(ip(1), 4, 3).is_none(),
            "no address holds two more than 1's"
        );
        let t6 = a.admit(ip(3), 4, 3).unwrap();
        assert!(
            t1.evict.is_cancelled() || t4.evict.is_cancelled(),
            "the oldest of a crowded address made room"
        );
        // A just-admitted connection (no head yet) is not pushed out by an as crowded address.
        assert!(a.admit(ip(2), 4, 3).is_none() || !t6.evict.is_cancelled());
        drop(t1_busy);
        // One IPv6 /64 is one address.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let b = Admission::default();
        let _first = b.admit(v6("2001:db8:0:1::1"), 10, 1).unwrap();
        assert!(b.admit(v6("2001:db8:0:1::2"), 10, 1).is_none());
        assert!(b.admit(v6("2001:db8:0:2::1"), 10, 1).is_some());
    }
}
