//! The user lists the embedded store keeps (see `lists` for how a list is stored), what each
//! user contributes to them, and which SCIM filters they answer, so that the reads SCIM
//! clients make most read a few slots instead of every bucket:
//!
//! | list | entries of a user that is not deleted | answers |
//! |---|---|---|
//! | [`List::Keys`] | its key | a listing without a filter, at any `startIndex` |
//! | [`List::UserName`] | `userName` (the username, else the email, else the key), lower-cased | `eq`, `sw` |
//! | [`List::Email`] | the email, lower-cased | `emails.value` `eq`, `sw` |
//! | [`List::MappingCode`] | the mapping code (case-exact) | `externalId` `eq`, `sw` |
//! | [`List::Groups`] | each group name, lower-cased | `groups eq`, a group's members |
//!
//! A text entry is the text (each 0 byte written as 0, 0xFF) then a 0 byte then the key, so a
//! list's entries sort by text, then key: the users with one text are one range, in key order,
//! and those whose text starts with some prefix are one range too. Deleted users are in no list,
//! so a list range is exactly the users a filter matches, counted off the slot counts.
//!
//! Data enters from `derived`: each changed user's entries before and after, as
//! [`LookupChanges`]. It leaves as list pages ([`SledStore::list_page`]) and as candidate keys
//! ([`SledStore::candidates`]), which `users` reads and tests against the whole filter.

use super::lists::ListChanges;
use super::SledStore;
use crate::model::bucket::BUCKETS;
use crate::model::fields::{EMAIL, LIST_SEP, MAPPING_CODE, USERNAME};
use crate::model::filter::{Attribute, Op, Operand};
use crate::model::packed::{field_of, for_each_changed, status_of, STATUS_DELETED};
use crate::model::UserFilter;
use crate::store::Directory;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};

/// The key saying every tenant's lists were made (in tree `meta`).
const BUILT: &[u8] = b"lists-built";

/// At most this many candidates come from a list range; a wider `sw` (or an `eq` most users
/// share) is answered by reading every bucket instead.
const MAX_CANDIDATES: usize = 10_000;

/// The lists (see the module doc); the number is the list's number in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum List {
    Keys = 0,
    UserName = 1,
    Email = 2,
    MappingCode = 3,
    Groups = 4,
}

/// Every list.
pub(super) const LISTS: [List; 5] = [
    List::Keys,
    List::UserName,
    List::Email,
    List::MappingCode,
    List::Groups,
];

impl List {
    pub(super) fn id(self) -> u8 {
        self as u8
    }

    /// The list of a filter attribute, and whether its text is case-exact.
    fn of(a: &Attribute) -> Option<List> {
        Some(match a {
            Attribute::UserName => List::UserName,
            Attribute::Email => List::Email,
            Attribute::MappingCode => List::MappingCode,
            Attribute::Field("groups") => List::Groups,
            _ => return None,
        })
    }

    fn case_exact(self) -> bool {
        self == List::MappingCode
    }

    /// The texts of the stored user `key`, `rec` in this list, normalised (none when deleted).
    fn texts(self, key: &[u8], rec: &[u8]) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        if status_of(rec) == STATUS_DELETED {
            return Ok(out);
        }
        let text = match self {
            List::Keys => Some(String::from_utf8_lossy(key).to_string()),
            List::UserName => Some(match field_of(rec, USERNAME)?.or(field_of(rec, EMAIL)?) {
                Some(name) => name.to_lowercase(),
                None => String::from_utf8_lossy(key).to_lowercase(),
            }),
            List::Email => field_of(rec, EMAIL)?.map(str::to_lowercase),
            List::MappingCode => field_of(rec, MAPPING_CODE)?.map(str::to_string),
            List::Groups => {
                for item in field_of(rec, "groups")?
                    .into_iter()
                    .flat_map(|g| g.split(LIST_SEP))
                {
                    if !item.is_empty() {
                        out.insert(item.to_lowercase());
                    }
                }
                None
            }
        };
        out.extend(text);
        Ok(out)
    }

    /// The entry of `text` for user `key` in this list.
    fn entry(self, text: &str, key: &[u8]) -> Vec<u8> {
        if self == List::Keys {
            return key.to_vec();
        }
        let mut out = escaped(text);
        out.push(0);
        out.extend_from_slice(key);
        out
    }

    /// The user key of one of this list's entries.
    fn key_of(self, entry: &[u8]) -> Vec<u8> {
        if self == List::Keys {
            return entry.to_vec();
        }
        let mut i = 0;
        while i < entry.len() {
            if entry[i] == 0 {
                if entry.get(i + 1) == Some(&0xFF) {
                    i += 2;
                    continue;
                }
                return entry[i + 1..].to_vec();
            }
            i += 1;
        }
        Vec::new()
    }

    /// The prefix of the entries whose text is `text` (`exact`) or starts with it.
    fn prefix(self, text: &str, exact: bool) -> Vec<u8> {
        let text = if self.case_exact() {
            text.to_string()
        } else {
            text.to_lowercase()
        };
        let mut out = escaped(&text);
        if exact {
            out.push(0);
        }
        out
    }
}

