//! Group member counts, as both backends keep them for `/Groups` (`Users::groups_page`): the
//! rule and the arithmetic, without I/O.
//!
//! A user is a member of a group when it is not deleted and its `groups` field lists the name
//! (items separated by [`LIST_SEP`], empty items ignored, a name listed twice counted once).
//! Data enters as stored records and packed buckets (`model::packed`), before and after a
//! change, and leaves as [`GroupDeltas`]: how many members each group gained (positive) or lost
//! (negative). A backend adds the deltas of a commit to its stored counts inside the commit's
//! own transaction, so the counts are always those of the committed directory.

use crate::model::fields::LIST_SEP;
use crate::model::packed::{field_of, for_each_changed, status_of, STATUS_DELETED};
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};

/// Members gained (positive) or lost (negative) per group name; no entry when unchanged.
pub type GroupDeltas = BTreeMap<String, i64>;

/// The groups the stored record `rec` counts in (none for a deleted user).
pub fn groups_of(rec: &[u8]) -> Result<BTreeSet<&str>> {
    if status_of(rec) == STATUS_DELETED {
        return Ok(BTreeSet::new());
    }
    Ok(field_of(rec, "groups")?
        .into_iter()
        .flat_map(|v| v.split(LIST_SEP))
        .filter(|name| !name.is_empty())
        .collect())
}

/// Adds to `deltas` the change of one user from `old` to `new` (stored records; None: absent).
pub fn add_user(deltas: &mut GroupDeltas, old: Option<&[u8]>, new: Option<&[u8]>) -> Result<()> {
    let before = old.map(groups_of).transpose()?.unwrap_or_default();
    let after = new.map(groups_of).transpose()?.unwrap_or_default();
    for name in before.difference(&after) {
        bump(deltas, name, -1);
    }
    for name in after.difference(&before) {
        bump(deltas, name, 1);
    }
    Ok(())
}

/// Adds to `deltas` the change from the packed bucket `old` to `new` (None: empty), both sorted
/// by key. Records whose bytes are equal are not looked at.
pub fn add_bucket(deltas: &mut GroupDeltas, old: Option<&[u8]>, new: Option<&[u8]>) -> Result<()> {
    for_each_changed(old, new, |_, before, after| add_user(deltas, before, after))
}

fn bump(deltas: &mut GroupDeltas, name: &str, by: i64) {
    let entry = deltas.entry(name.to_string()).or_default();
    *entry += by;
    if *entry == 0 {
        deltas.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::packed::{bucket_push, UserRec, STATUS_ACTIVE, STATUS_INACTIVE};

    fn rec(status: u8, groups: Option<&str>) -> Vec<u8> {
        let mut r = UserRec {
            status,
            ..Default::default()
        };
        r.set("groups", groups);
        let mut out = Vec::new();
        r.encode_into(&mut out);
        out
    }

    #[test]
    fn members_are_users_not_deleted_counted_once_per_named_group() {
        let sep = LIST_SEP;
        let both = rec(
            STATUS_ACTIVE,
            Some(&format!("sales{sep}{sep}emea{sep}sales")),
        );
        let names: Vec<&str> = groups_of(&both).unwrap().into_iter().collect();
        assert_eq!(names, ["emea", "sales"]);
        let inactive = rec(STATUS_INACTIVE, Some("sales"));
        assert_eq!(groups_of(&inactive).unwrap().len(), 1);
        assert!(groups_of(&rec(STATUS_DELETED, Some("sales")))
            .unwrap()
            .is_empty());
        assert!(groups_of(&rec(STATUS_ACTIVE, None)).unwrap().is_empty());

        let mut d = GroupDeltas::new();
        add_user(&mut d, Some(&both), Some(&rec(STATUS_ACTIVE, Some("emea")))).unwrap();
        assert_eq!(d, GroupDeltas::from([("sales".to_string(), -1)]));
        add_user(&mut d, None, Some(&inactive)).unwrap();
        assert!(d.is_empty(), "{d:?}");
        add_user(
            &mut d,
            Some(&inactive),
            Some(&rec(STATUS_DELETED, Some("sales"))),
        )
        .unwrap();
        assert_eq!(d, GroupDeltas::from([("sales".to_string(), -1)]));
    }

    #[test]
    fn bucket_deltas_walk_both_buckets_by_key() {
        let bucket = |users: &[(&str, Vec<u8>)]| {
            let mut out = Vec::new();
            for (k, r) in users {
                bucket_push(&mut out, k.as_bytes(), r);
            }
            out
        };
        let old = bucket(&[
            ("a", rec(STATUS_ACTIVE, Some("x"))),
            ("b", rec(STATUS_ACTIVE, Some("x"))),
            ("c", rec(STATUS_ACTIVE, Some("y"))),
        ]);
        let new = bucket(&[
            ("b", rec(STATUS_ACTIVE, Some("x"))),
            ("c", rec(STATUS_DELETED, Some("y"))),
            ("d", rec(STATUS_INACTIVE, Some("z"))),
        ]);
        let mut d = GroupDeltas::new();
        add_bucket(&mut d, Some(&old), Some(&new)).unwrap();
        let want = [("x", -1), ("y", -1), ("z", 1)].map(|(n, v)| (n.to_string(), v));
        assert_eq!(d, GroupDeltas::from(want));
        let mut first = GroupDeltas::new();
        add_bucket(&mut first, None, Some(&old)).unwrap();
        let want = [("x", 2), ("y", 1)].map(|(n, v)| (n.to_string(), v));
        assert_eq!(first, GroupDeltas::from(want));
        let mut gone = GroupDeltas::new();
        add_bucket(&mut gone, Some(&old), None).unwrap();
        assert_eq!(gone.values().sum::<i64>(), -3);
    }
}
