//! The [`RunLog`] seam on PostgreSQL: the import history (`import_records`), held plans
//! (`held_plans`), the file ledger (`ledger`) and the intake claims (`claims`, `claim_stamps`),
//! with the behaviour of the sled reference (`store::sled::runs`).
//!
//! Data enters as `model::ImportRecord`, `store::LedgerEntry`, framed plan bytes and claim ids,
//! and as the run-log parts of a [`Commit`](crate::store::Commit) (written by
//! [`write_commit_parts`] inside the directory's commit transaction); it leaves as the same
//! values. An [`ImportRecord`] is one row, every field its own column (`record_rows`): counts as `bigint`, messages as `text[]` in their order, `archived_as`
//! and `report` NULL when None. Timestamps are `timestamptz`, which keeps microseconds: a
//! record's times come back truncated to the microsecond.
//!
//! * Import ids are `<UTC time>-<10 digits>` as in sled; the number comes from the sequence
//!   `roster.staged_gen`, the store's one counter of unique numbers (sled too hands out staged
//!   generations and import ids from one counter), so ids are unique across the nodes sharing
//!   the database. Ids are compared byte-wise (`COLLATE "C"`), as sled's keys are.
//! * Claims: `claim_running` puts the `claims` row of (tenant, file), replacing an earlier
//!   claim of that file, with this node's id; an engine commit of that file (not an `approve`)
//!   turns it into a `claim_stamps` row naming the import; `claim_done` removes the stamp.

use super::connections::Connections;
use super::record_rows::{
    ledger_from_row, ledger_state_str, record_from_row, RecordParams, RECORD_COLUMNS, UPSERT_STAMP,
};
use super::PostgresStore;
use crate::model::ImportRecord;
use crate::store::{Blob, Commit, LedgerEntry, OutboxMail, RunLog};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

