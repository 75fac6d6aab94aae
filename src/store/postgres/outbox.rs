//! The [`MailOutbox`] seam on PostgreSQL: messages wait in `roster.outbox` until delivered,
//! across restarts, shared by every node of the database.
//!
//! Data enters as recipients and message bytes (`outbox_push`), a delivery's outcome
//! (`outbox_mark_sent` deletes, `outbox_defer` records the attempt) and leaves as
//! [`OutboxItem`]s. Each message is delivered by one node: `outbox_due` claims what it returns
//! (`claimed_by` this node's process, `node_id/holder`, `claimed_until` [`CLAIM_MINUTES`] from now), skipping rows another
//! node has claimed or is claiming (`FOR UPDATE SKIP LOCKED`). The claim ends when the message
//! is sent (row gone) or deferred (claim cleared); a node that dies holding a claim loses it
//! when `claimed_until` passes, and the message is due again then, so no message is lost.

use super::connections::Connections;
use super::PostgresStore;
use crate::store::{MailOutbox, OutboxItem};
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

/// How long a node holds the messages `outbox_due` returned before another node may take them.
pub const CLAIM_MINUTES: i32 = 5;

/// At most this many messages are claimed at once; the rest wait for the next pass.
const DUE_BATCH: i64 = 100;
/// ... and no message is claimed once those before it in the batch hold this many bytes (the
/// first always is), so a pass holds about that much of message bodies, not a hundred
/// reports of several MB each (reviewer s28). `crate::store::OUTBOX_DUE_BYTES`.
const DUE_BYTES: i64 = crate::store::OUTBOX_DUE_BYTES as i64;

impl PostgresStore {
    /// Who claims a message: this node's id and this very process (`holder`), so a second
    /// process started under the same id (a frozen VM's replacement) never renews, defers or
    /// narrows a claim of the first one and never sends a message twice (review s27: claims
    /// named only the node id, as leases did before schema 15).
    fn claimant(&self) -> String {
        format!("{}/{}", self.node_id, self.holder)
    }
}

fn item_from_row(row: &Row) -> Result<OutboxItem> {
    let id: i64 = row.try_get(0)?;
    let attempts: i32 = row.try_get(3)?;
    Ok(OutboxItem {
        id: u64::try_from(id).map_err(|_| anyhow!("outbox message id {id} is negative"))?,
        recipients: row.try_get(1)?,
        message: row.try_get(2)?,
        attempts: u32::try_from(attempts)
            .map_err(|_| anyhow!("outbox message {id} has {attempts} attempts"))?,
        next_attempt: row.try_get(4)?,
        last_error: row.try_get(5)?,
    })
}

fn db_id(id: u64) -> Result<i64> {
    i64::try_from(id).map_err(|_| anyhow!("outbox message {id} does not exist"))
}

/// Queues `mail` for delivery now inside the transaction `tx` (a commit, a record), so it is
/// queued exactly when that write commits.
pub(super) async fn queue_in(
    tx: &tokio_postgres::Transaction<'_>,
    mail: &crate::store::OutboxMail,
) -> Result<()> {
    tx.execute(
        "INSERT INTO roster.outbox (recipients, message, next_attempt) VALUES ($1, $2, $3)",
        &[&mail.recipients, &mail.message, &Utc::now()],
    )
    .await
    .context("cannot write the mail outbox")?;
    Ok(())
}

