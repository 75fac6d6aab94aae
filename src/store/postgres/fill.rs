//! What `roster migrate-store` needs of a PostgreSQL store beyond the store traits: whether it
//! already holds data, and writing the run-log pieces the traits only write inside an import's
//! commit (held plans, ledger entries, claim stamps), outbox messages with their attempts, and
//! a tenant's state as the old store had it; and the marker of a copy under way
//! (`roster.meta` row [`COPY_MARKER`]), which [`PostgresStore::open`] refuses to serve.
//!
//! Data enters as the values the sled store gives back (`store::LedgerEntry`,
//! `store::OutboxItem`, framed plan bytes, a `TenantState`'s version and sha256) and leaves as
//! rows; only the copy of a whole store calls these, into an empty store.

use super::connections::Connections;
use super::PostgresStore;
use crate::store::{LedgerEntry, LedgerState, OutboxItem};
use anyhow::{anyhow, Context, Result};

/// The `roster.meta` row a copy writes before it fills the store and deletes once the copy
/// is verified; while it exists the store is refused for serving.
pub const COPY_MARKER: &str = "migration_in_progress";

/// What to do about a copy that began and did not finish (`note`: what its marker says).
fn unfinished(target: &super::PostgresTarget, note: &str) -> anyhow::Error {
    anyhow!(
        "the PostgreSQL store at {} is partly filled: roster migrate-store began a copy into it \
         ({}) and the copy did not finish; drop its schema (DROP SCHEMA roster CASCADE) and run \
         roster migrate-store again",
        target.describe(),
        crate::logs::escape(note)
    )
}

/// Fails when the database at `target` holds the marker of an unfinished copy; reads over a
/// connection of its own and changes nothing (`roster check-config`, which opens no store).
pub async fn refuse_unfinished_copy_at(target: &super::PostgresTarget) -> Result<()> {
    let client = super::connect(target).await?;
    let has_meta: bool = client
        .query_one("SELECT to_regclass('roster.meta') IS NOT NULL", &[])
        .await?
        .try_get(0)
        .context("cannot tell whether roster.meta exists")?;
    if !has_meta {
        return Ok(());
    }
    let row = client
        .query_opt(
            "SELECT value FROM roster.meta WHERE name = $1",
            &[&COPY_MARKER],
        )
        .await
        .context("cannot read roster.meta")?;
    let note: Option<Vec<u8>> = row.map(|r| r.try_get(0)).transpose()?;
    match note {
        Some(n) => Err(unfinished(target, &String::from_utf8_lossy(&n))),
        None => Ok(()),
    }
}

