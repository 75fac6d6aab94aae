//! A stored user record read where it lies, for a filter ([`RecordView`]): what a store that
//! scans records (sled, with no index for `co`, `ew` or most attributes) tests each record
//! with, instead of decoding it into a [`User`](super::User) (about twenty owned strings and
//! two maps per record, most of a scan's time).
//!
//! Data enters as a key and a packed record (`packed`'s layout) and leaves as the yes or no of
//! [`RecordView::matches`]. The view answers [`Subject`] exactly as the decoded `User` would:
//! the same fields under the same attributes (`User::from_rec` places them), the same list
//! splitting, the key read as `decoded` reads it. Fields are read only as far as the filter
//! needs them; a damaged header, or damage in the fields a lookup walks, is an error, as
//! decoding would be (a bucket's LZ4 block and framing are checked as it is read). Pure: no
//! I/O, no allocation for the usual ASCII text.

use super::fields::{
    custom_name, is_list, EMAIL, FIRST_NAME, LAST_NAME, LIST_SEP, MAPPING_CODE, MEMBER_FIELDS,
    USERNAME,
};
use super::filter::{full_name, Attribute, Subject, UserFilter};
use super::packed::{fields_of, head_of, UserRec};
use super::user::millis_to_time;
use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use std::borrow::Cow;
use std::cell::Cell;

/// One stored user, read in place.
pub struct RecordView<'a> {
    key: Cow<'a, str>,
    head: UserRec,
    /// The record's bytes, whose fields are looked up when a filter asks for them.
    rec: &'a [u8],
    /// Set when a lookup found the fields damaged; [`RecordView::matches`] reports it.
    damaged: Cell<bool>,
}

impl<'a> RecordView<'a> {
    /// The user stored under `key` as `rec` (its fixed header is checked here).
    pub fn new(key: &'a [u8], rec: &'a [u8]) -> Result<RecordView<'a>> {
        Ok(RecordView {
            key: String::from_utf8_lossy(key),
            head: head_of(rec)?,
            rec,
            damaged: Cell::new(false),
        })
    }

    /// Whether the user matches `filter` (best [`UserFilter::folded`], made once per scan).
    pub fn matches(&self, filter: &UserFilter) -> Result<bool> {
        let yes = filter.matches(self);
        if self.damaged.get() {
            bail!("a stored user record is damaged (fields)");
        }
        Ok(yes)
    }

    /// The value of stored field `name`, if the record has it.
    fn field(&self, name: &str) -> Option<&'a str> {
        self.find(|stored| stored == name)
    }

    /// The first stored field whose name passes `wanted`.
    fn find(&self, mut wanted: impl FnMut(&str) -> bool) -> Option<&'a str> {
        let mut found = None;
        let walked = fields_of(self.rec, |name, value| {
            if wanted(name) {
                found = Some(value);
                return false;
            }
            true
        });
        match (walked, found) {
            (Ok(()), Some(value)) => match std::str::from_utf8(value) {
                Ok(text) => Some(text),
                Err(_) => self.damage(),
            },
            (Ok(()), None) => None,
            (Err(_), _) => self.damage(),
        }
    }

    fn damage(&self) -> Option<&'a str> {
        self.damaged.set(true);
        None
    }
}