impl MailOutbox for PostgresStore {
    fn outbox_push(&self, recipients: &[String], message: &[u8]) -> Result<u64> {
        let recipients = recipients.to_vec();
        let message = message.to_vec();
        let now = Utc::now();
        let id: i64 = self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let row = client
                .query_one(
                    "INSERT INTO roster.outbox (recipients, message, next_attempt) \
                     VALUES ($1, $2, $3) RETURNING id",
                    &[&recipients, &message, &now],
                )
                .await
                .context("cannot write the mail outbox")?;
            Ok(row.try_get(0)?)
        })?;
        u64::try_from(id).map_err(|_| anyhow!("the outbox handed out a negative id {id}"))
    }

    /// Claims and returns the messages due at `now` that no live claim holds, oldest first.
    fn outbox_due(&self, now: DateTime<Utc>) -> Result<Vec<OutboxItem>> {
        let node = self.claimant();
        let mut items = self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let rows = client
                .query(
                    "WITH due AS (SELECT id, octet_length(message)::int8 AS len FROM roster.outbox \
                       WHERE next_attempt <= $1 AND (claimed_until IS NULL OR claimed_until < now()) \
                       ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED), \
                     picked AS (SELECT id FROM (SELECT id, (sum(len) OVER (ORDER BY id))::int8 - len AS before \
                       FROM due) d WHERE before < $5::int8) \
                     UPDATE roster.outbox SET claimed_by = $2, \
                     claimed_until = now() + make_interval(mins => $3) \
                     WHERE id IN (SELECT id FROM picked) \
                     RETURNING id, recipients, message, attempts, next_attempt, last_error",
                    &[&now, &node, &CLAIM_MINUTES, &DUE_BATCH, &DUE_BYTES],
                )
                .await
                .context("cannot read the mail outbox")?;
            let mut items = Vec::with_capacity(rows.len());
            for row in &rows {
                match item_from_row(row) {
                    Ok(item) => items.push(item),
                    Err(e) => tracing::error!(
                        "a message of the mail outbox is damaged and is not sent: {e:#}"
                    ),
                }
            }
            Ok(items)
        })?;
        items.sort_by_key(|i| i.id);
        Ok(items)
    }

    /// Renews this node's claim of message `id` for [`CLAIM_MINUTES`]; false when the claim is
    /// no longer this node's (it expired and another node took the message) or the message is
    /// gone.
    fn outbox_renew_claim(&self, id: u64) -> Result<bool> {
        let id = db_id(id)?;
        let node = self.claimant();
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let renewed = client
                .execute(
                    "UPDATE roster.outbox SET claimed_until = now() + make_interval(mins => $3) \
                     WHERE id = $1 AND claimed_by = $2",
                    &[&id, &node, &CLAIM_MINUTES],
                )
                .await
                .context("cannot renew the claim of a message of the mail outbox")?;
            Ok(renewed == 1)
        })
    }

    /// Every queued message; 0 (and a logged error) when the database cannot say.
    fn outbox_len(&self) -> Result<usize> {
        let n = self
            .db
            .run(|pool| async move {
                let client = Connections::client(&pool).await?;
                let row = client
                    .query_one("SELECT count(*) FROM roster.outbox", &[])
                    .await?;
                Ok(row.try_get::<_, i64>(0)?)
            })
            .context("cannot count the mail outbox")?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn outbox_mark_sent(&self, id: u64) -> Result<()> {
        let id = db_id(id)?;
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            client
                .execute("DELETE FROM roster.outbox WHERE id = $1", &[&id])
                .await
                .context("cannot remove a delivered message from the mail outbox")?;
            Ok(())
        })
    }

    /// Records a failed attempt and ends this node's claim: the message waits until
    /// `next_attempt`, then any node may take it. A message another node holds a live claim
    /// of is left to that node.
    fn outbox_narrow(&self, id: u64, recipients: &[String]) -> Result<()> {
        let db_id = db_id(id)?;
        let recipients = recipients.to_vec();
        let node = self.claimant();
        let changed = self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            client
                .execute(
                    "UPDATE roster.outbox SET recipients = $2 WHERE id = $1 AND (claimed_by IS NULL \
                     OR claimed_by = $3 OR claimed_until < now())",
                    &[&db_id, &recipients, &node],
                )
                .await
                .context("cannot write the mail outbox")
        })?;
        if changed == 0 {
            bail!("outbox message {id} does not exist, or another node has taken it");
        }
        Ok(())
    }

    fn outbox_defer(
        &self,
        id: u64,
        next_attempt: DateTime<Utc>,
        attempts: u32,
        error: &str,
    ) -> Result<()> {
        let db_id = db_id(id)?;
        let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
        let error = error.to_string();
        let node = self.claimant();
        let changed = self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            client
                .execute(
                    "UPDATE roster.outbox SET next_attempt = $2, attempts = $3, last_error = $4, \
                     claimed_by = NULL, claimed_until = NULL WHERE id = $1 AND (claimed_by IS NULL \
                     OR claimed_by = $5 OR claimed_until < now())",
                    &[&db_id, &next_attempt, &attempts, &error, &node],
                )
                .await
                .context("cannot write the mail outbox")
        })?;
        if changed == 0 {
            bail!("outbox message {id} does not exist, or another node has taken it");
        }
        Ok(())
    }
}
