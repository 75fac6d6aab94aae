//! The [`RunLog`] seam on sled: the import history, held plans, the file ledger and the intake
//! claim stamps of each tenant.
//!
//! * **History**: records enter inside an engine commit, or through `record_import` (records
//!   made outside the engine, or completed after archiving), and leave newest first.
//! * **Held plans** are written and removed inside commits and read back by `approve`.
//! * The **ledger** keeps, per tenant and file name, the last run of that name: the engine
//!   writes a [`LedgerEntry`] (`done`/`failed`, the sha256, the import id) inside its commit.
//!   It is history, not a recovery list: an older entry of the same name says nothing about a
//!   newer upload.
//! * The **claim stamps** tie one intake claim (a folder `data/work/<tenant>/<claim id>`) to the
//!   import that ran it, so a restart finishes exactly that run. Before a claimed file is
//!   imported the intake calls `claim_running` (tenant, file name, claim id); the engine's next
//!   commit of that file name (not an `approve`) turns it, in the same sled transaction, into a
//!   stamp `claim id → import id` (see `directory`). After a crash, `claim_committed` answers
//!   "did *this* claim's run commit, and as which import?"; no stamp means the run never
//!   committed and must run again. `claim_done` drops the stamp once the claim folder is gone.
//!   Records the intake writes itself for a claim (a file refused before the engine runs) are
//!   stored with their stamp at once (`record_claimed`).

use super::{tkey, SledStore};
use crate::model::ImportRecord;
use crate::store::{Backend, Blob, LedgerEntry, OutboxMail, RunLog};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::Transactional;

/// A claim whose run committed: which file, as which import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClaimStamp {
    pub file: String,
    pub import_id: String,
}

/// `claims` key of the claim that is running for a file name: `<tenant>\0a<file>`.
pub(crate) fn running_key(tenant: &str, file: &str) -> Vec<u8> {
    let mut rest = b"a".to_vec();
    rest.extend_from_slice(file.as_bytes());
    tkey(tenant, &rest)
}

/// `claims` key of a claim's stamp: `<tenant>\0c<claim id>`.
pub(crate) fn stamp_key(tenant: &str, claim: &str) -> Vec<u8> {
    let mut rest = b"c".to_vec();
    rest.extend_from_slice(claim.as_bytes());
    tkey(tenant, &rest)
}

impl RunLog for SledStore {
    fn new_import_id(&self, now: DateTime<Utc>) -> Result<String> {
        let n = self.inner.db.generate_id()?;
        Ok(format!("{}-{:010}", now.format("%Y%m%dT%H%M%SZ"), n))
    }

    /// Stores (inserts or replaces) a record made outside the engine: a `missing` run, or a
    /// record whose `archived_as`/`report` the intake has just filled in. Flushed on return.
    fn record_import(&self, record: &ImportRecord) -> Result<()> {
        self.write_record(record, None)
    }

    fn record_leased(
        &self,
        record: &ImportRecord,
        mail: Option<&OutboxMail>,
        _lease: &str,
    ) -> Result<()> {
        self.write_record(record, mail)
    }

