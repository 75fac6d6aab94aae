//! Ordered lists of a tenant's users on sled: the one kind of index the embedded store keeps.
//! Which lists there are and what a user contributes to each is `lookup`'s business; this
//! module keeps a list of byte strings (*entries*) sorted, split into slots, and reads ranges.
//!
//! A list's entries are kept in *slots*, each holding the entries of one range (packed like a
//! bucket, each entry with an empty record, and sealed; about [`SLOT_ENTRIES`] entries, split
//! past twice that, dropped when empty). The list's *map* (`<tenant>\0o<list>`) names every
//! slot's lowest entry, generation and number of entries, in order; the first slot's lowest
//! entry is empty, so every entry has a slot. A range read ([`SledStore::list_range`]) counts
//! whole slots off the map and reads only the slots at the range's ends and those it takes
//! entries from.
//!
//! Lists are kept like user buckets, so they are always those of the committed directory: a
//! commit's entries to add and remove ([`ListChanges`], made by `derived`) are merged into the
//! slots they fall in, which are staged under new generations before the commit
//! ([`SledStore::stage_list`]); its transaction writes the new maps and removes the replaced
//! slots ([`swap_in`]). A killed process leaves staged slots, swept away by `open`.

use super::list_merge::{Merged, SortedOps};
use super::{bucket_key, staged_key, tkey, SledStore};
use crate::model::bucket::BUCKETS;
use crate::model::packed::{bucket_entries, bucket_push, put_bytes, put_varint, Cursor};
use crate::store::Directory;
use anyhow::{bail, Result};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

/// Entries per slot when one is split.
#[cfg(not(test))]
const SLOT_ENTRIES: usize = 4096;
/// Small slots in unit tests, so that they split and are dropped.
#[cfg(test)]
const SLOT_ENTRIES: usize = 4;

/// The bucket number under which list `n`'s slots are stored is this plus `n` (after the user
/// buckets; each slot's generation is unique).
const LIST_BUCKET: usize = BUCKETS + 1000;

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<anyhow::Error>>;

/// True for the bucket number of a list slot.
pub(super) fn is_list_bucket(bucket: u16) -> bool {
    usize::from(bucket) >= BUCKETS
}

/// The bucket number of list `list`'s slots.
fn list_bucket(list: u8) -> u16 {
    u16::try_from(LIST_BUCKET + usize::from(list)).unwrap_or(u16::MAX)
}

/// One slot: the lowest entry it may hold, its generation (0: empty), its number of entries.
#[derive(Debug, Clone, PartialEq)]
struct Slot {
    low: Vec<u8>,
    gen: u64,
    count: u64,
}

/// A list's map (see the module doc). Never empty.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ListMap {
    slots: Vec<Slot>,
}

impl Default for ListMap {
    fn default() -> Self {
        ListMap {
            slots: vec![Slot {
                low: Vec::new(),
                gen: 0,
                count: 0,
            }],
        }
    }
}

impl ListMap {
    fn parse(stored: Option<&[u8]>) -> Result<ListMap> {
        let Some(bytes) = stored else {
            return Ok(ListMap::default());
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
            bail!("a stored user list is damaged");
        }
        Ok(ListMap { slots })
    }

    pub(super) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for s in &self.slots {
            put_bytes(&mut out, &s.low);
            put_varint(&mut out, s.gen);
            put_varint(&mut out, s.count);
        }
        out
    }

    /// The generations of its slots that hold entries.
    pub(super) fn gens(&self) -> Vec<u64> {
        self.slots
            .iter()
            .map(|s| s.gen)
            .filter(|g| *g != 0)
            .collect()
    }
}

fn map_key(tenant: &str, list: u8) -> Vec<u8> {
    tkey(tenant, &[b'o', list])
}

/// Entries a commit adds to (op 1) and removes from (op 0) one list: packed `(op, entry)`
/// pairs, one buffer per thread that made them (not copied together).
#[derive(Default)]
pub(super) struct ListChanges {
    parts: Vec<Vec<u8>>,
}

impl ListChanges {
    /// Records the entry made of `pieces` (concatenated) added (`add`) or removed; returns
    /// the bytes it took.
    pub(super) fn push(&mut self, add: bool, pieces: &[&[u8]]) -> usize {
        if self.parts.is_empty() {
            self.parts.push(Vec::new());
        }
        match self.parts.last_mut() {
            Some(out) => {
                let before = out.len();
                out.push(u8::from(add));
                put_varint(out, pieces.iter().map(|p| p.len() as u64).sum());
                for p in pieces {
                    out.extend_from_slice(p);
                }
                out.len() - before
            }
            None => 0,
        }
    }

