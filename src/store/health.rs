//! Whether the store could write lately: `serve`'s heartbeats (a durable write every few
//! seconds) record each outcome here, `GET /health` reads it, and `serve` stops the process
//! when the embedded store has failed for too long.
//!
//! sled keeps the first I/O error it meets (a full disk, say) and fails every later write with
//! it, also once space is back: the server then claimed every upload and recorded nothing while
//! `/health` said "ok" (review of 2026-11-30, config F2). Now `/health` answers 503 naming the
//! error from the first failed heartbeat, and after [`EMBEDDED_GIVE_UP`] of failures the
//! process ends with status 1, so its supervisor starts it again, which reopens the store and
//! finishes the claims. PostgreSQL recovers by itself (its connections are made again), so a
//! node there only reports it, unless a newer roster migrated the shared database
//! ([`SchemaNewer`]): then the node stops at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the embedded store may fail every write before the process stops.
pub const EMBEDDED_GIVE_UP: Duration = Duration::from_secs(60);

/// The first failure of a run of failed writes.
#[derive(Debug, Clone)]
struct Failing {
    since: Instant,
    error: String,
}

/// The store's recent writes (shared by the clones of a [`Store`](super::Store)).
#[derive(Debug, Default)]
pub struct WriteHealth {
    failing: Mutex<Option<Failing>>,
}

impl WriteHealth {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Failing>> {
        self.failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A write succeeded: the store is healthy again.
    pub fn wrote(&self) {
        *self.slot() = None;
    }

    /// A write failed with `error`; returns how long writes have been failing.
    pub fn failed(&self, error: &anyhow::Error) -> Duration {
        let mut slot = self.slot();
        let f = slot.get_or_insert_with(|| Failing {
            since: Instant::now(),
            error: format!("{error:#}"),
        });
        f.since.elapsed()
    }

    /// While writes fail: for how long, and the first error.
    pub fn failing(&self) -> Option<(Duration, String)> {
        self.slot()
            .as_ref()
            .map(|f| (f.since.elapsed(), f.error.clone()))
    }
}

/// The store's schema is newer than this binary knows: a newer roster migrated the shared
/// database while this node ran. Its heartbeat fails with this, and `serve` stops at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaNewer {
    pub found: i32,
    pub known: i32,
}

impl std::fmt::Display for SchemaNewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the database's roster schema is now at version {}, newer than this roster binary \
             understands (version {}): a newer roster migrated it; upgrade this node",
            self.found, self.known
        )
    }
}

impl std::error::Error for SchemaNewer {}

/// True when `e` (at any level of context) is [`SchemaNewer`].
pub fn is_schema_newer(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<SchemaNewer>())
}

/// Another live process beats under this node's id (its row names another start): the two
/// would share every lease and finish each other's claims. The heartbeat fails with this, and
/// `serve` stops at once (re-read of review s16: two processes started at the same moment both
/// pass the check at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdTaken(pub String);

impl std::fmt::Display for NodeIdTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "another roster serve is running as node {:?}: give every node its own [cluster] \
             node_id (or leave it out: the host name and SFTP port)",
            self.0
        )
    }
}

impl std::error::Error for NodeIdTaken {}

/// True when `e` (at any level of context) is [`NodeIdTaken`].
pub fn is_node_id_taken(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<NodeIdTaken>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failures_keeps_its_first_error_until_a_write_succeeds() {
        let h = WriteHealth::default();
        assert!(h.failing().is_none());
        h.failed(&anyhow::anyhow!("No space left on device"));
        std::thread::sleep(Duration::from_millis(20));
        let longer = h.failed(&anyhow::anyhow!("a later error"));
        assert!(longer >= Duration::from_millis(20));
        let (_, error) = h.failing().unwrap();
        assert_eq!(error, "No space left on device");
        h.wrote();
        assert!(h.failing().is_none());
    }
}
