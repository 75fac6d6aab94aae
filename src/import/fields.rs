//! The field table (design.md §4): one spec per field drives parsing, normalisation,
//! validation and storage.
//!
//! Data enters as one trimmed CSV cell plus the tenant's import profile and leaves as a
//! normalised value ([`Norm`]) or a problem phrase that the caller turns into a sentence naming
//! the row, the column header and the value.

use crate::config::{ImportProfile, NameCase, Reference};
use crate::model::bucket::{fnv64_extend, FNV_OFFSET};
pub use crate::model::fields::{
    is_known_field, spec, FieldSpec, Kind, RefList, CUSTOM, FIELDS, FIELD_NAMES, LIST_SEP,
};
use std::borrow::Cow;
use std::collections::HashMap;

/// A normalised cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Norm<'a> {
    /// The cell was empty (after trimming).
    Empty,
    /// The stored form (borrowed from the cell or the lookups when nothing had to change).
    Value(Cow<'a, str>),
    /// A boolean (active/deactivate already inverted: true = active).
    Active(bool),
    /// A reference not in the tenant's lists, with `unknown_reference = "ignore"`: dropped.
    UnknownReference,
}

/// Problem phrases, completed by the caller as `row N: HEADER "VALUE" <phrase>`.
pub type Problem = String;

/// The tenant's lists prepared once per run for fast, case-insensitive lookups.
#[derive(Debug, Clone)]
pub struct Lookups {
    pub profile: ImportProfile,
    /// Lower-cased → as written in the config, per [`RefList`].
    refs: [LowerMap; 3],
    /// Lower-cased → itself.
    languages: LowerMap,
}

/// A map keyed by lower-cased text, looked up without allocating for short ASCII cells (the
/// lookups run for every row). FNV hashing: the keys come from the config, not from files.
#[derive(Debug, Clone, Default)]
struct LowerMap(HashMap<String, String, std::hash::BuildHasherDefault<Fnv>>);

impl LowerMap {
    fn get(&self, t: &str) -> Option<&String> {
        let mut buf = [0u8; 64];
        match buf.get_mut(..t.len()) {
            Some(b) if t.is_ascii() => {
                b.copy_from_slice(t.as_bytes());
                b.make_ascii_lowercase();
                std::str::from_utf8(b).ok().and_then(|k| self.0.get(k))
            }
            _ => self.0.get(&t.to_lowercase()),
        }
    }
}

impl FromIterator<(String, String)> for LowerMap {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(it: I) -> Self {
        LowerMap(it.into_iter().collect())
    }
}

#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let start = if self.0 == 0 { FNV_OFFSET } else { self.0 };
        self.0 = fnv64_extend(start, bytes);
    }
}

impl Lookups {
    pub fn new(profile: &ImportProfile, reference: &Reference) -> Lookups {
        let index = |l: &[String]| {
            l.iter()
                .map(|v| (v.trim().to_lowercase(), v.trim().to_string()))
                .collect()
        };
        Lookups {
            profile: profile.clone(),
            refs: [
                index(&reference.org_units),
                index(&reference.locations),
                index(&reference.workplaces),
            ],
            languages: profile
                .languages
                .iter()
                .map(|l| (l.to_lowercase(), l.to_lowercase()))
                .collect(),
        }
    }
}

/// A cell without what surrounds it unseen: whitespace, and the invisible characters that
/// copying out of an HR tool or a web page brings along (zero-width space and (non-)joiner,
/// word joiner, a byte order mark). Only trimmed by whitespace, `k1@x.example` with a
/// zero-width space after it was no email, its row was skipped unreadable, and its user went
/// missing (review s21).
pub fn trim_cell(cell: &str) -> &str {
    cell.trim_matches(is_unseen)
}

/// A character a cell or a header may carry unseen at its ends: whitespace, zero-width space,
/// zero-width (non-)joiner, the left-to-right and right-to-left marks, word joiner and the
/// invisible operators, a soft hyphen, a byte order mark.
pub fn is_unseen(c: char) -> bool {
    c.is_whitespace()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{00AD}' | '\u{FEFF}')
}

