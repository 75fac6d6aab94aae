//! A filter over a tenant's users: comparisons on a user's attributes joined by `and`, `or` and
//! `not` ([`UserFilter`]), and the rule of whether one user matches ([`UserFilter::matches`]).
//!
//! Data enters as a `UserFilter` built by a query language's parser (SCIM's in
//! `admin::filter`) and leaves as a yes or no per user. A user is read through [`Subject`]: a
//! decoded [`User`], or a stored record read in place (`record_view`), with the same answers.
//! The attributes are Roster's, not SCIM's: each [`Attribute`] names what it reads of a `User`,
//! and says whether its text compares case-exactly ([`Attribute::case_exact`]). Pure: no I/O, so every store can evaluate it the
//! same way, and a store that can (PostgreSQL) may translate it instead of evaluating it.
//!
//! Semantics, as RFC 7644 §3.4.2.2 gives them: `eq ne co sw ew gt ge lt le` on text compare
//! case-insensitively unless the attribute is case-exact, `gt ge lt le` lexicographically; on
//! times (`created`, `modified`) chronologically; `active` only with `eq`/`ne`; `pr` is true
//! when the attribute has a non-empty value. A comparison on a missing value is false, except
//! `ne`, which is true.

use super::user::{User, UserStatus};
use chrono::{DateTime, Utc};
use std::borrow::Cow;

/// What a filter can compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    /// The user's key (SCIM `id`); case-exact.
    Key,
    /// The username, else the email, else the key (SCIM `userName`).
    UserName,
    Email,
    /// The mapping code (SCIM `externalId`, `employeeNumber`); case-exact.
    MappingCode,
    FirstName,
    LastName,
    /// "First Last" (SCIM `displayName`, `name.formatted`).
    FullName,
    /// Another built-in field of the field table, by name (`job_title`, `phone`, ...); a list
    /// field (`groups`) matches when any item does.
    Field(&'static str),
    /// `custom.NAME` by NAME.
    Custom(String),
    /// Whether the user is active.
    Active,
    Created,
    Modified,
}

impl Attribute {
    /// True when text compares exactly (identifiers); false when case is ignored.
    pub fn case_exact(&self) -> bool {
        matches!(self, Attribute::Key | Attribute::MappingCode)
    }

    /// True for the attributes compared as times.
    pub fn is_time(&self) -> bool {
        matches!(self, Attribute::Created | Attribute::Modified)
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

/// The value compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    Text(String),
    Bool(bool),
    Time(DateTime<Utc>),
}

/// A filter over users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserFilter {
    /// Matches every user.
    Everyone,
    And(Box<UserFilter>, Box<UserFilter>),
    Or(Box<UserFilter>, Box<UserFilter>),
    Not(Box<UserFilter>),
    /// The attribute has a non-empty value.
    Present(Attribute),
    Compare(Attribute, Op, Operand),
}

/// What a filter reads of one user: a decoded [`User`], or a stored record read where it lies
/// ([`RecordView`](super::record_view::RecordView)), so that a store scanning records need not
/// decode each one. Both give the same answers; the rules of comparing stay here.
pub trait Subject {
    fn is_active(&self) -> bool;
    fn created_at(&self) -> DateTime<Utc>;
    fn updated_at(&self) -> DateTime<Utc>;
    /// Whether `test` holds for one of the text values of `a` (several for a list field, none
    /// when absent); never called with `Active`, `Created` or `Modified`.
    fn any_text(&self, a: &Attribute, test: &mut dyn FnMut(&str) -> bool) -> bool;
}

impl UserFilter {
    /// Whether `u` matches.
    pub fn matches(&self, u: &impl Subject) -> bool {
        match self {
            UserFilter::Everyone => true,
            UserFilter::And(a, b) => a.matches(u) && b.matches(u),
            UserFilter::Or(a, b) => a.matches(u) || b.matches(u),
            UserFilter::Not(f) => !f.matches(u),
            UserFilter::Present(a) if header_attribute(a) => true,
            UserFilter::Present(a) => u.any_text(a, &mut |t| !t.is_empty()),
            UserFilter::Compare(a, op, value) => compare(u, a, *op, value),
        }
    }

