//! What a commit derives from the user buckets it changes, before its transaction: the change
//! to the group member counts (`groups`) and to the user lists (`lookup`, `lists`), staged.
//!
//! Data enters as a [`Commit`]: each bucket it names is read at its committed and at its new
//! generation, and every user whose record bytes differ is handed to both (a few threads read
//! buckets at once; the commit waits). It leaves as [`Derived`], with the tenant version it
//! holds for: the commit's transaction uses it only if the tenant is still at that version.
//!
//! Memory: the list entries of a commit wait in memory until they are staged, about 30 bytes
//! per changed user and list, up to [`LIST_BUDGET`] bytes. Past it (a first import of a large
//! file), the commit leaves the lists stale, and they are rebuilt from the committed directory
//! right after it, when the import has let go of its own memory (see `lookup`).

use super::lists::{staged_slots, StagedList};
use super::lookup::{List, LookupChanges, LISTS};
use super::SledStore;
use crate::model::packed::for_each_changed;
use crate::store::group_counts::{add_user, GroupDeltas};
use crate::store::{Commit, Directory};
use anyhow::Result;
use std::collections::HashMap;

/// Bytes of list entries a commit may hold (see the module doc): some 200,000 changed users.
#[cfg(not(test))]
const LIST_BUDGET: usize = 24 << 20;
/// A small budget in unit tests, so that a commit of a few dozen users leaves the lists stale.
#[cfg(test)]
const LIST_BUDGET: usize = 2048;

/// What one commit changes besides its buckets (see the module doc).
pub(super) struct Derived {
    /// The tenant version the rest was computed from.
    pub version: u64,
    pub groups: GroupDeltas,
    /// The lists changed, staged.
    pub lists: Vec<StagedList>,
    /// The commit leaves the lists stale (too many changes to keep them, or stale already):
    /// they are rebuilt after it (see `lookup`).
    pub lists_stale: bool,
}

/// What one reading of the changed buckets makes.
struct Pass {
    groups: GroupDeltas,
    lists: LookupChanges,
}

/// A changed bucket: (bucket, committed generation, new generation).
type Changed = (u16, u64, u64);

impl SledStore {
    /// What `c` changes in the group counts and the lists of its tenant, the lists staged.
    pub(super) fn derive(&self, c: &Commit) -> Result<Derived> {
        let st = self.tenant_state(&c.tenant)?;
        let mut derived = Derived {
            version: st.version,
            groups: GroupDeltas::new(),
            lists: Vec::new(),
            lists_stale: false,
        };
        if st.version != c.expected_version {
            return Ok(derived); // the commit refuses anyway
        }
        let mut last: HashMap<u16, u64> = HashMap::new();
        for &(b, g) in &c.buckets {
            last.insert(b, g);
        }
        let changed: Vec<Changed> = last
            .into_iter()
            .map(|(b, g)| (b, st.gen(usize::from(b)), g))
            .filter(|(_, old, new)| old != new)
            .collect();
        // Stale lists are rebuilt whole: a commit does not keep them.
        let stale = self.lists_stale(&c.tenant)?;
        let lists: &[List] = if stale { &[] } else { &LISTS };
        let pass = self.read_changed(&c.tenant, &changed, lists, LIST_BUDGET, true)?;
        derived.groups = pass.groups;
        if stale || pass.lists.overflowed {
            derived.lists_stale = true;
            return Ok(derived);
        }
        // Each list's entries are dropped once staged.
        for (list, changes) in pass.lists.lists {
            let staged = self
                .list_map(&c.tenant, list.id())
                .and_then(|map| self.stage_list(&c.tenant, list.id(), &map, &changes));
            match staged {
                Ok(staged) => derived.lists.push(staged),
                Err(e) => return self.abandon(&c.tenant, &derived, e),
            }
        }
        Ok(derived)
    }

    /// Removes what `derived` staged, and fails with `e`.
    fn abandon(&self, tenant: &str, derived: &Derived, e: anyhow::Error) -> Result<Derived> {
        self.discard_staged(tenant, &staged_slots(&derived.lists))?;
        Err(e)
    }

    /// One reading of the `changed` buckets on a few threads: the entries of `lists` (up to
    /// `limit` bytes), and the group deltas when `groups`.
    fn read_changed(
        &self,
        tenant: &str,
        changed: &[Changed],
        lists: &[List],
        limit: usize,
        groups: bool,
    ) -> Result<Pass> {
        let threads = crate::store::cores().clamp(1, 4);
        let chunk = changed.len().div_ceil(threads).max(1);
        let part_limit = limit / threads;
        let chunks: Vec<&[Changed]> = changed.chunks(chunk).collect();
        let parts = crate::store::on_threads(chunks.len(), |i| {
            self.read_part(tenant, chunks[i], lists, part_limit, groups)
        });
        let mut all = Pass {
            groups: GroupDeltas::new(),
            lists: LookupChanges::of(lists, limit),
        };
        for part in parts {
            let part = part?;
            for (name, d) in part.groups {
                *all.groups.entry(name).or_default() += d;
            }
            all.lists.merge(part.lists);
        }
        all.groups.retain(|_, d| *d != 0);
        Ok(all)
    }

    fn read_part(
        &self,
        tenant: &str,
        buckets: &[Changed],
        lists: &[List],
        limit: usize,
        groups: bool,
    ) -> Result<Pass> {
        let mut out = Pass {
            groups: GroupDeltas::new(),
            lists: LookupChanges::of(lists, limit),
        };
        for &(b, old, new) in buckets {
            let before = self.bucket(tenant, b, old)?;
            let after = self.bucket(tenant, b, new)?;
            for_each_changed(before.as_deref(), after.as_deref(), |key, o, n| {
                if groups {
                    add_user(&mut out.groups, o, n)?;
                }
                out.lists.add_user(key, o, n)
            })?;
        }
        Ok(out)
    }
}
