//! The durable outbox as the delivery worker sees it: [`MailQueue`] implemented on the store's
//! [`MailOutbox`] seam (the store keeps recipients and message bytes; the rest is read back from
//! the headers). Composed mail enters through the store's `outbox_push` (or with a commit or record); due mail leaves to the worker.

use super::{MailQueue, OutgoingMail, QueuedMail};
use crate::store::Store;
use chrono::{DateTime, Utc};

impl MailQueue for Store {
    fn due(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<QueuedMail>> {
        Ok(self
            .outbox_due(now)?
            .into_iter()
            .map(|item| QueuedMail {
                id: item.id,
                attempts: item.attempts,
                mail: OutgoingMail::from_stored(item.recipients, item.message),
            })
            .collect())
    }

    fn still_ours(&self, id: u64) -> anyhow::Result<bool> {
        self.outbox_renew_claim(id)
    }

    fn mark_sent(&self, id: u64) -> anyhow::Result<()> {
        self.outbox_mark_sent(id)
    }

    fn defer(
        &self,
        id: u64,
        attempts: u32,
        next_at: DateTime<Utc>,
        last_error: &str,
    ) -> anyhow::Result<()> {
        self.outbox_defer(id, next_at, attempts, last_error)
    }

    fn narrow(&self, id: u64, recipients: &[String]) -> anyhow::Result<()> {
        self.outbox_narrow(id, recipients)
    }

    /// `reason` says why (refused for good, or still failing after every attempt): the log
    /// line does not claim a refusal it did not see (review s30).
    fn give_up(&self, id: u64, reason: &str) -> anyhow::Result<()> {
        tracing::error!(id, reason, "mail given up; removed from the outbox");
        self.outbox_mark_sent(id)
    }
}
