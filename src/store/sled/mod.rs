//! The sled backend of the store: the only code that touches sled. It implements every seam
//! of `store` ([`Directory`], [`Users`], [`RunLog`], [`MailOutbox`]) on one sled database.
//!
//! Data enters and leaves through those traits as `model` values and packed buckets; sled
//! types never leave this folder.
//!
//! # Key layout
//!
//! One sled database in `dir`, with these trees (tenant ids are `[a-z0-9_-]`, so `\0` is a safe
//! separator):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` | `secret` | 32 random bytes: the key of password fingerprints (HMAC-SHA256) |
//! | `meta` | `lists-built` | empty: every tenant's user lists were made, or marked stale to be (see `lookup`) |
//! | `users` | `<tenant>\0s` | JSON [`TenantState`]: commit version, sha256 of the last applied file, and for each of the 1024 buckets the generation that holds it |
//! | `users` | `<tenant>\0b<bucket u16 BE><generation u64 BE>` | one bucket: the tenant's users whose key `model::bucket::bucket_of` places there, packed (`model::packed`), sorted by key, sealed (LZ4-compressed, see `seal`) |
//! | `users` | `\x02<tenant>` | empty: the tenant's user lists are stale, to be rebuilt (see `lookup`) |
//! | `users` | `<tenant>\0o<list u8>` | a user list's map: each slot's lowest entry, generation and entry count (see `lists`; the lists are in `lookup`) |
//! | `users` | `<tenant>\0b<2024 + list, u16 BE><generation u64 BE>` | one slot of a user list: its entries, sorted, packed and sealed like a user bucket |
//! | `users` | `\x01<tenant>\0<bucket u16 BE><generation u64 BE>` | empty: this bucket generation (user bucket or list slot) is staged and not yet committed (removed by the commit) |
//! | `history` | `<tenant>\0<import id>` | JSON [`ImportRecord`]; import ids sort by time, so a reverse scan lists newest first |
//! | `plans` | `<tenant>\0<import id>` | a held plan: framed (`store::frame`) JSON header, then the file bytes |
//! | `ledger` | `<tenant>\0<file name>` | JSON [`LedgerEntry`](crate::store::LedgerEntry): the last run of that file name |
//! | `claims` | `<tenant>\0a<file name>` | the id of the intake claim running that file (see `runs`) |
//! | `claims` | `<tenant>\0c<claim id>` | JSON stamp: the claim's run committed, as this import id |
//! | `cursors` | `<tenant>\0<consumer>` | JSON `model::changelog::Cursor`: how far a delivery consumer got (see `changes`) |
//! | `changes` | (see `changes`) | the change log (chunks staged with their bucket, published by the commit), the event log, their counters |
//! | `groups` | `<tenant>\0<group name>` (see `groups`) | the group's member count (u64 BE), kept by the commit |
//! | `outbox` | `<id u64 BE>` | framed (`store::frame`) JSON header (recipients, attempts, next attempt), then the message bytes |
//!
//! # Atomic imports
//!
//! Users are kept in buckets (about a thousand users each for a million-user tenant) because sled
//! writes one large value far faster than a thousand small ones. Buckets are compressed because
//! sled keeps every node an import reads or writes in memory until the import ends (see `seal`):
//! the benchmark's million users take 93 MB of sled blobs instead of 276 MB. An import writes every
//! changed bucket under a *new* generation first; these writes are invisible because the tenant
//! state still names the old generations. It then commits one multi-tree transaction that swaps the
//! generations in the tenant state, removes the old buckets, and writes the history record, the
//! ledger entry (and the stamp of the intake claim running that file), the held-plan change, and
//! the run's change-log chunks and events (numbered here, see `changes`).
//! sled recovers a transaction entirely or not at all, so a killed process leaves the directory
//! exactly before or exactly after the run; buckets staged by an unfinished run are found through
//! their staging markers and swept away by [`SledStore::open`] (without reading any bucket).
//! Every commit is flushed to disk before it returns.

