//! The store: the only module that touches sled. It keeps, per tenant, the user directory, the
//! import history and held plans, plus a file ledger and the mail outbox.
//!
//! Data enters through typed calls (`commit` from the import engine, `record_import`,
//! `claim_running`, `outbox_push`, `restore`) and leaves as typed values ([`User`],
//! [`ImportRecord`], [`LedgerEntry`], [`OutboxItem`]). Callers never see sled types, so another
//! engine can replace it behind the same methods.
//!
//! # Key layout
//!
//! One sled database in `dir`, with these trees (tenant ids are `[a-z0-9_-]`, so `\0` is a safe
//! separator):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` | `secret` | 32 random bytes: the key of password fingerprints (HMAC-SHA256) |
//! | `users` | `<tenant>\0s` | JSON [`TenantState`]: commit version, sha256 of the last applied file, and for each of the 1024 buckets the generation that holds it |
//! | `users` | `<tenant>\0b<bucket u16 BE><generation u64 BE>` | one bucket: the tenant's users whose key hashes (FNV-1a) to that bucket, sorted by key, sealed (LZ4-compressed, see `codec`) |
//! | `users` | `\x01<tenant>\0<bucket u16 BE><generation u64 BE>` | empty: this bucket generation is staged and not yet committed (removed by the commit) |
//! | `history` | `<tenant>\0<import id>` | JSON [`ImportRecord`]; import ids sort by time, so a reverse scan lists newest first |
//! | `plans` | `<tenant>\0<import id>` | a held plan: JSON header, then the file bytes |
//! | `ledger` | `<tenant>\0<file name>` | JSON [`LedgerEntry`]: the last run of that file name |
//! | `claims` | `<tenant>\0a<file name>` | the id of the intake claim running that file (see `ledger`) |
//! | `claims` | `<tenant>\0c<claim id>` | JSON stamp: the claim's run committed, as this import id |
//! | `outbox` | `<id u64 BE>` | `u32 LE header length`, JSON header (recipients, attempts, next attempt), then the message bytes |
//!
//! # Atomic imports
//!
//! Users are stored in buckets (about a thousand users each for a million-user tenant) because sled
//! writes one large value far faster than a thousand small ones. Buckets are compressed because
//! sled keeps every node an import reads or writes in memory until the import ends (see `codec`):
//! the benchmark's million users take 93 MB of sled blobs instead of 276 MB. An import writes every
//! changed bucket under a *new* generation first; these writes are invisible because the tenant
//! state still names the old generations. It then commits one multi-tree transaction that swaps the
//! generations in the tenant state, removes the old buckets, and writes the history record, the
//! ledger entry (and the stamp of the intake claim running that file), and the held-plan change. sled recovers a transaction entirely or not at all, so a
//! killed process leaves the directory exactly before or exactly after the run; buckets staged by
//! an unfinished run are found through their staging markers and swept away by [`Store::open`]
//! (without reading any bucket). Every commit is flushed to disk before it returns.

mod history;
mod ledger;
mod outbox;
mod seal;
mod users;

pub use ledger::{LedgerEntry, LedgerState};
pub use outbox::OutboxItem;

use crate::model::bucket::BUCKETS;
use crate::model::ImportRecord;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::path::Path;
use std::sync::Arc;

/// Handle to the store; cheap to clone, shareable across threads.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    users: sled::Tree,
    history: sled::Tree,
    plans: sled::Tree,
    ledger: sled::Tree,
    claims: sled::Tree,
    outbox: sled::Tree,
    secret: [u8; 32],
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// Bytes read from the store (a bucket, a plan). Dereferences to `[u8]`.
pub struct Blob(sled::IVec);

impl std::ops::Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Per-tenant directory state: which generation holds each bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TenantState {
    /// Incremented by every commit that changes users; plans check it to detect races.
    pub version: u64,
    /// sha256 of the last file whose import was applied (for `duplicate`).
    pub last_applied_sha256: Option<String>,
    /// Generation per bucket; 0 = the bucket is empty.
    pub gens: Vec<u64>,
}

impl TenantState {
    pub fn gen(&self, bucket: usize) -> u64 {
        self.gens.get(bucket).copied().unwrap_or(0)
    }
}

/// Everything one import (or restore) commits at once.
#[derive(Debug, Default)]
pub(crate) struct Commit {
    pub tenant: String,
    /// The `TenantState::version` the plan was computed against.
    pub expected_version: u64,
    /// (bucket, new generation; 0 = bucket now empty) for every changed bucket.
    pub buckets: Vec<(u16, u64)>,
    pub last_applied_sha256: Option<String>,
    pub record: Option<ImportRecord>,
    pub ledger: Option<LedgerEntry>,
    pub put_plan: Option<(String, Vec<u8>)>,
    pub remove_plan: Option<String>,
}