    /// The tenant's import history, newest first, from the `skip`-th on, at most `limit`.
    fn history_from(&self, tenant: &str, skip: usize, limit: usize) -> Result<Vec<ImportRecord>> {
        let mut out = Vec::new();
        let records = self.inner.history.scan_prefix(tkey(tenant, b"")).rev();
        for kv in records.skip(skip) {
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
    fn import_record(&self, tenant: &str, id: &str) -> Result<Option<ImportRecord>> {
        match self.inner.history.get(tkey(tenant, id.as_bytes()))? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).with_context(|| {
                format!("history record {id} of tenant {tenant} is damaged")
            })?)),
            None => Ok(None),
        }
    }

    /// A held plan's stored bytes (see `import::approve`).
    fn held_plan(&self, tenant: &str, id: &str) -> Result<Option<Blob>> {
        Ok(self
            .inner
            .plans
            .get(tkey(tenant, id.as_bytes()))?
            .map(Blob::new))
    }

    /// Ids of the tenant's held plans.
    fn held_plans(&self, tenant: &str) -> Result<Vec<String>> {
        let prefix = tkey(tenant, b"");
        let mut out = Vec::new();
        for kv in self.inner.plans.scan_prefix(&prefix) {
            let (k, _) = kv?;
            out.push(String::from_utf8_lossy(&k[prefix.len()..]).to_string());
        }
        Ok(out)
    }

    fn ledger_get(&self, tenant: &str, file: &str) -> Result<Option<LedgerEntry>> {
        match self.inner.ledger.get(tkey(tenant, file.as_bytes()))? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).context("a file ledger entry is damaged")?,
            )),
            None => Ok(None),
        }
    }

    fn ledger_page(&self, tenant: &str, after: &str, limit: usize) -> Result<Vec<LedgerEntry>> {
        let prefix = tkey(tenant, b"");
        let from = std::ops::Bound::Excluded(tkey(tenant, after.as_bytes()));
        let mut out = Vec::new();
        for kv in self.inner.ledger.range((from, std::ops::Bound::Unbounded)) {
            let (k, v) = kv?;
            if out.len() >= limit || !k.starts_with(&prefix) {
                break;
            }
            out.push(serde_json::from_slice(&v).context("a file ledger entry is damaged")?);
        }
        Ok(out)
    }

    /// Says that claim `claim` is about to import `file` of `tenant`: the next engine commit of
    /// that file name stamps this claim. Flushed on return.
    fn claim_running(&self, tenant: &str, file: &str, claim: &str) -> Result<()> {
        self.inner
            .claims
            .insert(running_key(tenant, file), claim.as_bytes())
            .context("cannot write the claim ledger")?;
        self.flush()
    }

    /// The import id that claim `claim` committed, if its run committed.
    fn claim_committed(&self, tenant: &str, claim: &str) -> Result<Option<String>> {
        match self.inner.claims.get(stamp_key(tenant, claim))? {
            Some(v) => {
                let stamp: ClaimStamp =
                    serde_json::from_slice(&v).context("a claim stamp is damaged")?;
                Ok(Some(stamp.import_id))
            }
            None => Ok(None),
        }
    }

    /// Forgets claim `claim` (its folder is gone). Flushed on return.
    fn claim_done(&self, tenant: &str, claim: &str) -> Result<()> {
        self.inner.claims.remove(stamp_key(tenant, claim))?;
        self.flush()
    }

    /// Ids of the tenant's stamped claims (for removing stamps whose folder is gone).
    fn claims_stamped(&self, tenant: &str) -> Result<Vec<String>> {
        let prefix = stamp_key(tenant, "");
        let mut out = Vec::new();
        for kv in self.inner.claims.scan_prefix(&prefix) {
            let (k, _) = kv?;
            out.push(String::from_utf8_lossy(&k[prefix.len()..]).to_string());
        }
        Ok(out)
    }

    fn trim_history(&self, tenant: &str, before: DateTime<Utc>) -> Result<u64> {
        let prefix = tkey(tenant, b"");
        let newest = match self.inner.history.scan_prefix(&prefix).next_back() {
            Some(kv) => kv?.0,
            None => return Ok(0),
        };
        let mut kept: std::collections::HashSet<String> =
            self.held_plans(tenant)?.into_iter().collect();
        for kv in self.inner.claims.scan_prefix(stamp_key(tenant, "")) {
            let (_, v) = kv?;
            if let Ok(stamp) = serde_json::from_slice::<ClaimStamp>(&v) {
                kept.insert(stamp.import_id);
            }
        }
        let mut old = sled::Batch::default();
        let mut removed = 0u64;
        for kv in self.inner.history.scan_prefix(&prefix) {
            let (k, v) = kv?;
            if k == newest {
                break;
            }
            // A damaged record stays: retention does not decide about what it cannot read.
            let Ok(record) = serde_json::from_slice::<ImportRecord>(&v) else {
                continue;
            };
            if record.finished_at < before && !kept.contains(&record.id) {
                old.remove(k);
                removed += 1;
            }
        }
        self.inner.history.apply_batch(old)?;
        let mut stale = sled::Batch::default();
        for kv in self.inner.ledger.scan_prefix(&prefix) {
            let (k, v) = kv?;
            if let Ok(entry) = serde_json::from_slice::<LedgerEntry>(&v) {
                if entry.updated_at < before {
                    stale.remove(k);
                }
            }
        }
        self.inner.ledger.apply_batch(stale)?;
        self.flush()?;
        Ok(removed)
    }

    /// Stores a record the intake made for claim `claim` together with the claim's stamp and
    /// its mail, in one transaction, so a restart finishes this record instead of making
    /// another. One process opens the store, so every lease is its own (`lease` is not read).
    fn record_claimed(
        &self,
        record: &ImportRecord,
        claim: &str,
        mail: Option<&OutboxMail>,
        _lease: Option<&str>,
    ) -> Result<()> {
        let json = serde_json::to_vec(record)?;
        let stamp = serde_json::to_vec(&ClaimStamp {
            file: record.file.clone(),
            import_id: record.id.clone(),
        })?;
        let key = tkey(&record.tenant, record.id.as_bytes());
        let skey = stamp_key(&record.tenant, claim);
        let mail = mail.map(|m| self.outbox_entry(m)).transpose()?;
        let trees = (
            &self.inner.history,
            &self.inner.claims,
            &self.inner.changes,
            &self.inner.outbox,
        );
        let done: sled::transaction::TransactionResult<(), anyhow::Error> =
            trees.transaction(|(history, claims, changes, outbox)| {
                put_announced(history, changes, &key, &json, record)?;
                claims.insert(skey.as_slice(), stamp.as_slice())?;
                if let Some((k, v)) = &mail {
                    outbox.insert(k, v.as_slice())?;
                }
                Ok(())
            });
        done.map_err(|e| anyhow::anyhow!("cannot write the import history: {e:?}"))?;
        self.flush()
    }
}

impl SledStore {
    /// Stores `record` (and queues `mail` in the same transaction). Flushed on return.
    fn write_record(&self, record: &ImportRecord, mail: Option<&OutboxMail>) -> Result<()> {
        let json = serde_json::to_vec(record)?;
        let key = tkey(&record.tenant, record.id.as_bytes());
        let mail = mail.map(|m| self.outbox_entry(m)).transpose()?;
        let trees = (&self.inner.history, &self.inner.changes, &self.inner.outbox);
        let done: sled::transaction::TransactionResult<(), anyhow::Error> =
            trees.transaction(|(history, changes, outbox)| {
                put_announced(history, changes, &key, &json, record)?;
                if let Some((k, v)) = &mail {
                    outbox.insert(k, v.as_slice())?;
                }
                Ok(())
            });
        done.map_err(|e| anyhow::anyhow!("cannot write the import history: {e:?}"))?;
        self.flush()
    }
}

/// Inserts or replaces a history record; a record new to the store gets its event.
fn put_announced(
    history: &sled::transaction::TransactionalTree,
    changes: &sled::transaction::TransactionalTree,
    key: &[u8],
    json: &[u8],
    record: &ImportRecord,
) -> sled::transaction::ConflictableTransactionResult<(), anyhow::Error> {
    if history.insert(key, json)?.is_none() {
        super::changes::publish(changes, &record.tenant, &[], Some(record), Utc::now())?;
    }
    Ok(())
}