    /// The same filter with each text compared case-insensitively already lower-cased, so that
    /// evaluating it over many users does not lower-case the same text for each of them.
    pub fn folded(&self) -> UserFilter {
        let fold = |f: &UserFilter| Box::new(f.folded());
        match self {
            UserFilter::And(a, b) => UserFilter::And(fold(a), fold(b)),
            UserFilter::Or(a, b) => UserFilter::Or(fold(a), fold(b)),
            UserFilter::Not(f) => UserFilter::Not(fold(f)),
            UserFilter::Compare(a, op, Operand::Text(t)) if !a.case_exact() => {
                UserFilter::Compare(a.clone(), *op, Operand::Text(t.to_lowercase()))
            }
            other => other.clone(),
        }
    }
}

/// `active` and the times, read from a record's fixed header: every user has them (so they
/// are always present).
fn header_attribute(a: &Attribute) -> bool {
    matches!(a, Attribute::Active) || a.is_time()
}

impl Subject for User {
    fn is_active(&self) -> bool {
        self.status == UserStatus::Active
    }
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    fn any_text(&self, a: &Attribute, test: &mut dyn FnMut(&str) -> bool) -> bool {
        let one = |v: &Option<String>, test: &mut dyn FnMut(&str) -> bool| {
            v.as_deref().is_some_and(&mut *test)
        };
        match a {
            Attribute::Key => test(&self.key),
            Attribute::UserName => test(
                self.username
                    .as_ref()
                    .or(self.email.as_ref())
                    .unwrap_or(&self.key),
            ),
            Attribute::Email => one(&self.email, test),
            Attribute::MappingCode => one(&self.mapping_code, test),
            Attribute::FirstName => one(&self.first_name, test),
            Attribute::LastName => one(&self.last_name, test),
            Attribute::FullName => full_name(self.first_name.as_deref(), self.last_name.as_deref())
                .is_some_and(|full| test(&full)),
            Attribute::Field(name) => match self.fields.get(*name) {
                // One value: only list fields are split (into arrays, by `User::from_rec`).
                Some(serde_json::Value::String(s)) => test(s),
                Some(serde_json::Value::Array(items)) => {
                    items.iter().filter_map(|i| i.as_str()).any(test)
                }
                _ => false,
            },
            Attribute::Custom(name) => self.attributes.get(name).is_some_and(|s| test(s)),
            Attribute::Active | Attribute::Created | Attribute::Modified => false,
        }
    }
}

/// "First Last" as `displayName` shows it, None when both are empty.
pub fn full_name(first: Option<&str>, last: Option<&str>) -> Option<String> {
    let full = format!("{} {}", first.unwrap_or(""), last.unwrap_or(""));
    let full = full.trim();
    (!full.is_empty()).then(|| full.to_string())
}

fn compare(u: &impl Subject, a: &Attribute, op: Op, value: &Operand) -> bool {
    match (a, value) {
        (Attribute::Active, Operand::Bool(b)) => match op {
            Op::Eq => u.is_active() == *b,
            Op::Ne => u.is_active() != *b,
            _ => false,
        },
        (Attribute::Created, Operand::Time(t)) => order(op, u.created_at().cmp(t)),
        (Attribute::Modified, Operand::Time(t)) => order(op, u.updated_at().cmp(t)),
        (a, Operand::Text(want)) if !header_attribute(a) => {
            let exact = a.case_exact();
            let want = if exact {
                Cow::Borrowed(want.as_str())
            } else {
                lower(want)
            };
            if op == Op::Ne {
                return !u.any_text(a, &mut |have| text_op(exact, Op::Eq, have, &want));
            }
            u.any_text(a, &mut |have| text_op(exact, op, have, &want))
        }
        _ => false,
    }
}

/// `s` lower-cased; not copied when it has no letter to change.
fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// `have` compared by `op` with `want`, which is lower-case already unless `exact`. An ASCII
/// `have` is lower-cased as it is read (for ASCII text that is what `to_lowercase` does), so
/// the usual value costs no copy.
fn text_op(exact: bool, op: Op, have: &str, want: &str) -> bool {
    if exact || have.is_ascii() {
        return bytes_op(op, have.as_bytes(), want.as_bytes(), !exact);
    }
    bytes_op(op, have.to_lowercase().as_bytes(), want.as_bytes(), false)
}

