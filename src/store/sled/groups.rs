//! The groups of each tenant with their member counts on sled (tree `groups`), kept by every
//! commit and read by `/Groups` (`Users::groups_page`) without reading a bucket.
//!
//! | key | value |
//! |---|---|
//! | `<tenant>\0<group name>` | members, u64 BE (no key: no member) |
//! | `\x01counted` | empty: the counts of every tenant were made (by [`SledStore::count_groups`]) |
//!
//! Data enters as a [`Commit`](crate::store::Commit): before its transaction, `derived` compares each named bucket's
//! committed generation with the new one (`store::group_counts::add_user` on each record whose
//! bytes differ); inside it, [`add_deltas`] adds the result. The commit's version check makes the two agree: the
//! deltas are used only if the tenant is still at the version they were computed from.
//! A store written before this tree existed gets its counts when opened ([`count_groups`]).
//! Data leaves as [`GroupPage`]s. Memory: the distinct group names of one commit.
//!
//! [`count_groups`]: SledStore::count_groups

use super::{tkey, SledStore};
use crate::model::bucket::BUCKETS;
use crate::store::group_counts::{add_bucket, GroupDeltas};
use crate::store::{Directory, GroupPage, GroupSummary};
use anyhow::{anyhow, Context, Result};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use std::collections::{HashMap, HashSet};

/// The key saying every tenant's counts were made.
const COUNTED: &[u8] = b"\x01counted";

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<anyhow::Error>>;

fn count_of(v: &[u8]) -> u64 {
    <[u8; 8]>::try_from(v).map(u64::from_be_bytes).unwrap_or(0)
}

/// Adds `deltas` to the counts of `tenant` inside a commit's transaction on tree `groups`.
pub(super) fn add_deltas(
    tx: &TransactionalTree,
    tenant: &str,
    deltas: &GroupDeltas,
) -> TxResult<()> {
    for (name, delta) in deltas {
        let key = tkey(tenant, name.as_bytes());
        let have = tx.get(&key)?.map(|v| count_of(&v)).unwrap_or(0);
        let now = i128::from(have) + i128::from(*delta);
        if now <= 0 {
            tx.remove(key)?;
        } else {
            let now = u64::try_from(now).map_err(|_| {
                ConflictableTransactionError::Abort(anyhow!("the count of group {name} overflows"))
            })?;
            tx.insert(key, &now.to_be_bytes())?;
        }
    }
    Ok(())
}

impl SledStore {
    /// Makes every tenant's counts from its buckets, once: when the store was written by a
    /// roster without the `groups` tree (or counting was interrupted), on open.
    pub(super) fn count_groups(&self) -> Result<()> {
        let groups = &self.inner.groups;
        if groups.contains_key(COUNTED)? {
            return Ok(());
        }
        groups.clear().context("cannot write to the store")?;
        for tenant in self.tenants()? {
            let st = self.tenant_state(&tenant)?;
            let mut counts = GroupDeltas::new();
            for b in 0..BUCKETS {
                let blob = self.bucket(&tenant, b as u16, st.gen(b))?;
                add_bucket(&mut counts, None, blob.as_deref())?;
            }
            for (name, n) in counts {
                let n = u64::try_from(n).unwrap_or(0);
                groups.insert(tkey(&tenant, name.as_bytes()), &n.to_be_bytes())?;
            }
        }
        groups.insert(COUNTED, &[][..])?;
        self.inner.db.flush().context("cannot flush the store")?;
        Ok(())
    }

    /// True when the tenant has a group whose name differs from `name` in case only.
    pub(super) fn has_case_twin(&self, tenant: &str, name: &str) -> Result<bool> {
        let prefix = tkey(tenant, b"");
        let lower = name.to_lowercase();
        for key in self.inner.groups.scan_prefix(&prefix).keys() {
            let key = key?;
            let other = String::from_utf8_lossy(&key[prefix.len()..]);
            if other != name && other.to_lowercase() == lower {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The tenant's group names that another group's name differs from in case only: one
    /// scan of its groups, made once for a page of groups (`Users::groups_members`) rather
    /// than [`SledStore::has_case_twin`] once per group, a scan each (quadratic in groups).
    pub(super) fn case_twins(&self, tenant: &str) -> Result<HashSet<String>> {
        let prefix = tkey(tenant, b"");
        let mut by_lower: HashMap<String, Vec<String>> = HashMap::new();
        for key in self.inner.groups.scan_prefix(&prefix).keys() {
            let key = key?;
            let name = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            by_lower.entry(name.to_lowercase()).or_default().push(name);
        }
        Ok(by_lower
            .into_values()
            .filter(|names| names.len() > 1)
            .flatten()
            .collect())
    }

    /// [`crate::store::Users::groups_page`] on sled: the tenant's groups in byte order of the
    /// name (every group, or the one named `name`), paged, with their member counts.
    pub(super) fn group_counts_page(
        &self,
        tenant: &str,
        name: Option<&str>,
        skip: usize,
        take: usize,
    ) -> Result<GroupPage> {
        if let Some(name) = name {
            let found = self.inner.groups.get(tkey(tenant, name.as_bytes()))?;
            let found = found.map(|v| GroupSummary {
                name: name.to_string(),
                members: count_of(&v),
            });
            return Ok(GroupPage {
                total: u64::from(found.is_some()),
                groups: found.into_iter().skip(skip).take(take).collect(),
            });
        }
        let prefix = tkey(tenant, b"");
        let mut page = GroupPage::default();
        for (i, kv) in self.inner.groups.scan_prefix(&prefix).enumerate() {
            let (k, v) = kv?;
            page.total += 1;
            if i >= skip && page.groups.len() < take {
                let name = String::from_utf8_lossy(&k[prefix.len()..]).to_string();
                page.groups.push(GroupSummary {
                    name,
                    members: count_of(&v),
                });
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bucket::bucket_of;
    use crate::model::packed::{bucket_push, UserRec, STATUS_ACTIVE, STATUS_DELETED};
    use crate::store::Commit;
    use crate::store::Users;
    use std::collections::BTreeMap;

    #[test]
    fn a_store_written_without_counts_gets_them_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut buckets: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
        for (key, status, groups) in [
            ("a", STATUS_ACTIVE, "x\u{1f}y"),
            ("b", STATUS_ACTIVE, "x"),
            ("c", STATUS_DELETED, "x\u{1f}z"),
        ] {
            let mut rec = UserRec {
                status,
                ..Default::default()
            };
            rec.set("groups", Some(groups));
            let mut enc = Vec::new();
            rec.encode_into(&mut enc);
            let b = buckets.entry(bucket_of(key.as_bytes())).or_default();
            bucket_push(b, key.as_bytes(), &enc);
        }
        let staged = buckets
            .iter()
            .map(|(b, packed)| (*b, store.stage_bucket("t", *b, packed).unwrap()))
            .collect();
        store
            .commit(&Commit {
                tenant: "t".into(),
                buckets: staged,
                ..Default::default()
            })
            .unwrap();
        let counted = store.groups_page("t", None, 0, 10).unwrap();
        let summary = |name: &str, members| GroupSummary {
            name: name.into(),
            members,
        };
        assert_eq!(counted.groups, [summary("x", 2), summary("y", 1)]);

        // As a roster without the `groups` tree left the store: no counts, no marker.
        store.inner.groups.clear().unwrap();
        assert_eq!(store.groups_page("t", None, 0, 10).unwrap().total, 0);
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.groups_page("t", None, 0, 10).unwrap(), counted);
    }
}
