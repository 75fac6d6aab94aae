//! The [`Users`] seam on sled: [`User`] values listed, paged, counted and looked up, read
//! bucket by bucket through the sled [`Directory`]. Users enter only through a commit; stored
//! password hashes never leave this module.
//!
//! `users_page` serves paged readers (SCIM) without materialising the directory: it reads the
//! buckets in parallel, counts the matches and keeps only the keys the page needs
//! (`deep_page`), then reads the page's users from their buckets.
//!
//! The SCIM reads (`users_matching`, `group_members`) use sled's one kind of index, the user
//! lists (see `lookup`): no filter, `eq` on `userName`, `emails.value`, `externalId` or `groups`,
//! and a group's members are read as a list range (the slots of the page); a filter the lists
//! narrow down (`sw` too, `id eq`, in `and`/`or`) reads only its candidate users' buckets; any
//! other reads every bucket, testing each record's status byte and then the record where it
//! lies (`model::record_view`: only the fields the filter names, nothing decoded but the
//! page's users), so their time grows with the directory while their memory stays bounded by
//! the page at any depth (`deep_page`: a page past its first 50,000 matches takes a second
//! pass). `groups_page` reads the member counts every
//! commit keeps (`groups`), not the buckets. The console's listing without a search
//! (`users_matching_status` with `Everyone`) tests only each record's status byte, decoding no
//! user but the page's (`page_by_record`).

use super::deep_page::KeepRecord;
use super::search::Needles;
use super::{Replaced, SledStore};
use crate::model::bucket::{bucket_of, BUCKETS};
use crate::model::filter::{Attribute, Op, Operand};
use crate::model::packed::{bucket_entries, status_of, UserRec, STATUS_ACTIVE, STATUS_DELETED};
use crate::model::record_view::RecordView;
use crate::model::{User, UserFilter, UserPage, UserStatus};
use crate::store::group_counts::groups_of;
use crate::store::{Directory, GroupPage, Users};
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};