mod changes;
mod cluster;
mod deep_page;
mod derived;
mod directory;
// Group member counts (tree `groups`; h-scimspeed).
mod groups;
// Ordered lists of users in slots (the store's index), and which lists there are.
mod list_filters;
mod list_merge;
mod lists;
mod lookup;
mod outbox;
mod runs;
mod seal;
// The console's user search: a test of raw records before decoding (h-console-users).
mod search;
mod users;

use super::{Backend, Directory};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;

/// Why a bucket (or list slot) generation is not in the store: a commit replaced it after the
/// reader read which generation is current (or the store is damaged). Readers of several
/// buckets read again (`users`).
#[derive(Debug)]
struct Replaced;

impl std::fmt::Display for Replaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a stored generation was replaced while it was read")
    }
}

impl std::error::Error for Replaced {}

/// The sled store; cheap to clone, shareable across threads.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    /// The fingerprint secret and the store's one-time upgrade markers.
    meta: sled::Tree,
    users: sled::Tree,
    history: sled::Tree,
    plans: sled::Tree,
    ledger: sled::Tree,
    claims: sled::Tree,
    outbox: sled::Tree,
    cursors: sled::Tree,
    changes: sled::Tree,
    /// Group member counts (see `groups`).
    groups: sled::Tree,
    /// Tenants whose user lists are being rebuilt, and the signal that one finished (see
    /// `lookup`).
    rebuilds: Arc<lookup::Rebuilds>,
    secret: [u8; 32],
}

/// `<tenant>\0s`: the tenant's [`TenantState`](crate::store::TenantState).
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

/// `<tenant>\0b<bucket><gen>`: one bucket generation (a user bucket or a list slot).
fn bucket_key(tenant: &str, bucket: u16, gen: u64) -> Vec<u8> {
    let mut k = tkey(tenant, b"b");
    k.extend_from_slice(&bucket.to_be_bytes());
    k.extend_from_slice(&gen.to_be_bytes());
    k
}

fn tkey(tenant: &str, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 1 + rest.len());
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(rest);
    k
}

/// Opens the sled database in `dir`, once more after removing unfinished snapshots when sled
/// finds one corrupt.
///
/// sled 0.34 writes a snapshot (a cache of where its pages are, rebuilt from the log when
/// absent) to `snap.<lsn>.generating`, syncs it, renames it to `snap.<lsn>`, and on open reads
/// the newest file starting `snap.`, an unfinished `.generating` one included. A process
/// killed while writing one leaves a store that fails to open with "Read corrupted data at
/// file offset None" (sled issues 1509 and 1527; seen here by `tests/changes_crash.rs`).
/// Removing that file leaves the store exactly as if the kill had come just before sled began
/// the snapshot, a state sled recovers from its log: nothing committed is lost.
fn open_sled(dir: &Path) -> sled::Result<sled::Db> {
    let open = || {
        sled::Config::new()
            .path(dir)
            .cache_capacity(16 * 1024 * 1024)
            .open()
    };
    match open_unlocked(open) {
        Err(sled::Error::Corruption { .. }) if remove_unfinished_snapshots(dir)? > 0 => {
            open_unlocked(open)
        }
        opened => opened,
    }
}

/// How long opening waits for the store's file lock to be let go.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// `open`, tried again for up to [`LOCK_WAIT`] while another handle holds the file lock: a
/// store just closed in this process (or a process that is stopping) lets go of it only when
/// sled's background writes end, a moment after the last handle is dropped. Another process
/// that keeps the store open still gets the error, after the wait.
fn open_unlocked(open: impl Fn() -> sled::Result<sled::Db>) -> sled::Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match open() {
            // sled 0.34 reports the lock as an `Other` error with this sentence.
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            opened => return opened,
        }
    }
}