/// Two owned strings for a closure that must own what it reads.
fn owned(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

impl PostgresStore {
    /// Stores `record` (and queues `mail` in the same transaction), only while this process
    /// holds `lease` when one is named.
    fn write_record(
        &self,
        record: &ImportRecord,
        mail: Option<&OutboxMail>,
        lease: Option<&str>,
    ) -> Result<()> {
        let params = RecordParams::new(&record.tenant, record)?;
        let (record, mail) = (record.clone(), mail.cloned());
        let lease = lease.map(str::to_string);
        let holder = self.lease_holder();
        self.db.run(move |pool| async move {
            let mut client = Connections::client(&pool).await?;
            let tx = client.transaction().await?;
            if let Some(lease) = &lease {
                super::fencing::still_leased(&tx, lease, &holder).await?;
            }
            upsert_announced(&tx, &params, &record).await?;
            if let Some(mail) = &mail {
                super::outbox::queue_in(&tx, mail).await?;
            }
            tx.commit().await.context("cannot write the import history")
        })
    }
}

impl RunLog for PostgresStore {
    fn new_import_id(&self, now: DateTime<Utc>) -> Result<String> {
        let n: i64 = self.db.run(|pool| async move {
            let client = Connections::client(&pool).await?;
            let row = client
                .query_one("SELECT nextval('roster.staged_gen')", &[])
                .await
                .context("cannot take a new import id")?;
            Ok(row.try_get(0)?)
        })?;
        Ok(format!("{}-{:010}", now.format("%Y%m%dT%H%M%SZ"), n))
    }

    fn record_import(&self, record: &ImportRecord) -> Result<()> {
        self.write_record(record, None, None)
    }

    fn record_leased(
        &self,
        record: &ImportRecord,
        mail: Option<&OutboxMail>,
        lease: &str,
    ) -> Result<()> {
        self.write_record(record, mail, Some(lease))
    }

    fn history_from(&self, tenant: &str, skip: usize, limit: usize) -> Result<Vec<ImportRecord>> {
        let tenant = tenant.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let skip = i64::try_from(skip).unwrap_or(i64::MAX);
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM roster.import_records WHERE tenant = $1 \
                 ORDER BY id COLLATE \"C\" DESC LIMIT $2 OFFSET $3"
            );
            let rows = client
                .query(&sql, &[&tenant, &limit, &skip])
                .await
                .with_context(|| format!("cannot read the import history of tenant {tenant}"))?;
            rows.iter().map(record_from_row).collect()
        })
    }

    fn import_record(&self, tenant: &str, id: &str) -> Result<Option<ImportRecord>> {
        if no_such_id(id) {
            return Ok(None);
        }
        let (tenant, id) = owned(tenant, id);
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM roster.import_records WHERE tenant = $1 AND id = $2"
            );
            let row = client
                .query_opt(&sql, &[&tenant, &id])
                .await
                .with_context(|| format!("cannot read import record {id} of tenant {tenant}"))?;
            row.as_ref().map(record_from_row).transpose()
        })
    }

    fn held_plan(&self, tenant: &str, id: &str) -> Result<Option<Blob>> {
        if no_such_id(id) {
            return Ok(None);
        }
        let (tenant, id) = owned(tenant, id);
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let row = client
                .query_opt(
                    "SELECT plan FROM roster.held_plans WHERE tenant = $1 AND import_id = $2",
                    &[&tenant, &id],
                )
                .await
                .with_context(|| format!("cannot read held plan {id} of tenant {tenant}"))?;
            match row {
                Some(row) => Ok(Some(Blob::new(row.try_get::<_, Vec<u8>>(0)?))),
                None => Ok(None),
            }
        })
    }

    fn held_plans(&self, tenant: &str) -> Result<Vec<String>> {
        let tenant = tenant.to_string();
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let rows = client
                .query(
                    "SELECT import_id FROM roster.held_plans WHERE tenant = $1 \
                     ORDER BY import_id COLLATE \"C\"",
                    &[&tenant],
                )
                .await
                .with_context(|| format!("cannot list the held plans of tenant {tenant}"))?;
            rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
        })
    }

    fn ledger_get(&self, tenant: &str, file: &str) -> Result<Option<LedgerEntry>> {
        let (tenant, file) = owned(tenant, file);
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let row = client
                .query_opt(
                    "SELECT tenant, file, sha256, state, import_id, updated_at \
                     FROM roster.ledger WHERE tenant = $1 AND file = $2",
                    &[&tenant, &file],
                )
                .await
                .context("cannot read the file ledger")?;
            row.as_ref().map(ledger_from_row).transpose()
        })
    }

    fn ledger_page(&self, tenant: &str, after: &str, limit: usize) -> Result<Vec<LedgerEntry>> {
        let (tenant, after) = owned(tenant, after);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let rows = client
                .query(
                    "SELECT tenant, file, sha256, state, import_id, updated_at \
                     FROM roster.ledger WHERE tenant = $1 AND file COLLATE \"C\" > $2 \
                     ORDER BY file COLLATE \"C\" LIMIT $3",
                    &[&tenant, &after, &limit],
                )
                .await
                .context("cannot read the file ledger")?;
            rows.iter().map(ledger_from_row).collect()
        })
    }

    fn trim_history(&self, tenant: &str, before: DateTime<Utc>) -> Result<u64> {
        let tenant = tenant.to_string();
        self.db.run(move |pool| async move {
            let mut client = Connections::client(&pool).await?;
            let tx = client.transaction().await?;
            let removed = tx
                .execute(
                    "DELETE FROM roster.import_records r WHERE r.tenant = $1 AND r.finished_at < $2 \
                     AND r.id COLLATE \"C\" < (SELECT max(id COLLATE \"C\") \
                         FROM roster.import_records WHERE tenant = $1) \
                     AND NOT EXISTS (SELECT 1 FROM roster.held_plans h \
                         WHERE h.tenant = r.tenant AND h.import_id = r.id) \
                     AND NOT EXISTS (SELECT 1 FROM roster.claim_stamps s \
                         WHERE s.tenant = r.tenant AND s.import_id = r.id)",
                    &[&tenant, &before],
                )
                .await
                .with_context(|| format!("cannot trim the import history of tenant {tenant}"))?;
            tx.execute(
                "DELETE FROM roster.ledger WHERE tenant = $1 AND updated_at < $2",
                &[&tenant, &before],
            )
            .await
            .with_context(|| format!("cannot trim the file ledger of tenant {tenant}"))?;
            tx.commit().await?;
            Ok(removed)
        })
    }

    fn claim_running(&self, tenant: &str, file: &str, claim: &str) -> Result<()> {
        let (tenant, file) = owned(tenant, file);
        let claim = claim.to_string();
        let node = self.node_id.clone();
        self.db.run(move |pool| async move {
            let mut client = Connections::client(&pool).await?;
            let tx = client.transaction().await?;
            // A claim runs one file: an older row of the same claim id would break the
            // table's (tenant, claim) uniqueness.
            tx.execute(
                "DELETE FROM roster.claims WHERE tenant = $1 AND claim = $2 AND file <> $3",
                &[&tenant, &claim, &file],
            )
            .await?;
            tx.execute(
                "INSERT INTO roster.claims (tenant, file, claim, node_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant, file) DO UPDATE SET claim = EXCLUDED.claim, \
                 node_id = EXCLUDED.node_id, claimed_at = now()",
                &[&tenant, &file, &claim, &node],
            )
            .await?;
            tx.commit().await.context("cannot write the claim ledger")
        })
    }

    fn claim_committed(&self, tenant: &str, claim: &str) -> Result<Option<String>> {
        let (tenant, claim) = owned(tenant, claim);
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let row = client
                .query_opt(
                    "SELECT import_id FROM roster.claim_stamps WHERE tenant = $1 AND claim = $2",
                    &[&tenant, &claim],
                )
                .await
                .context("cannot read the claim stamps")?;
            row.map(|r| Ok(r.try_get(0)?)).transpose()
        })
    }

    fn claim_done(&self, tenant: &str, claim: &str) -> Result<()> {
        let (tenant, claim) = owned(tenant, claim);
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            client
                .execute(
                    "DELETE FROM roster.claim_stamps WHERE tenant = $1 AND claim = $2",
                    &[&tenant, &claim],
                )
                .await
                .context("cannot remove a claim stamp")?;
            Ok(())
        })
    }

    fn claims_stamped(&self, tenant: &str) -> Result<Vec<String>> {
        let tenant = tenant.to_string();
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let rows = client
                .query(
                    "SELECT claim FROM roster.claim_stamps WHERE tenant = $1 \
                     ORDER BY claim COLLATE \"C\"",
                    &[&tenant],
                )
                .await
                .context("cannot read the claim stamps")?;
            rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
        })
    }

    fn record_claimed(
        &self,
        record: &ImportRecord,
        claim: &str,
        mail: Option<&OutboxMail>,
        lease: Option<&str>,
    ) -> Result<()> {
        let params = RecordParams::new(&record.tenant, record)?;
        let claim = claim.to_string();
        let (record, mail) = (record.clone(), mail.cloned());
        let lease = lease.map(str::to_string);
        let holder = self.lease_holder();
        self.db.run(move |pool| async move {
            let mut client = Connections::client(&pool).await?;
            let tx = client.transaction().await?;
            if let Some(lease) = &lease {
                super::fencing::still_leased(&tx, lease, &holder).await?;
            }
            upsert_announced(&tx, &params, &record).await?;
            tx.execute(UPSERT_STAMP, &[&params.tenant, &claim, &params.id])
                .await
                .context("cannot write a claim stamp")?;
            if let Some(mail) = &mail {
                super::outbox::queue_in(&tx, mail).await?;
            }
            tx.commit().await.context("cannot write the import history")
        })
    }
}

