//! The user lists the embedded store keeps (see `lists` for how a list is stored) and what
//! each user contributes to them; `list_filters` says which SCIM filters they answer.
//!
//! | list | entries of a user that is not deleted |
//! |---|---|
//! | [`List::Keys`] | its key |
//! | [`List::Status`] | `a` (active) or `i` (inactive), then its key |
//! | [`List::UserName`] | its username, lower-cased; the key, lower-cased, when it has neither username nor email (a user with an email and no username has the email as `userName`: it is found through `Email`) |
//! | [`List::Email`] | its email, lower-cased |
//! | [`List::MappingCode`] | its mapping code (case-exact) |
//! | [`List::Groups`] | each of its group names, lower-cased |
//! | [`List::Modified`] | its `updated_at` (milliseconds, 8 bytes that sort as the number), then its key |
//!
//! A text entry is the text (each 0 byte written as 0, 0xFF) then a 0 byte then the key, so a
//! list's entries sort by text, then key: the users with one text are one range, in key order,
//! and those whose text starts with some prefix are one range too. Deleted users are in no
//! list, so the users of one status, email, mapping code or group are exactly one range.
//!
//! Data enters from `derived` (each changed user's record before and after, made into
//! [`LookupChanges`]). A commit that changes more users than it can keep the lists for in
//! bounded memory (a first import of a large file) marks them *stale* (`\x02<tenant>`) in its
//! transaction instead; readers then read every bucket, and the lists are rebuilt from the
//! committed directory on a thread of their own right after the commit
//! ([`SledStore::rebuild_lists_later`]), when the import has let go of its memory. A stale mark
//! left by a stopped process, and a store written before lists existed, are rebuilt on open
//! ([`SledStore::build_lists`]).

