//! One import record as a row of `roster.import_records` and one file-ledger entry as a row
//! of `roster.ledger`, both ways, for the run log on PostgreSQL (`runs`).
//!
//! Data enters as an [`ImportRecord`] (turned into the values of [`UPSERT_RECORD`] by
//! [`RecordParams`]) or a database row (read back by [`record_from_row`] and
//! [`ledger_from_row`]); counts are `bigint`, refused when they do not fit.

use crate::model::{Counts, ImportRecord, ImportStatus};
use crate::store::{LedgerEntry, LedgerState};
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

/// The columns of `import_records`, in the order of `record_params` and `record_from_row`.
pub(super) const RECORD_COLUMNS: &str =
    "tenant, id, file, sha256, bytes, received_at, started_at, \
     finished_at, status, rows, inserted, updated, unchanged, deactivated, deleted, restored, \
     skipped, errors, messages, encoding, delimiter, archived_as, report";

/// Inserts a record, or replaces every column of the record with the same (tenant, id).
pub(super) const UPSERT_RECORD: &str =
    "INSERT INTO roster.import_records (tenant, id, file, sha256, \
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
pub(super) const UPSERT_STAMP: &str = "INSERT INTO roster.claim_stamps (tenant, claim, import_id) \
     VALUES ($1, $2, $3) ON CONFLICT (tenant, claim) \
     DO UPDATE SET import_id = EXCLUDED.import_id, stamped_at = now()";

/// An [`ImportRecord`] as the values of [`UPSERT_RECORD`], stored under `tenant`.
pub(super) struct RecordParams {
    pub(super) tenant: String,
    pub(super) id: String,
    pub(super) file: String,
    pub(super) sha256: String,
    pub(super) bytes: i64,
    pub(super) times: [DateTime<Utc>; 3],
    pub(super) status: &'static str,
    pub(super) counts: [i64; 9],
    pub(super) messages: Vec<String>,
    pub(super) encoding: String,
    pub(super) delimiter: String,
    pub(super) archived_as: Option<String>,
    pub(super) report: Option<String>,
}

pub(super) fn to_bigint(what: &str, n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| anyhow!("{what} ({n}) is too large for the PostgreSQL store"))
}

pub(super) fn from_bigint(what: &str, n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| anyhow!("{what} ({n}) in the PostgreSQL store is negative"))
}

impl RecordParams {
    pub(super) fn new(tenant: &str, r: &ImportRecord) -> Result<RecordParams> {
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

    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
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
    pub(super) async fn upsert(&self, client: &impl GenericClient) -> Result<()> {
        client
            .execute(UPSERT_RECORD, &self.params())
            .await
            .with_context(|| format!("cannot write import record {}", self.id))?;
        Ok(())
    }
}

pub(super) fn parse_status(s: &str) -> Result<ImportStatus> {
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
pub(super) fn record_from_row(row: &Row) -> Result<ImportRecord> {
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

pub(super) fn ledger_state_str(state: LedgerState) -> &'static str {
    match state {
        LedgerState::Done => "done",
        LedgerState::Failed => "failed",
    }
}

pub(super) fn ledger_from_row(row: &Row) -> Result<LedgerEntry> {
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
