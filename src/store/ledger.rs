//! The file ledger: which file of which tenant is where in its journey.
//!
//! The intake writes entries (`received`, `importing`) with [`Store::ledger_put`]; the import
//! engine sets `done`/`failed` with the import id inside its atomic commit, so after a crash
//! the ledger says exactly which files must be imported again ([`Store::ledger_unfinished`]).

use super::{tkey, Store};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerState {
    Received,
    Importing,
    Done,
    Failed,
}

/// What the store knows about one file of a tenant (keyed by tenant and file name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub tenant: String,
    pub file: String,
    pub sha256: String,
    pub state: LedgerState,
    /// The import that finished the file (done/failed).
    pub import_id: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl Store {
    /// Inserts or replaces the entry of (tenant, file); flushed on return.
    pub fn ledger_put(&self, e: &LedgerEntry) -> Result<()> {
        self.inner
            .ledger
            .insert(tkey(&e.tenant, e.file.as_bytes()), serde_json::to_vec(e)?)
            .context("cannot write the file ledger")?;
        self.flush()
    }

    pub fn ledger_get(&self, tenant: &str, file: &str) -> Result<Option<LedgerEntry>> {
        match self.inner.ledger.get(tkey(tenant, file.as_bytes()))? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).context("a file ledger entry is damaged")?,
            )),
            None => Ok(None),
        }
    }

    pub fn ledger_remove(&self, tenant: &str, file: &str) -> Result<()> {
        self.inner.ledger.remove(tkey(tenant, file.as_bytes()))?;
        self.flush()
    }

    /// Every entry (all tenants) still `received` or `importing`: the start-up recovery list.
    pub fn ledger_unfinished(&self) -> Result<Vec<LedgerEntry>> {
        let mut out = Vec::new();
        for kv in self.inner.ledger.iter() {
            let (_, v) = kv?;
            let e: LedgerEntry =
                serde_json::from_slice(&v).context("a file ledger entry is damaged")?;
            if matches!(e.state, LedgerState::Received | LedgerState::Importing) {
                out.push(e);
            }
        }
        Ok(out)
    }
}
