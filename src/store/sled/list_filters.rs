//! Which SCIM filters the user lists answer (see `lookup` for the lists), so that the reads
//! SCIM clients make most read a few slots instead of every bucket:
//!
//! - exactly, as one list range in key order, counted off the slot counts
//!   ([`SledStore::list_page`]): no filter (`Keys`); `active eq`/`ne` (`Status`); `eq` on
//!   `emails.value`, `externalId` or `groups`; a `meta.lastModified` comparison every user
//!   passes (as no filter); and a group's members ([`SledStore::group_page`]);
//! - as candidates, a few keys among which are all the users the filter can match
//!   ([`SledStore::candidates`], which `users` reads and tests against the whole filter):
//!   `id eq`; `eq` and `sw` on `userName` (its list and `Email`'s), `emails.value`,
//!   `externalId` and `groups`; `meta.lastModified` compared with a time; one side of an
//!   `and`, both sides of an `or`; when a range holds at most [`MAX_CANDIDATES`] entries.
//!
//! Anything else (`co`, `ew`, `ne`, `not`, a range past the limit) is answered by reading
//! every bucket (`users`).

use super::lists::Range;
use super::lookup::{time_head, List};
use super::{Replaced, SledStore};
use crate::model::filter::{Attribute, Op, Operand};
use crate::model::{UserFilter, UserPage};
use crate::store::Directory;
use anyhow::Result;
use std::collections::BTreeSet;

/// At most this many candidates come from one list range; a wider `sw` (or an `eq` most
/// users share, or a time most users passed) is answered by reading every bucket instead.
const MAX_CANDIDATES: usize = 10_000;

/// The list and range that hold exactly the users `f` matches, in key order.
fn exact_range(f: &UserFilter) -> Option<(List, Range)> {
    match f {
        UserFilter::Everyone => Some((List::Keys, Range::prefix(Vec::new()))),
        UserFilter::Compare(Attribute::Active, op @ (Op::Eq | Op::Ne), Operand::Bool(b)) => {
            let active = *b == (*op == Op::Eq);
            let status = if active { b"a" } else { b"i" };
            Some((List::Status, Range::prefix(status.to_vec())))
        }
        UserFilter::Compare(a, Op::Eq, Operand::Text(v)) if !v.is_empty() => {
            let list = match a {
                Attribute::Email => List::Email,
                Attribute::MappingCode => List::MappingCode,
                Attribute::Field("groups") => List::Groups,
                _ => return None,
            };
            Some((list, Range::prefix(list.text_prefix(v, true))))
        }
        _ => None,
    }
}

/// The lists and ranges that hold every user `f` (one comparison) can match, or None.
fn candidate_ranges(f: &UserFilter) -> Option<Vec<(List, Range)>> {
    match f {
        UserFilter::Compare(a, op @ (Op::Eq | Op::Sw), Operand::Text(v)) if !v.is_empty() => {
            let exact = *op == Op::Eq;
            let lists: &[List] = match a {
                // A user with an email and no username has the email as its userName.
                Attribute::UserName => &[List::UserName, List::Email],
                Attribute::Email => &[List::Email],
                Attribute::MappingCode => &[List::MappingCode],
                Attribute::Field("groups") => &[List::Groups],
                _ => return None,
            };
            let range = |l: &List| (*l, Range::prefix(l.text_prefix(v, exact)));
            Some(lists.iter().map(range).collect())
        }
        UserFilter::Compare(Attribute::Modified, op, Operand::Time(t)) => {
            // Stored times are whole milliseconds: `floor` is the last at or before `t`,
            // `ceil` the first at or after it.
            let floor = t.timestamp_millis();
            let ceil = floor.saturating_add(i64::from(t.timestamp_subsec_nanos() % 1_000_000 != 0));
            let next = floor.saturating_add(1);
            let at = |ms: i64| time_head(ms).to_vec();
            let range = match op {
                Op::Gt => Range::between(at(next), None),
                Op::Ge => Range::between(at(ceil), None),
                Op::Lt => Range::between(Vec::new(), Some(at(ceil))),
                Op::Le => Range::between(Vec::new(), Some(at(next))),
                Op::Eq if ceil == floor => Range::between(at(floor), Some(at(next))),
                Op::Eq => Range::between(at(next), Some(at(next))),
                _ => return None,
            };
            Some(vec![(List::Modified, range)])
        }
        _ => None,
    }
}

