//! Who may hold a socket: the connection caps of the SSH listener, and a kill switch per
//! connection.
//!
//! A freshly accepted TCP connection enters [`Admission::admit`] with its source address and
//! leaves either refused (the caller closes it at once, nothing is read or written) or holding a
//! [`ConnectionTicket`]: one of the `max_connections` slots (the descriptor limit minus a reserve
//! for the listener, admin API, store and intake) and, until login, one of the
//! `max_unauthenticated` slots and one of its address's `max_unauthenticated_per_address`.
//! Logging in (within the tenant's session limit) gives the unauthenticated slots back
//! ([`ConnectionTicket::authenticated`]); dropping the ticket gives everything back.
//!
//! Addresses are counted by [`address_group`]: an IPv4 address alone, an IPv6 address by its
//! /64 (one client commonly holds a whole /64), an IPv4-mapped IPv6 address as its IPv4.
//!
//! When all `max_unauthenticated` slots are taken, a newcomer is never simply refused: it takes
//! the slot of a waiting connection, which is killed ([`Counts::evict_for`]). The victim is the
//! oldest waiting connection of the busiest group if that group waits with at least two more
//! connections than the newcomer's; otherwise the oldest waiting connection of any group that
//! waits with at least as many as the newcomer's. So silent connections, from one group or
//! spread one per address over many, cannot keep everyone else out: a real login needs its slot
//! for well under a second, and holding a slot longer means out-living every newer connection.
//! (OpenSSH's `MaxStartups` drops newcomers at random instead; dropping the oldest means a flood
//! must outpace logins to displace them, rather than turning refusals into a lottery for
//! everyone.)
//!
//! [`Killable`] wraps the socket so that the listener can end a connection from outside russh
//! (tenant removed by a reload, slot taken by a newcomer): [`KillSwitch::kill`] makes every
//! pending and later read or write fail, so russh's session task ends and drops the socket. The
//! switch also records when a byte last moved on the socket, for the listener's idle timeout.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The caps, read from the config in force when a connection arrives.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub max_connections: usize,
    pub max_unauthenticated: usize,
    pub max_unauthenticated_per_address: usize,
}

/// A connection waiting to log in.
struct Waiting {
    id: u64,
    kill: Arc<KillSwitch>,
}

#[derive(Default)]
struct Counts {
    open: usize,
    unauthenticated: usize,
    /// The connections waiting to log in, per address, oldest first.
    waiting: HashMap<IpAddr, VecDeque<Waiting>>,
    next_id: u64,
}

/// The key an address is counted under (the login throttle's too): an IPv4 address itself
/// (also written as IPv4-mapped IPv6), an IPv6 address's /64.
pub(crate) use crate::login::address_group;

impl Counts {
    /// Frees a slot for a newcomer whose group has `mine` connections waiting (see the module
    /// doc for which one is killed); false when none qualifies.
    fn evict_for(&mut self, mine: usize) -> bool {
        let busiest = self
            .waiting
            .iter()
            .max_by_key(|(_, q)| q.len())
            .filter(|(_, q)| q.len() > mine + 1)
            .map(|(g, _)| *g);
        let victim = busiest.or_else(|| {
            self.waiting
                .iter()
                .filter(|(_, q)| q.len() >= mine.max(1))
                .filter_map(|(g, q)| Some((q.front()?.id, *g)))
                .min()
                .map(|(_, g)| g)
        });
        let Some(oldest) = victim
            .and_then(|g| self.waiting.get_mut(&g))
            .and_then(VecDeque::pop_front)
        else {
            return false;
        };
        oldest.kill.kill();
        self.unauthenticated = self.unauthenticated.saturating_sub(1);
        self.waiting.retain(|_, q| !q.is_empty());
        true
    }
}

/// Counts open and not-yet-authenticated connections. Cloning shares the counts.
#[derive(Clone, Default)]
pub struct Admission {
    counts: Arc<Mutex<Counts>>,
}

/// Why a connection was refused at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Open connections reached the descriptor limit minus the reserve.
    DescriptorReserve,
    /// Too many connections not yet logged in, in all.
    Unauthenticated,
    /// Too many connections not yet logged in from this address (or IPv6 /64).
    UnauthenticatedFromAddress,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::DescriptorReserve => "open connections reached the file descriptor budget",
            Refused::Unauthenticated => "too many connections are not logged in yet",
            Refused::UnauthenticatedFromAddress => {
                "too many connections from this address are not logged in yet"
            }
        })
    }
}

