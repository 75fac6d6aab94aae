//! Who may hold a socket: the connection caps of the SSH listener, and a kill switch per
//! connection.
//!
//! A freshly accepted TCP connection enters [`Admission::admit`] with its source address and
//! leaves either refused (the caller closes it at once, nothing is read or written) or holding a
//! [`ConnectionTicket`]: one of the `max_connections` slots (the descriptor limit minus a reserve
//! for the listener, admin API, store and intake) and, until login, one of the
//! `max_unauthenticated` slots and one of its address's `max_unauthenticated_per_address`.
//! Logging in gives the unauthenticated slots back ([`ConnectionTicket::authenticated`]);
//! dropping the ticket gives everything back.
//!
//! [`Killable`] wraps the socket so that the listener can end a connection from outside russh
//! (login deadline passed, tenant removed by a reload): [`KillSwitch::kill`] makes every pending
//! and later read or write fail, so russh's session task ends and drops the socket.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The caps, read from the config in force when a connection arrives.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub max_connections: usize,
    pub max_unauthenticated: usize,
    pub max_unauthenticated_per_address: usize,
}

#[derive(Default)]
struct Counts {
    open: usize,
    unauthenticated: usize,
    unauthenticated_by_address: HashMap<IpAddr, usize>,
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

    /// Takes a connection slot and an unauthenticated slot for `addr`, or says why not.
    pub fn admit(&self, addr: IpAddr, caps: Caps) -> Result<ConnectionTicket, Refused> {
        self.with(|c| {
            if c.open >= caps.max_connections {
                return Err(Refused::DescriptorReserve);
            }
            if c.unauthenticated >= caps.max_unauthenticated.max(1) {
                return Err(Refused::Unauthenticated);
            }
            let from_addr = c.unauthenticated_by_address.entry(addr).or_insert(0);
            if *from_addr >= caps.max_unauthenticated_per_address.max(1) {
                return Err(Refused::UnauthenticatedFromAddress);
            }
            *from_addr += 1;
            c.unauthenticated += 1;
            c.open += 1;
            Ok(())
        })?;
        Ok(ConnectionTicket {
            admission: self.clone(),
            addr,
            unauthenticated: true,
        })
    }

    /// (open connections, of which not logged in): for logs and tests.
    pub fn counts(&self) -> (usize, usize) {
        self.with(|c| (c.open, c.unauthenticated))
    }

    fn release_unauthenticated(&self, addr: IpAddr) {
        self.with(|c| {
            c.unauthenticated = c.unauthenticated.saturating_sub(1);
            if let Some(n) = c.unauthenticated_by_address.get_mut(&addr) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.unauthenticated_by_address.remove(&addr);
                }
            }
        });
    }
}

/// One admitted connection's slots; dropping it frees them.
pub struct ConnectionTicket {
    admission: Admission,
    addr: IpAddr,
    unauthenticated: bool,
}

impl ConnectionTicket {
    /// The login succeeded: free the unauthenticated slots, keep the connection slot.
    pub fn authenticated(&mut self) {
        if std::mem::take(&mut self.unauthenticated) {
            self.admission.release_unauthenticated(self.addr);
        }
    }
}

impl Drop for ConnectionTicket {
    fn drop(&mut self) {
        self.authenticated();
        self.admission.with(|c| c.open = c.open.saturating_sub(1));
    }
}

/// Ends one connection from outside: see [`Killable`].
#[derive(Default)]
pub struct KillSwitch {
    killed: AtomicBool,
    wakers: Mutex<[Option<Waker>; 2]>,
}

const READ: usize = 0;
const WRITE: usize = 1;

impl KillSwitch {
    /// Every pending and later read or write of the connection fails.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(PoisonError::into_inner));
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
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
        Pin::new(&mut self.inner).poll_read(cx, buf)
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
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
        let t1 = adm.admit(a, caps(3, 2));
        let t2 = adm.admit(a, caps(3, 2));
        assert!(t1.is_ok() && t2.is_ok());
        assert_eq!(
            adm.admit(a, caps(3, 2)).err(),
            Some(Refused::UnauthenticatedFromAddress)
        );
        let mut t3 = adm.admit(b, caps(3, 2)).ok();
        assert_eq!(adm.admit(b, caps(3, 2)).err(), Some(Refused::Unauthenticated));
        // A login frees the unauthenticated slots but keeps the connection slot.
        if let Some(t) = t3.as_mut() {
            t.authenticated();
        }
        assert_eq!(adm.counts(), (3, 2));
        let full = Caps {
            max_connections: 3,
            ..caps(10, 10)
        };
        assert_eq!(adm.admit(b, full).err(), Some(Refused::DescriptorReserve));
        drop((t1, t2, t3));
        assert_eq!(adm.counts(), (0, 0));
    }
}