/// Removes the `snap.*.generating` files of `dir`; returns how many.
fn remove_unfinished_snapshots(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let unfinished = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"));
        if unfinished {
            tracing::warn!(file = %path.display(), "removing an unfinished sled snapshot left by a stopped process");
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, sweeps buckets left by an unfinished import, and
    /// counts the groups and builds the user lists of a store written before they existed.
    pub fn open(dir: &Path) -> Result<SledStore> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the store folder {}", dir.display()))?;
        let db = open_sled(dir).with_context(|| {
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
        let store = SledStore {
            inner: Arc::new(Inner {
                users: tree("users")?,
                history: tree("history")?,
                plans: tree("plans")?,
                ledger: tree("ledger")?,
                claims: tree("claims")?,
                outbox: tree("outbox")?,
                cursors: tree("cursors")?,
                changes: tree("changes")?,
                groups: tree("groups")?,
                meta,
                rebuilds: Arc::default(),
                db,
                secret,
            }),
        };
        store.sweep_orphans()?;
        store.count_groups()?;
        store.build_lists()?;
        Ok(store)
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
            // A staged list slot is never committed under its marker.
            if lists::is_list_bucket(bucket)
                || self.tenant_state(&tenant)?.gen(bucket as usize) != gen
            {
                doomed.push(bucket_key(&tenant, bucket, gen));
            }
            doomed.push(k.to_vec());
        }
        for k in &doomed {
            self.inner.users.remove(k)?;
        }
        let chunks = self.sweep_staged_chunks()?;
        if !doomed.is_empty() || chunks > 0 {
            tracing::info!(
                count = doomed.len() / 2,
                "removed buckets of an unfinished import"
            );
            self.flush()?;
        }
        Ok(())
    }
}

/// Read-only listings for `roster migrate-store`, which copies a whole store and so needs what
/// the store traits never list: every tenant, and a tenant's ledger entries.
impl SledStore {
    /// Every tenant with anything stored (directory state, history, plans, ledger or claims),
    /// sorted.
    pub fn tenants(&self) -> Result<Vec<String>> {
        let i = &self.inner;
        let mut out = std::collections::BTreeSet::new();
        for tree in [&i.users, &i.history, &i.plans, &i.ledger, &i.claims] {
            for key in tree.iter().keys() {
                let key = key?;
                if matches!(key.first(), Some(&1) | Some(&lookup::STALE)) {
                    continue; // a staging marker (`\x01<tenant>...`) or a stale mark
                }
                if let Some(sep) = key.iter().position(|&b| b == 0) {
                    out.insert(String::from_utf8_lossy(&key[..sep]).to_string());
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// The tenant's file ledger entries, by file name.
    pub fn ledger_entries(&self, tenant: &str) -> Result<Vec<crate::store::LedgerEntry>> {
        let mut out = Vec::new();
        for kv in self.inner.ledger.scan_prefix(tkey(tenant, b"")) {
            let (_, v) = kv?;
            out.push(serde_json::from_slice(&v).context("a file ledger entry is damaged")?);
        }
        Ok(out)
    }
}

impl Backend for SledStore {
    /// Flushes everything written so far to disk.
    fn flush(&self) -> Result<()> {
        self.inner.db.flush().context("cannot flush the store")?;
        Ok(())
    }

    fn settle(&self) {
        self.wait_for_lists();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn opening_waits_for_a_handle_let_go_a_moment_later() {
        let dir = tempfile::tempdir().unwrap();
        let first = SledStore::open(dir.path()).unwrap();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        let second = SledStore::open(dir.path());
        holder.join().unwrap();
        assert!(second.is_ok(), "{:#}", second.err().unwrap());
    }

    #[test]
    fn a_store_kept_open_is_refused_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let _kept = SledStore::open(dir.path()).unwrap();
        let started = Instant::now();
        let refused = SledStore::open(dir.path()).err().unwrap();
        assert!(started.elapsed() >= LOCK_WAIT);
        assert!(
            format!("{refused:#}").contains("is another roster process using it?"),
            "{refused:#}"
        );
    }
}