impl SledStore {
    /// For a filter one list range answers exactly: the page of users.
    pub(super) fn list_page(
        &self,
        tenant: &str,
        f: &UserFilter,
        skip: usize,
        take: usize,
    ) -> Result<Option<UserPage>> {
        let exact = match exact_range(f) {
            Some(found) => Some(found),
            None => self.modified_by_everyone(tenant, f)?,
        };
        let Some((list, range)) = exact else {
            return Ok(None);
        };
        self.range_page(tenant, list, &range, skip, take).map(Some)
    }

    /// The users of the entries of `list` in `range`, from the `skip`-th, at most `take`, and
    /// how many the range holds.
    fn range_page(
        &self,
        tenant: &str,
        list: List,
        range: &Range,
        skip: usize,
        take: usize,
    ) -> Result<UserPage> {
        // The users are read in the state the list was read in: a commit before the list is
        // read, or one that leaves the lists stale, makes the reader ask again (`Replaced`),
        // and `users_of_keys` raises it for a commit after.
        let st = self.tenant_state(tenant)?;
        let page = self.list_range(tenant, list.id(), range, skip, take)?;
        if self.tenant_state(tenant)?.version != st.version || self.lists_stale(tenant)? {
            return Err(anyhow::Error::new(Replaced).context("the lists changed while read"));
        }
        let keys: Vec<Vec<u8>> = page.entries.iter().map(|e| list.key_of(e)).collect();
        Ok(UserPage {
            total: page.total,
            users: self.users_of_keys(tenant, &st, &keys)?,
        })
    }

    /// For a `meta.lastModified` comparison that every listed user passes (a client's first
    /// "what changed since" asks about a time before everyone's), the range of everyone.
    fn modified_by_everyone(&self, tenant: &str, f: &UserFilter) -> Result<Option<(List, Range)>> {
        if !matches!(f, UserFilter::Compare(Attribute::Modified, ..)) {
            return Ok(None);
        }
        let ranges = candidate_ranges(f).unwrap_or_default();
        let [(list, range)] = ranges.as_slice() else {
            return Ok(None);
        };
        let passing = self.list_range(tenant, list.id(), range, 0, 0)?.total;
        let everyone = Range::prefix(Vec::new());
        let listed = self
            .list_range(tenant, List::Keys.id(), &everyone, 0, 0)?
            .total;
        Ok((passing == listed).then_some((List::Keys, everyone)))
    }

    /// The members of the group named exactly `group`, from the groups list, when no other
    /// group's name differs from it in case only (the list is lower-cased): `twin` says
    /// whether one does (`has_case_twin`, or `case_twins` once for a page of groups).
    pub(super) fn group_page(
        &self,
        tenant: &str,
        group: &str,
        twin: bool,
        skip: usize,
        take: usize,
    ) -> Result<Option<UserPage>> {
        if group.is_empty() || twin {
            return Ok(None);
        }
        let range = Range::prefix(List::Groups.text_prefix(group, true));
        self.range_page(tenant, List::Groups, &range, skip, take)
            .map(Some)
    }