/// Inserts or replaces a record made outside a commit; a record new to the store gets its event
/// (`changes::publish`, under the tenant's state row lock) in the same transaction.
async fn upsert_announced(
    tx: &tokio_postgres::Transaction<'_>,
    params: &RecordParams,
    record: &ImportRecord,
) -> Result<()> {
    super::directory::lock_state(tx, &record.tenant).await?;
    let known = tx
        .query_opt(
            "SELECT 1 FROM roster.import_records WHERE tenant = $1 AND id = $2",
            &[&record.tenant, &record.id],
        )
        .await?
        .is_some();
    params.upsert(tx).await?;
    if !known {
        super::changes::publish(tx, &record.tenant, &[], &[], Some(record)).await?;
    }
    Ok(())
}

/// Writes the run-log parts of a [`Commit`](crate::store::Commit) inside the commit's own
/// transaction (the directory's commit in `directory.rs` calls it after checking the tenant's
/// version): the history record, the ledger entry, the stamp of the claim running the ledger's
/// file (the `claims` row of that tenant and file becomes a `claim_stamps` row with the record's
/// import id), and the held plan put or removed.
#[allow(dead_code)] // until the directory's commit (directory.rs) calls it
pub(super) async fn write_commit_parts(
    tx: &tokio_postgres::Transaction<'_>,
    c: &Commit,
) -> Result<()> {
    if let Some(record) = &c.record {
        RecordParams::new(&c.tenant, record)?.upsert(tx).await?;
    }
    if let Some(entry) = &c.ledger {
        tx.execute(
            "INSERT INTO roster.ledger (tenant, file, sha256, state, import_id, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, file) DO UPDATE SET \
             sha256 = EXCLUDED.sha256, state = EXCLUDED.state, import_id = EXCLUDED.import_id, \
             updated_at = EXCLUDED.updated_at",
            &[
                &c.tenant,
                &entry.file,
                &entry.sha256,
                &ledger_state_str(entry.state),
                &entry.import_id,
                &entry.updated_at,
            ],
        )
        .await
        .context("cannot write the file ledger")?;
    }
    stamp_running_claim(tx, c).await?;
    if let Some((id, plan)) = &c.put_plan {
        tx.execute(
            "INSERT INTO roster.held_plans (tenant, import_id, plan) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant, import_id) DO UPDATE SET plan = EXCLUDED.plan, held_at = now()",
            &[&c.tenant, id, plan],
        )
        .await
        .context("cannot hold the plan")?;
    }
    if let Some(id) = &c.remove_plan {
        tx.execute(
            "DELETE FROM roster.held_plans WHERE tenant = $1 AND import_id = $2",
            &[&c.tenant, id],
        )
        .await
        .context("cannot remove the held plan")?;
    }
    if !c.set_aside_plans.is_empty() {
        tx.execute(
            "DELETE FROM roster.held_plans WHERE tenant = $1 AND import_id = ANY($2)",
            &[&c.tenant, &c.set_aside_plans],
        )
        .await
        .context("cannot set the older held plans aside")?;
    }
    Ok(())
}