impl Admission {
    fn with<T>(&self, f: impl FnOnce(&mut Counts) -> T) -> T {
        f(&mut self.counts.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Takes a connection slot and an unauthenticated slot for `addr`, or says why not. `kill`
    /// ends the connection if a newcomer later takes its slot (see the module doc).
    pub fn admit(
        &self,
        addr: IpAddr,
        caps: Caps,
        kill: Arc<KillSwitch>,
    ) -> Result<ConnectionTicket, Refused> {
        let addr = address_group(addr);
        let id = self.with(|c| {
            if c.open >= caps.max_connections {
                return Err(Refused::DescriptorReserve);
            }
            let mine = c.waiting.get(&addr).map_or(0, VecDeque::len);
            if mine >= caps.max_unauthenticated_per_address.max(1) {
                return Err(Refused::UnauthenticatedFromAddress);
            }
            if c.unauthenticated >= caps.max_unauthenticated.max(1) && !c.evict_for(mine) {
                return Err(Refused::Unauthenticated);
            }
            let id = c.next_id;
            c.next_id += 1;
            c.waiting
                .entry(addr)
                .or_default()
                .push_back(Waiting { id, kill });
            c.unauthenticated += 1;
            c.open += 1;
            Ok(id)
        })?;
        Ok(ConnectionTicket {
            admission: self.clone(),
            addr,
            id,
            unauthenticated: true,
        })
    }

    /// (open connections, of which not logged in): for logs and tests.
    pub fn counts(&self) -> (usize, usize) {
        self.with(|c| (c.open, c.unauthenticated))
    }

    /// Gives back an unauthenticated slot, unless a newcomer already took it.
    fn release_unauthenticated(&self, addr: IpAddr, id: u64) {
        self.with(|c| {
            let Some(queue) = c.waiting.get_mut(&addr) else {
                return;
            };
            let Some(at) = queue.iter().position(|w| w.id == id) else {
                return;
            };
            queue.remove(at);
            if queue.is_empty() {
                c.waiting.remove(&addr);
            }
            c.unauthenticated = c.unauthenticated.saturating_sub(1);
        });
    }
}

/// One admitted connection's slots; dropping it frees them.
pub struct ConnectionTicket {
    admission: Admission,
    addr: IpAddr,
    id: u64,
    unauthenticated: bool,
}

impl ConnectionTicket {
    /// The login succeeded: free the unauthenticated slots, keep the connection slot.
    pub fn authenticated(&mut self) {
        if std::mem::take(&mut self.unauthenticated) {
            self.admission.release_unauthenticated(self.addr, self.id);
        }
    }
}

impl Drop for ConnectionTicket {
    fn drop(&mut self) {
        self.authenticated();
        self.admission.with(|c| c.open = c.open.saturating_sub(1));
    }
}

/// Ends one connection from outside, and tells how long it has been idle: see [`Killable`].
pub struct KillSwitch {
    killed: AtomicBool,
    wakers: Mutex<[Option<Waker>; 2]>,
    /// Wakes [`KillSwitch::pulled`].
    pulled: tokio::sync::Notify,
    /// When the connection was accepted.
    opened: Instant,
    /// When a byte last moved on the socket, in milliseconds after `opened`.
    last_io_ms: AtomicU64,
}

impl Default for KillSwitch {
    fn default() -> Self {
        KillSwitch {
            killed: AtomicBool::new(false),
            wakers: Mutex::default(),
            pulled: tokio::sync::Notify::new(),
            opened: Instant::now(),
            last_io_ms: AtomicU64::new(0),
        }
    }
}

const READ: usize = 0;
const WRITE: usize = 1;

impl KillSwitch {
    /// Every pending and later read or write of the connection fails.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        let wakers =
            std::mem::take(&mut *self.wakers.lock().unwrap_or_else(PoisonError::into_inner));
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
        self.pulled.notify_waiters();
    }

    /// Returns once the switch is pulled (at once if it was already).
    pub async fn pulled(&self) {
        let notified = self.pulled.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.killed.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }

    /// Time since the connection was accepted.
    pub fn age(&self) -> Duration {
        self.opened.elapsed()
    }

    /// Time since a byte last moved on the socket, either way (since accept if none did).
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed));
        self.age().saturating_sub(last)
    }

    fn moved(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_io_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Remembers who to wake on kill; true when already killed.
    fn killed(&self, side: usize, cx: &Context<'_>) -> bool {
        if self.killed.load(Ordering::SeqCst) {
            return true;
        }
        let mut wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = wakers.get_mut(side) {
            match slot {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        drop(wakers);
        self.killed.load(Ordering::SeqCst)
    }
}

fn aborted() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "connection ended by the server",
    )
}

/// A stream whose reads and writes fail once its [`KillSwitch`] is pulled.
pub struct Killable<S> {
    inner: S,
    switch: Arc<KillSwitch>,
}