/// Parses one cell of a field.
pub fn normalise<'a>(spec: FieldSpec, cell: &'a str, lk: &'a Lookups) -> Result<Norm<'a>, Problem> {
    let profile = &lk.profile;
    let t = trim_cell(cell);
    if t.is_empty() {
        return Ok(Norm::Empty);
    }
    match spec.kind {
        Kind::Email => email_cow(t).map(Norm::Value),
        Kind::Id | Kind::Text | Kind::Secret => Ok(Norm::Value(Cow::Borrowed(t))),
        Kind::Name => Ok(Norm::Value(name_cow(t, profile.name_case))),
        Kind::Date => date(t).map(|d| Norm::Value(Cow::Owned(d))),
        Kind::Sex => match t {
            "M" | "m" => Ok(Norm::Value(Cow::Borrowed("M"))),
            "F" | "f" => Ok(Norm::Value(Cow::Borrowed("F"))),
            _ => Err("is not a sex: use M or F".into()),
        },
        Kind::Language => {
            if let Some(l) = lk.languages.get(t) {
                Ok(Norm::Value(Cow::Borrowed(l.as_str())))
            } else {
                Err(format!(
                    "is not one of the accepted languages ({})",
                    profile.languages.join(", ")
                ))
            }
        }
        Kind::Reference(list) => {
            let known = &lk.refs[list as usize];
            match known.get(t) {
                Some(k) => Ok(Norm::Value(Cow::Borrowed(k.as_str()))),
                None => match profile.unknown_reference {
                    crate::config::UnknownReference::Create => Ok(Norm::Value(Cow::Borrowed(t))),
                    crate::config::UnknownReference::Ignore => Ok(Norm::UnknownReference),
                    crate::config::UnknownReference::SkipRow => {
                        Err("is not in the tenant's reference list".into())
                    }
                },
            }
        }
        Kind::List => {
            let sep = profile.list_separator.chars().next().unwrap_or(';');
            let items: Vec<&str> = t
                .split(sep)
                .map(trim_cell)
                .filter(|s| !s.is_empty())
                .collect();
            match items.as_slice() {
                [] => Ok(Norm::Empty),
                [one] => Ok(Norm::Value(Cow::Borrowed(one))),
                _ => Ok(Norm::Value(Cow::Owned(items.join(&LIST_SEP.to_string())))),
            }
        }
        Kind::Bool { invert } => match boolean(t) {
            Some(b) => Ok(Norm::Active(b != invert)),
            None => {
                Err("is not a yes/no value (use 1/0, true/false, yes/no, active/inactive)".into())
            }
        },
    }
}

/// Lower-cases and checks an email address (a domain with a dot is required).
pub fn email(t: &str) -> Result<String, Problem> {
    email_cow(t).map(Cow::into_owned)
}

/// `t` lower-cased, borrowed when it already is.
fn lower_cow(t: &str) -> Cow<'_, str> {
    if t.chars().any(char::is_uppercase) {
        Cow::Owned(t.to_lowercase())
    } else {
        Cow::Borrowed(t)
    }
}

/// The everyday address, checked by bytes: a dot-atom local part of letters, digits and
/// `. _ % + -` (no dot first, last or twice in a row), `@`, then at least two dot-separated
/// labels of letters, digits and `-` (not first or last). Everything this accepts is a valid
/// address for `email_address` too; anything else goes to that full check. Every row has an
/// email, so this saves the full parse for nearly all of them.
fn plain_email(t: &str) -> bool {
    let Some((local, domain)) = t.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-'));
    let mut labels = 0;
    let domain_ok = domain.len() <= 253
        && domain.split('.').all(|l| {
            labels += 1;
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    local_ok && domain_ok && labels >= 2
}

fn email_cow(t: &str) -> Result<Cow<'_, str>, Problem> {
    let lower = lower_cow(t);
    if plain_email(&lower) {
        return Ok(lower);
    }
    let opts = email_address::Options {
        minimum_sub_domains: 2,
        allow_domain_literal: false,
        allow_display_text: false,
    };
    let ok = email_address::EmailAddress::parse_with_options(&lower, opts).is_ok()
        && !lower.contains(char::is_whitespace)
        && lower
            .rsplit_once('@')
            .is_some_and(|(_, d)| d.contains('.') && !d.ends_with('.') && !d.starts_with('.'));
    if ok {
        Ok(lower)
    } else {
        Err("is not a valid email address".into())
    }
}

fn name_cow(t: &str, case: NameCase) -> Cow<'_, str> {
    // One look at the bytes: only ASCII, no whitespace but single spaces (tab, line feed,
    // vertical tab, form feed, CR). Any non-ASCII byte takes the slow path: Unicode has
    // whitespace in several blocks (NBSP, EM SPACE, the ideographic space, …).
    let mut prev_space = false;
    let plain = t.bytes().all(|b| {
        let bad = b >= 0x80 || matches!(b, b'\t'..=b'\r') || (prev_space && b == b' ');
        prev_space = b == b' ';
        !bad
    });
    if case == NameCase::AsIs && plain {
        Cow::Borrowed(t)
    } else {
        Cow::Owned(name(t, case))
    }
}