use super::lists::ListChanges;
use super::{state_key, SledStore};
use crate::model::bucket::BUCKETS;
use crate::model::fields::{EMAIL, LIST_SEP, MAPPING_CODE, USERNAME};
use crate::model::packed::{field_of, for_each_changed, head_of, status_of};
use crate::model::packed::{STATUS_ACTIVE, STATUS_DELETED};
use crate::store::{Directory, TenantState};
use anyhow::{Context, Result};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The rebuilds of stale lists running on their own threads (see
/// [`SledStore::rebuild_lists_later`]).
#[derive(Default)]
pub(super) struct Rebuilds {
    running: Mutex<Running>,
    done: Condvar,
}

#[derive(Default)]
pub(super) struct Running {
    /// Tenants being rebuilt.
    tenants: HashSet<String>,
    /// Threads not yet ended.
    threads: usize,
}

impl Rebuilds {
    fn lock(&self) -> MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<anyhow::Error>>;

/// The key saying every tenant's lists were made (in tree `meta`).
pub(super) const BUILT: &[u8] = b"lists-built";

/// The lists (see the module doc); the number is the list's number in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum List {
    Keys = 0,
    UserName = 1,
    Email = 2,
    MappingCode = 3,
    Groups = 4,
    Status = 5,
    Modified = 6,
}

/// The lists a rebuild makes together, one group per reading of the buckets, so that it holds
/// at most about 30 bytes per user (plus 24 to sort them) at a time.
pub(super) const PASSES: [&[List]; 5] = [
    // Largest first: the slots written by each pass stay in sled's cache for the rest.
    &[List::Email],
    &[List::Modified],
    &[List::Groups],
    &[List::MappingCode, List::UserName],
    &[List::Keys, List::Status],
];

/// Every list.
pub(super) const LISTS: [List; 7] = [
    List::Keys,
    List::UserName,
    List::Email,
    List::MappingCode,
    List::Groups,
    List::Status,
    List::Modified,
];

impl List {
    pub(super) fn id(self) -> u8 {
        self as u8
    }

    fn case_exact(self) -> bool {
        self == List::MappingCode
    }

    /// The parts of the entries of the stored user `key`, `rec` in this list that come before
    /// the key (an escaped text and its end, a status byte, a time), sorted, each once; none
    /// when the user is deleted.
    fn heads<'a>(self, key: &'a [u8], rec: &'a [u8]) -> Result<Vec<Cow<'a, [u8]>>> {
        if status_of(rec) == STATUS_DELETED {
            return Ok(Vec::new());
        }
        let text = |t: Option<Cow<'a, str>>| t.map(|t| text_head(&t)).into_iter().collect();
        let lowered = |t: Option<&'a str>| t.map(|t| lower(Cow::Borrowed(t)));
        Ok(match self {
            List::Keys => vec![Cow::Borrowed(&[][..])],
            List::Status => {
                let status = if status_of(rec) == STATUS_ACTIVE {
                    b"a"
                } else {
                    b"i"
                };
                vec![Cow::Borrowed(&status[..])]
            }
            List::UserName => match (field_of(rec, USERNAME)?, field_of(rec, EMAIL)?) {
                (Some(name), _) => text(Some(lower(Cow::Borrowed(name)))),
                (None, Some(_)) => Vec::new(),
                (None, None) => text(Some(lower(String::from_utf8_lossy(key)))),
            },
            List::Email => text(lowered(field_of(rec, EMAIL)?)),
            List::MappingCode => text(field_of(rec, MAPPING_CODE)?.map(Cow::Borrowed)),
            List::Groups => {
                let mut out: Vec<Cow<[u8]>> = field_of(rec, "groups")?
                    .into_iter()
                    .flat_map(|g| g.split(LIST_SEP))
                    .filter(|item| !item.is_empty())
                    .map(|item| text_head(&lower(Cow::Borrowed(item))))
                    .collect();
                out.sort_unstable();
                out.dedup();
                out
            }
            List::Modified => vec![Cow::Owned(time_head(head_of(rec)?.updated_at).to_vec())],
        })
    }

    /// The user key of one of this list's entries.
    pub(super) fn key_of(self, entry: &[u8]) -> Vec<u8> {
        let at = match self {
            List::Keys => 0,
            List::Status => 1,
            List::Modified => 8,
            _ => text_end(entry),
        };
        entry.get(at..).unwrap_or_default().to_vec()
    }

    /// The start of the entries whose text is `text` (`exact`) or starts with it.
    pub(super) fn text_prefix(self, text: &str, exact: bool) -> Vec<u8> {
        let text = if self.case_exact() {
            Cow::Borrowed(text)
        } else {
            lower(Cow::Borrowed(text))
        };
        let mut out = escaped(&text).into_owned();
        if exact {
            out.push(0);
        }
        out
    }
}

/// The head of a text entry: `text` escaped, then its end (a 0 byte).
fn text_head(text: &str) -> Cow<'static, [u8]> {
    let mut out = escaped(text).into_owned();
    out.push(0);
    Cow::Owned(out)
}

