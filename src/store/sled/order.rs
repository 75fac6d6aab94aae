//! The key order of a tenant's users on sled, so that a SCIM listing without a filter (how a
//! client pages through the whole directory) reads the slots holding its page instead of every
//! bucket, at any `startIndex`.
//!
//! The keys of the users that are not deleted are kept sorted in *order slots*, each holding the
//! keys of one key range (packed like a bucket, each key with an empty record, and sealed; about
//! [`SLOT_KEYS`] keys, split in two past twice that). The tenant's *order map* (`<tenant>\0o`)
//! lists every slot's lowest key, generation and number of keys, in key order; the first slot's
//! lowest key is empty, so every key has a slot. A page counts whole slots off the map and
//! reads only the slots it takes keys from; the total is the sum of the counts.
//!
//! Kept like the lookups (see `lookup`): a commit's changes (a user created, deleted or
//! brought back; `derived`) are merged into the slots they fall in, staged before the commit
//! ([`SledStore::stage_order`]) and made current with the new map by its transaction
//! ([`swap_in`]). A store written before order slots existed gets them when opened
//! (`lookup::build_lookups`).

use super::directory::{bucket_key, staged_key};
use super::{tkey, SledStore};
use crate::model::bucket::BUCKETS;
use crate::model::packed::{bucket_entries, bucket_push, put_bytes, status_of, Cursor};
use crate::model::packed::{put_varint, STATUS_DELETED};
use crate::store::Directory;
use anyhow::{bail, Result};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

/// Keys per order slot when one is split.
#[cfg(not(test))]
const SLOT_KEYS: usize = 4096;
/// Small slots in unit tests, so that they split and merge.
#[cfg(test)]
const SLOT_KEYS: usize = 4;

/// The bucket number under which order slots are stored (after the user and lookup buckets;
/// each slot's generation is unique).
pub(super) const ORDER_BUCKET: u16 = (BUCKETS + 1000) as u16;

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<anyhow::Error>>;

/// One order slot: the lowest key it may hold, its generation (0: empty), its number of keys.
#[derive(Debug, Clone, PartialEq)]
struct Slot {
    low: Vec<u8>,
    gen: u64,
    count: u64,
}

/// A tenant's order map (see the module doc). Never empty.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct OrderMap {
    slots: Vec<Slot>,
}

impl Default for OrderMap {
    fn default() -> Self {
        OrderMap {
            slots: vec![Slot {
                low: Vec::new(),
                gen: 0,
                count: 0,
            }],
        }
    }
}

impl OrderMap {
    fn parse(stored: Option<&[u8]>) -> Result<OrderMap> {
        let Some(bytes) = stored else {
            return Ok(OrderMap::default());
        };
        let mut c = Cursor::new(bytes);
        let mut slots = Vec::new();
        while !c.at_end() {
            slots.push(Slot {
                low: c.bytes()?.to_vec(),
                gen: c.varint()?,
                count: c.varint()?,
            });
        }
        if slots.first().is_none_or(|s| !s.low.is_empty()) {
            bail!("the stored key order is damaged");
        }
        Ok(OrderMap { slots })
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for s in &self.slots {
            put_bytes(&mut out, &s.low);
            put_varint(&mut out, s.gen);
            put_varint(&mut out, s.count);
        }
        out
    }

    /// The keys listed (users not deleted).
    pub(super) fn total(&self) -> u64 {
        self.slots.iter().map(|s| s.count).sum()
    }
}

fn map_key(tenant: &str) -> Vec<u8> {
    tkey(tenant, b"o")
}

/// Keys a commit adds to (op 1) and removes from (op 0) the order: packed `(op, key)` pairs,
/// one buffer per thread that made them.
#[derive(Default)]
pub(super) struct OrderChanges {
    parts: Vec<Vec<u8>>,
}

