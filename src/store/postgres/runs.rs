//! The [`RunLog`] seam on PostgreSQL: the import history (`import_records`), held plans
//! (`held_plans`), the file ledger (`ledger`) and the intake claims (`claims`, `claim_stamps`),
//! with the behaviour of the sled reference (`store::sled::runs`).
//!
//! Data enters as `model::ImportRecord`, `store::LedgerEntry`, framed plan bytes and claim ids,
//! and as the run-log parts of a [`Commit`](crate::store::Commit) (written by
//! [`write_commit_parts`] inside the directory's commit transaction); it leaves as the same
//! values. An [`ImportRecord`] is one row, every field its own column (`RecordParams`,
//! `record_from_row`): counts as `bigint`, messages as `text[]` in their order, `archived_as`
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
use super::PostgresStore;
use crate::model::{Counts, ImportRecord, ImportStatus};
use crate::store::{Blob, Commit, LedgerEntry, LedgerState, OutboxMail, RunLog};
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

/// The columns of `import_records`, in the order of `record_params` and `record_from_row`.
const RECORD_COLUMNS: &str = "tenant, id, file, sha256, bytes, received_at, started_at, \
     finished_at, status, rows, inserted, updated, unchanged, deactivated, deleted, restored, \
     skipped, errors, messages, encoding, delimiter, archived_as, report";

/// Inserts a record, or replaces every column of the record with the same (tenant, id).
const UPSERT_RECORD: &str = "INSERT INTO roster.import_records (tenant, id, file, sha256, \
     bytes, received_at, started_at, finished_at, status, rows, inserted, updated, unchanged, \
     deactivated, deleted, restored, skipped, errors, messages, encoding, delimiter, \
     archived_as, report) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
     $15, $16, $17, $18, $19, $20, $21, $22, $23) \
     ON CONFLICT (tenant, id) DO UPDATE SET file = EXCLUDED.file, sha256 = EXCLUDED.sha256, \
     bytes = EXCLUDED.bytes, received_at = EXCLUDED.received_at, \
     started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, \
     status = EXCLUDED.status, rows = EXCLUDED.rows, inserted = EXCLUDED.inserted, \
     updated = EXCLUDED.updated, unchanged = EXCLUDED.unchanged, \
     deactivated = EXCLUDED.deactivated, deleted = EXCLUDED.deleted, \
     restored = EXCLUDED.restored, skipped = EXCLUDED.skipped, errors = EXCLUDED.errors, \
     messages = EXCLUDED.messages, encoding = EXCLUDED.encoding, \
     delimiter = EXCLUDED.delimiter, archived_as = EXCLUDED.archived_as, \
     report = EXCLUDED.report";

/// Stamps claim $2 of tenant $1 as having committed import $3.
const UPSERT_STAMP: &str = "INSERT INTO roster.claim_stamps (tenant, claim, import_id) \
     VALUES ($1, $2, $3) ON CONFLICT (tenant, claim) \
     DO UPDATE SET import_id = EXCLUDED.import_id, stamped_at = now()";

/// An [`ImportRecord`] as the values of [`UPSERT_RECORD`], stored under `tenant`.
struct RecordParams {
    tenant: String,
    id: String,
    file: String,
    sha256: String,
    bytes: i64,
    times: [DateTime<Utc>; 3],
    status: &'static str,
    counts: [i64; 9],
    messages: Vec<String>,
    encoding: String,
    delimiter: String,
    archived_as: Option<String>,
    report: Option<String>,
}

fn to_bigint(what: &str, n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| anyhow!("{what} ({n}) is too large for the PostgreSQL store"))
}

fn from_bigint(what: &str, n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| anyhow!("{what} ({n}) in the PostgreSQL store is negative"))
}

