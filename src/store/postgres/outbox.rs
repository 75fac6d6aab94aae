//! The [`MailOutbox`] seam on PostgreSQL (to be built).

use super::PostgresStore;
use crate::store::{MailOutbox, OutboxItem};
use anyhow::{bail, Result};
use chrono::{DateTime, Utc};

impl MailOutbox for PostgresStore {
    fn outbox_push(&self, _recipients: &[String], _message: &[u8]) -> Result<u64> {
        bail!("not built yet")
    }
    fn outbox_due(&self, _now: DateTime<Utc>) -> Result<Vec<OutboxItem>> {
        bail!("not built yet")
    }
    fn outbox_len(&self) -> usize {
        0
    }
    fn outbox_mark_sent(&self, _id: u64) -> Result<()> {
        bail!("not built yet")
    }
    fn outbox_defer(
        &self,
        _id: u64,
        _next_attempt: DateTime<Utc>,
        _attempts: u32,
        _error: &str,
    ) -> Result<()> {
        bail!("not built yet")
    }
}
