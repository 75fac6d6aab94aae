//! Import history and held plans of each tenant.
//!
//! Records enter from the import engine inside its commit, or from the intake through
//! [`Store::record_import`] (`missing` runs, `archived_as`/`report` set after archiving), and
//! leave newest first through [`Store::history`] and [`Store::import`]. Held plans are kept
//! until approved.

use super::{tkey, Store};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Outcome of one run (design.md §5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    /// Applied, no skipped rows.
    Success,
    /// Applied, some rows skipped.
    Partial,
    /// A file-level problem: nothing applied.
    Error,
    /// Too many users would be deactivated/deleted: nothing applied until approved.
    Held,
    /// Same bytes as the last applied file: nothing applied.
    Duplicate,
    /// A schedule fired and no file was there (recorded by the intake).
    Missing,
}

impl ImportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportStatus::Success => "success",
            ImportStatus::Partial => "partial",
            ImportStatus::Error => "error",
            ImportStatus::Held => "held",
            ImportStatus::Duplicate => "duplicate",
            ImportStatus::Missing => "missing",
        }
    }
}

impl std::fmt::Display for ImportStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run in the import history (design.md §5; the admin API and `history --json` form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportRecord {
    pub id: String,
    pub tenant: String,
    /// File name as uploaded.
    pub file: String,
    /// Hex sha256 of the file bytes.
    pub sha256: String,
    pub bytes: u64,
    pub received_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub status: ImportStatus,
    /// Data rows read (the header not counted).
    pub rows: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deactivated: u64,
    pub deleted: u64,
    pub restored: u64,
    pub skipped: u64,
    /// Problems that stopped a row or the file (skipped rows + a file-level error).
    pub errors: u64,
    /// Sentences for people: the file-level error, notes (unknown references, ignored
    /// columns), the first skip reasons. Capped; the failure report has every skipped row.
    pub messages: Vec<String>,
    /// Detected or configured encoding: `utf-8`, `utf-8-bom`, `utf-16le`, `utf-16be`, `windows-1252`.
    pub encoding: String,
    /// The delimiter used, e.g. `;` or `\t`.
    pub delimiter: String,
    /// Where the intake archived the file (set by the intake).
    pub archived_as: Option<String>,
    /// Where the intake wrote the failure report (set by the intake).
    pub report: Option<String>,
}

impl ImportRecord {
    /// A run that has counted nothing yet: all counts zero, no messages, not filed.
    pub fn begun(
        id: String,
        tenant: &str,
        file: &str,
        status: ImportStatus,
        received_at: DateTime<Utc>,
        started_at: DateTime<Utc>,
    ) -> ImportRecord {
        ImportRecord {
            id,
            tenant: tenant.to_string(),
            file: file.to_string(),
            sha256: String::new(),
            bytes: 0,
            received_at,
            started_at,
            finished_at: started_at,
            status,
            rows: 0,
            inserted: 0,
            updated: 0,
            unchanged: 0,
            deactivated: 0,
            deleted: 0,
            restored: 0,
            skipped: 0,
            errors: 0,
            messages: Vec::new(),
            encoding: String::new(),
            delimiter: String::new(),
            archived_as: None,
            report: None,
        }
    }
}

impl Store {
    /// Stores (inserts or replaces) a record made outside the engine: a `missing` run, or a
    /// record whose `archived_as`/`report` the intake has just filled in. Flushed on return.
    pub fn record_import(&self, record: &ImportRecord) -> Result<()> {
        let json = serde_json::to_vec(record)?;
        self.inner
            .history
            .insert(tkey(&record.tenant, record.id.as_bytes()), json)
            .context("cannot write the import history")?;
        self.flush()
    }

    /// The tenant's import history, newest first, at most `limit` records.
    pub fn history(&self, tenant: &str, limit: usize) -> Result<Vec<ImportRecord>> {
        let mut out = Vec::new();
        for kv in self.inner.history.scan_prefix(tkey(tenant, b"")).rev() {
            if out.len() >= limit {
                break;
            }
            let (_, v) = kv?;
            out.push(
                serde_json::from_slice(&v)
                    .with_context(|| format!("a history record of tenant {tenant} is damaged"))?,
            );
        }
        Ok(out)
    }

    /// One import record by id.
    pub fn import(&self, tenant: &str, id: &str) -> Result<Option<ImportRecord>> {
        match self.inner.history.get(tkey(tenant, id.as_bytes()))? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).with_context(|| {
                format!("history record {id} of tenant {tenant} is damaged")
            })?)),
            None => Ok(None),
        }
    }

    /// A held plan's stored bytes (see `import::approve`).
    pub(crate) fn held_plan(&self, tenant: &str, id: &str) -> Result<Option<super::Blob>> {
        Ok(self
            .inner
            .plans
            .get(tkey(tenant, id.as_bytes()))?
            .map(super::Blob))
    }

    /// Ids of the tenant's held plans.
    pub fn held_plans(&self, tenant: &str) -> Result<Vec<String>> {
        let prefix = tkey(tenant, b"");
        let mut out = Vec::new();
        for kv in self.inner.plans.scan_prefix(&prefix) {
            let (k, _) = kv?;
            out.push(String::from_utf8_lossy(&k[prefix.len()..]).to_string());
        }
        Ok(out)
    }
}
