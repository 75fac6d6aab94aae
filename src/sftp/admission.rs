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
//! When all `max_unauthenticated` slots are taken, a newcomer from an address that waits with
//! fewer connections than the busiest address takes the slot of that address's oldest waiting
//! connection, which is killed: a flood from many addresses cannot lock out everyone else.
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

impl Counts {
    /// Frees a slot for a newcomer from `addr` that has `mine` connections waiting: kills the
    /// oldest waiting connection of the busiest address if that one has at least two more.
    fn evict_for(&mut self, mine: usize) -> bool {
        let busiest = self
            .waiting
            .iter_mut()
            .max_by_key(|(_, q)| q.len())
            .filter(|(_, q)| q.len() > mine + 1);
        let Some((_, queue)) = busiest else {
            return false;
        };
        let Some(oldest) = queue.pop_front() else {
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
    /// Too many connections not yet logged in from this address.
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
        assert_eq!(admit(b, caps(3, 2)).err(), Some(Refused::Unauthenticated));
        // A login frees the unauthenticated slots but keeps the connection slot.
        if let Some(t) = t3.as_mut() {
            t.authenticated();
        }
        assert_eq!(adm.counts(), (3, 2));
        let full = Caps {
            max_connections: 3,
            ..caps(10, 10)
        };
        assert_eq!(admit(b, full).err(), Some(Refused::DescriptorReserve));
        drop((t1, t2, t3));
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
        // Two addresses with 2 and 1 waiting: a third newcomer (0) may still evict (2 > 0 + 1);
        // then 1, 1, 1: nobody is evicted any more.
        let third = adm.admit(IpAddr::from([10, 0, 0, 3]), caps(3, 3), Arc::default());
        assert!(third.is_ok());
        let fourth = adm.admit(IpAddr::from([10, 0, 0, 4]), caps(3, 3), Arc::default());
        assert_eq!(fourth.err(), Some(Refused::Unauthenticated));
        drop((held, newcomer, third));
        assert_eq!(adm.counts(), (0, 0));
    }
}
