//! The pusher's [`ChangeSource`] in the store: a tenant's change log, its users, and the
//! `scim-push` cursor and failing list, written only while this node still holds the tenant's
//! push lease under the fencing number it took it with ([`LeaseFence`]).
//!
//! Decision (reviewer s28): a node that stalled past `lease_secs` mid-batch finished its users
//! on waking and wrote its cursor and its whole failing list over those of the node that had
//! taken the lease meanwhile, dropping a user that node had found refused. Each write now asks
//! for the lease first and is refused when its fencing number changed (the window left is the
//! one write, as for webhooks).

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
    /// Refuses when this node no longer holds the lease under the fencing number it was
    /// taken with.
    fn still_held(&self) -> Result<()> {
        let Some(fence) = &self.lease else {
            return Ok(());
        };
        let now = self.store.take_lease(&fence.name)?;
        if now != Some(fence.fencing.load(Ordering::Acquire)) {
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
        self.still_held()?;
        self.store.save_cursor(&self.tenant, CONSUMER, cursor)
    }
    fn failures(&self) -> Result<Vec<Failure>> {
        let kept = self.store.cursor(&self.tenant, FAILING_CONSUMER)?;
        Ok(match kept.state {
            Some(list) => serde_json::from_value(list)?,
            None => Vec::new(),
        })
    }
    fn save_failures(&self, failures: &[Failure]) -> Result<()> {
        self.still_held()?;
        let record = Cursor {
            state: Some(serde_json::to_value(failures)?),
            last_success: Some(Utc::now()),
            ..Cursor::default()
        };
        self.store
            .save_cursor(&self.tenant, FAILING_CONSUMER, &record)
    }
}