impl PostgresStore {
    /// Writes the marker of a copy under way, with `note` (what is copied, since when).
    pub fn mark_copy_begun(&self, note: &str) -> Result<()> {
        let note = note.as_bytes().to_vec();
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            client
                .execute(
                    "INSERT INTO roster.meta (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    &[&COPY_MARKER, &note],
                )
                .await
                .context("cannot mark the copy as begun in roster.meta")?;
            Ok(())
        })
    }

    /// Deletes the marker of a copy under way: the copy is complete and verified.
    pub fn mark_copy_finished(&self) -> Result<()> {
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            client
                .execute("DELETE FROM roster.meta WHERE name = $1", &[&COPY_MARKER])
                .await
                .context("cannot clear the copy's marker in roster.meta")?;
            Ok(())
        })
    }

    /// The marker's note when a copy began and did not finish.
    pub fn unfinished_copy(&self) -> Result<Option<String>> {
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let row = client
                .query_opt(
                    "SELECT value FROM roster.meta WHERE name = $1",
                    &[&COPY_MARKER],
                )
                .await
                .context("cannot read roster.meta")?;
            let note: Option<Vec<u8>> = row.map(|r| r.try_get(0)).transpose()?;
            Ok(note.map(|n| String::from_utf8_lossy(&n).into_owned()))
        })
    }

    /// Fails with what to do when a copy began and did not finish.
    pub(super) fn refuse_unfinished_copy(&self, target: &super::PostgresTarget) -> Result<()> {
        match self.unfinished_copy()? {
            Some(note) => Err(unfinished(target, &note)),
            None => Ok(()),
        }
    }

    /// Whether any user, import record, held plan or queued mail is stored.
    pub fn holds_data(&self) -> Result<bool> {
        self.db.run(|pool| async move {
            let client = Connections::client(&pool).await?;
            let row = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM roster.user_rows) \
                     OR EXISTS (SELECT 1 FROM roster.import_records) \
                     OR EXISTS (SELECT 1 FROM roster.held_plans) \
                     OR EXISTS (SELECT 1 FROM roster.outbox) \
                     OR EXISTS (SELECT 1 FROM roster.tenant_state) \
                     OR EXISTS (SELECT 1 FROM roster.changes) \
                     OR EXISTS (SELECT 1 FROM roster.events) \
                     OR EXISTS (SELECT 1 FROM roster.cursors) \
                     OR EXISTS (SELECT 1 FROM roster.ledger) \
                     OR EXISTS (SELECT 1 FROM roster.claims) \
                     OR EXISTS (SELECT 1 FROM roster.claim_stamps)",
                    &[],
                )
                .await
                .context("cannot check whether the PostgreSQL store is empty")?;
            Ok(row.try_get(0)?)
        })
    }

    /// Makes `key` this store's password-fingerprint key (`roster.meta`), in the database and
    /// in this handle: the copied user records and held plans carry fingerprints made with
    /// the embedded store's key, and under another key every password of the next file would
    /// look changed (review s27: migrate-store left PostgreSQL's own random key, so the next
    /// import re-hashed and reported every password). Only for an empty target.
    pub fn adopt_fingerprint_key(&mut self, key: &[u8; 32]) -> Result<()> {
        let value = key.to_vec();
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            client
                .execute(
                    "INSERT INTO roster.meta (name, value) VALUES ('fingerprint_key', $1) \
                     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    &[&value],
                )
                .await
                .context("cannot store the fingerprint key in roster.meta")?;
            Ok(())
        })?;
        self.secret = *key;
        Ok(())
    }

    /// Holds plan `id` of `tenant` (framed bytes, as `RunLog::held_plan` gives them back).
    pub fn put_held_plan(&self, tenant: &str, id: &str, plan: &[u8]) -> Result<()> {
        let (tenant, id, plan) = (tenant.to_string(), id.to_string(), plan.to_vec());
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            client
                .execute(
                    "INSERT INTO roster.held_plans (tenant, import_id, plan) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant, import_id) DO UPDATE SET plan = EXCLUDED.plan",
                    &[&tenant, &id, &plan],
                )
                .await
                .with_context(|| format!("cannot hold plan {id} of tenant {tenant}"))?;
            Ok(())
        })
    }

    /// Writes (or replaces) the ledger entry of `entry.tenant` and `entry.file`.
    pub fn put_ledger_entry(&self, entry: &LedgerEntry) -> Result<()> {
        let e = entry.clone();
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let state = match e.state {
                LedgerState::Done => "done",
                LedgerState::Failed => "failed",
            };
            client
                .execute(
                    "INSERT INTO roster.ledger (tenant, file, sha256, state, import_id, \
                     updated_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, file) \
                     DO UPDATE SET sha256 = EXCLUDED.sha256, state = EXCLUDED.state, \
                     import_id = EXCLUDED.import_id, updated_at = EXCLUDED.updated_at",
                    &[
                        &e.tenant,
                        &e.file,
                        &e.sha256,
                        &state,
                        &e.import_id,
                        &e.updated_at,
                    ],
                )
                .await
                .context("cannot write the file ledger")?;
            Ok(())
        })
    }

    /// Stamps claim `claim` of `tenant` as having committed import `import_id`.
    pub fn put_claim_stamp(&self, tenant: &str, claim: &str, import_id: &str) -> Result<()> {
        let (tenant, claim, id) = (tenant.to_string(), claim.to_string(), import_id.to_string());
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            client
                .execute(
                    "INSERT INTO roster.claim_stamps (tenant, claim, import_id) \
                     VALUES ($1, $2, $3) ON CONFLICT (tenant, claim) \
                     DO UPDATE SET import_id = EXCLUDED.import_id",
                    &[&tenant, &claim, &id],
                )
                .await
                .context("cannot write a claim stamp")?;
            Ok(())
        })
    }

    /// Queues `item` as it stands (recipients, message, attempts, next attempt, last error),
    /// unclaimed, under a new id; returns the id.
    pub fn put_outbox_item(&self, item: &OutboxItem) -> Result<u64> {
        let attempts = i32::try_from(item.attempts).unwrap_or(i32::MAX);
        let i = item.clone();
        let id: i64 = self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let row = client
                .query_one(
                    "INSERT INTO roster.outbox (recipients, message, attempts, next_attempt, \
                     last_error) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    &[
                        &i.recipients,
                        &i.message,
                        &attempts,
                        &i.next_attempt,
                        &i.last_error,
                    ],
                )
                .await
                .context("cannot write the mail outbox")?;
            Ok(row.try_get(0)?)
        })?;
        u64::try_from(id).map_err(|_| anyhow!("the outbox handed out a negative id {id}"))
    }

    /// Sets the tenant's commit version and last applied sha256 to what the old store had, so
    /// plans held there (which name the version they were made against) can be approved here.
    pub fn restore_tenant_state(
        &self,
        tenant: &str,
        version: u64,
        last_applied_sha256: Option<&str>,
    ) -> Result<()> {
        let version = i64::try_from(version)
            .map_err(|_| anyhow!("tenant {tenant} has a version too large for PostgreSQL"))?;
        let tenant = tenant.to_string();
        let sha = last_applied_sha256.map(str::to_string);
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            client
                .execute(
                    "INSERT INTO roster.tenant_state (tenant, version, last_applied_sha256) \
                     VALUES ($1, $2, $3) ON CONFLICT (tenant) DO UPDATE SET \
                     version = EXCLUDED.version, \
                     last_applied_sha256 = EXCLUDED.last_applied_sha256, updated_at = now()",
                    &[&tenant, &version, &sha],
                )
                .await
                .with_context(|| format!("cannot write the state of tenant {tenant}"))?;
            Ok(())
        })
    }
}