/// Where the key starts in a text entry: after the first 0 byte not followed by 0xFF.
fn text_end(entry: &[u8]) -> usize {
    let mut i = 0;
    while i < entry.len() {
        if entry[i] == 0 {
            if entry.get(i + 1) == Some(&0xFF) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    entry.len()
}

/// The 8 bytes of a time (milliseconds) in [`List::Modified`], sorting as the number.
pub(super) fn time_head(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// `text` with each 0 byte written as 0, 0xFF (so 0 then anything else ends a text).
fn escaped(text: &str) -> Cow<'_, [u8]> {
    if !text.as_bytes().contains(&0) {
        return Cow::Borrowed(text.as_bytes());
    }
    let mut out = Vec::with_capacity(text.len() + 1);
    for &b in text.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    Cow::Owned(out)
}

/// `text` lower-cased as the filter compares it (`str::to_lowercase`), copied only when that
/// changes it.
fn lower(text: Cow<'_, str>) -> Cow<'_, str> {
    if text.is_ascii() && !text.bytes().any(|b| b.is_ascii_uppercase()) {
        return text;
    }
    Cow::Owned(text.to_lowercase())
}

/// The list entries a commit adds and removes, for some of the lists, up to a number of bytes:
/// past it nothing more is recorded and `overflowed` is set (the commit then derives a few
/// lists at a time, see `derived`).
pub(super) struct LookupChanges {
    pub lists: BTreeMap<List, ListChanges>,
    bytes: usize,
    limit: usize,
    pub overflowed: bool,
}

impl LookupChanges {
    /// Changes to `lists`, up to `limit` bytes of them.
    pub(super) fn of(lists: &[List], limit: usize) -> LookupChanges {
        LookupChanges {
            lists: lists.iter().map(|l| (*l, ListChanges::default())).collect(),
            bytes: 0,
            limit,
            overflowed: false,
        }
    }

    /// Adds the change of user `key` from record `old` to `new` (None: absent).
    pub(super) fn add_user(
        &mut self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<()> {
        if self.bytes > self.limit {
            self.overflowed = true;
            return Ok(());
        }
        for (list, changes) in self.lists.iter_mut() {
            let before = old
                .map(|r| list.heads(key, r))
                .transpose()?
                .unwrap_or_default();
            let after = new
                .map(|r| list.heads(key, r))
                .transpose()?
                .unwrap_or_default();
            for gone in before.iter().filter(|h| !after.contains(h)) {
                self.bytes += changes.push(false, &[gone, key]);
            }
            for came in after.iter().filter(|h| !before.contains(h)) {
                self.bytes += changes.push(true, &[came, key]);
            }
        }
        Ok(())
    }

    /// Takes in the changes another thread made for the same commit.
    pub(super) fn merge(&mut self, other: LookupChanges) {
        for (list, changes) in other.lists {
            self.lists.entry(list).or_default().merge(changes);
        }
        self.bytes += other.bytes;
        self.overflowed |= other.overflowed;
    }
}

impl SledStore {
    /// True while the tenant's lists are stale: left so by a large commit, not yet rebuilt.
    /// Readers do not use them then (see `users`).
    pub(super) fn lists_stale(&self, tenant: &str) -> Result<bool> {
        Ok(self.inner.users.contains_key(stale_key(tenant))?)
    }

    /// Marks every tenant's lists stale when the store was written by a roster without lists
    /// (once, on open), then rebuilds the lists of every tenant whose lists are stale (a
    /// process stopped before it finished a rebuild).
    pub(super) fn build_lists(&self) -> Result<()> {
        if !self.inner.meta.contains_key(BUILT)? {
            for tenant in self.tenants()? {
                self.inner.users.insert(stale_key(&tenant), &[][..])?;
            }
            self.inner.meta.insert(BUILT, &[][..])?;
            self.inner.db.flush().context("cannot flush the store")?;
        }
        let mut stale = Vec::new();
        for key in self.inner.users.scan_prefix([STALE]).keys() {
            stale.push(String::from_utf8_lossy(&key?[1..]).to_string());
        }
        for tenant in stale {
            self.rebuild_lists(&tenant)?;
        }
        Ok(())
    }

    /// Rebuilds the tenant's stale lists on a thread of their own (one per tenant at a time;
    /// it starts again when a commit marked them stale while it ran);
    /// [`SledStore::wait_for_lists`] waits for every such thread to end.
    pub(super) fn rebuild_lists_later(&self, tenant: &str) {
        let rebuilds = Arc::clone(&self.inner.rebuilds);
        {
            let mut running = rebuilds.lock();
            if !running.tenants.insert(tenant.to_string()) {
                return; // that thread checks for a new stale mark before it ends
            }
            running.threads += 1;
        }
        let (store, tenant) = (self.clone(), tenant.to_string());
        std::thread::spawn(move || {
            loop {
                let built = store.rebuild_lists(&tenant);
                if let Err(e) = &built {
                    tracing::error!(tenant = %tenant, "cannot rebuild the user lists (SCIM reads read every user until the next start): {e:#}");
                }
                let mut running = rebuilds.lock();
                // A commit writes its stale mark before it asks for a rebuild, so a mark
                // written while this ran is seen here, under the lock it asks under.
                if built.is_ok() && store.lists_stale(&tenant).unwrap_or(false) {
                    continue;
                }
                running.tenants.remove(&tenant);
                break;
            }
            // The store is let go before the waiters hear of it (so they may reopen it).
            drop(store);
            rebuilds.lock().threads -= 1;
            rebuilds.done.notify_all();
        });
    }

    /// Waits until no thread rebuilds lists.
    pub(super) fn wait_for_lists(&self) {
        let rebuilds = &self.inner.rebuilds;
        let mut running = rebuilds.lock();
        while running.threads > 0 {
            running = rebuilds
                .done
                .wait(running)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Rebuilds every list of the tenant from its committed directory, a few lists per reading
    /// of its buckets ([`PASSES`]), and clears the stale mark if no commit came meanwhile
    /// (else starts again).
    /// Reads every bucket of the tenant at the generations of `st` and writes its lists.
    fn rebuild_passes(&self, tenant: &str, st: &TenantState) -> Result<()> {
        for lists in PASSES {
            let mut changes = LookupChanges::of(lists, usize::MAX);
            for b in 0..BUCKETS {
                let blob = self.bucket(tenant, b as u16, st.gen(b))?;
                for_each_changed(None, blob.as_deref(), |k, _, new| {
                    changes.add_user(k, None, new)
                })?;
            }
            for (list, built) in changes.lists {
                self.rebuild_list(tenant, list.id(), &built)?;
            }
        }
        Ok(())
    }

    fn rebuild_lists(&self, tenant: &str) -> Result<()> {
        let started = std::time::Instant::now();
        for _ in 0..20 {
            let state = self.inner.users.get(state_key(tenant))?;
            let st = self.tenant_state(tenant)?;
            if let Err(e) = self.rebuild_passes(tenant, &st) {
                // A commit (an import, a restore) that replaced a bucket while this read it
                // makes the read fail: that is a reason to read again, not an error (found by
                // the verification of s15: a restore right after an import left SCIM reading
                // every user until the next start).
                if self.inner.users.get(state_key(tenant))? != state {
                    continue;
                }
                return Err(e);
            }
            let current = self.inner.users.transaction(|users| {
                if users.get(state_key(tenant))? != state {
                    return Ok(false); // a commit came meanwhile: its changes are not in
                }
                users.remove(stale_key(tenant))?;
                Ok(true)
            });
            let current: std::result::Result<bool, TransactionError<anyhow::Error>> = current;
            if current.map_err(|e| anyhow::anyhow!("cannot write to the store: {e:?}"))? {
                self.inner.db.flush().context("cannot flush the store")?;
                tracing::info!(tenant = %tenant, ms = started.elapsed().as_millis() as u64, "rebuilt the user lists");
                return Ok(());
            }
        }
        anyhow::bail!(
            "the directory of tenant {tenant} kept changing while its user lists were rebuilt"
        )
    }
}

/// `\x02<tenant>`: found without reading the tenants' buckets (a scan of the prefix).
fn stale_key(tenant: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 1);
    k.push(STALE);
    k.extend_from_slice(tenant.as_bytes());
    k
}

/// The first byte of a stale mark's key.
pub(super) const STALE: u8 = 2;

/// Inside a commit's transaction on tree `users`: marks the tenant's lists stale.
pub(super) fn mark_stale(users: &TransactionalTree, tenant: &str) -> TxResult<()> {
    users.insert(stale_key(tenant), &[][..])?;
    Ok(())
}