impl<S> Killable<S> {
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn new(inner: S) -> (Killable<S>, Arc<KillSwitch>) {
        let switch = Arc::new(KillSwitch::default());
        (
            Killable {
                inner,
                switch: switch.clone(),
            },
            switch,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Killable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.switch.killed(READ, cx) {
            return Poll::Ready(Err(aborted()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.switch.moved();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Killable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.switch.killed(WRITE, cx) {
            return Poll::Ready(Err(aborted()));
        }
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.switch.moved();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.switch.killed(WRITE, cx) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.switch.killed(WRITE, cx) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: usize, per_addr: usize) -> Caps {
        Caps {
            max_connections: 100,
            max_unauthenticated: total,
            max_unauthenticated_per_address: per_addr,
        }
    }

    #[test]
    fn caps_per_address_total_and_descriptors() {
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let adm = Admission::default();
        let admit = |addr, caps| adm.admit(addr, caps, Arc::new(KillSwitch::default()));
        let t1 = admit(a, caps(3, 2));
        let t2 = admit(a, caps(3, 2));
        assert!(t1.is_ok() && t2.is_ok());
        assert_eq!(
            admit(a, caps(3, 2)).err(),
            Some(Refused::UnauthenticatedFromAddress)
        );
        let mut t3 = admit(b, caps(3, 2)).ok();
        // Full in all: b (1 waiting) takes the slot of the oldest waiting connection of a (2).
        let t4 = admit(b, caps(3, 2));
        assert!(t4.is_ok());
        assert_eq!(adm.counts(), (4, 3));
        assert_eq!(
            admit(b, caps(3, 2)).err(),
            Some(Refused::UnauthenticatedFromAddress)
        );
        // A login frees the unauthenticated slots but keeps the connection slot.
        if let Some(t) = t3.as_mut() {
            t.authenticated();
        }
        assert_eq!(adm.counts(), (4, 2));
        let full = Caps {
            max_connections: 4,
            ..caps(10, 10)
        };
        assert_eq!(admit(b, full).err(), Some(Refused::DescriptorReserve));
        drop((t1, t2, t3, t4));
        assert_eq!(adm.counts(), (0, 0));
    }

    #[test]
    fn a_newcomer_takes_the_slot_of_the_busiest_address() {
        let adm = Admission::default();
        let busy = IpAddr::from([10, 0, 0, 1]);
        let switches: Vec<Arc<KillSwitch>> = (0..3).map(|_| Arc::default()).collect();
        let held: Vec<_> = switches
            .iter()
            .map(|k| adm.admit(busy, caps(3, 3), k.clone()))
            .collect();
        assert!(held.iter().all(Result::is_ok));
        let newcomer = adm.admit(IpAddr::from([10, 0, 0, 2]), caps(3, 3), Arc::default());
        assert!(newcomer.is_ok());
        // The oldest of the busy address was killed, the others not.
        let killed: Vec<bool> = switches
            .iter()
            .map(|k| k.killed.load(Ordering::SeqCst))
            .collect();
        assert_eq!(killed, [true, false, false]);
        assert_eq!(adm.counts(), (4, 3));
        // Two addresses with 2 and 1 waiting: a third newcomer (0) evicts from the busiest
        // (2 > 0 + 1); then 1, 1, 1: a fourth takes the slot of the oldest waiting of all.
        let third = adm.admit(IpAddr::from([10, 0, 0, 3]), caps(3, 3), Arc::default());
        assert!(third.is_ok());
        let fourth = adm.admit(IpAddr::from([10, 0, 0, 4]), caps(3, 3), Arc::default());
        assert!(fourth.is_ok());
        let killed: Vec<bool> = switches
            .iter()
            .map(|k| k.killed.load(Ordering::SeqCst))
            .collect();
        assert_eq!(killed, [true, true, true]);
        assert_eq!(adm.counts().1, 3);
        drop((held, newcomer, third, fourth));
        assert_eq!(adm.counts(), (0, 0));
    }

    #[test]
    fn one_connection_per_address_cannot_lock_everyone_out() {
        let adm = Admission::default();
        let flood: Vec<Arc<KillSwitch>> = (0..8).map(|_| Arc::default()).collect();
        let held: Vec<_> = flood
            .iter()
            .enumerate()
            .map(|(i, k)| adm.admit(IpAddr::from([10, 1, 0, i as u8]), caps(8, 2), k.clone()))
            .collect();
        assert!(held.iter().all(Result::is_ok));
        let mut newcomers = Vec::new();
        for round in 0..8 {
            let newcomer = adm.admit(IpAddr::from([10, 2, 0, round]), caps(8, 2), Arc::default());
            assert!(newcomer.is_ok(), "round {round}");
            newcomers.push(newcomer);
            // The oldest of the flood is the one that gave its slot.
            assert!(flood[usize::from(round)].killed.load(Ordering::SeqCst));
        }
        assert_eq!(adm.counts().1, 8);
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_group(a), address_group(b));
        assert_ne!(address_group(a), address_group(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_group(mapped), IpAddr::from([192, 0, 2, 7]));
        let adm = Admission::default();
        let t1 = adm.admit(a, caps(10, 2), Arc::default());
        let t2 = adm.admit(b, caps(10, 2), Arc::default());
        assert!(t1.is_ok() && t2.is_ok());
        let over = adm.admit(
            "2001:db8:1:2::99".parse().unwrap(),
            caps(10, 2),
            Arc::default(),
        );
        assert_eq!(over.err(), Some(Refused::UnauthenticatedFromAddress));
        assert!(adm.admit(other, caps(10, 2), Arc::default()).is_ok());
    }
}