/// For a commit of an intake run (a ledger entry with an import id, not an `approve`): the claim
/// running the ledger's file stops running and is stamped with the import id.
async fn stamp_running_claim(tx: &tokio_postgres::Transaction<'_>, c: &Commit) -> Result<()> {
    let (Some(entry), None) = (&c.ledger, &c.remove_plan) else {
        return Ok(());
    };
    let Some(import_id) = &entry.import_id else {
        return Ok(());
    };
    tx.execute(
        "WITH running AS (DELETE FROM roster.claims WHERE tenant = $1 AND file = $2 \
         RETURNING claim) \
         INSERT INTO roster.claim_stamps (tenant, claim, import_id) \
         SELECT $1, claim, $3 FROM running ON CONFLICT (tenant, claim) \
         DO UPDATE SET import_id = EXCLUDED.import_id, stamped_at = now()",
        &[&c.tenant, &entry.file, import_id],
    )
    .await
    .context("cannot stamp the claim of the committed run")?;
    Ok(())
}

/// An id no record can have: PostgreSQL refuses a NUL in text, and an id from a URL holding
/// one is simply not found (it was a 500 and an ERROR line per request: review s26).
fn no_such_id(id: &str) -> bool {
    id.contains('\0')
}

#[cfg(test)]
#[path = "runs_tests.rs"]
mod tests;
