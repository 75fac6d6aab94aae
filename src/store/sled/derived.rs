//! What a commit derives from the user buckets it changes, before its transaction: the change
//! to the group member counts (`groups`), and its lookup buckets (`lookup`) and key order
//! (`order`), staged.
//!
//! Data enters as a [`Commit`]: each bucket it names is read at its committed and at its new
//! generation, and every user whose record bytes differ is handed to both (a few threads read
//! buckets at once; the commit waits). It leaves as [`Derived`], with the tenant version it
//! holds for: the commit's transaction uses it only if the tenant is still at that version.
//!
//! Memory: the lookup entries of a commit wait in memory until they are staged, about 30 bytes
//! per changed user and attribute. Up to [`LOOKUP_BUDGET`] bytes, one reading of the buckets
//! makes all of them; past it (a first import of a large file), the buckets are read again for
//! each attribute alone, so a commit holds the entries of one attribute at a time.

use super::lookup::{attributes, is_lookup_bucket, LookupChanges};
use super::order::{OrderChanges, StagedOrder};
use super::SledStore;
use crate::model::packed::for_each_changed;
use crate::store::group_counts::{add_user, GroupDeltas};
use crate::store::{Commit, Directory};
use anyhow::{anyhow, Result};
use std::collections::HashMap;

/// Bytes of lookup entries one reading of the changed buckets may hold (see the module doc).
#[cfg(not(test))]
const LOOKUP_BUDGET: usize = 24 << 20;
/// A small budget in unit tests, so that their commits take the attribute-at-a-time path.
#[cfg(test)]
const LOOKUP_BUDGET: usize = 64;

/// What one commit changes besides its buckets (see the module doc).
pub(super) struct Derived {
    /// The tenant version the rest was computed from.
    pub version: u64,
    pub groups: GroupDeltas,
    /// The lookup slots staged for the commit: (bucket number, generation; 0 = now empty).
    pub lookups: Vec<(u16, u64)>,
    /// The key order staged for the commit (see `order`).
    pub order: StagedOrder,
}

/// What one reading of the changed buckets makes.
#[derive(Default)]
struct Pass {
    groups: GroupDeltas,
    lookups: LookupChanges,
    order: OrderChanges,
}

/// A changed bucket: (bucket, committed generation, new generation).
type Changed = (u16, u64, u64);

impl SledStore {
    /// What `c` changes in the group counts and the lookups of its tenant, the lookups staged.
    pub(super) fn derive(&self, c: &Commit) -> Result<Derived> {
        let st = self.tenant_state(&c.tenant)?;
        let mut derived = Derived {
            version: st.version,
            groups: GroupDeltas::new(),
            lookups: Vec::new(),
            order: StagedOrder::default(),
        };
        if st.version != c.expected_version {
            return Ok(derived); // the commit refuses anyway
        }
        let mut last: HashMap<u16, u64> = HashMap::new();
        for &(b, g) in c.buckets.iter().filter(|(b, _)| !is_lookup_bucket(*b)) {
            last.insert(b, g);
        }
        let changed: Vec<Changed> = last
            .into_iter()
            .map(|(b, g)| (b, st.gen(usize::from(b)), g))
            .filter(|(_, old, new)| old != new)
            .collect();
        let gens = self.lookup_gens(&c.tenant)?;
        let first = self.read_changed(&c.tenant, &changed, &attributes(), LOOKUP_BUDGET, true)?;
        derived.groups = first.groups;
        derived.order = self.stage_order(&c.tenant, &self.order_map(&c.tenant)?, &first.order)?;
        let staged = if first.lookups.overflowed {
            drop(first.lookups);
            self.stage_lookups_by_attribute(&c.tenant, &changed, &gens)
        } else {
            self.stage_lookups(&c.tenant, &gens, &first.lookups)
        };
        match staged {
            Ok(staged) => derived.lookups = staged,
            Err(e) => {
                self.discard_staged(&c.tenant, &derived.order.staged)?;
                return Err(e);
            }
        }
        Ok(derived)
    }

    /// The lookups of a large commit, one attribute at a time (see the module doc).
    fn stage_lookups_by_attribute(
        &self,
        tenant: &str,
        changed: &[Changed],
        gens: &[u64],
    ) -> Result<Vec<(u16, u64)>> {
        let mut staged = Vec::new();
        for attr in attributes() {
            let more = self
                .read_changed(tenant, changed, &[attr], usize::MAX, false)
                .and_then(|pass| self.stage_lookups(tenant, gens, &pass.lookups));
            match more {
                Ok(more) => staged.extend(more),
                Err(e) => {
                    self.discard_staged(tenant, &staged)?;
                    return Err(e);
                }
            }
        }
        Ok(staged)
    }

    /// One reading of the `changed` buckets on a few threads: the lookup entries of `attrs`
    /// (up to `limit` bytes), and the group deltas and key order changes when `groups`.
    fn read_changed(
        &self,
        tenant: &str,
        changed: &[Changed],
        attrs: &[usize],
        limit: usize,
        groups: bool,
    ) -> Result<Pass> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4));
        let chunk = changed.len().div_ceil(threads).max(1);
        let part_limit = limit / threads;
        let parts: Vec<Result<Pass>> = std::thread::scope(|s| {
            let handles: Vec<_> = changed
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || self.read_part(tenant, part, attrs, part_limit, groups))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("reading the changed buckets failed")))
                })
                .collect()
        });
        let mut all = Pass::default();
        for part in parts {
            let part = part?;
            for (name, d) in part.groups {
                *all.groups.entry(name).or_default() += d;
            }
            all.lookups.merge(part.lookups);
            all.order.merge(part.order);
        }
        all.groups.retain(|_, d| *d != 0);
        Ok(all)
    }

    fn read_part(
        &self,
        tenant: &str,
        buckets: &[Changed],
        attrs: &[usize],
        limit: usize,
        groups: bool,
    ) -> Result<Pass> {
        let mut out = Pass {
            groups: GroupDeltas::new(),
            lookups: LookupChanges::of(attrs, limit),
            order: OrderChanges::default(),
        };
        for &(b, old, new) in buckets {
            let before = self.bucket(tenant, b, old)?;
            let after = self.bucket(tenant, b, new)?;
            for_each_changed(before.as_deref(), after.as_deref(), |key, o, n| {
                if groups {
                    add_user(&mut out.groups, o, n)?;
                    out.order.add_user(key, o, n);
                }
                out.lookups.add_user(key, o, n)
            })?;
        }
        Ok(out)
    }
}