/// `text` with each 0 byte written as 0, 0xFF (so 0 then anything else ends a text).
fn escaped(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 1);
    for &b in text.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out
}

/// The list entries a commit adds and removes, for some of the lists, up to a number of bytes:
/// past it nothing more is recorded and `overflowed` is set (the commit then derives one list
/// at a time, see `derived`).
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
                .map(|r| list.texts(key, r))
                .transpose()?
                .unwrap_or_default();
            let after = new
                .map(|r| list.texts(key, r))
                .transpose()?
                .unwrap_or_default();
            for gone in before.difference(&after) {
                self.bytes += changes.push(false, &list.entry(gone, key));
            }
            for came in after.difference(&before) {
                self.bytes += changes.push(true, &list.entry(came, key));
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

/// A filter a list range answers exactly, in key order: `eq` on a listed attribute.
fn whole_range(f: &UserFilter) -> Option<(List, &str)> {
    match f {
        UserFilter::Compare(a, Op::Eq, Operand::Text(v)) if !v.is_empty() => {
            List::of(a).map(|l| (l, v.as_str()))
        }
        _ => None,
    }
}

impl SledStore {
    /// For a filter a list answers exactly (no filter, or `eq` on a listed attribute): the
    /// total and the keys of the page.
    pub(super) fn list_page(
        &self,
        tenant: &str,
        f: &UserFilter,
        skip: usize,
        take: usize,
    ) -> Result<Option<(u64, Vec<Vec<u8>>)>> {
        let (list, prefix) = match (f, whole_range(f)) {
            (UserFilter::Everyone, _) => (List::Keys, Vec::new()),
            (_, Some((list, text))) => (list, list.prefix(text, true)),
            _ => return Ok(None),
        };
        let page = self.list_range(tenant, list.id(), &prefix, skip, take)?;
        let keys = page.entries.iter().map(|e| list.key_of(e)).collect();
        Ok(Some((page.total, keys)))
    }

    /// The members of the group named exactly `group`, from the groups list, when no other
    /// group's name differs from it in case only (the list is lower-cased).
    pub(super) fn group_page(
        &self,
        tenant: &str,
        group: &str,
        skip: usize,
        take: usize,
    ) -> Result<Option<(u64, Vec<Vec<u8>>)>> {
        if group.is_empty() || self.has_case_twin(tenant, group)? {
            return Ok(None);
        }
        let prefix = List::Groups.prefix(group, true);
        let page = self.list_range(tenant, List::Groups.id(), &prefix, skip, take)?;
        let keys = page
            .entries
            .iter()
            .map(|e| List::Groups.key_of(e))
            .collect();
        Ok(Some((page.total, keys)))
    }

    /// Keys of users among which are all those `f` can match, when the lists (or an `id eq`)
    /// say so: `eq` or `sw` on a listed attribute or `eq` on `id`, either side of an `and`,
    /// both sides of an `or`. None when `f` needs a reading of every user (or a range holds
    /// more than [`MAX_CANDIDATES`]).
    pub(super) fn candidates(
        &self,
        tenant: &str,
        f: &UserFilter,
    ) -> Result<Option<BTreeSet<Vec<u8>>>> {
        Ok(match f {
            UserFilter::Compare(Attribute::Key, Op::Eq, Operand::Text(k)) => {
                Some(BTreeSet::from([k.as_bytes().to_vec()]))
            }
            UserFilter::Compare(a, op @ (Op::Eq | Op::Sw), Operand::Text(v)) if !v.is_empty() => {
                let Some(list) = List::of(a) else {
                    return Ok(None);
                };
                let prefix = list.prefix(v, *op == Op::Eq);
                let page = self.list_range(tenant, list.id(), &prefix, 0, MAX_CANDIDATES)?;
                if page.total > MAX_CANDIDATES as u64 {
                    return Ok(None);
                }
                Some(page.entries.iter().map(|e| list.key_of(e)).collect())
            }
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

    /// Makes every tenant's lists from its user buckets, once: when the store was written by
    /// a roster without them (or building was interrupted), on open. One list at a time, as a
    /// large commit does (see `derived`).
    pub(super) fn build_lists(&self) -> Result<()> {
        if self.inner.meta.contains_key(BUILT)? {
            return Ok(());
        }
        for tenant in self.tenants()? {
            let st = self.tenant_state(&tenant)?;
            for list in LISTS {
                let mut changes = LookupChanges::of(&[list], usize::MAX);
                for b in 0..BUCKETS {
                    let blob = self.bucket(&tenant, b as u16, st.gen(b))?;
                    for_each_changed(None, blob.as_deref(), |k, _, new| {
                        changes.add_user(k, None, new)
                    })?;
                }
                let built = changes.lists.remove(&list).unwrap_or_default();
                self.rebuild_list(&tenant, list.id(), &built)?;
            }
            tracing::info!(tenant = %tenant, "built the user lists");
        }
        self.inner.meta.insert(BUILT, &[][..])?;
        self.inner.db.flush().context("cannot flush the store")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bucket::bucket_of;
    use crate::model::packed::{bucket_push, UserRec, STATUS_ACTIVE, STATUS_INACTIVE};
    use crate::store::{Commit, TenantState, Users};
    use Attribute::{Email, MappingCode, UserName};

    fn rec(status: u8, email: &str, username: Option<&str>, code: &str, groups: &str) -> Vec<u8> {
        let mut r = UserRec {
            status,
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
    /// every bucket named in `emptied`, is rewritten.
    fn put(
        store: &SledStore,
        users: &BTreeMap<String, Vec<u8>>,
        emptied: &[&str],
    ) -> Result<TenantState> {
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
        store.commit(&Commit {
            tenant: "t".into(),
            expected_version: store.tenant_state("t")?.version,
            buckets: staged,
            ..Default::default()
        })
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
        ] {
            let filter = if f.is_empty() {
                UserFilter::Everyone
            } else {
                crate::admin::filter::parse(f).unwrap()
            };
            let want: Vec<String> = everyone
                .iter()
                .filter(|u| u.status != crate::model::UserStatus::Deleted && filter.matches(u))
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

    #[test]
    fn lists_answer_as_the_filter_rule_through_changes_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut users: BTreeMap<String, Vec<u8>> = (0..30)
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
        put(&store, &users, &[]).unwrap();
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
        for i in (0..30).step_by(3) {
            users.insert(format!("k{i:02}"), user(i, STATUS_DELETED));
        }
        users.insert(
            "k01".into(),
            rec(STATUS_ACTIVE, "new@x.example", Some("bob"), "C01", "sales"),
        );
        users.insert("k03".into(), user(3, STATUS_ACTIVE));
        users.remove("k04");
        put(&store, &users, &["k04"]).unwrap();
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
        assert!(store.group_page("t", "Sales", 0, 10).unwrap().is_none());
        assert!(store.group_page("t", "g1", 0, 10).unwrap().is_some());

        // As a roster without lists left the store: built when opened.
        for list in LISTS {
            for gen in store.list_map("t", list.id()).unwrap().gens_for_test() {
                store
                    .inner
                    .users
                    .remove(super::super::directory::bucket_key(
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
        put(&store, &users, &[]).unwrap();
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
        assert_eq!(of(r#"externalId eq "C01" or title pr"#), None);
        let _ = (UserName, MappingCode);
    }
}