fn name(t: &str, case: NameCase) -> String {
    let collapsed = t.split_whitespace().collect::<Vec<_>>().join(" ");
    match case {
        NameCase::AsIs => collapsed,
        NameCase::Capitalize => {
            let mut out = String::with_capacity(collapsed.len());
            let mut start = true;
            for c in collapsed.chars() {
                if start {
                    out.extend(c.to_uppercase());
                } else {
                    out.extend(c.to_lowercase());
                }
                start = matches!(c, ' ' | '-' | '\'');
            }
            out
        }
    }
}

/// `YYYY-MM-DD`, `DD.MM.YYYY`, `D.M.YYYY` → ISO.
pub fn date(t: &str) -> Result<String, Problem> {
    let bad = || "is not a date (use YYYY-MM-DD or DD.MM.YYYY)".to_string();
    // Split on one separator into exactly three runs of digits, by bytes (this runs for every
    // row): `YYYY-MM-DD`, or `D.M.YYYY` with one or two digits and optional final dots.
    let b = t.as_bytes();
    let (sep, b) = match b.iter().find(|c| matches!(c, b'-' | b'.')) {
        Some(b'-') => (b'-', b),
        Some(_) => {
            let end = b.iter().rposition(|c| *c != b'.').map_or(0, |i| i + 1);
            (b'.', &b[..end])
        }
        None => return Err(bad()),
    };
    let mut parts = [0u32; 3];
    let mut lens = [0usize; 3];
    let mut n = 0;
    for &c in b {
        if c == sep {
            n += 1;
            if n == 3 {
                return Err(bad());
            }
        } else if c.is_ascii_digit() && lens[n] < 4 {
            parts[n] = parts[n] * 10 + u32::from(c - b'0');
            lens[n] += 1;
        } else {
            return Err(bad());
        }
    }
    let (y, m, d) = match (sep, lens) {
        (b'-', [4, 2, 2]) if n == 2 => (parts[0], parts[1], parts[2]),
        (b'.', [1..=2, 1..=2, 4]) if n == 2 => (parts[2], parts[1], parts[0]),
        _ => return Err(bad()),
    };
    match chrono::NaiveDate::from_ymd_opt(y as i32, m, d) {
        // y has four digits, m and d at most two (checked above): `YYYY-MM-DD`.
        Some(_) => {
            let mut out = String::with_capacity(10);
            for (v, width) in [(y, 4u32), (m, 2), (d, 2)] {
                if width == 2 {
                    out.push('-');
                }
                for p in (0..width).rev() {
                    let digit = (v / 10u32.pow(p)) % 10;
                    out.push(char::from(b'0' + digit as u8));
                }
            }
            Ok(out)
        }
        None => Err(bad()),
    }
}