/// `op` on the bytes of two texts (byte order is the order of `str`); `fold` lower-cases the
/// ASCII letters of `have`.
fn bytes_op(op: Op, have: &[u8], want: &[u8], fold: bool) -> bool {
    let read = |b: &u8| if fold { b.to_ascii_lowercase() } else { *b };
    let same = |h: &[u8]| h.len() == want.len() && h.iter().map(read).eq(want.iter().copied());
    let tail = have
        .len()
        .checked_sub(want.len())
        .and_then(|at| have.get(at..));
    match op {
        Op::Eq => same(have),
        Op::Ne => !same(have),
        Op::Co => want.is_empty() || have.windows(want.len()).any(same),
        Op::Sw => have.get(..want.len()).is_some_and(same),
        Op::Ew => tail.is_some_and(same),
        _ => order(op, have.iter().map(read).cmp(want.iter().copied())),
    }
}

fn order(op: Op, o: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => o == Equal,
        Op::Ne => o != Equal,
        Op::Gt => o == Greater,
        Op::Ge => o != Less,
        Op::Lt => o == Less,
        Op::Le => o != Greater,
        Op::Co | Op::Sw | Op::Ew => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::collections::BTreeMap;

    fn ann() -> User {
        let mut fields = BTreeMap::new();
        fields.insert("job_title".to_string(), serde_json::json!("Clerk"));
        fields.insert("groups".to_string(), serde_json::json!(["sales", "emea"]));
        User {
            key: "ann@x.example".into(),
            status: UserStatus::Active,
            email: Some("ann@x.example".into()),
            username: None,
            mapping_code: Some("E007".into()),
            first_name: Some("Ann".into()),
            last_name: Some("Lee".into()),
            fields,
            attributes: BTreeMap::from([("badge".to_string(), "42".to_string())]),
            has_password: false,
            managed: true,
            created_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            updated_at: Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap(),
            deleted_at: None,
        }
    }

    fn cmp(a: Attribute, op: Op, v: &str) -> UserFilter {
        UserFilter::Compare(a, op, Operand::Text(v.into()))
    }

    #[test]
    fn text_comparisons_follow_case_rules() {
        let u = ann();
        assert!(cmp(Attribute::UserName, Op::Eq, "ANN@x.example").matches(&u));
        assert!(!cmp(Attribute::MappingCode, Op::Eq, "e007").matches(&u));
        assert!(cmp(Attribute::MappingCode, Op::Eq, "E007").matches(&u));
        assert!(cmp(Attribute::LastName, Op::Sw, "l").matches(&u));
        assert!(cmp(Attribute::Email, Op::Ew, ".EXAMPLE").matches(&u));
        assert!(cmp(Attribute::FullName, Op::Co, "n l").matches(&u));
        assert!(cmp(Attribute::FirstName, Op::Gt, "Al").matches(&u));
        assert!(!cmp(Attribute::FirstName, Op::Lt, "Al").matches(&u));
        assert!(cmp(Attribute::Field("groups"), Op::Eq, "EMEA").matches(&u));
        assert!(cmp(Attribute::Custom("badge".into()), Op::Eq, "42").matches(&u));
    }

    #[test]
    fn missing_values_fail_every_comparison_but_ne() {
        let u = ann();
        assert!(!cmp(Attribute::Field("phone"), Op::Eq, "1").matches(&u));
        assert!(!cmp(Attribute::Field("phone"), Op::Co, "").matches(&u));
        assert!(cmp(Attribute::Field("phone"), Op::Ne, "1").matches(&u));
        assert!(!UserFilter::Present(Attribute::Field("phone")).matches(&u));
        assert!(UserFilter::Present(Attribute::Field("job_title")).matches(&u));
    }

    #[test]
    fn booleans_times_and_logic() {
        let u = ann();
        let active = UserFilter::Compare(Attribute::Active, Op::Eq, Operand::Bool(true));
        assert!(active.matches(&u));
        let since = |y, m| {
            UserFilter::Compare(
                Attribute::Modified,
                Op::Gt,
                Operand::Time(Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).unwrap()),
            )
        };
        assert!(since(2026, 5).matches(&u));
        assert!(!since(2026, 7).matches(&u));
        let both = UserFilter::And(Box::new(active.clone()), Box::new(since(2026, 7)));
        assert!(!both.matches(&u));
        let either = UserFilter::Or(Box::new(active), Box::new(since(2026, 7)));
        assert!(either.matches(&u));
        assert!(!UserFilter::Not(Box::new(either)).matches(&u));
        // A boolean compared with text, or active with `co`, matches nobody.
        assert!(!cmp(Attribute::Active, Op::Eq, "true").matches(&u));
    }
}
