//! A cheap first test of a stored record for the console's user search on sled, which has no
//! index: the text a record must contain for a search filter to match it, looked for in the
//! record's bytes before the filter itself is tested on the record (`model::record_view`,
//! which looks up each field the search names, per user, over the whole tenant).
//!
//! A filter enters as a `UserFilter`; [`Needles::of`] keeps it only when it is an `or` of `eq`,
//! `sw`, `co` or `ew` comparisons with ASCII text on attributes whose value is stored text
//! (a field, or the key for `eq`/`sw`), which is what the console builds; any other filter
//! gives None and every record is tested. (SCIM's reads skip this scan and test each record
//! at once: their text is often in nearly every record.) [`Needles::may_match`] is never false
//! for a record the filter matches: it looks for every word at once (one Aho-Corasick scan,
//! ASCII case-insensitive: a superset of case-exact) in the record's text part (every field's
//! value, and more), and gives true for any record or key with non-ASCII bytes (where Unicode
//! lower-casing could turn a non-ASCII character into ASCII). `FullName` ("first last")
//! compared with `q` needs only `q`'s first word: the first name, or when it is empty the last
//! name, starts with it. Pure: no I/O.

use crate::model::filter::{Attribute, Op, Operand};
use crate::model::packed::text_part;
use crate::model::UserFilter;
use aho_corasick::AhoCorasick;

/// Where one alternative's text must appear.
enum Needle {
    /// In the record's fields (lower-case ASCII, compared case-insensitively).
    Record(Vec<u8>),
    /// The key equals (`eq`) or starts with (`sw`) these bytes, exactly.
    Key(Vec<u8>, Op),
    /// In the record's fields or in the key (case-insensitively).
    RecordOrKey(Vec<u8>),
}

/// The alternatives of a search filter: a record may match only if one of them is found.
pub(super) struct Needles {
    /// Every `Record` and `RecordOrKey` word, for one scan of a record's text.
    in_record: Option<AhoCorasick>,
    /// The `RecordOrKey` words, for the key.
    in_key: Option<AhoCorasick>,
    keys: Vec<(Vec<u8>, Op)>,
}

fn scanner(words: &[&[u8]]) -> Option<Option<AhoCorasick>> {
    if words.is_empty() {
        return Some(None);
    }
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(words)
        .ok()
        .map(Some)
}

impl Needles {
    pub fn of(f: &UserFilter) -> Option<Needles> {
        let mut out = Vec::new();
        collect(f, &mut out)?;
        let mut record: Vec<&[u8]> = Vec::new();
        let mut key_words: Vec<&[u8]> = Vec::new();
        let mut keys = Vec::new();
        for n in &out {
            match n {
                Needle::Record(w) => record.push(w),
                Needle::RecordOrKey(w) => {
                    record.push(w);
                    key_words.push(w);
                }
                Needle::Key(k, op) => keys.push((k.clone(), *op)),
            }
        }
        Some(Needles {
            in_record: scanner(&record)?,
            in_key: scanner(&key_words)?,
            keys,
        })
    }

    /// False only when the filter cannot match the user of `key` stored as `rec`.
    pub fn may_match(&self, key: &[u8], rec: &[u8]) -> bool {
        let text = text_part(rec);
        if !text.is_ascii() {
            return true;
        }
        let key_hit = |(k, op): &(Vec<u8>, Op)| match op {
            Op::Eq => key == k.as_slice(),
            _ => key.starts_with(k),
        };
        self.keys.iter().any(key_hit)
            || self.in_record.as_ref().is_some_and(|a| a.is_match(text))
            || self
                .in_key
                .as_ref()
                .is_some_and(|a| !key.is_ascii() || a.is_match(key))
    }
}

