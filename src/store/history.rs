//! Import history and held plans of each tenant.
//!
//! Records enter from the import engine inside its commit, or from the intake through
//! [`Store::record_import`] (`missing` runs, `archived_as`/`report` set after archiving), and
//! leave newest first through [`Store::history`] and [`Store::import`]. Held plans are kept
//! until approved.

use super::{tkey, Store};
use crate::model::ImportRecord;
use anyhow::{Context, Result};

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
