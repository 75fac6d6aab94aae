//! Session channels that have not asked for SFTP yet.
//!
//! russh hands every message for a channel (data, EOF, and each channel request) to that
//! channel's queue and waits while the queue is full, reading nothing else from the connection
//! meanwhile: a channel nobody reads wedges its whole connection. So each newly opened session
//! channel is held by a task of its own ([`Pending::hold`]) that reads and discards what arrives
//! on it, and closes it when it has not asked for a subsystem within [`GRACE`].
//! `subsystem_request` takes the channel back with [`Pending::claim`]; dropping the [`Pending`]
//! (a refused or closed channel, or the connection ended) drops the channel at once.
//!
//! [`OpenChannels`] counts a connection's open channels for `MAX_CHANNELS_PER_CONNECTION`.
//! Each channel is counted from its open until the client closes it (`channel_close`) or its
//! [`OpenGuard`] is dropped: the guard goes with the channel (held here, then by the task that
//! serves or refuses it), because when Roster closes a channel first russh forgets it and never
//! reports the client's confirming close.

use russh::server::Msg;
use russh::{Channel, ChannelId};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a session channel may stay open without asking for a subsystem. Clients ask at
/// once; only env and pty requests may come first.
pub const GRACE: Duration = Duration::from_secs(10);

/// The channels open on one connection. Cloning shares the set.
#[derive(Clone, Default)]
pub(super) struct OpenChannels(Arc<Mutex<HashSet<ChannelId>>>);

impl OpenChannels {
    fn with<T>(&self, f: impl FnOnce(&mut HashSet<ChannelId>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(super) fn len(&self) -> usize {
        self.with(|s| s.len())
    }

    /// Counts `id` as open until the guard is dropped (or [`remove`](Self::remove)).
    pub(super) fn open(&self, id: ChannelId) -> OpenGuard {
        self.with(|s| s.insert(id));
        OpenGuard {
            set: self.clone(),
            id,
        }
    }

    /// `id` is closed.
    pub(super) fn remove(&self, id: ChannelId) {
        self.with(|s| s.remove(&id));
    }
}

/// One open channel's place in [`OpenChannels`]; dropped, the channel no longer counts.
pub(super) struct OpenGuard {
    set: OpenChannels,
    id: ChannelId,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.set.remove(self.id);
    }
}

/// A session channel held until it asks for a subsystem.
pub(super) struct Pending {
    claim: oneshot::Sender<()>,
    task: JoinHandle<Option<(Channel<Msg>, OpenGuard)>>,
}

impl Pending {
    pub(super) fn hold(channel: Channel<Msg>, guard: OpenGuard) -> Pending {
        let (claim, claimed) = oneshot::channel();
        Pending {
            claim,
            task: tokio::spawn(hold(channel, guard, claimed)),
        }
    }

    /// The channel and its place among the open ones, or `None` when the client closed it or
    /// its grace period ran out. Whatever the client sent on it before asking for a subsystem
    /// has been discarded.
    pub(super) async fn claim(self) -> Option<(Channel<Msg>, OpenGuard)> {
        let _ = self.claim.send(());
        self.task.await.ok().flatten()
    }
}

async fn hold(
    mut channel: Channel<Msg>,
    guard: OpenGuard,
    mut claimed: oneshot::Receiver<()>,
) -> Option<(Channel<Msg>, OpenGuard)> {
    let grace = tokio::time::sleep(GRACE);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            biased;
            // An error: the `Pending` was dropped, so is the channel.
            c = &mut claimed => return c.ok().map(|()| (channel, guard)),
            () = &mut grace => break,
            // Discarded; `None`: the client closed the channel.
            msg = channel.wait() => {
                msg?;
            }
        }
    }
    tracing::info!(channel = %channel.id(), "closing a session channel that did not ask for SFTP within {} s", GRACE.as_secs());
    // Stop taking its messages first, so that russh drops them instead of waiting, then close it
    // (apart: a `claim` waiting in russh's loop must not wait on russh's queue).
    let (read, write) = channel.split();
    drop(read);
    tokio::spawn(async move {
        let _ = write.close().await;
        drop(guard);
    });
    None
}