    /// Keys of users among which are all those `f` can match, when the lists (or an `id eq`)
    /// say so (see the module doc); None when `f` needs a reading of every user.
    pub(super) fn candidates(
        &self,
        tenant: &str,
        f: &UserFilter,
    ) -> Result<Option<BTreeSet<Vec<u8>>>> {
        Ok(match f {
            UserFilter::Compare(Attribute::Key, Op::Eq, Operand::Text(k)) => {
                Some(BTreeSet::from([k.as_bytes().to_vec()]))
            }
            UserFilter::Compare(..) => match candidate_ranges(f) {
                Some(ranges) => self.keys_in(tenant, &ranges)?,
                None => None,
            },
            UserFilter::And(a, b) => match self.candidates(tenant, a)? {
                Some(keys) => Some(keys),
                None => self.candidates(tenant, b)?,
            },
            UserFilter::Or(a, b) => {
                match (self.candidates(tenant, a)?, self.candidates(tenant, b)?) {
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

    /// The keys of the entries in `ranges`, or None when one holds more than
    /// [`MAX_CANDIDATES`].
    fn keys_in(&self, tenant: &str, ranges: &[(List, Range)]) -> Result<Option<BTreeSet<Vec<u8>>>> {
        let mut keys = BTreeSet::new();
        for (list, range) in ranges {
            let page = self.list_range(tenant, list.id(), range, 0, MAX_CANDIDATES)?;
            if page.total > MAX_CANDIDATES as u64 {
                return Ok(None);
            }
            keys.extend(page.entries.iter().map(|e| list.key_of(e)));
        }
        Ok(Some(keys))
    }
}

#[cfg(test)]
mod tests {
    use super::super::lookup::{List, BUILT, LISTS};
    use super::*;
    use crate::model::bucket::bucket_of;
    use crate::model::packed::{bucket_push, STATUS_DELETED};
    use crate::model::packed::{UserRec, STATUS_ACTIVE, STATUS_INACTIVE};
    use crate::store::{Commit, Directory, TenantState, Users};
    use std::collections::BTreeMap;
    use Attribute::{Email, MappingCode, UserName};

    fn rec(status: u8, email: &str, username: Option<&str>, code: &str, groups: &str) -> Vec<u8> {
        // Times spread over 40 ms from 2023-11-14T22:13:20Z by the code's number.
        let n: i64 = code.trim_start_matches('C').parse().unwrap_or(0);
        let mut r = UserRec {
            status,
            updated_at: 1_700_000_000_000 + n % 40,
            ..Default::default()
        };
        r.set("email", Some(email));
        r.set("username", username);
        r.set("mapping_code", Some(code));
        r.set("groups", Some(groups).filter(|g| !g.is_empty()));
        let mut out = Vec::new();
        r.encode_into(&mut out);
        out
    }

    fn user(i: usize, status: u8) -> Vec<u8> {
        let groups = ["g1", "g1\u{1f}G2", "", "Sales"][i % 4];
        rec(
            status,
            &format!("U{i}@x.example"),
            None,
            &format!("C{i:02}"),
            groups,
        )
    }

    /// Commits the directory `users` (key, record): every bucket holding one of them, and
    /// every bucket named in `emptied`, is rewritten; `keeps_lists` says whether the commit
    /// must keep the lists itself (or leave them stale).
    fn put(
        store: &SledStore,
        users: &BTreeMap<String, Vec<u8>>,
        emptied: &[&str],
        keeps_lists: bool,
    ) -> Result<TenantState> {
        let (commit, keeps) = staged(store, users, emptied)?;
        // The commit keeps the lists itself, or leaves them stale for a rebuild, by its size.
        assert_eq!(
            keeps,
            keeps_lists,
            "a commit of {} users keeps the lists",
            users.len()
        );
        store.commit(&commit)
    }

    /// The commit of `users` (see `put`), staged, and whether it keeps the lists itself.
    fn staged(
        store: &SledStore,
        users: &BTreeMap<String, Vec<u8>>,
        emptied: &[&str],
    ) -> Result<(Commit, bool)> {
        let mut buckets: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
        for key in emptied {
            buckets.entry(bucket_of(key.as_bytes())).or_default();
        }
        for (key, r) in users {
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
        let commit = Commit {
            tenant: "t".into(),
            expected_version: store.tenant_state("t")?.version,
            buckets: staged,
            ..Default::default()
        };
        let derived = store.derive(&commit)?;
        store.discard_staged("t", &super::super::lists::staged_slots(&derived.lists))?;
        Ok((commit, !derived.lists_stale && !store.lists_stale("t")?))
    }

    fn keys(page: &crate::model::UserPage) -> Vec<String> {
        page.users.iter().map(|u| u.key.clone()).collect()
    }

    /// Every filter answers what the filter's own rule gives for every user, at several pages.
    fn check(store: &SledStore) {
        let everyone = store.users("t", None).unwrap();
        for f in [
            "",
            r#"userName eq "U3@X.example""#,
            r#"userName eq "bob""#,
            r#"emails.value eq "u5@x.example""#,
            r#"externalId eq "C07""#,
            r#"externalId eq "c07""#,
            r#"groups eq "G1""#,
            r#"groups eq "sales""#,
            r#"userName sw "u1""#,
            r#"externalId sw "C1" and groups eq "g1""#,
            r#"emails.value eq "u2@x.example" or userName eq "bob""#,
            r#"emails.value co "1""#,
            "active eq true",
            "active eq false",
            "active ne false",
            r#"meta.lastModified gt "2023-11-14T22:13:20.020Z""#,
            r#"meta.lastModified le "2023-11-14T22:13:20.0035Z""#,
            r#"meta.lastModified eq "2023-11-14T22:13:20.007Z" or userName eq "bob""#,
            r#"meta.lastModified ge "2023-11-14T22:13:20.030Z" and active eq true"#,
            r#"meta.lastModified gt "2000-01-01T00:00:00Z""#,
            r#"meta.lastModified ge "2023-11-14T22:13:20Z""#,
        ] {
            let filter = if f.is_empty() {
                UserFilter::Everyone
            } else {
                crate::admin::filter::parse(f).unwrap()
            };
            let want: Vec<String> = everyone
                .iter()
                .filter(|u| u.status != crate::model::UserStatus::Deleted && filter.matches(*u))
                .map(|u| u.key.clone())
                .collect();
            for (skip, take) in [(0, 100), (0, 3), (2, 5), (9, 1), (want.len(), 2)] {
                let page = store.users_matching("t", &filter, skip, take).unwrap();
                assert_eq!(page.total as usize, want.len(), "{f} ({skip}, {take})");
                let expected: Vec<String> = want.iter().skip(skip).take(take).cloned().collect();
                assert_eq!(keys(&page), expected, "{f} ({skip}, {take})");
            }
        }
        for group in ["g1", "G2", "Sales"] {
            let want: Vec<String> = everyone
                .iter()
                .filter(|u| u.status != crate::model::UserStatus::Deleted)
                .filter(|u| {
                    u.fields
                        .get("groups")
                        .is_some_and(|g| g.as_array().is_some_and(|a| a.iter().any(|i| i == group)))
                })
                .map(|u| u.key.clone())
                .collect();
            let page = store.group_members("t", group, 1, 4).unwrap();
            assert_eq!(page.total as usize, want.len(), "members of {group}");
            assert_eq!(
                keys(&page),
                want.iter().skip(1).take(4).cloned().collect::<Vec<_>>(),
                "{group}"
            );
        }
    }

    /// 60 users with varied status, groups and times, and one with a username.
    fn directory() -> BTreeMap<String, Vec<u8>> {
        let mut users: BTreeMap<String, Vec<u8>> = (0..60)
            .map(|i| {
                (
                    format!("k{i:02}"),
                    user(i, [STATUS_ACTIVE, STATUS_INACTIVE][i % 2]),
                )
            })
            .collect();
        users.insert(
            "bob".into(),
            rec(STATUS_ACTIVE, "bob@x.example", Some("Bob"), "C99", "g1"),
        );
        users
    }

    #[test]
    fn lists_answer_as_the_filter_rule_through_large_and_small_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut users = directory();
        // A commit this large (for the unit tests' budget) leaves the lists stale: reads
        // take every bucket until the rebuild is done.
        put(&store, &users, &[], false).unwrap();
        check(&store);
        store.wait_for_lists();
        assert!(!store.lists_stale("t").unwrap());
        check(&store);
        assert!(
            store
                .list_map("t", List::Keys.id())
                .unwrap()
                .to_bytes()
                .len()
                > 40,
            "slots split"
        );

        // Deleted users leave every list; an email, a username and groups change; a user goes.
        for i in (0..60).step_by(6) {
            users.insert(format!("k{i:02}"), user(i, STATUS_DELETED));
        }
        users.insert(
            "k01".into(),
            rec(STATUS_ACTIVE, "new@x.example", Some("bob"), "C01", "sales"),
        );
        users.insert("k03".into(), user(3, STATUS_ACTIVE));
        users.remove("k04");
        // A small commit keeps the lists itself.
        put(&store, &users, &["k04"], true).unwrap();
        assert!(!store.lists_stale("t").unwrap());
        check(&store);
        assert_eq!(
            store
                .candidates(
                    "t",
                    &UserFilter::Compare(Email, Op::Eq, Operand::Text("u1@x.example".into()))
                )
                .unwrap(),
            Some(BTreeSet::new())
        );
        // "sales" and "Sales" are twins: the members of one are read from the buckets.
        assert!(store.has_case_twin("t", "Sales").unwrap());
        assert!(!store.has_case_twin("t", "g1").unwrap());
        assert_eq!(
            store.case_twins("t").unwrap(),
            std::collections::HashSet::from(["Sales".to_string(), "sales".to_string()])
        );
        assert!(store
            .group_page("t", "Sales", true, 0, 10)
            .unwrap()
            .is_none());
        assert!(store.group_page("t", "g1", false, 0, 10).unwrap().is_some());
    }

    /// Review finding 7: a page of groups reads the twins once and each group's members with
    /// the budget the groups before it left; the members are those of `group_members`.
    #[test]
    fn a_page_of_groups_reads_members_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut users = directory();
        users.insert(
            "k01".into(),
            rec(STATUS_ACTIVE, "new@x.example", None, "C01", "sales"),
        );
        put(&store, &users, &[], false).unwrap();
        store.wait_for_lists();
        let groups = ["G2", "Sales", "g1", "sales", "none"];
        let one_by_one: Vec<_> = groups
            .iter()
            .map(|g| store.group_members("t", g, 0, 1000).unwrap())
            .collect();
        assert_eq!(
            store.groups_members("t", &groups, 1000).unwrap(),
            one_by_one
        );
        let all: usize = one_by_one.iter().map(|p| p.users.len()).sum();
        assert!(all > 20, "{all}");
        let budget = all - 7;
        let capped = store.groups_members("t", &groups, budget).unwrap();
        let read: usize = capped.iter().map(|p| p.users.len()).sum();
        assert_eq!(read, budget);
        for (got, whole) in capped.iter().zip(&one_by_one) {
            assert_eq!(got.total, whole.total);
            assert!(whole.users.starts_with(&got.users));
        }
    }

    #[test]
    fn lists_are_rebuilt_when_a_store_opens_without_them_or_with_a_stale_mark() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        put(&store, &directory(), &[], false).unwrap();
        store.wait_for_lists();

        // As a roster without lists left the store: built when opened.
        for list in LISTS {
            for gen in store.list_map("t", list.id()).unwrap().gens() {
                store
                    .inner
                    .users
                    .remove(super::super::bucket_key(
                        "t",
                        2024 + u16::from(list.id()),
                        gen,
                    ))
                    .unwrap();
            }
            store
                .inner
                .users
                .remove(super::super::tkey("t", &[b'o', list.id()]))
                .unwrap();
        }
        store.inner.meta.remove(BUILT).unwrap();
        assert_eq!(
            store
                .users_matching("t", &UserFilter::Everyone, 0, 10)
                .unwrap()
                .total,
            0
        );
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert!(!store.lists_stale("t").unwrap());
        check(&store);

        // A stale mark left by a process stopped before the rebuild: rebuilt when opened.
        store.inner.users.insert(b"\x02t", &[][..]).unwrap();
        for list in LISTS {
            store
                .inner
                .users
                .remove(super::super::tkey("t", &[b'o', list.id()]))
                .unwrap();
        }
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert!(!store.lists_stale("t").unwrap());
        check(&store);
        assert_eq!(
            store.inner.users.scan_prefix([1u8]).count(),
            0,
            "nothing left staged"
        );
    }

    #[test]
    fn candidates_come_only_from_what_a_list_narrows() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let users: BTreeMap<String, Vec<u8>> = (0..5)
            .map(|i| (format!("k{i}"), user(i, STATUS_ACTIVE)))
            .collect();
        put(&store, &users, &[], true).unwrap();
        let of = |f: &str| {
            store
                .candidates("t", &crate::admin::filter::parse(f).unwrap())
                .unwrap()
        };
        let set = |keys: &[&str]| {
            Some(
                keys.iter()
                    .map(|k| k.as_bytes().to_vec())
                    .collect::<BTreeSet<_>>(),
            )
        };
        assert_eq!(
            of(r#"externalId eq "C01" or userName eq "u2@x.example""#),
            set(&["k1", "k2"])
        );
        assert_eq!(of(r#"title pr and emails.value sw "u3""#), set(&["k3"]));
        assert_eq!(of(r#"id eq "zz""#), set(&["zz"]));
        assert_eq!(of(r#"emails.value co "u""#), None);
        assert_eq!(
            of(r#"meta.lastModified gt "2023-11-14T22:13:20.003Z""#),
            set(&["k4"])
        );
        assert_eq!(
            of(r#"meta.lastModified ne "2023-11-14T22:13:20.003Z""#),
            None
        );
        assert_eq!(of(r#"externalId eq "C01" or title pr"#), None);
        let _ = (UserName, MappingCode);
    }
}