impl Subject for RecordView<'_> {
    fn is_active(&self) -> bool {
        self.head.status == super::packed::STATUS_ACTIVE
    }
    fn created_at(&self) -> DateTime<Utc> {
        millis_to_time(self.head.created_at)
    }
    fn updated_at(&self) -> DateTime<Utc> {
        millis_to_time(self.head.updated_at)
    }
    fn any_text(&self, a: &Attribute, test: &mut dyn FnMut(&str) -> bool) -> bool {
        let mut one = |name: &str| self.field(name).is_some_and(&mut *test);
        match a {
            Attribute::Key => test(&self.key),
            Attribute::UserName => {
                let name = self.field(USERNAME).or_else(|| self.field(EMAIL));
                test(name.unwrap_or(&self.key))
            }
            Attribute::Email => one(EMAIL),
            Attribute::MappingCode => one(MAPPING_CODE),
            Attribute::FirstName => one(FIRST_NAME),
            Attribute::LastName => one(LAST_NAME),
            Attribute::FullName => full_name(self.field(FIRST_NAME), self.field(LAST_NAME))
                .is_some_and(|full| test(&full)),
            // A `User` shows these names as its own members or as attributes, not as fields.
            Attribute::Field(name)
                if MEMBER_FIELDS.contains(name) || custom_name(name).is_some() =>
            {
                false
            }
            // Only list fields hold items (as `User::from_rec` splits them); other text is one
            // value even when it holds U+001F.
            Attribute::Field(name) if is_list(name) => self
                .field(name)
                .is_some_and(|value| value.split(LIST_SEP).any(test)),
            Attribute::Field(name) => self.field(name).is_some_and(test),
            Attribute::Custom(name) => self
                .find(|stored| custom_name(stored) == Some(name.as_str()))
                .is_some_and(test),
            Attribute::Active | Attribute::Created | Attribute::Modified => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::filter::{Op, Operand};
    use crate::model::packed::{STATUS_DELETED, STATUS_INACTIVE};
    use crate::model::User;
    use chrono::TimeZone;

    fn rec(status: u8, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut r = UserRec {
            status,
            created_at: 1_700_000_000_000,
            updated_at: 1_750_000_000_000,
            ..UserRec::default()
        };
        for (n, v) in fields {
            r.set(n, Some(v));
        }
        let mut out = Vec::new();
        r.encode_into(&mut out);
        out
    }

    /// Users with every kind of value a filter reads: ASCII and not, upper case, lists, custom
    /// fields, empty values, missing names, a key that is not UTF-8.
    fn users() -> Vec<(Vec<u8>, Vec<u8>)> {
        let sep = LIST_SEP.to_string();
        let groups = ["Sales", "EMEA", ""].join(&sep);
        vec![
            (
                b"ann@x.example".to_vec(),
                rec(
                    0,
                    &[
                        ("email", "ann@x.example"),
                        ("first_name", "Ann"),
                        ("last_name", "Lee"),
                        ("job_title", "Senior Engineer 2"),
                        ("groups", &groups),
                        ("custom.badge", "A-42"),
                        ("mapping_code", "E007"),
                    ],
                ),
            ),
            (
                b"0042".to_vec(),
                rec(
                    STATUS_INACTIVE,
                    &[
                        ("username", "\u{212a}ELVIN"),
                        ("first_name", "\u{130}lker"),
                        ("job_title", "\u{dc}bersetzer"),
                        ("phone", ""),
                        ("custom.", "bare"),
                    ],
                ),
            ),
            (
                b"k\xffey".to_vec(),
                rec(STATUS_DELETED, &[("last_name", "O'Neil")]),
            ),
            (b"bob".to_vec(), rec(0, &[])),
        ]
    }

    fn filters() -> Vec<UserFilter> {
        let attrs = [
            Attribute::Key,
            Attribute::UserName,
            Attribute::Email,
            Attribute::MappingCode,
            Attribute::FirstName,
            Attribute::LastName,
            Attribute::FullName,
            Attribute::Field("job_title"),
            Attribute::Field("groups"),
            Attribute::Field("phone"),
            Attribute::Field("email"),
            Attribute::Custom("badge".into()),
            Attribute::Custom("nope".into()),
            Attribute::Active,
            Attribute::Created,
        ];
        let ops = [
            Op::Eq,
            Op::Ne,
            Op::Co,
            Op::Sw,
            Op::Ew,
            Op::Gt,
            Op::Ge,
            Op::Lt,
            Op::Le,
        ];
        let texts = [
            "",
            "a",
            "ANN",
            "ann@x.example",
            "engineer 2",
            "E007",
            "e007",
            "emea",
            "kelvin",
            "\u{130}",
            "i\u{307}lker",
            "\u{dc}BER",
            "ann lee",
            "42",
            "o'neil",
            "k\u{fffd}ey",
            "zzzz",
            "true",
        ];
        let mut out = Vec::new();
        for a in &attrs {
            out.push(UserFilter::Present(a.clone()));
            for op in ops {
                for t in texts {
                    out.push(UserFilter::Compare(a.clone(), op, Operand::Text(t.into())));
                }
            }
        }
        let at = chrono::Utc.timestamp_millis_opt(1_720_000_000_000).unwrap();
        for op in ops {
            out.push(UserFilter::Compare(
                Attribute::Created,
                op,
                Operand::Time(at),
            ));
            out.push(UserFilter::Compare(
                Attribute::Modified,
                op,
                Operand::Time(at),
            ));
            out.push(UserFilter::Compare(
                Attribute::Active,
                op,
                Operand::Bool(true),
            ));
        }
        let co = UserFilter::Compare(Attribute::FullName, Op::Co, Operand::Text("N L".into()));
        out.push(UserFilter::Not(Box::new(co.clone())));
        out.push(UserFilter::And(
            Box::new(co.clone()),
            Box::new(out[3].clone()),
        ));
        out.push(UserFilter::Or(Box::new(out[40].clone()), Box::new(co)));
        out
    }

    #[test]
    fn answers_as_the_decoded_user_does() {
        let mut matched = 0;
        for (k, v) in users() {
            let decoded = UserRec::decode(&v).unwrap();
            let user = User::from_rec(&String::from_utf8_lossy(&k), &decoded);
            let view = RecordView::new(&k, &v).unwrap();
            for f in filters() {
                let want = f.matches(&user);
                assert_eq!(view.matches(&f).unwrap(), want, "{f:?} on {:?}", user.key);
                assert_eq!(view.matches(&f.folded()).unwrap(), want, "folded {f:?}");
                assert_eq!(f.folded().matches(&user), want, "folded {f:?} on the user");
                matched += usize::from(want);
            }
        }
        // Not a suite of "no": the filters match users in many ways.
        assert!(matched > 500, "{matched}");
    }

    /// Review finding 5: U+001F splits list fields only; in a title it is part of the text
    /// (as PostgreSQL compares the column). `fields::LIST_FIELDS` are the `Kind::List` ones.
    #[test]
    fn only_list_fields_are_split_into_items() {
        use crate::model::fields::{spec, Kind, FIELD_NAMES, LIST_FIELDS};
        let lists: Vec<&str> = FIELD_NAMES
            .iter()
            .copied()
            .filter(|n| spec(n).is_some_and(|s| s.kind == Kind::List))
            .collect();
        assert_eq!(lists, LIST_FIELDS);
        let v = rec(
            0,
            &[("job_title", "Eng\u{1f}Mgr"), ("groups", "Eng\u{1f}Mgr")],
        );
        let user = User::from_rec("k", &UserRec::decode(&v).unwrap());
        let view = RecordView::new(b"k", &v).unwrap();
        let eq = |a: Attribute, t: &str| UserFilter::Compare(a, Op::Eq, Operand::Text(t.into()));
        for (f, want) in [
            (eq(Attribute::Field("job_title"), "Eng"), false),
            (eq(Attribute::Field("job_title"), "eng\u{1f}mgr"), true),
            (eq(Attribute::Field("groups"), "Eng"), true),
            (eq(Attribute::Field("groups"), "Eng\u{1f}Mgr"), false),
        ] {
            assert_eq!(f.matches(&user), want, "{f:?} on the user");
            assert_eq!(view.matches(&f).unwrap(), want, "{f:?} on the record");
            assert_eq!(view.matches(&f.folded()).unwrap(), want, "folded {f:?}");
        }
    }

    #[test]
    fn a_damaged_field_read_is_an_error_not_a_no() {
        let v = rec(0, &[("job_title", "Clerk"), ("last_name", "Lee")]);
        let title = UserFilter::Compare(
            Attribute::Field("job_title"),
            Op::Co,
            Operand::Text("zz".into()),
        );
        // The last byte cut off: the last field's value is truncated.
        let cut = &v[..v.len() - 1];
        let last = UserFilter::Present(Attribute::LastName);
        assert!(RecordView::new(b"k", cut).unwrap().matches(&last).is_err());
        // Fields are read only as far as the filter needs: `job_title` lies before the damage.
        assert!(!RecordView::new(b"k", cut).unwrap().matches(&title).unwrap());
        assert!(RecordView::new(b"k", &v[..10]).is_err());
        assert!(!RecordView::new(b"k", &v).unwrap().matches(&title).unwrap());
    }
}
