//! The [`ChangeLog`] seam on sled (issue 12; docs/delivery.md). So far only the delivery
//! cursors are kept (tree `cursors`, key `<tenant>\0<consumer>`, JSON [`Cursor`]); the change
//! log and the event log are not written yet, so they read empty.

use super::{tkey, SledStore};
use crate::model::changelog::{Cursor, Event, LoggedChange};
use crate::store::ChangeLog;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

impl ChangeLog for SledStore {
    fn changes(&self, _tenant: &str, _after: u64, _limit: usize) -> Result<Vec<LoggedChange>> {
        Ok(Vec::new())
    }

    fn user_changes(&self, _tenant: &str, _key: &str, _limit: usize) -> Result<Vec<LoggedChange>> {
        Ok(Vec::new())
    }

    fn events(&self, _tenant: &str, _after: u64, _limit: usize) -> Result<Vec<Event>> {
        Ok(Vec::new())
    }

    fn cursor(&self, tenant: &str, consumer: &str) -> Result<Cursor> {
        match self.inner.cursors.get(tkey(tenant, consumer.as_bytes()))? {
            None => Ok(Cursor::default()),
            Some(v) => serde_json::from_slice(&v)
                .with_context(|| format!("the cursor of {consumer} (tenant {tenant}) is damaged")),
        }
    }

    fn save_cursor(&self, tenant: &str, consumer: &str, cursor: &Cursor) -> Result<()> {
        let json = serde_json::to_vec(cursor)?;
        self.inner
            .cursors
            .insert(tkey(tenant, consumer.as_bytes()), json)?;
        self.inner
            .cursors
            .flush()
            .context("cannot flush the store")?;
        Ok(())
    }

    fn trim_changes(&self, _tenant: &str, _before: DateTime<Utc>) -> Result<u64> {
        Ok(0)
    }
}
