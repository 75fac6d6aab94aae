//! The [`RunLog`] seam on PostgreSQL (to be built).

use super::PostgresStore;
use crate::model::ImportRecord;
use crate::store::{Blob, LedgerEntry, RunLog};
use anyhow::{bail, Result};
use chrono::{DateTime, Utc};

impl RunLog for PostgresStore {
    fn new_import_id(&self, _now: DateTime<Utc>) -> Result<String> {
        bail!("not built yet")
    }
    fn record_import(&self, _record: &ImportRecord) -> Result<()> {
        bail!("not built yet")
    }
    fn history(&self, _tenant: &str, _limit: usize) -> Result<Vec<ImportRecord>> {
        bail!("not built yet")
    }
    fn import_record(&self, _tenant: &str, _id: &str) -> Result<Option<ImportRecord>> {
        bail!("not built yet")
    }
    fn held_plan(&self, _tenant: &str, _id: &str) -> Result<Option<Blob>> {
        bail!("not built yet")
    }
    fn held_plans(&self, _tenant: &str) -> Result<Vec<String>> {
        bail!("not built yet")
    }
    fn ledger_get(&self, _tenant: &str, _file: &str) -> Result<Option<LedgerEntry>> {
        bail!("not built yet")
    }
    fn claim_running(&self, _tenant: &str, _file: &str, _claim: &str) -> Result<()> {
        bail!("not built yet")
    }
    fn claim_committed(&self, _tenant: &str, _claim: &str) -> Result<Option<String>> {
        bail!("not built yet")
    }
    fn claim_done(&self, _tenant: &str, _claim: &str) -> Result<()> {
        bail!("not built yet")
    }
    fn claims_stamped(&self, _tenant: &str) -> Result<Vec<String>> {
        bail!("not built yet")
    }
    fn record_claimed(&self, _record: &ImportRecord, _claim: &str) -> Result<()> {
        bail!("not built yet")
    }
}

/// Writes the run-log parts of a [`Commit`](crate::store::Commit) inside the commit's own
/// transaction (the directory's commit in `directory.rs` calls it after checking the tenant's
/// version): the history record, the ledger entry, the stamp of the claim running the ledger's
/// file (the `claims` row of that tenant and file becomes a `claim_stamps` row with the record's
/// import id), and the held plan put or removed.
pub(super) async fn write_commit_parts(
    _tx: &tokio_postgres::Transaction<'_>,
    _c: &crate::store::Commit,
) -> Result<()> {
    bail!("not built yet")
}
