//! The [`ChangeLog`] seam on PostgreSQL (issue 12; docs/delivery.md): not built yet. The logs
//! read empty and cursors cannot be kept.

use super::PostgresStore;
use crate::model::changelog::{Cursor, Event, LoggedChange, PendingChange};
use crate::store::ChangeLog;
use anyhow::{bail, Result};
use chrono::{DateTime, Utc};

impl PostgresStore {
    /// Stages the changes of a staged bucket generation (not kept yet on PostgreSQL).
    pub(super) fn stage_change_rows(
        &self,
        _tenant: &str,
        _bucket: u16,
        _gen: u64,
        _changes: &[PendingChange],
    ) -> Result<()> {
        Ok(())
    }
}

impl ChangeLog for PostgresStore {
    fn changes(&self, _tenant: &str, _after: u64, _limit: usize) -> Result<Vec<LoggedChange>> {
        Ok(Vec::new())
    }

    fn user_changes(&self, _tenant: &str, _key: &str, _limit: usize) -> Result<Vec<LoggedChange>> {
        Ok(Vec::new())
    }

    fn events(&self, _tenant: &str, _after: u64, _limit: usize) -> Result<Vec<Event>> {
        Ok(Vec::new())
    }

    fn cursor(&self, _tenant: &str, _consumer: &str) -> Result<Cursor> {
        bail!("delivery cursors are not built for PostgreSQL yet")
    }

    fn save_cursor(&self, _tenant: &str, _consumer: &str, _cursor: &Cursor) -> Result<()> {
        bail!("delivery cursors are not built for PostgreSQL yet")
    }

    fn trim_changes(&self, _tenant: &str, _before: DateTime<Utc>) -> Result<u64> {
        Ok(0)
    }
}
