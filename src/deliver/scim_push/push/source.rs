//! The pusher's [`ChangeSource`] in the store: a tenant's change log, its users, and the
//! `scim-push` cursor and failing list, written only while this node still holds the tenant's
//! push lease under the fencing number it took it with ([`LeaseFence`]).
//!
//! Decision (reviewer s28): a node that stalled past `lease_secs` mid-batch finished its users
//! on waking and wrote its cursor and its whole failing list over those of the node that had
//! taken the lease meanwhile, dropping a user that node had found refused. Each write is now
//! refused when the lease's fencing number changed, checked by the store in the write's own
//! transaction ([`ChangeLog::save_cursor_leased`](crate::store::ChangeLog::save_cursor_leased);
//! s29: a check before the write left that one write to a node that lost the lease).

use super::{ChangeSource, Failure, CONSUMER, FAILING_CONSUMER};
use crate::model::changelog::{Cursor, LoggedChange};
use crate::model::User;
use crate::store::Store;
use anyhow::{bail, Result};
use chrono::Utc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The push lease a source writes under: its name and the fencing number of the current hold.
pub struct LeaseFence {
    pub name: String,
    pub fencing: AtomicU64,
}

/// A tenant's change log, users and `scim-push` cursor in the store.
pub struct StoreSource {
    pub store: Store,
    pub tenant: String,
    /// The lease every write checks (None: no check, for a caller without one).
    pub lease: Option<LeaseFence>,
}

impl StoreSource {
    /// Saves `record` as `consumer`'s cursor: under the lease's fencing number when there is
    /// a lease, checked by the store in the same transaction as the write; refused once the
    /// lease passed.
    fn save(&self, consumer: &str, record: &Cursor) -> Result<()> {
        let Some(fence) = &self.lease else {
            return self.store.save_cursor(&self.tenant, consumer, record);
        };
        let fencing = fence.fencing.load(Ordering::Acquire);
        let lease = (fence.name.as_str(), fencing);
        if !self
            .store
            .save_cursor_leased(&self.tenant, consumer, record, lease)?
        {
            bail!(
                "the lease {} passed to another node; this node saves nothing of its batch",
                fence.name
            );
        }
        Ok(())
    }
}

impl ChangeSource for StoreSource {
    fn changes(&self, after: u64, limit: usize) -> Result<Vec<LoggedChange>> {
        self.store.changes(&self.tenant, after, limit)
    }
    fn user(&self, key: &str) -> Result<Option<User>> {
        self.store.user(&self.tenant, key)
    }
    fn cursor(&self) -> Result<Cursor> {
        self.store.cursor(&self.tenant, CONSUMER)
    }
    fn save_cursor(&self, cursor: &Cursor) -> Result<()> {
        self.save(CONSUMER, cursor)
    }
    fn failures(&self) -> Result<Vec<Failure>> {
        let kept = self.store.cursor(&self.tenant, FAILING_CONSUMER)?;
        Ok(match kept.state {
            Some(list) => serde_json::from_value(list)?,
            None => Vec::new(),
        })
    }
    fn save_failures(&self, failures: &[Failure]) -> Result<()> {
        let record = Cursor {
            state: Some(serde_json::to_value(failures)?),
            last_success: Some(Utc::now()),
            ..Cursor::default()
        };
        self.save(FAILING_CONSUMER, &record)
    }
}