/// For a commit of an intake run (a ledger entry, not an `approve`): the `claims` key of the
/// claim running that file, and the stamp to write for it.
fn claim_keys(c: &Commit) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let (Some(entry), None) = (&c.ledger, &c.remove_plan) else {
        return Ok(None);
    };
    let Some(import_id) = entry.import_id.clone() else {
        return Ok(None);
    };
    let stamp = serde_json::to_vec(&ledger::ClaimStamp {
        file: entry.file.clone(),
        import_id,
    })?;
    Ok(Some((ledger::running_key(&c.tenant, &entry.file), stamp)))
}

fn tkey(tenant: &str, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 1 + rest.len());
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(rest);
    k
}

fn state_key(tenant: &str) -> Vec<u8> {
    tkey(tenant, b"s")
}

/// Marks a bucket generation as staged but not committed: `\x01<tenant>\0<bucket><gen>`.
fn staged_key(tenant: &str, bucket: u16, gen: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 12);
    k.push(1);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(&bucket.to_be_bytes());
    k.extend_from_slice(&gen.to_be_bytes());
    k
}

fn bucket_key(tenant: &str, bucket: u16, gen: u64) -> Vec<u8> {
    let mut k = tkey(tenant, b"b");
    k.extend_from_slice(&bucket.to_be_bytes());
    k.extend_from_slice(&gen.to_be_bytes());
    k
}