fn boolean(t: &str) -> Option<bool> {
    match t.to_lowercase().as_str() {
        "1" | "true" | "yes" | "y" | "active" | "activo" | "aktivan" | "da" | "ja" => Some(true),
        "0" | "false" | "no" | "n" | "inactive" | "inactivo" | "neaktivan" | "ne" | "nein" => {
            Some(false)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date("7.3.1975").ok().as_deref(), Some("1975-03-07"));
        assert_eq!(date("03.04.1985").ok().as_deref(), Some("1985-04-03"));
        assert_eq!(date("1990-12-01").ok().as_deref(), Some("1990-12-01"));
        assert!(date("12.13.1980").is_err());
        assert!(date("1990-2-1").is_err());
        assert!(date("x.y.zzzz").is_err());
        assert_eq!(date("0099-01-02").ok().as_deref(), Some("0099-01-02"));
        assert_eq!(date("1.1.2000.").ok().as_deref(), Some("2000-01-01"));
        assert!(date("1.1.2000.1").is_err());
        assert!(date("2000-01-01-01").is_err());
        assert!(date("1-1.2000").is_err());
        assert!(date("12345.1.2000").is_err());
        assert!(date("").is_err());
        assert!(date("2000-01-1x").is_err());
        assert!(date("31.02.2000").is_err());
        assert_eq!(date("29.2.2000").ok().as_deref(), Some("2000-02-29"));
    }

    #[test]
    fn emails() {
        assert_eq!(
            email("Ivan.Kovacic@ACME.example").ok().as_deref(),
            Some("ivan.kovacic@acme.example")
        );
        assert!(email("luka.maric@").is_err());
        assert!(email("not-an-email").is_err());
        assert!(email("a@localhost").is_err());
        assert!(email("A <a@b.example>").is_err());
    }

    #[test]
    fn plain_emails_are_a_subset_of_valid_ones() {
        let opts = email_address::Options {
            minimum_sub_domains: 2,
            allow_domain_literal: false,
            allow_display_text: false,
        };
        let samples = [
            "a@b.example",
            "first.last@x.example",
            "a+tag@sub.x.example",
            "a_b%c@x-y.example",
            "1@2.3",
            "a@b",
            "a.@b.example",
            ".a@b.example",
            "a..b@x.example",
            "a@-b.example",
            "a@b-.example",
            "a@b..example",
            "a@.b.example",
            "a@b.example.",
            "@b.example",
            "a@",
            "a b@x.example",
            "a@b_c.example",
            "\"q\"@x.example",
            "a@[1.2.3.4]",
            "é@x.example",
            "a@x.example@y.example",
            "a!#$&'*/=?^`{|}~@x.example",
        ];
        for e in samples {
            if plain_email(e) {
                assert!(
                    email_address::EmailAddress::parse_with_options(e, opts).is_ok(),
                    "{e} passes the byte check but not the full parse"
                );
            }
        }
        // And over random strings of the characters that matter.
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(&"[a-z0-9._%+@-]{1,24}", |e| {
                if plain_email(&e) {
                    prop_assert!(email_address::EmailAddress::parse_with_options(&e, opts).is_ok());
                }
                Ok(())
            })
            .unwrap();
        assert!(plain_email("first.last@x.example"));
        assert!(!plain_email("a@b"));
        assert!(!plain_email("a..b@x.example"));
    }

    /// Review s14, finding 12: inner Unicode whitespace other than NBSP (EM SPACE, the
    /// ideographic space, …) took the fast path and was kept as written.
    #[test]
    fn names_collapse_any_inner_whitespace() {
        for t in [
            "Ana\u{2003}Marija",
            "Ana \u{2003}Marija",
            "Ana\u{a0}\u{a0}Marija",
            "Ana\u{3000}Marija",
            "Ana\u{202f}Marija",
            "Ana\u{b}Marija",
            "Ana\u{c}\u{c}Marija",
            "Ana\tMarija",
            "Ana  Marija",
        ] {
            assert_eq!(name_cow(t, NameCase::AsIs), "Ana Marija", "{t:?}");
        }
        // The fast path keeps plain ASCII names borrowed.
        assert!(matches!(
            name_cow("Ana Marija", NameCase::AsIs),
            Cow::Borrowed(_)
        ));
        assert_eq!(name_cow("Željka Ćorić", NameCase::AsIs), "Željka Ćorić");
        assert_eq!(
            name_cow("ana\u{2003}ćorić", NameCase::Capitalize),
            "Ana Ćorić"
        );
    }

    #[test]
    fn names_and_fields() {
        assert_eq!(name("jOHN   dOE", NameCase::Capitalize), "John Doe");
        assert_eq!(name(" Novak ", NameCase::AsIs), "Novak");
        assert!(is_known_field("custom.x"));
        assert!(!is_known_field("custom."));
        assert!(!is_known_field("nope"));
        for n in FIELD_NAMES {
            assert!(FIELDS.iter().any(|s| s.name == *n));
        }
    }
}
