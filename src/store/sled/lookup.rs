//! Lookup buckets on sled: the one index the embedded store keeps, so that a SCIM `eq` on
//! `userName`, `emails.value` or `externalId` (what Entra, Okta and most SCIM clients ask
//! before they create a user) reads two buckets instead of the whole directory.
//!
//! Each of the three attributes has [`SLOTS`] lookup buckets. A user's text for an attribute
//! (the filter's own rule: `userName` is the username, else the email, else the key; text is
//! lower-cased unless the attribute is case-exact, see [`value_of`]) goes to the slot its hash
//! names, as the pair (text, user key); a slot's blob is packed like a user bucket
//! (`model::packed`, pairs sorted) and sealed like one (`seal`). Every user is listed, whatever
//! its status: a status change never touches the lookups, and a reader tests the user anyway.
//!
//! Lookup buckets are kept exactly like user buckets, so they are always those of the
//! committed directory: a commit's changed user buckets are compared with the committed ones
//! (`derived`), the changed slots are staged under new generations before the commit
//! ([`SledStore::stage_lookups`]) and swapped in by its transaction ([`swap_in`]); a killed
//! process leaves staged slots that `open` sweeps away. Their generations live under
//! `<tenant>\0l` (one u64 BE per slot), apart from the user buckets' `TenantState`, which
//! other code reads. A store written before lookups existed gets them when opened
//! ([`SledStore::build_lookups`]).
//!
//! Data leaves as candidate user keys ([`SledStore::candidates`]): a superset of the users a
//! filter can match, which `users` then reads and tests.

use super::directory::{bucket_key, staged_key};
use super::{tkey, SledStore};
use crate::model::bucket::{fnv64, BUCKETS};
use crate::model::fields::{EMAIL, MAPPING_CODE, USERNAME};
use crate::model::filter::{Attribute, Op, Operand};
use crate::model::packed::{bucket_entries, bucket_push, field_of, for_each_changed, Cursor};
use crate::model::UserFilter;
use crate::store::Directory;
use anyhow::{Context, Result};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use std::collections::{BTreeMap, BTreeSet};

/// Lookup buckets per attribute.
pub(super) const SLOTS: usize = 256;
/// The looked-up attributes, in slot order.
const ATTRS: [Attribute; 3] = [
    Attribute::UserName,
    Attribute::Email,
    Attribute::MappingCode,
];
/// Every slot of a tenant.
const ALL_SLOTS: usize = SLOTS * ATTRS.len();

/// The key saying every tenant's lookups were made (in tree `meta`).
const BUILT: &[u8] = b"lookups-built";

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<anyhow::Error>>;

/// The bucket number (in the user buckets' key space, after them) of lookup slot `slot`.
fn slot_bucket(slot: usize) -> u16 {
    u16::try_from(BUCKETS + slot).unwrap_or(u16::MAX)
}

/// True for the bucket number of a lookup slot.
pub(super) fn is_lookup_bucket(bucket: u16) -> bool {
    usize::from(bucket) >= BUCKETS
}

/// The slot of text `value` of attribute number `attr`.
fn slot_of(attr: usize, value: &[u8]) -> usize {
    attr * SLOTS + (fnv64(value) % SLOTS as u64) as usize
}

/// The text of attribute number `attr` that `eq` compares, normalised as the filter compares
/// it; None when the user has none.
fn value_of(attr: usize, key: &[u8], rec: &[u8]) -> Result<Option<String>> {
    let text = match ATTRS.get(attr) {
        Some(Attribute::UserName) => Some(match field_of(rec, USERNAME)? {
            Some(name) => name.to_string(),
            None => match field_of(rec, EMAIL)? {
                Some(email) => email.to_string(),
                None => String::from_utf8_lossy(key).to_string(),
            },
        }),
        Some(Attribute::Email) => field_of(rec, EMAIL)?.map(str::to_string),
        Some(Attribute::MappingCode) => field_of(rec, MAPPING_CODE)?.map(str::to_string),
        _ => None,
    };
    Ok(text.map(|t| normalised(attr, &t)))
}

fn normalised(attr: usize, text: &str) -> String {
    if ATTRS.get(attr).is_some_and(Attribute::case_exact) {
        text.to_string()
    } else {
        text.to_lowercase()
    }
}