impl Users for SledStore {
    /// Every user of the tenant with the given status (all when None), sorted by key.
    fn users(&self, tenant: &str, status: Option<UserStatus>) -> Result<Vec<User>> {
        again(|| {
            let st = self.tenant_state(tenant)?;
            let mut out = Vec::new();
            for b in 0..BUCKETS {
                let Some(blob) = self.bucket(tenant, b as u16, st.gen(b))? else {
                    continue;
                };
                for (k, v) in bucket_entries(&blob)? {
                    if status.is_some_and(|s| UserStatus::from_byte(status_of(v)) != s) {
                        continue;
                    }
                    out.push(decoded(k, v)?);
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
    }

    /// The users for which `keep` is true, in key order: the `take` after the first `skip`,
    /// and the number of all matches. Memory: one bucket at a time, plus the keys of the first
    /// `skip + take` matches (not users). A commit between the two passes can leave a user out
    /// of the page; a reader asks again.
    fn users_page(
        &self,
        tenant: &str,
        keep: &(dyn Fn(&User) -> bool + Sync),
        skip: usize,
        take: usize,
    ) -> Result<UserPage> {
        again(|| {
            let keep_raw = |k: &[u8], v: &[u8]| -> Result<bool> { Ok(keep(&decoded(k, v)?)) };
            self.page_by_record(tenant, &keep_raw, skip, take)
        })
    }

    /// From a user list for no filter or `eq` on a listed attribute (see `lookup`); from
    /// the buckets of the candidates for a filter the lists narrow down (`eq`, `sw`, `id eq`,
    /// in `and` and `or`); else from every bucket, where each record whose status byte says
    /// it is not deleted is tested in place (`RecordView`): only the page's users are decoded.
    fn users_matching(
        &self,
        tenant: &str,
        filter: &UserFilter,
        skip: usize,
        take: usize,
    ) -> Result<UserPage> {
        // Records are tested with the filter's texts lower-cased once, not once per record.
        let folded = filter.folded();
        again(|| {
            // Stale lists (a large commit just now) are not used until rebuilt.
            if !self.lists_stale(tenant)? {
                if let Some(page) = self.list_page(tenant, filter, skip, take)? {
                    return Ok(page);
                }
                if let Some(keys) = self.candidates(tenant, filter)? {
                    return self.candidate_page(tenant, &keys, &folded, skip, take);
                }
            }
            // Each record is tested where it lies (`RecordView`): its status byte, then only
            // the fields the filter names. No text prefilter (`search::Needles`) here: looking
            // for a word in every record cost more than the test itself (a `co` over 1,000,000
            // users: 137 ms with it, 79 ms without, when every record has the word's start).
            let keep = |k: &[u8], v: &[u8]| -> Result<bool> {
                if !is_live(status_of(v)) {
                    return Ok(false);
                }
                RecordView::new(k, v)?.matches(&folded)
            };
            self.page_by_record(tenant, &keep, skip, take)
        })
    }

    fn users_matching_status(
        &self,
        tenant: &str,
        filter: &UserFilter,
        status: Option<UserStatus>,
        skip: usize,
        take: usize,
    ) -> Result<UserPage> {
        let folded = filter.folded();
        again(|| {
            if *filter == UserFilter::Everyone {
                // Only the status byte of each record is read.
                let keep = |_: &[u8], v: &[u8]| {
                    Ok(status.is_none_or(|s| UserStatus::from_byte(status_of(v)) == s))
                };
                let mut page = self.page_by_record(tenant, &keep, skip, take)?;
                // The same answer as PostgreSQL, which counts no further than the cap.
                page.total = page.total.min(crate::store::SEARCH_COUNT_CAP + 1);
                return Ok(page);
            }
            // A search: records that cannot contain its text are passed over undecoded.
            let needles = Needles::of(filter);
            let wanted = |b: u8| status.is_none_or(|s| UserStatus::from_byte(b) == s);
            let keep = |k: &[u8], v: &[u8]| -> Result<bool> {
                Ok(may_pass(k, v, wanted, needles.as_ref())
                    && RecordView::new(k, v)?.matches(&folded)?)
            };
            let mut page = self.page_by_record(tenant, &keep, skip, take)?;
            page.total = page.total.min(crate::store::SEARCH_COUNT_CAP + 1);
            Ok(page)
        })
    }

    /// From the `groups` tree, which every commit keeps (see `groups`).
    fn groups_page(
        &self,
        tenant: &str,
        name: Option<&str>,
        skip: usize,
        take: usize,
    ) -> Result<GroupPage> {
        self.group_counts_page(tenant, name, skip, take)
    }

    fn group_members(
        &self,
        tenant: &str,
        group: &str,
        skip: usize,
        take: usize,
    ) -> Result<UserPage> {
        self.members_of(tenant, group, None, skip, take)
    }

    /// As the default, with the groups whose names differ in case only found once for the
    /// page (`case_twins`) instead of once per group.
    fn groups_members(
        &self,
        tenant: &str,
        groups: &[&str],
        budget: usize,
    ) -> Result<Vec<UserPage>> {
        let twins = self.case_twins(tenant)?;
        crate::store::within_budget(groups, budget, |group, left| {
            self.members_of(tenant, group, Some(twins.contains(group)), 0, left)
        })
    }

    /// Number of users per status: (active, inactive, deleted).
    fn user_counts(&self, tenant: &str) -> Result<(u64, u64, u64)> {
        again(|| {
            let st = self.tenant_state(tenant)?;
            let mut c = (0, 0, 0);
            for b in 0..BUCKETS {
                let Some(blob) = self.bucket(tenant, b as u16, st.gen(b))? else {
                    continue;
                };
                for (_, v) in bucket_entries(&blob)? {
                    match status_of(v) {
                        STATUS_ACTIVE => c.0 += 1,
                        STATUS_DELETED => c.2 += 1,
                        _ => c.1 += 1,
                    }
                }
            }
            Ok(c)
        })
    }

    /// One user by key (tried as given, then lower-cased, as email and username keys are).
    fn user(&self, tenant: &str, key: &str) -> Result<Option<User>> {
        crate::model::user::find_user(key, |k| self.user_rec(tenant, k))
    }

    /// Whether `password` is the user's imported password (argon2id check of the stored hash;
    /// false when the user or the hash is missing). The hash itself never leaves the store.
    fn verify_user_password(&self, tenant: &str, key: &str, password: &str) -> Result<bool> {
        Ok(self
            .user_rec(tenant, key)?
            .is_some_and(|rec| crate::model::user::password_matches(&rec, password)))
    }
}

impl SledStore {
    /// [`Users::group_members`], `twin` saying whether another group's name differs from
    /// `group` in case only (None: find out, one scan of the tenant's groups).
    fn members_of(
        &self,
        tenant: &str,
        group: &str,
        twin: Option<bool>,
        skip: usize,
        take: usize,
    ) -> Result<UserPage> {
        again(|| {
            if !self.lists_stale(tenant)? {
                let twin = match twin {
                    Some(t) => t,
                    None => self.has_case_twin(tenant, group)?,
                };
                if let Some(page) = self.group_page(tenant, group, twin, skip, take)? {
                    return Ok(page);
                }
            }
            // Only records holding the name (in any case) are looked into.
            let in_group = UserFilter::Compare(
                Attribute::Field("groups"),
                Op::Eq,
                Operand::Text(group.to_string()),
            );
            let needles = Needles::of(&in_group);
            // The membership rule of the group counts, read from the record without decoding it.
            let keep = |k: &[u8], v: &[u8]| -> Result<bool> {
                Ok(may_pass(k, v, is_live, needles.as_ref()) && groups_of(v)?.contains(group))
            };
            self.page_by_record(tenant, &keep, skip, take)
        })
    }
}

impl SledStore {
    /// The packed record of exactly this key.
    fn user_rec(&self, tenant: &str, key: &str) -> Result<Option<UserRec>> {
        let st = self.tenant_state(tenant)?;
        let b = bucket_of(key.as_bytes());
        let Some(blob) = self.bucket(tenant, b, st.gen(b as usize))? else {
            return Ok(None);
        };
        for (k, v) in bucket_entries(&blob)? {
            if k == key.as_bytes() {
                return Ok(Some(UserRec::decode(v)?));
            }
        }
        Ok(None)
    }
}

/// The user stored under key `k` as record `v`.
fn decoded(k: &[u8], v: &[u8]) -> Result<User> {
    Ok(User::from_rec(
        &String::from_utf8_lossy(k),
        &UserRec::decode(v)?,
    ))
}

/// True for a status byte of a user that is not deleted.
fn is_live(status: u8) -> bool {
    status != STATUS_DELETED
}

/// The tests a listing makes before it decodes a record: its status byte passes `status`, and
/// it may hold the text `needles` look for (when there are some).
fn may_pass(k: &[u8], v: &[u8], status: impl Fn(u8) -> bool, needles: Option<&Needles>) -> bool {
    status(status_of(v)) && needles.is_none_or(|n| n.may_match(k, v))
}

/// Makes `read` again (up to 3 times) when it raced a commit that replaced a bucket or list
/// slot generation it was about to read (see `Replaced`): a reader reads the tenant's
/// generations first and the buckets after, and a commit in between removes the ones it
/// replaces.
fn again<T>(read: impl Fn() -> Result<T>) -> Result<T> {
    let mut tries = 0;
    loop {
        match read() {
            Err(e) if tries < 3 && e.downcast_ref::<Replaced>().is_some() => tries += 1,
            done => return done,
        }
    }
}

impl SledStore {
    /// [`Users::users_matching`] for a filter that only the users `keys` can match: their
    /// buckets alone are read, twice (to count, then for the page's users). Memory: the
    /// matching keys.
    fn candidate_page(
        &self,
        tenant: &str,
        keys: &BTreeSet<Vec<u8>>,
        filter: &UserFilter,
        skip: usize,
        take: usize,
    ) -> Result<UserPage> {
        let st = self.tenant_state(tenant)?;
        let mut buckets: BTreeMap<u16, Vec<&[u8]>> = BTreeMap::new();
        for k in keys {
            buckets.entry(bucket_of(k)).or_default().push(k);
        }
        let mut matching: BTreeSet<Vec<u8>> = BTreeSet::new();
        for (b, wanted) in buckets {
            let Some(blob) = self.bucket(tenant, b, st.gen(usize::from(b)))? else {
                continue;
            };
            for (k, v) in bucket_entries(&blob)? {
                if wanted.contains(&k)
                    && is_live(status_of(v))
                    && RecordView::new(k, v)?.matches(filter)?
                {
                    matching.insert(k.to_vec());
                }
            }
        }
        let page: Vec<Vec<u8>> = matching.iter().skip(skip).take(take).cloned().collect();
        Ok(UserPage {
            total: matching.len() as u64,
            users: self.users_of_keys(tenant, &st, &page)?,
        })
    }

    /// [`Users::users_page`] with the test made on the stored record, so a caller that needs
    /// only the status byte (the console's unfiltered listing) decodes no user but the page's.
    /// Every bucket is read, in parallel, with memory bounded by the page at any depth
    /// (`deep_page`). A commit between the passes can leave a user out of the page; a reader
    /// asks again.
    fn page_by_record(
        &self,
        tenant: &str,
        keep: &KeepRecord<'_>,
        skip: usize,
        take: usize,
    ) -> Result<UserPage> {
        let st = self.tenant_state(tenant)?;
        let (total, page) = self.matching_keys(tenant, &st, keep, skip, take)?;
        Ok(UserPage {
            total,
            users: self.users_of_keys(tenant, &st, &page)?,
        })
    }

    /// The users stored under `keys` (those that still exist) in the buckets of state `st`,
    /// sorted by key: each bucket is read once. `st` must be the state the keys were chosen
    /// in: a commit since then that replaced one of these buckets raises [`Replaced`] (the
    /// reader asks again, `again`), so a user soft-deleted or changed by that commit is never
    /// returned as the newer record under a choice made on the older one.
    pub(super) fn users_of_keys(
        &self,
        tenant: &str,
        st: &crate::store::TenantState,
        keys: &[Vec<u8>],
    ) -> Result<Vec<User>> {
        let mut buckets: BTreeMap<u16, Vec<&[u8]>> = BTreeMap::new();
        for k in keys {
            buckets.entry(bucket_of(k)).or_default().push(k);
        }
        let mut found: BTreeMap<Vec<u8>, User> = BTreeMap::new();
        for (b, keys) in buckets {
            let Some(blob) = self.bucket(tenant, b, st.gen(usize::from(b)))? else {
                continue;
            };
            for (k, v) in bucket_entries(&blob)? {
                if keys.contains(&k) {
                    found.insert(k.to_vec(), decoded(k, v)?);
                }
            }
        }
        Ok(found.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::packed::{bucket_push, UserRec};
    use crate::store::Commit;
    use std::cell::Cell;

    /// Commits user `key` alone in its bucket, with `email`.
    fn put(store: &SledStore, key: &str, email: &str) -> u16 {
        let mut rec = UserRec::default();
        rec.set("email", Some(email));
        let (mut enc, mut blob) = (Vec::new(), Vec::new());
        rec.encode_into(&mut enc);
        bucket_push(&mut blob, key.as_bytes(), &enc);
        let b = bucket_of(key.as_bytes());
        let gen = store.stage_bucket("t", b, &blob).unwrap();
        let version = store.tenant_state("t").unwrap().version;
        store
            .commit(&Commit {
                tenant: "t".into(),
                expected_version: version,
                buckets: vec![(b, gen)],
                ..Default::default()
            })
            .unwrap();
        b
    }

    /// Commits `users` (key, status), every bucket holding one of them rewritten with them.
    fn put_all(store: &SledStore, users: &[(&str, u8)]) {
        let mut buckets: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
        for (key, status) in users {
            let rec = UserRec {
                status: *status,
                ..Default::default()
            };
            let mut enc = Vec::new();
            rec.encode_into(&mut enc);
            let blob = buckets.entry(bucket_of(key.as_bytes())).or_default();
            bucket_push(blob, key.as_bytes(), &enc);
        }
        let staged = buckets
            .iter()
            .map(|(b, blob)| (*b, store.stage_bucket("t", *b, blob).unwrap()))
            .collect();
        let version = store.tenant_state("t").unwrap().version;
        store
            .commit(&Commit {
                tenant: "t".into(),
                expected_version: version,
                buckets: staged,
                ..Default::default()
            })
            .unwrap();
    }

    #[test]
    fn a_user_deleted_between_match_and_page_read_is_not_listed() {
        use crate::model::packed::STATUS_ACTIVE;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        // `b`, in another bucket than `a` (which the commit below leaves as it was).
        let b = (0..100)
            .map(|i| format!("b{i}"))
            .find(|k| bucket_of(k.as_bytes()) != bucket_of(b"a"))
            .unwrap();
        let b = b.as_str();
        put_all(&store, &[("a", STATUS_ACTIVE), (b, STATUS_ACTIVE)]);
        // The match pass keeps live users; the first time it sees `a`, a commit soft-deletes
        // it (after its record was tested, before the page's users are read).
        let deleted = AtomicBool::new(false);
        let keep = |k: &[u8], v: &[u8]| -> Result<bool> {
            if k == b"a" && !deleted.swap(true, Ordering::SeqCst) {
                put_all(&store, &[("a", STATUS_DELETED)]);
            }
            Ok(is_live(status_of(v)))
        };
        // A page within `KEEP_KEYS_UP_TO` is found in one match pass.
        let page = again(|| store.page_by_record("t", &keep, 0, 5)).unwrap();
        assert!(deleted.load(Ordering::SeqCst));
        assert!(
            page.users.iter().all(|u| u.status != UserStatus::Deleted),
            "a soft-deleted user listed: {:?}",
            page.users.iter().map(|u| &u.key).collect::<Vec<_>>()
        );
        // The answer of the new state: `b` alone.
        let keys: Vec<&str> = page.users.iter().map(|u| u.key.as_str()).collect();
        assert_eq!((page.total, keys), (1, vec![b]));
    }

    #[test]
    fn a_generation_a_commit_replaced_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let b = put(&store, "a", "a@x.example");
        let before = store.tenant_state("t").unwrap();
        put(&store, "a", "b@x.example");
        // What a reader that read the generations before that commit gets.
        let e = store
            .bucket("t", b, before.gen(usize::from(b)))
            .unwrap_err();
        assert!(e.downcast_ref::<Replaced>().is_some(), "{e:#}");

        // `again` makes such a read again, a few times, and nothing else.
        let calls = Cell::new(0);
        let flaky = || {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                store.bucket("t", b, before.gen(usize::from(b))).map(|_| 0)
            } else {
                Ok(calls.get())
            }
        };
        assert_eq!(again(flaky).unwrap(), 3);
        calls.set(0);
        let stale = || {
            calls.set(calls.get() + 1);
            store.bucket("t", b, before.gen(usize::from(b)))
        };
        assert!(again(stale).is_err());
        assert_eq!(calls.get(), 4);
        calls.set(0);
        let damaged = || -> Result<()> {
            calls.set(calls.get() + 1);
            anyhow::bail!("a damaged record")
        };
        assert!(again(damaged).is_err());
        assert_eq!(calls.get(), 1);
    }
}