impl Store {
    /// Opens (or creates) the store in `dir` and sweeps buckets left by an unfinished import.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the store folder {}", dir.display()))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(16 * 1024 * 1024)
            .open()
            .with_context(|| {
                format!(
                    "cannot open the store in {} (is another roster process using it?)",
                    dir.display()
                )
            })?;
        let tree = |name: &str| {
            db.open_tree(name)
                .with_context(|| format!("cannot open the store tree {name}"))
        };
        let meta = tree("meta")?;
        let secret = match meta.get("secret")? {
            Some(v) if v.len() == 32 => {
                let mut s = [0u8; 32];
                s.copy_from_slice(&v);
                s
            }
            _ => {
                let s: [u8; 32] = rand::random();
                meta.insert("secret", &s[..])?;
                db.flush().context("cannot flush the store")?;
                s
            }
        };
        let store = Store {
            inner: Arc::new(Inner {
                users: tree("users")?,
                history: tree("history")?,
                plans: tree("plans")?,
                ledger: tree("ledger")?,
                claims: tree("claims")?,
                outbox: tree("outbox")?,
                db,
                secret,
            }),
        };
        store.sweep_orphans()?;
        Ok(store)
    }

    /// The per-store key of password fingerprints.
    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.inner.secret
    }

    /// Flushes everything written so far to disk.
    pub fn flush(&self) -> Result<()> {
        self.inner.db.flush().context("cannot flush the store")?;
        Ok(())
    }

    /// A fresh, time-sortable import id such as `20261121T073000Z-0000000042`.
    pub fn new_import_id(&self, now: chrono::DateTime<chrono::Utc>) -> Result<String> {
        let n = self.inner.db.generate_id()?;
        Ok(format!("{}-{:010}", now.format("%Y%m%dT%H%M%SZ"), n))
    }

    /// A fresh bucket generation number (never 0).
    pub(crate) fn new_generation(&self) -> Result<u64> {
        Ok(self.inner.db.generate_id()? + 1)
    }

    /// The tenant's directory state (empty for a new tenant).
    pub fn tenant_state(&self, tenant: &str) -> Result<TenantState> {
        let mut st: TenantState = match self.inner.users.get(state_key(tenant))? {
            Some(v) => serde_json::from_slice(&v)
                .with_context(|| format!("the stored state of tenant {tenant} is damaged"))?,
            None => TenantState::default(),
        };
        st.gens.resize(BUCKETS, 0);
        Ok(st)
    }

    /// Reads one bucket of a tenant (None when empty).
    /// Reads a bucket (decompressed) of the given generation; None for generation 0 (empty).
    pub(crate) fn bucket(&self, tenant: &str, bucket: u16, gen: u64) -> Result<Option<Vec<u8>>> {
        if gen == 0 {
            return Ok(None);
        }
        let v = self.inner.users.get(bucket_key(tenant, bucket, gen))?;
        match v {
            Some(v) => seal::unseal_bucket(&v)
                .map(Some)
                .with_context(|| format!("bucket {bucket} of tenant {tenant} cannot be read")),
            None => bail!("bucket {bucket} of tenant {tenant} is missing from the store"),
        }
    }

    /// Writes a bucket under a new generation; invisible until [`Store::commit`] names it.
    pub(crate) fn stage_bucket(
        &self,
        tenant: &str,
        bucket: u16,
        gen: u64,
        blob: &[u8],
    ) -> Result<()> {
        // The marker goes first, so a staged bucket is never left unmarked by a crash.
        self.inner
            .users
            .insert(staged_key(tenant, bucket, gen), &[][..])
            .context("cannot write to the store")?;
        self.inner
            .users
            .insert(bucket_key(tenant, bucket, gen), seal::seal_bucket(blob))
            .context("cannot write to the store")?;
        Ok(())
    }

    /// Removes staged buckets of an abandoned plan.
    pub(crate) fn discard_staged(&self, tenant: &str, staged: &[(u16, u64)]) -> Result<()> {
        for &(b, g) in staged {
            if g != 0 {
                self.inner.users.remove(bucket_key(tenant, b, g))?;
                self.inner.users.remove(staged_key(tenant, b, g))?;
            }
        }
        Ok(())
    }

    /// Deletes bucket generations staged by an import that never committed (a killed
    /// process). Only the small staging markers are read, never the buckets themselves.
    fn sweep_orphans(&self) -> Result<()> {
        let mut doomed = Vec::new();
        for kv in self.inner.users.scan_prefix([1u8]) {
            let (k, _) = kv?;
            let Some(sep) = k.iter().position(|&b| b == 0) else {
                continue;
            };
            let (tenant, rest) = (&k[1..sep], &k[sep + 1..]);
            if rest.len() != 10 {
                continue;
            }
            let tenant = String::from_utf8_lossy(tenant).to_string();
            let bucket = u16::from_be_bytes([rest[0], rest[1]]);
            let mut g = [0u8; 8];
            g.copy_from_slice(&rest[2..10]);
            let gen = u64::from_be_bytes(g);
            if self.tenant_state(&tenant)?.gen(bucket as usize) != gen {
                doomed.push(bucket_key(&tenant, bucket, gen));
            }
            doomed.push(k.to_vec());
        }
        for k in &doomed {
            self.inner.users.remove(k)?;
        }
        if !doomed.is_empty() {
            tracing::info!(
                count = doomed.len() / 2,
                "removed buckets of an unfinished import"
            );
            self.flush()?;
        }
        Ok(())
    }

    /// Applies one import atomically: new bucket generations, history, ledger, plans. Fails
    /// without changing anything if another commit changed the tenant since the plan was made.
    pub(crate) fn commit(&self, c: &Commit) -> Result<TenantState> {
        let i = &self.inner;
        let skey = state_key(&c.tenant);
        let record_json = c
            .record
            .as_ref()
            .map(|r| serde_json::to_vec(r).map(|j| (tkey(&c.tenant, r.id.as_bytes()), j)))
            .transpose()?;
        let ledger_json = c
            .ledger
            .as_ref()
            .map(|l| serde_json::to_vec(l).map(|j| (tkey(&c.tenant, l.file.as_bytes()), j)))
            .transpose()?;
        let claim_keys = claim_keys(c)?;
        let result = (&i.users, &i.history, &i.plans, &i.ledger, &i.claims).transaction(
            |(users, history, plans, ledger, claims)| {
                let mut st: TenantState = match users.get(&skey)? {
                    Some(v) => serde_json::from_slice(&v).map_err(|e| {
                        ConflictableTransactionError::Abort(anyhow!(
                            "the stored state of tenant {} is damaged: {e}",
                            c.tenant
                        ))
                    })?,
                    None => TenantState::default(),
                };
                st.gens.resize(BUCKETS, 0);
                if st.version != c.expected_version {
                    return Err(ConflictableTransactionError::Abort(anyhow!(
                        "the directory of tenant {} changed while this import was planned; run it again",
                        c.tenant
                    )));
                }
                if !c.buckets.is_empty() {
                    st.version += 1;
                }
                for &(b, g) in &c.buckets {
                    if g != 0 {
                        users.remove(staged_key(&c.tenant, b, g))?;
                    }
                    let old = st.gen(b as usize);
                    if old != 0 && old != g {
                        users.remove(bucket_key(&c.tenant, b, old))?;
                    }
                    if let Some(slot) = st.gens.get_mut(b as usize) {
                        *slot = g;
                    }
                }
                if let Some(sha) = &c.last_applied_sha256 {
                    st.last_applied_sha256 = Some(sha.clone());
                }
                let json = serde_json::to_vec(&st)
                    .map_err(|e| ConflictableTransactionError::Abort(anyhow!(e)))?;
                users.insert(skey.as_slice(), json)?;
                if let Some((k, v)) = &record_json {
                    history.insert(k.as_slice(), v.as_slice())?;
                }
                if let Some((k, v)) = &ledger_json {
                    ledger.insert(k.as_slice(), v.as_slice())?;
                }
                if let Some((running, stamp)) = &claim_keys {
                    if let Some(claim) = claims.remove(running.as_slice())? {
                        let claim = String::from_utf8_lossy(&claim).to_string();
                        claims.insert(ledger::stamp_key(&c.tenant, &claim), stamp.as_slice())?;
                    }
                }
                if let Some((id, bytes)) = &c.put_plan {
                    plans.insert(tkey(&c.tenant, id.as_bytes()), bytes.as_slice())?;
                }
                if let Some(id) = &c.remove_plan {
                    plans.remove(tkey(&c.tenant, id.as_bytes()))?;
                }
                Ok(st)
            },
        );
        let st = match result {
            Ok(st) => st,
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => {
                return Err(anyhow!(e).context("cannot commit the import to the store"))
            }
        };
        self.flush()?;
        Ok(st)
    }
}