fn collect(f: &UserFilter, out: &mut Vec<Needle>) -> Option<()> {
    match f {
        UserFilter::Or(a, b) => {
            collect(a, out)?;
            collect(b, out)
        }
        UserFilter::Compare(attr, op @ (Op::Eq | Op::Sw | Op::Co | Op::Ew), Operand::Text(v))
            if v.is_ascii() && !v.is_empty() =>
        {
            let low = v.to_ascii_lowercase().into_bytes();
            let whole = matches!(op, Op::Eq | Op::Sw);
            out.push(match attr {
                Attribute::Key if whole => Needle::Key(v.as_bytes().to_vec(), *op),
                Attribute::MappingCode
                | Attribute::Email
                | Attribute::FirstName
                | Attribute::LastName
                | Attribute::Field(_) => Needle::Record(low),
                Attribute::UserName => Needle::RecordOrKey(low),
                Attribute::FullName if whole => {
                    let word: Vec<u8> = low.split(|b| *b == b' ').next()?.to_vec();
                    if word.is_empty() {
                        return None;
                    }
                    Needle::Record(word)
                }
                _ => return None,
            });
            Some(())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::packed::UserRec;
    use crate::model::User;

    fn text(a: Attribute, op: Op, v: &str) -> UserFilter {
        UserFilter::Compare(a, op, Operand::Text(v.into()))
    }

    fn search(q: &str) -> UserFilter {
        [
            text(Attribute::MappingCode, Op::Eq, q),
            text(Attribute::Email, Op::Sw, q),
            text(Attribute::UserName, Op::Sw, q),
            text(Attribute::LastName, Op::Sw, q),
            text(Attribute::FullName, Op::Sw, q),
        ]
        .into_iter()
        .fold(text(Attribute::Key, Op::Eq, q), |a, b| {
            UserFilter::Or(Box::new(a), Box::new(b))
        })
    }

    #[test]
    fn never_rules_out_a_match() {
        let mut users = Vec::new();
        for (key, first, last, email) in [
            ("E1", "Ann", "Lee", Some("ann.lee@x.example")),
            ("E2", "", "Ann Marie", None),
            ("K9", "Jürgen", "Müller", Some("j@x.example")),
            ("\u{212a}ey", "Bo", "Bo", None),
        ] {
            let mut r = UserRec::default();
            r.set("mapping_code", Some(key));
            r.set("first_name", Some(first).filter(|s| !s.is_empty()));
            r.set("last_name", Some(last));
            r.set("email", email);
            r.pw_hash = "$argon2id$v=19$x".into();
            let mut enc = Vec::new();
            r.encode_into(&mut enc);
            users.push((key.to_string(), enc));
        }
        let queries = [
            "ann",
            "ANN L",
            "ann marie",
            "lee",
            "E1",
            "e1",
            "j@",
            "jürgen",
            "k",
            "key",
            "zz",
            "bo b",
        ];
        let mut ruled_out = 0;
        for q in queries {
            let f = search(q);
            let needles = Needles::of(&f);
            for (key, enc) in &users {
                let user = User::from_rec(key, &UserRec::decode(enc).unwrap());
                let may = needles
                    .as_ref()
                    .is_none_or(|n| n.may_match(key.as_bytes(), enc));
                assert!(
                    may || !f.matches(&user),
                    "{q:?} ruled out {key}, which matches"
                );
                ruled_out += usize::from(!may);
            }
        }
        assert!(ruled_out > 10, "the test rules something out: {ruled_out}");
        // No text a record must contain: decode every record.
        assert!(Needles::of(&text(Attribute::FullName, Op::Co, "n l")).is_none());
        assert!(Needles::of(&text(Attribute::Key, Op::Ew, "1")).is_none());
        assert!(Needles::of(&text(Attribute::Email, Op::Gt, "a")).is_none());
        assert!(Needles::of(&text(Attribute::Custom("x".into()), Op::Eq, "a")).is_none());
    }

    #[test]
    fn substrings_and_fields_never_rule_out_a_match() {
        let mut users = Vec::new();
        for (key, title, groups, email) in [
            (
                "E1",
                "Senior Engineer 7",
                "Ops\u{1f}Sales",
                "ann.lee@x.example",
            ),
            ("E2", "Clerk", "sales", "bo@y.example"),
            ("E3", "Ingeniería", "OPS", "cy@z.example"),
        ] {
            let mut r = UserRec::default();
            r.set("mapping_code", Some(key));
            r.set("job_title", Some(title));
            r.set("groups", Some(groups));
            r.set("email", Some(email));
            let mut enc = Vec::new();
            r.encode_into(&mut enc);
            users.push((key.to_string(), enc));
        }
        let filters = [
            text(Attribute::Field("job_title"), Op::Co, "ENGINEER 7"),
            text(Attribute::Field("job_title"), Op::Ew, "erk"),
            text(Attribute::Field("job_title"), Op::Eq, "clerk"),
            text(Attribute::Field("job_title"), Op::Co, "ingen"),
            text(Attribute::Field("groups"), Op::Eq, "ops"),
            text(Attribute::Field("groups"), Op::Eq, "SALES"),
            text(Attribute::Email, Op::Ew, "@Y.EXAMPLE"),
            text(Attribute::Email, Op::Co, "lee"),
            text(Attribute::UserName, Op::Co, "E2"),
            text(Attribute::MappingCode, Op::Co, "3"),
            text(Attribute::LastName, Op::Co, "nobody"),
        ];
        let mut ruled_out = 0;
        for f in &filters {
            let needles = Needles::of(f).expect("text the record must contain");
            for (key, enc) in &users {
                let user = User::from_rec(key, &UserRec::decode(enc).unwrap());
                let may = needles.may_match(key.as_bytes(), enc);
                assert!(
                    may || !f.matches(&user),
                    "{f:?} ruled out {key}, which matches"
                );
                ruled_out += usize::from(!may);
            }
        }
        assert!(ruled_out > 10, "the test rules something out: {ruled_out}");
    }
}