    pub(super) fn merge(&mut self, other: ListChanges) {
        self.parts.extend(other.parts);
    }

    fn is_empty(&self) -> bool {
        self.parts.iter().all(Vec::is_empty)
    }
}

/// A commit's staged change of one list: its new map, the slots staged for it, and the
/// generations it replaces (removed by the commit).
#[derive(Debug, Default)]
pub(super) struct StagedList {
    list: u8,
    map: Option<ListMap>,
    pub staged: Vec<(u16, u64)>,
    replaced: Vec<u64>,
}

/// Inside a commit's transaction on tree `users`: makes the staged lists current.
pub(super) fn swap_in(
    users: &TransactionalTree,
    tenant: &str,
    lists: &[StagedList],
) -> TxResult<()> {
    for list in lists {
        let Some(map) = &list.map else {
            continue;
        };
        for &(bucket, gen) in &list.staged {
            users.remove(staged_key(tenant, bucket, gen))?;
        }
        for &gen in &list.replaced {
            users.remove(bucket_key(tenant, list_bucket(list.list), gen))?;
        }
        users.insert(map_key(tenant, list.list), map.to_bytes())?;
    }
    Ok(())
}

/// The slots staged for `lists` (to discard them when the commit fails).
pub(super) fn staged_slots(lists: &[StagedList]) -> Vec<(u16, u64)> {
    lists
        .iter()
        .flat_map(|l| l.staged.iter().copied())
        .collect()
}

/// A range of a list's entries: those starting with a prefix, or those from `start` up to
/// (not including) an end.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Range {
    start: Vec<u8>,
    end: End,
}

#[derive(Debug, Clone, PartialEq)]
enum End {
    /// Entries that start with `start`.
    Prefix,
    /// Entries below this (None: no end).
    Before(Option<Vec<u8>>),
}

impl Range {
    /// The entries that start with `prefix` (every entry for an empty one).
    pub(super) fn prefix(prefix: Vec<u8>) -> Range {
        Range {
            start: prefix,
            end: End::Prefix,
        }
    }

    /// The entries from `start` up to `end`, not including it (None: to the last).
    pub(super) fn between(start: Vec<u8>, end: Option<Vec<u8>>) -> Range {
        Range {
            start,
            end: End::Before(end),
        }
    }

    fn holds(&self, e: &[u8]) -> bool {
        match &self.end {
            End::Prefix => e.starts_with(&self.start),
            End::Before(end) => {
                e >= self.start.as_slice() && end.as_ref().is_none_or(|x| e < x.as_slice())
            }
        }
    }

    /// True when no entry after the start is past the range.
    fn unbounded(&self) -> bool {
        match &self.end {
            End::Prefix => self.start.is_empty(),
            End::Before(end) => end.is_none(),
        }
    }
}

/// One page of a list range: how many entries the range holds, and the page's entries.
pub(super) struct RangePage {
    pub total: u64,
    pub entries: Vec<Vec<u8>>,
}

impl SledStore {
    /// List `list`'s committed map.
    pub(super) fn list_map(&self, tenant: &str, list: u8) -> Result<ListMap> {
        ListMap::parse(self.inner.users.get(map_key(tenant, list))?.as_deref())
    }

    /// Stages the slots of list `list` that `changes` touch, merged into those of `map`, and
    /// the map that names them. On an error, what was staged is removed again.
    pub(super) fn stage_list(
        &self,
        tenant: &str,
        list: u8,
        map: &ListMap,
        changes: &ListChanges,
    ) -> Result<StagedList> {
        let mut out = StagedList {
            list,
            ..StagedList::default()
        };
        if changes.is_empty() {
            return Ok(out);
        }
        match self.stage_slots(tenant, map, changes, &mut out) {
            Ok(()) => Ok(out),
            Err(e) => {
                self.discard_staged(tenant, &out.staged)?;
                Err(e)
            }
        }
    }