impl OrderChanges {
    /// Adds the change of user `key` from record `old` to `new` (None: absent).
    pub(super) fn add_user(&mut self, key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) {
        let listed = |r: Option<&[u8]>| r.is_some_and(|r| status_of(r) != STATUS_DELETED);
        let (was, is) = (listed(old), listed(new));
        if was == is {
            return;
        }
        if self.parts.is_empty() {
            self.parts.push(Vec::new());
        }
        if let Some(out) = self.parts.last_mut() {
            out.push(u8::from(is));
            put_bytes(out, key);
        }
    }

    pub(super) fn merge(&mut self, other: OrderChanges) {
        self.parts.extend(other.parts);
    }

    fn is_empty(&self) -> bool {
        self.parts.iter().all(Vec::is_empty)
    }
}

/// A commit's staged order: the new map, the slots staged for it, and the generations it
/// replaces (removed by the commit).
#[derive(Debug, Default)]
pub(super) struct StagedOrder {
    map: Option<OrderMap>,
    pub staged: Vec<(u16, u64)>,
    replaced: Vec<u64>,
}

/// Inside a commit's transaction on tree `users`: makes `order` the tenant's key order.
pub(super) fn swap_in(
    users: &TransactionalTree,
    tenant: &str,
    order: &StagedOrder,
) -> TxResult<()> {
    let Some(map) = &order.map else {
        return Ok(());
    };
    for &(bucket, gen) in &order.staged {
        users.remove(staged_key(tenant, bucket, gen))?;
    }
    for &gen in &order.replaced {
        users.remove(bucket_key(tenant, ORDER_BUCKET, gen))?;
    }
    users.insert(map_key(tenant), map.to_bytes())?;
    Ok(())
}