/// Lookup entries a commit adds and removes for some of the attributes, per slot: packed
/// `(op, text, key)` triples (`op` is 1 to add, 0 to remove), compact because a first import
/// adds one per user and attribute; one buffer per thread that made them, not copied together.
#[derive(Default)]
pub(super) struct LookupChanges {
    /// The attribute numbers recorded.
    attrs: Vec<usize>,
    slots: BTreeMap<usize, Vec<Vec<u8>>>,
    /// Bytes recorded so far, and how many may be: past it, nothing more is recorded and
    /// `overflowed` is set (the commit then derives one attribute at a time).
    bytes: usize,
    limit: usize,
    pub overflowed: bool,
}

impl LookupChanges {
    /// Changes to the attributes numbered `attrs`, up to `limit` bytes of them.
    pub(super) fn of(attrs: &[usize], limit: usize) -> LookupChanges {
        LookupChanges {
            attrs: attrs.to_vec(),
            limit,
            ..LookupChanges::default()
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
        for &attr in &self.attrs {
            let before = old.map(|r| value_of(attr, key, r)).transpose()?.flatten();
            let after = new.map(|r| value_of(attr, key, r)).transpose()?.flatten();
            if before == after {
                continue;
            }
            for (op, text) in [(0u8, before), (1u8, after)] {
                if let Some(text) = text {
                    let parts = self
                        .slots
                        .entry(slot_of(attr, text.as_bytes()))
                        .or_default();
                    if parts.is_empty() {
                        parts.push(Vec::new());
                    }
                    if let Some(out) = parts.last_mut() {
                        let before = out.len();
                        out.push(op);
                        bucket_push(out, text.as_bytes(), key);
                        self.bytes += out.len() - before;
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes in the changes another thread made for the same commit.
    pub(super) fn merge(&mut self, other: LookupChanges) {
        for (slot, parts) in other.slots {
            self.slots.entry(slot).or_default().extend(parts);
        }
        self.bytes += other.bytes;
        self.overflowed |= other.overflowed;
    }
}

/// Every looked-up attribute's number.
pub(super) fn attributes() -> Vec<usize> {
    (0..ATTRS.len()).collect()
}

/// Slot blob `old` (None: empty) with `changes` made; None when nothing is left.
fn changed_slot(old: Option<&[u8]>, changes: &[Vec<u8>]) -> Result<Option<Vec<u8>>> {
    let mut ops: Vec<(&[u8], &[u8], u8)> = Vec::new();
    for part in changes {
        let mut c = Cursor::new(part);
        while !c.at_end() {
            let op = c.byte()?;
            ops.push((c.bytes()?, c.bytes()?, op));
        }
    }
    // One change per (text, key) in a commit: a user's text leaves or arrives once.
    ops.sort_unstable();
    let kept = match old {
        Some(blob) => bucket_entries(blob)?,
        None => Vec::new(),
    };
    let mut out = Vec::with_capacity(old.map_or(0, <[u8]>::len) + ops.len() * 32);
    let (mut i, mut j) = (0, 0);
    loop {
        let next_old = kept.get(i).copied();
        let next_op = ops.get(j).map(|&(t, k, op)| ((t, k), op));
        match (next_old, next_op) {
            (None, None) => break,
            (Some((t, k)), None) => {
                bucket_push(&mut out, t, k);
                i += 1;
            }
            (None, Some(((t, k), op))) => {
                if op == 1 {
                    bucket_push(&mut out, t, k);
                }
                j += 1;
            }
            (Some(have), Some((change, op))) => match have.cmp(&change) {
                std::cmp::Ordering::Less => {
                    bucket_push(&mut out, have.0, have.1);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    if op == 1 {
                        bucket_push(&mut out, change.0, change.1);
                    }
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    if op == 1 {
                        bucket_push(&mut out, have.0, have.1);
                    }
                    i += 1;
                    j += 1;
                }
            },
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

fn gens_key(tenant: &str) -> Vec<u8> {
    tkey(tenant, b"l")
}

/// Slot generations from their stored form (missing or short: 0).
fn gens_of(stored: Option<&[u8]>) -> Vec<u64> {
    let mut gens = vec![0; ALL_SLOTS];
    if let Some(bytes) = stored {
        for (slot, chunk) in bytes.chunks_exact(8).take(ALL_SLOTS).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            gens[slot] = u64::from_be_bytes(b);
        }
    }
    gens
}

fn gens_bytes(gens: &[u64]) -> Vec<u8> {
    gens.iter().flat_map(|g| g.to_be_bytes()).collect()
}

/// Inside a commit's transaction on tree `users`: makes the staged slots `staged` (bucket
/// number, generation; 0 = now empty) the committed ones and removes the generations they
/// replace.
pub(super) fn swap_in(
    users: &TransactionalTree,
    tenant: &str,
    staged: &[(u16, u64)],
) -> TxResult<()> {
    if staged.is_empty() {
        return Ok(());
    }
    let key = gens_key(tenant);
    let mut gens = gens_of(users.get(&key)?.as_deref());
    for &(bucket, gen) in staged {
        let Some(slot) = usize::from(bucket)
            .checked_sub(BUCKETS)
            .filter(|s| *s < ALL_SLOTS)
        else {
            continue;
        };
        if gen != 0 {
            users.remove(staged_key(tenant, bucket, gen))?;
        }
        let old = gens[slot];
        if old != 0 && old != gen {
            users.remove(bucket_key(tenant, bucket, old))?;
        }
        gens[slot] = gen;
    }
    users.insert(key, gens_bytes(&gens))?;
    Ok(())
}

impl SledStore {
    /// The committed generation of every lookup slot of `tenant`.
    pub(super) fn lookup_gens(&self, tenant: &str) -> Result<Vec<u64>> {
        Ok(gens_of(self.inner.users.get(gens_key(tenant))?.as_deref()))
    }

    /// Stages every slot `changes` touch, as the slot of generation `base` (the committed
    /// ones, see [`Self::lookup_gens`]) with the changes made, and returns (bucket number,
    /// staged generation; 0 = now empty) for the commit. On an error, what was staged is
    /// removed again.
    pub(super) fn stage_lookups(
        &self,
        tenant: &str,
        gens: &[u64],
        changes: &LookupChanges,
    ) -> Result<Vec<(u16, u64)>> {
        let slots: Vec<(&usize, &Vec<Vec<u8>>)> = changes.slots.iter().collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4));
        let chunk = slots.len().div_ceil(threads).max(1);
        let stage_part = |part: &[(&usize, &Vec<Vec<u8>>)]| -> Vec<Result<(u16, u64)>> {
            part.iter()
                .map(|&(&slot, parts)| {
                    let bucket = slot_bucket(slot);
                    let old = self.bucket(tenant, bucket, gens.get(slot).copied().unwrap_or(0))?;
                    match changed_slot(old.as_deref(), parts)? {
                        Some(blob) => Ok((bucket, self.stage_bucket(tenant, bucket, &blob)?)),
                        None => Ok((bucket, 0)),
                    }
                })
                .collect()
        };
        let results: Vec<Result<(u16, u64)>> = std::thread::scope(|s| {
            let handles: Vec<_> = slots
                .chunks(chunk)
                .map(|part| s.spawn(move || stage_part(part)))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![Err(anyhow::anyhow!("staging the lookups failed"))]
                    })
                })
                .collect()
        });
        let mut staged = Vec::with_capacity(results.len());
        let mut failed = None;
        for r in results {
            match r {
                Ok(done) => staged.push(done),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            self.discard_staged(tenant, &staged)?;
            return Err(e);
        }
        Ok(staged)
    }

    /// Keys of the users whose text for attribute number `attr` is `value` (normalised), read
    /// from its one slot. The users may since have changed; the caller tests them.
    fn lookup(&self, tenant: &str, gens: &[u64], attr: usize, value: &str) -> Result<Vec<String>> {
        let value = normalised(attr, value);
        let slot = slot_of(attr, value.as_bytes());
        let gen = gens.get(slot).copied().unwrap_or(0);
        let Some(blob) = self.bucket(tenant, slot_bucket(slot), gen)? else {
            return Ok(Vec::new());
        };
        Ok(bucket_entries(&blob)?
            .into_iter()
            .filter(|(text, _)| *text == value.as_bytes())
            .map(|(_, key)| String::from_utf8_lossy(key).to_string())
            .collect())
    }

    /// Keys of users among which are all those `f` can match, when the lookups (or an
    /// `id eq`) say so: `eq` on a looked-up attribute or on `id`, either side of an `and`, both
    /// sides of an `or`. None when `f` needs a reading of every user.
    pub(super) fn candidates(
        &self,
        tenant: &str,
        f: &UserFilter,
    ) -> Result<Option<BTreeSet<String>>> {
        let gens = self.lookup_gens(tenant)?;
        self.candidates_with(tenant, &gens, f)
    }

    fn candidates_with(
        &self,
        tenant: &str,
        gens: &[u64],
        f: &UserFilter,
    ) -> Result<Option<BTreeSet<String>>> {
        Ok(match f {
            UserFilter::Compare(Attribute::Key, Op::Eq, Operand::Text(k)) => {
                Some(BTreeSet::from([k.clone()]))
            }
            UserFilter::Compare(a, Op::Eq, Operand::Text(v)) => {
                match ATTRS.iter().position(|x| x == a) {
                    Some(attr) => Some(self.lookup(tenant, gens, attr, v)?.into_iter().collect()),
                    None => None,
                }
            }
            UserFilter::And(a, b) => {
                let left = self.candidates_with(tenant, gens, a)?;
                match left {
                    Some(keys) => Some(keys),
                    None => self.candidates_with(tenant, gens, b)?,
                }
            }
            UserFilter::Or(a, b) => {
                match (
                    self.candidates_with(tenant, gens, a)?,
                    self.candidates_with(tenant, gens, b)?,
                ) {
                    (Some(mut x), Some(y)) => {
                        x.extend(y);
                        Some(x)
                    }
                    _ => None,
                }
            }
            _ => None,
        })
    }

    /// Makes every tenant's lookups from its user buckets, once: when the store was written by
    /// a roster without lookups (or building was interrupted), on open.
    pub(super) fn build_lookups(&self) -> Result<()> {
        if self.inner.meta.contains_key(BUILT)? {
            return Ok(());
        }
        let nothing = vec![0; ALL_SLOTS];
        for tenant in self.tenants()? {
            let st = self.tenant_state(&tenant)?;
            // One attribute at a time, as a large commit does (see `derived`).
            let mut staged = Vec::new();
            for attr in attributes() {
                let mut changes = LookupChanges::of(&[attr], usize::MAX);
                let built = (0..BUCKETS).try_for_each(|b| {
                    let blob = self.bucket(&tenant, b as u16, st.gen(b))?;
                    for_each_changed(None, blob.as_deref(), |k, _, new| {
                        changes.add_user(k, None, new)
                    })
                });
                let more = built.and_then(|()| self.stage_lookups(&tenant, &nothing, &changes));
                match more {
                    Ok(more) => staged.extend(more),
                    Err(e) => {
                        self.discard_staged(&tenant, &staged)?;
                        return Err(e);
                    }
                }
            }
            // Built from nothing, and every slot replaced, also those left empty.
            let written: BTreeSet<u16> = staged.iter().map(|(b, _)| *b).collect();
            staged.extend(
                (0..ALL_SLOTS)
                    .map(slot_bucket)
                    .filter(|b| !written.contains(b))
                    .map(|b| (b, 0)),
            );
            let swapped = self
                .inner
                .users
                .transaction(|users| swap_in(users, &tenant, &staged));
            if let Err(e) = swapped {
                self.discard_staged(&tenant, &staged)?;
                anyhow::bail!("cannot write the lookups of tenant {tenant}: {e:?}");
            }
            self.build_order(&tenant)?;
            tracing::info!(tenant = %tenant, "built the user lookups and key order");
        }
        self.inner.meta.insert(BUILT, &[][..])?;
        self.inner.db.flush().context("cannot flush the store")?;
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::bucket::bucket_of;
    use crate::model::packed::UserRec;
    use crate::store::{Commit, Users};

    fn rec(email: &str, username: Option<&str>, code: &str) -> Vec<u8> {
        let mut r = UserRec::default();
        r.set("email", Some(email));
        r.set("username", username);
        r.set("mapping_code", Some(code));
        let mut out = Vec::new();
        r.encode_into(&mut out);
        out
    }

    /// Commits the directory `users` (key, record): every bucket holding one of them, and
    /// every bucket named in `emptied`, is rewritten.
    pub(in crate::store::sled) fn put<K: AsRef<str>>(
        store: &SledStore,
        users: &BTreeMap<K, Vec<u8>>,
        emptied: &[&str],
    ) -> Result<TenantState> {
        let mut buckets: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
        for key in emptied {
            buckets.entry(bucket_of(key.as_bytes())).or_default();
        }
        for (key, r) in users {
            let key: &str = key.as_ref();
            bucket_push(
                buckets.entry(bucket_of(key.as_bytes())).or_default(),
                key.as_bytes(),
                r,
            );
        }
        let mut staged = Vec::new();
        for (b, blob) in buckets {
            let gen = if blob.is_empty() {
                0
            } else {
                store.stage_bucket("t", b, &blob)?
            };
            staged.push((b, gen));
        }
        store.commit(&Commit {
            tenant: "t".into(),
            expected_version: store.tenant_state("t")?.version,
            buckets: staged,
            ..Default::default()
        })
    }

    fn eq(store: &SledStore, a: Attribute, v: &str) -> Vec<String> {
        let f = UserFilter::Compare(a, Op::Eq, Operand::Text(v.into()));
        let page = store.users_matching("t", &f, 0, 10).unwrap();
        assert_eq!(page.total as usize, page.users.len());
        page.users.into_iter().map(|u| u.key).collect()
    }

    fn candidates(store: &SledStore, a: Attribute, v: &str) -> Option<BTreeSet<String>> {
        let f = UserFilter::Compare(a, Op::Eq, Operand::Text(v.into()));
        store.candidates("t", &f).unwrap()
    }

    use crate::store::TenantState;
    use Attribute::{Email, MappingCode, UserName};

    #[test]
    fn eq_finds_users_through_their_lookups_after_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut users = BTreeMap::from([
            ("a", rec("Ann@X.example", None, "C1")),
            ("b", rec("bob@x.example", Some("Bobby"), "C2")),
        ]);
        put(&store, &users, &[]).unwrap();
        assert_eq!(eq(&store, Email, "ann@x.EXAMPLE"), ["a"]);
        assert_eq!(eq(&store, UserName, "ann@x.example"), ["a"]);
        assert_eq!(eq(&store, UserName, "BOBBY"), ["b"]);
        // The username wins over the email; the mapping code is case-exact.
        assert!(eq(&store, UserName, "bob@x.example").is_empty());
        assert!(eq(&store, MappingCode, "c1").is_empty());
        assert_eq!(eq(&store, MappingCode, "C1"), ["a"]);

        // a's email changes, b is removed: their old texts leave the lookups.
        users.insert("a", rec("ann2@x.example", None, "C1"));
        users.remove("b");
        put(&store, &users, &["b"]).unwrap();
        assert_eq!(
            candidates(&store, Email, "ann@x.example"),
            Some(BTreeSet::new())
        );
        assert_eq!(candidates(&store, UserName, "bobby"), Some(BTreeSet::new()));
        assert_eq!(candidates(&store, MappingCode, "C2"), Some(BTreeSet::new()));
        assert_eq!(eq(&store, Email, "ANN2@x.example"), ["a"]);
        assert_eq!(eq(&store, UserName, "ann2@x.example"), ["a"]);
        // Only what a filter needs: an `or` of lookups, an `and` with one; not a `co`.
        let either =
            crate::admin::filter::parse(r#"externalId eq "C1" or userName eq "x""#).unwrap();
        assert_eq!(
            store.candidates("t", &either).unwrap(),
            Some(BTreeSet::from(["a".into()]))
        );
        let co = crate::admin::filter::parse(r#"emails.value co "ann""#).unwrap();
        assert_eq!(store.candidates("t", &co).unwrap(), None);
    }

    #[test]
    fn a_store_written_without_lookups_gets_them_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let users = BTreeMap::from([("a", rec("ann@x.example", None, "C1"))]);
        put(&store, &users, &[]).unwrap();
        // As a roster without lookups left the store: no generations, no marker.
        for slot in 0..ALL_SLOTS {
            let gen = store.lookup_gens("t").unwrap()[slot];
            if gen != 0 {
                store
                    .inner
                    .users
                    .remove(bucket_key("t", slot_bucket(slot), gen))
                    .unwrap();
            }
        }
        store.inner.users.remove(gens_key("t")).unwrap();
        store.inner.meta.remove(BUILT).unwrap();
        assert!(eq(&store, Email, "ann@x.example").is_empty());
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(eq(&store, Email, "ann@x.example"), ["a"]);
        assert_eq!(eq(&store, MappingCode, "C1"), ["a"]);
    }

    #[test]
    fn a_refused_commit_leaves_no_staged_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let users = BTreeMap::from([("a", rec("ann@x.example", None, "C1"))]);
        put(&store, &users, &[]).unwrap();
        let before = store.lookup_gens("t").unwrap();
        let key = "z";
        let mut blob = Vec::new();
        bucket_push(&mut blob, key.as_bytes(), &rec("zed@x.example", None, "C9"));
        let b = bucket_of(key.as_bytes());
        let gen = store.stage_bucket("t", b, &blob).unwrap();
        let refused = store.commit(&Commit {
            tenant: "t".into(),
            expected_version: 99,
            buckets: vec![(b, gen)],
            ..Default::default()
        });
        assert!(refused.is_err());
        store.discard_staged("t", &[(b, gen)]).unwrap();
        assert_eq!(store.inner.users.scan_prefix([1u8]).count(), 0);
        assert_eq!(store.lookup_gens("t").unwrap(), before);
        assert!(eq(&store, Email, "zed@x.example").is_empty());
    }
}