    fn stage_slots(
        &self,
        tenant: &str,
        map: &ListMap,
        changes: &ListChanges,
        out: &mut StagedList,
    ) -> Result<()> {
        let ops = SortedOps::of(&changes.parts)?;
        let bucket = list_bucket(out.list);
        let mut slots = Vec::with_capacity(map.slots.len());
        let mut at = 0;
        for (i, slot) in map.slots.iter().enumerate() {
            let end = match map.slots.get(i + 1) {
                Some(next) => {
                    at + ops.ops[at..].partition_point(|op| ops.get(*op).0 < next.low.as_slice())
                }
                None => ops.ops.len(),
            };
            if at == end {
                slots.push(slot.clone());
                continue;
            }
            let blob = self.bucket(tenant, bucket, slot.gen)?;
            let have: Vec<&[u8]> = match &blob {
                Some(b) => bucket_entries(b)?.into_iter().map(|(e, _)| e).collect(),
                None => Vec::new(),
            };
            let now = || Merged {
                have: &have,
                ops: &ops,
                next: at,
                end,
            };
            if slot.gen != 0 {
                out.replaced.push(slot.gen);
            }
            let count = now().count();
            self.stage_split(
                tenant,
                bucket,
                slot,
                (now(), count),
                &mut slots,
                &mut out.staged,
            )?;
            at = end;
        }
        out.map = Some(ListMap { slots });
        Ok(())
    }

    /// Stages the entries `now` (an iterator, and how many it yields) of `slot` as one slot,
    /// or several past twice [`SLOT_ENTRIES`], or none when empty (the first slot stays,
    /// empty), and lists them in `slots`.
    fn stage_split<'a>(
        &self,
        tenant: &str,
        bucket: u16,
        slot: &Slot,
        (mut now, count): (impl Iterator<Item = &'a [u8]>, usize),
        slots: &mut Vec<Slot>,
        staged: &mut Vec<(u16, u64)>,
    ) -> Result<()> {
        if count == 0 {
            if slot.low.is_empty() {
                slots.push(Slot {
                    low: Vec::new(),
                    gen: 0,
                    count: 0,
                });
            }
            return Ok(());
        }
        let pieces = if count > 2 * SLOT_ENTRIES {
            count.div_ceil(SLOT_ENTRIES)
        } else {
            1
        };
        let size = count.div_ceil(pieces);
        let mut blob = Vec::new();
        for n in 0..pieces {
            blob.clear();
            let mut low = None;
            let mut taken = 0u64;
            for e in now.by_ref().take(size) {
                low.get_or_insert(e);
                bucket_push(&mut blob, e, b"");
                taken += 1;
            }
            if taken == 0 {
                break;
            }
            let gen = self.stage_bucket(tenant, bucket, &blob)?;
            staged.push((bucket, gen));
            let low = match (n, low) {
                (0, _) | (_, None) => slot.low.clone(),
                (_, Some(first)) => first.to_vec(),
            };
            slots.push(Slot {
                low,
                gen,
                count: taken,
            });
        }
        Ok(())
    }

    /// The entries of list `list` in `range`, in order: how many there are, and at most
    /// `take` of them from the `skip`-th. Only the slots at the ends of the range and those
    /// holding the page are read.
    pub(super) fn list_range(
        &self,
        tenant: &str,
        list: u8,
        range: &Range,
        skip: usize,
        take: usize,
    ) -> Result<RangePage> {
        let map = self.list_map(tenant, list)?;
        let first = map
            .slots
            .partition_point(|s| s.low <= range.start)
            .saturating_sub(1);
        let skip = skip as u64;
        let mut page = RangePage {
            total: 0,
            entries: Vec::new(),
        };
        for (i, slot) in map.slots.iter().enumerate().skip(first) {
            if i > first && !range.holds(&slot.low) {
                break; // past the range
            }
            // Every entry of a slot whose lowest entry and next slot's are in it is in it.
            let inside = range.holds(&slot.low)
                && match map.slots.get(i + 1) {
                    Some(next) => range.holds(&next.low),
                    None => range.unbounded(),
                };
            let wanted = page.total + slot.count > skip && page.entries.len() < take;
            if inside && !wanted {
                page.total += slot.count;
                continue;
            }
            let Some(blob) = self.bucket(tenant, list_bucket(list), slot.gen)? else {
                continue;
            };
            for (e, _) in bucket_entries(&blob)? {
                if !range.holds(e) {
                    continue;
                }
                if page.total >= skip && page.entries.len() < take {
                    page.entries.push(e.to_vec());
                }
                page.total += 1;
            }
        }
        Ok(page)
    }