/// Sorted `keys` with the sorted `ops` (key, op) made: op 1 adds a key, op 0 removes it.
fn merged<'a>(keys: &[&'a [u8]], ops: &[(&'a [u8], u8)]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(keys.len() + ops.len());
    let (mut i, mut j) = (0, 0);
    while i < keys.len() || j < ops.len() {
        match (keys.get(i), ops.get(j)) {
            (Some(&k), Some(&(o, op))) if k == o => {
                if op == 1 {
                    out.push(k);
                }
                i += 1;
                j += 1;
            }
            (Some(&k), Some(&(o, _))) if k < o => {
                out.push(k);
                i += 1;
            }
            (Some(&k), None) => {
                out.push(k);
                i += 1;
            }
            (_, Some(&(o, op))) => {
                if op == 1 {
                    out.push(o);
                }
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

impl SledStore {
    /// The tenant's committed order map.
    pub(super) fn order_map(&self, tenant: &str) -> Result<OrderMap> {
        OrderMap::parse(self.inner.users.get(map_key(tenant))?.as_deref())
    }

    /// Stages the slots `changes` touch, merged into those of `map`, and the map that names
    /// them. On an error, what was staged is removed again.
    pub(super) fn stage_order(
        &self,
        tenant: &str,
        map: &OrderMap,
        changes: &OrderChanges,
    ) -> Result<StagedOrder> {
        let mut out = StagedOrder::default();
        if changes.is_empty() {
            return Ok(out);
        }
        match self.stage_order_slots(tenant, map, changes, &mut out) {
            Ok(()) => Ok(out),
            Err(e) => {
                self.discard_staged(tenant, &out.staged)?;
                Err(e)
            }
        }
    }

    fn stage_order_slots(
        &self,
        tenant: &str,
        map: &OrderMap,
        changes: &OrderChanges,
        out: &mut StagedOrder,
    ) -> Result<()> {
        let mut ops: Vec<(&[u8], u8)> = Vec::new();
        for part in &changes.parts {
            let mut c = Cursor::new(part);
            while !c.at_end() {
                let op = c.byte()?;
                ops.push((c.bytes()?, op));
            }
        }
        ops.sort_unstable();
        let mut slots = Vec::with_capacity(map.slots.len());
        let mut at = 0;
        for (i, slot) in map.slots.iter().enumerate() {
            let end = match map.slots.get(i + 1) {
                Some(next) => at + ops[at..].partition_point(|(k, _)| *k < next.low.as_slice()),
                None => ops.len(),
            };
            if at == end {
                slots.push(slot.clone());
                continue;
            }
            let blob = self.bucket(tenant, ORDER_BUCKET, slot.gen)?;
            let keys: Vec<&[u8]> = match &blob {
                Some(b) => bucket_entries(b)?.into_iter().map(|(k, _)| k).collect(),
                None => Vec::new(),
            };
            let now = merged(&keys, &ops[at..end]);
            if slot.gen != 0 {
                out.replaced.push(slot.gen);
            }
            self.stage_split(tenant, slot, &now, &mut slots, &mut out.staged)?;
            at = end;
        }
        out.map = Some(OrderMap { slots });
        Ok(())
    }

    /// Stages the keys `now` of `slot` as one slot, or several past twice [`SLOT_KEYS`], or
    /// none when empty (the first slot stays, empty), and lists them in `slots`.
    fn stage_split(
        &self,
        tenant: &str,
        slot: &Slot,
        now: &[&[u8]],
        slots: &mut Vec<Slot>,
        staged: &mut Vec<(u16, u64)>,
    ) -> Result<()> {
        if now.is_empty() {
            if slot.low.is_empty() {
                slots.push(Slot {
                    low: Vec::new(),
                    gen: 0,
                    count: 0,
                });
            }
            return Ok(());
        }
        let pieces = if now.len() > 2 * SLOT_KEYS {
            now.len().div_ceil(SLOT_KEYS)
        } else {
            1
        };
        let size = now.len().div_ceil(pieces);
        for (n, chunk) in now.chunks(size).enumerate() {
            let mut blob = Vec::with_capacity(chunk.iter().map(|k| k.len() + 2).sum());
            for k in chunk {
                bucket_push(&mut blob, k, b"");
            }
            let gen = self.stage_bucket(tenant, ORDER_BUCKET, &blob)?;
            staged.push((ORDER_BUCKET, gen));
            let low = match (n, chunk.first()) {
                (0, _) | (_, None) => slot.low.clone(),
                (_, Some(first)) => first.to_vec(),
            };
            slots.push(Slot {
                low,
                gen,
                count: chunk.len() as u64,
            });
        }
        Ok(())
    }

    /// The listed keys (users not deleted) from the `skip`-th, at most `take` of them, in key
    /// order, and how many are listed: only the slots holding the page are read.
    pub(super) fn order_page(
        &self,
        tenant: &str,
        skip: usize,
        take: usize,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        let map = self.order_map(tenant)?;
        let mut passed = 0u64;
        let mut page = Vec::new();
        let skip = skip as u64;
        for slot in &map.slots {
            if page.len() >= take {
                break;
            }
            if passed + slot.count <= skip {
                passed += slot.count;
                continue;
            }
            let Some(blob) = self.bucket(tenant, ORDER_BUCKET, slot.gen)? else {
                continue;
            };
            for (k, _) in bucket_entries(&blob)? {
                if passed >= skip && page.len() < take {
                    page.push(k.to_vec());
                }
                passed += 1;
            }
        }
        Ok((map.total(), page))
    }

    /// Rebuilds the tenant's order from its user buckets (see `lookup::build_lookups`).
    pub(super) fn build_order(&self, tenant: &str) -> Result<()> {
        let st = self.tenant_state(tenant)?;
        let mut changes = OrderChanges::default();
        for b in 0..BUCKETS {
            let blob = self.bucket(tenant, b as u16, st.gen(b))?;
            crate::model::packed::for_each_changed(None, blob.as_deref(), |k, _, new| {
                changes.add_user(k, None, new);
                Ok(())
            })?;
        }
        let old = self.order_map(tenant).unwrap_or_default();
        let mut order = self.stage_order(tenant, &OrderMap::default(), &changes)?;
        order.map.get_or_insert_with(OrderMap::default);
        order.replaced = old
            .slots
            .iter()
            .map(|s| s.gen)
            .filter(|g| *g != 0)
            .collect();
        let swapped = self
            .inner
            .users
            .transaction(|users| swap_in(users, tenant, &order));
        if let Err(e) = swapped {
            self.discard_staged(tenant, &order.staged)?;
            bail!("cannot write the key order of tenant {tenant}: {e:?}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::packed::{UserRec, STATUS_ACTIVE, STATUS_INACTIVE};
    use crate::model::UserFilter;
    use crate::store::sled::lookup::tests::put;
    use crate::store::Users;
    use std::collections::BTreeMap;

    fn rec(status: u8) -> Vec<u8> {
        let mut out = Vec::new();
        UserRec {
            status,
            ..Default::default()
        }
        .encode_into(&mut out);
        out
    }

    /// The listed keys of `users` from `skip`, at most `take`, as the order must give them.
    fn expected(users: &BTreeMap<String, Vec<u8>>, skip: usize, take: usize) -> Vec<Vec<u8>> {
        users
            .iter()
            .filter(|(_, r)| status_of(r) != STATUS_DELETED)
            .map(|(k, _)| k.as_bytes().to_vec())
            .skip(skip)
            .take(take)
            .collect()
    }

    fn check(store: &SledStore, users: &BTreeMap<String, Vec<u8>>) {
        let listed = expected(users, 0, usize::MAX).len();
        for (skip, take) in [(0, 1000), (0, 3), (5, 7), (11, 1), (17, 100), (listed, 5)] {
            let (total, page) = store.order_page("t", skip, take).unwrap();
            assert_eq!(total as usize, listed, "({skip}, {take})");
            assert_eq!(page, expected(users, skip, take), "({skip}, {take})");
        }
        let everyone = store
            .users_matching("t", &UserFilter::Everyone, 4, 9)
            .unwrap();
        let keys: Vec<Vec<u8>> = everyone
            .users
            .iter()
            .map(|u| u.key.as_bytes().to_vec())
            .collect();
        assert_eq!(keys, expected(users, 4, 9));
    }

    fn stored_slots(store: &SledStore) -> usize {
        let mut prefix = tkey("t", b"b");
        prefix.extend_from_slice(&ORDER_BUCKET.to_be_bytes());
        store.inner.users.scan_prefix(prefix).count()
    }

    fn current_slots(store: &SledStore) -> usize {
        let map = store.order_map("t").unwrap();
        map.slots.iter().filter(|s| s.gen != 0).count()
    }

    #[test]
    fn pages_follow_the_key_order_through_splits_deletions_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut users: BTreeMap<String, Vec<u8>> = (0..40)
            .map(|i| {
                (
                    format!("k{i:03}"),
                    rec([STATUS_ACTIVE, STATUS_INACTIVE][i % 2]),
                )
            })
            .collect();
        put(&store, &users, &[]).unwrap();
        check(&store, &users);
        assert!(
            store.order_map("t").unwrap().slots.len() > 4,
            "the slots split"
        );

        // Deleted users leave the order; k000..k009 all go (their slots are dropped), new
        // keys arrive between others, a deleted user comes back.
        for i in (0..40).step_by(3).chain(0..10) {
            users.insert(format!("k{i:03}"), rec(STATUS_DELETED));
        }
        users.insert("k0105".into(), rec(STATUS_ACTIVE));
        users.insert("a".into(), rec(STATUS_ACTIVE));
        put(&store, &users, &[]).unwrap();
        check(&store, &users);
        users.insert("k012".into(), rec(STATUS_ACTIVE));
        put(&store, &users, &[]).unwrap();
        check(&store, &users);

        assert_eq!(
            stored_slots(&store),
            current_slots(&store),
            "replaced slots are removed"
        );

        // As a roster without the order left the store: rebuilt when opened.
        let total = store.order_map("t").unwrap().total();
        let mut prefix = tkey("t", b"b");
        prefix.extend_from_slice(&ORDER_BUCKET.to_be_bytes());
        for kv in store.inner.users.scan_prefix(prefix) {
            store.inner.users.remove(kv.unwrap().0).unwrap();
        }
        store.inner.users.remove(map_key("t")).unwrap();
        store.inner.meta.remove(b"lookups-built").unwrap();
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        check(&store, &users);
        assert_eq!(store.order_map("t").unwrap().total(), total);
        assert_eq!(stored_slots(&store), current_slots(&store));
    }
}
