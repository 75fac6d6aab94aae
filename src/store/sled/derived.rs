//! What a commit derives from the user buckets it changes, before its transaction: the change
//! to the group member counts (`groups`) and the lookup entries to add and remove (`lookup`).
//!
//! Data enters as a [`Commit`]: each bucket it names is read at its committed and at its new
//! generation, and every user whose record bytes differ is handed to both (a few threads read
//! buckets at once; the commit waits). It leaves as [`Derived`], with the tenant version it
//! holds for: the commit's transaction uses it only if the tenant is still at that version.

use super::lookup::{is_lookup_bucket, LookupChanges};
use super::SledStore;
use crate::model::packed::for_each_changed;
use crate::store::group_counts::{add_user, GroupDeltas};
use crate::store::{Commit, Directory};
use anyhow::{anyhow, Result};
use std::collections::HashMap;

/// What one commit changes besides its buckets (see the module doc).
#[derive(Default)]
pub(super) struct Derived {
    /// The tenant version the rest was computed from.
    pub version: u64,
    pub groups: GroupDeltas,
    pub lookups: LookupChanges,
}

impl Derived {
    fn merge(&mut self, other: Derived) {
        for (name, d) in other.groups {
            *self.groups.entry(name).or_default() += d;
        }
        self.lookups.merge(other.lookups);
    }
}

impl SledStore {
    /// What `c` changes in the group counts and the lookups of its tenant.
    pub(super) fn derive(&self, c: &Commit) -> Result<Derived> {
        let st = self.tenant_state(&c.tenant)?;
        let mut last: HashMap<u16, u64> = HashMap::new();
        for &(b, g) in c.buckets.iter().filter(|(b, _)| !is_lookup_bucket(*b)) {
            last.insert(b, g);
        }
        if st.version != c.expected_version {
            // The commit refuses anyway.
            return Ok(Derived {
                version: st.version,
                ..Derived::default()
            });
        }
        let changed: Vec<(u16, u64, u64)> = last
            .into_iter()
            .map(|(b, g)| (b, st.gen(usize::from(b)), g))
            .filter(|(_, old, new)| old != new)
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4));
        let chunk = changed.len().div_ceil(threads).max(1);
        let parts: Vec<Result<Derived>> = std::thread::scope(|s| {
            let handles: Vec<_> = changed
                .chunks(chunk)
                .map(|part| s.spawn(|| self.derive_part(&c.tenant, part)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("reading the changed buckets failed")))
                })
                .collect()
        });
        let mut all = Derived {
            version: st.version,
            ..Derived::default()
        };
        for part in parts {
            all.merge(part?);
        }
        all.groups.retain(|_, d| *d != 0);
        Ok(all)
    }

    /// The derived changes of the given (bucket, committed generation, new generation).
    fn derive_part(&self, tenant: &str, buckets: &[(u16, u64, u64)]) -> Result<Derived> {
        let mut out = Derived::default();
        for &(b, old, new) in buckets {
            let before = self.bucket(tenant, b, old)?;
            let after = self.bucket(tenant, b, new)?;
            for_each_changed(before.as_deref(), after.as_deref(), |key, o, n| {
                add_user(&mut out.groups, o, n)?;
                out.lookups.add_user(key, o, n)
            })?;
        }
        Ok(out)
    }
}