impl RecordParams {
    fn new(tenant: &str, r: &ImportRecord) -> Result<RecordParams> {
        let c = &r.counts;
        let counts = [
            ("rows", c.rows),
            ("inserted", c.inserted),
            ("updated", c.updated),
            ("unchanged", c.unchanged),
            ("deactivated", c.deactivated),
            ("deleted", c.deleted),
            ("restored", c.restored),
            ("skipped", c.skipped),
            ("errors", c.errors),
        ];
        let mut out = [0i64; 9];
        for (slot, (what, n)) in out.iter_mut().zip(counts) {
            *slot = to_bigint(what, n)?;
        }
        Ok(RecordParams {
            tenant: tenant.to_string(),
            id: r.id.clone(),
            file: r.file.clone(),
            sha256: r.sha256.clone(),
            bytes: to_bigint("bytes", r.bytes)?,
            times: [r.received_at, r.started_at, r.finished_at],
            status: r.status.as_str(),
            counts: out,
            messages: r.messages.clone(),
            encoding: r.encoding.clone(),
            delimiter: r.delimiter.clone(),
            archived_as: r.archived_as.clone(),
            report: r.report.clone(),
        })
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut p: Vec<&(dyn ToSql + Sync)> = vec![
            &self.tenant,
            &self.id,
            &self.file,
            &self.sha256,
            &self.bytes,
            &self.times[0],
            &self.times[1],
            &self.times[2],
            &self.status,
        ];
        p.extend(self.counts.iter().map(|n| n as &(dyn ToSql + Sync)));
        p.extend([
            &self.messages as &(dyn ToSql + Sync),
            &self.encoding,
            &self.delimiter,
            &self.archived_as,
            &self.report,
        ]);
        p
    }

    /// Inserts or replaces the record through `client` (a connection or a transaction).
    async fn upsert(&self, client: &impl GenericClient) -> Result<()> {
        client
            .execute(UPSERT_RECORD, &self.params())
            .await
            .with_context(|| format!("cannot write import record {}", self.id))?;
        Ok(())
    }
}

fn parse_status(s: &str) -> Result<ImportStatus> {
    Ok(match s {
        "success" => ImportStatus::Success,
        "partial" => ImportStatus::Partial,
        "error" => ImportStatus::Error,
        "held" => ImportStatus::Held,
        "duplicate" => ImportStatus::Duplicate,
        "missing" => ImportStatus::Missing,
        other => bail!("an import record has the unknown status {other:?}"),
    })
}

/// A row of [`RECORD_COLUMNS`] as the record it stores.
fn record_from_row(row: &Row) -> Result<ImportRecord> {
    let count = |i: usize, what: &str| -> Result<u64> { from_bigint(what, row.try_get(i)?) };
    let status: String = row.try_get(8)?;
    Ok(ImportRecord {
        tenant: row.try_get(0)?,
        id: row.try_get(1)?,
        file: row.try_get(2)?,
        sha256: row.try_get(3)?,
        bytes: count(4, "bytes")?,
        received_at: row.try_get(5)?,
        started_at: row.try_get(6)?,
        finished_at: row.try_get(7)?,
        status: parse_status(&status)?,
        counts: Counts {
            rows: count(9, "rows")?,
            inserted: count(10, "inserted")?,
            updated: count(11, "updated")?,
            unchanged: count(12, "unchanged")?,
            deactivated: count(13, "deactivated")?,
            deleted: count(14, "deleted")?,
            restored: count(15, "restored")?,
            skipped: count(16, "skipped")?,
            errors: count(17, "errors")?,
        },
        messages: row.try_get(18)?,
        encoding: row.try_get(19)?,
        delimiter: row.try_get(20)?,
        archived_as: row.try_get(21)?,
        report: row.try_get(22)?,
    })
}

fn ledger_state_str(state: LedgerState) -> &'static str {
    match state {
        LedgerState::Done => "done",
        LedgerState::Failed => "failed",
    }
}

fn ledger_from_row(row: &Row) -> Result<LedgerEntry> {
    let state: String = row.try_get(3)?;
    let state = match state.as_str() {
        "done" => LedgerState::Done,
        "failed" => LedgerState::Failed,
        other => bail!("a file ledger entry has the unknown state {other:?}"),
    };
    Ok(LedgerEntry {
        tenant: row.try_get(0)?,
        file: row.try_get(1)?,
        sha256: row.try_get(2)?,
        state,
        import_id: row.try_get(4)?,
        updated_at: row.try_get(5)?,
    })
}

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