    /// Replaces list `list` of `tenant` with `changes` (all additions) made into an empty
    /// one, in one transaction (see `lookup::build_lists`).
    pub(super) fn rebuild_list(&self, tenant: &str, list: u8, changes: &ListChanges) -> Result<()> {
        let old = self.list_map(tenant, list).unwrap_or_default();
        let mut staged = self.stage_list(tenant, list, &ListMap::default(), changes)?;
        staged.map.get_or_insert_with(ListMap::default);
        staged.replaced = old.gens();
        let swapped = self
            .inner
            .users
            .transaction(|users| swap_in(users, tenant, std::slice::from_ref(&staged)));
        if let Err(e) = swapped {
            self.discard_staged(tenant, &staged.staged)?;
            bail!("cannot write a user list of tenant {tenant}: {e:?}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(ops: &[(bool, &str)]) -> ListChanges {
        let mut c = ListChanges::default();
        for (add, e) in ops {
            c.push(*add, &[e.as_bytes()]);
        }
        c
    }

    /// Commits `c` to list 0 of tenant "t" as a commit would.
    fn apply(store: &SledStore, c: &ListChanges) {
        let map = store.list_map("t", 0).unwrap();
        let staged = store.stage_list("t", 0, &map, c).unwrap();
        store
            .inner
            .users
            .transaction(|users| swap_in(users, "t", std::slice::from_ref(&staged)))
            .unwrap();
    }

    fn range(store: &SledStore, prefix: &str, skip: usize, take: usize) -> (u64, Vec<String>) {
        let range = Range::prefix(prefix.as_bytes().to_vec());
        let page = store.list_range("t", 0, &range, skip, take).unwrap();
        let entries = page
            .entries
            .iter()
            .map(|e| String::from_utf8_lossy(e).to_string());
        (page.total, entries.collect())
    }

    fn stored_slots(store: &SledStore) -> usize {
        let mut prefix = tkey("t", b"b");
        prefix.extend_from_slice(&list_bucket(0).to_be_bytes());
        store.inner.users.scan_prefix(prefix).count()
    }

    #[test]
    fn ranges_and_pages_hold_through_splits_and_removals() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut want: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        let names: Vec<String> = (0..30)
            .map(|i| format!("{}{i:02}", ["a", "b", "c"][i % 3]))
            .collect();
        let adds: Vec<(bool, &str)> = names.iter().map(|n| (true, n.as_str())).collect();
        apply(&store, &changes(&adds));
        want.extend(names.iter().cloned());
        assert!(
            store.list_map("t", 0).unwrap().slots.len() > 3,
            "the slots split"
        );

        // Every `b` goes, and one `a`; two new ones arrive.
        let mut ops: Vec<(bool, &str)> = names
            .iter()
            .filter(|n| n.starts_with('b'))
            .map(|n| (false, n.as_str()))
            .collect();
        ops.extend([(false, "a00"), (true, "a005"), (true, "d")]);
        apply(&store, &changes(&ops));
        for (add, e) in &ops {
            if *add {
                want.insert(e.to_string());
            } else {
                want.remove(*e);
            }
        }
        for prefix in ["", "a", "b", "c", "a0", "c2", "d", "z"] {
            let all: Vec<String> = want
                .iter()
                .filter(|e| e.starts_with(prefix))
                .cloned()
                .collect();
            for (skip, take) in [(0, 100), (0, 2), (3, 4), (7, 1), (all.len(), 3)] {
                let expected: Vec<String> = all.iter().skip(skip).take(take).cloned().collect();
                assert_eq!(
                    range(&store, prefix, skip, take),
                    (all.len() as u64, expected),
                    "{prefix:?} ({skip}, {take})"
                );
            }
        }
        let map = store.list_map("t", 0).unwrap();
        assert_eq!(
            stored_slots(&store),
            map.gens().len(),
            "replaced slots are removed"
        );
        assert!(
            map.slots.iter().all(|s| s.count > 0 || s.low.is_empty()),
            "emptied slots are dropped"
        );
        // Ranges with an end: from "a1" up to "c1", from "c" to the last, everything below "b".
        for (start, end) in [
            ("a1", Some("c1")),
            ("c", None),
            ("", Some("b")),
            ("b", Some("b")),
        ] {
            let range = Range::between(
                start.as_bytes().to_vec(),
                end.map(|e| e.as_bytes().to_vec()),
            );
            let all: Vec<String> = want
                .iter()
                .filter(|e| e.as_str() >= start && end.is_none_or(|x| e.as_str() < x))
                .cloned()
                .collect();
            for (skip, take) in [(0, 100), (2, 3), (all.len(), 1)] {
                let page = store.list_range("t", 0, &range, skip, take).unwrap();
                let got: Vec<String> = page
                    .entries
                    .iter()
                    .map(|e| String::from_utf8_lossy(e).to_string())
                    .collect();
                let expected: Vec<String> = all.iter().skip(skip).take(take).cloned().collect();
                assert_eq!(
                    (page.total, got),
                    (all.len() as u64, expected),
                    "{start}..{end:?}"
                );
            }
        }
    }
}
