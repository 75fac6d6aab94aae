//! A filter over a tenant's users: comparisons on a user's attributes joined by `and`, `or` and
//! `not` ([`UserFilter`]), and the rule of whether one [`User`] matches ([`UserFilter::matches`]).
//!
//! Data enters as a `UserFilter` built by a query language's parser (SCIM's in
//! `admin::filter`) and leaves as a yes or no per user. The attributes are Roster's, not
//! SCIM's: each [`Attribute`] names what it reads of a `User`, and says whether its text compares
//! case-exactly ([`Attribute::case_exact`]). Pure: no I/O, so every store can evaluate it the
//! same way, and a store that can (PostgreSQL) may translate it instead of evaluating it.
//!
//! Semantics, as RFC 7644 §3.4.2.2 gives them: `eq ne co sw ew gt ge lt le` on text compare
//! case-insensitively unless the attribute is case-exact, `gt ge lt le` lexicographically; on
//! times (`created`, `modified`) chronologically; `active` only with `eq`/`ne`; `pr` is true
//! when the attribute has a non-empty value. A comparison on a missing value is false, except
//! `ne`, which is true.

use super::fields::LIST_SEP;
use super::user::{User, UserStatus};
use chrono::{DateTime, Utc};

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

impl UserFilter {
    /// Whether `u` matches.
    pub fn matches(&self, u: &User) -> bool {
        match self {
            UserFilter::Everyone => true,
            UserFilter::And(a, b) => a.matches(u) && b.matches(u),
            UserFilter::Or(a, b) => a.matches(u) || b.matches(u),
            UserFilter::Not(f) => !f.matches(u),
            UserFilter::Present(a) => !texts(u, a).iter().all(|t| t.is_empty()),
            UserFilter::Compare(a, op, value) => compare(u, a, *op, value),
        }
    }
}

impl UserFilter {
    /// True when the filter reads nothing but whether a user is active and its times (`active`,
    /// `meta.created`, `meta.lastModified`): a store can then answer it from a record's fixed
    /// header (`packed::head_of`) without decoding the fields.
    pub fn reads_status_and_times_only(&self) -> bool {
        let header = |a: &Attribute| matches!(a, Attribute::Active) || a.is_time();
        match self {
            UserFilter::Everyone => true,
            UserFilter::And(a, b) | UserFilter::Or(a, b) => {
                a.reads_status_and_times_only() && b.reads_status_and_times_only()
            }
            UserFilter::Not(f) => f.reads_status_and_times_only(),
            UserFilter::Present(a) | UserFilter::Compare(a, _, _) => header(a),
        }
    }
}

/// The text values of `a` for `u` (several for a list field, none when absent).
fn texts(u: &User, a: &Attribute) -> Vec<String> {
    let one = |v: Option<&String>| v.map(|s| vec![s.clone()]).unwrap_or_default();
    match a {
        Attribute::Key => vec![u.key.clone()],
        Attribute::UserName => vec![u
            .username
            .as_ref()
            .or(u.email.as_ref())
            .unwrap_or(&u.key)
            .clone()],
        Attribute::Email => one(u.email.as_ref()),
        Attribute::MappingCode => one(u.mapping_code.as_ref()),
        Attribute::FirstName => one(u.first_name.as_ref()),
        Attribute::LastName => one(u.last_name.as_ref()),
        Attribute::FullName => {
            let first = u.first_name.as_deref().unwrap_or("");
            let last = u.last_name.as_deref().unwrap_or("");
            let full = format!("{first} {last}").trim().to_string();
            if full.is_empty() {
                Vec::new()
            } else {
                vec![full]
            }
        }
        Attribute::Field(name) => match u.fields.get(*name) {
            Some(serde_json::Value::String(s)) => s.split(LIST_SEP).map(str::to_string).collect(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        },
        Attribute::Custom(name) => one(u.attributes.get(name)),
        Attribute::Active => vec![(u.status == UserStatus::Active).to_string()],
        Attribute::Created => vec![u.created_at.to_rfc3339()],
        Attribute::Modified => vec![u.updated_at.to_rfc3339()],
    }
}

fn compare(u: &User, a: &Attribute, op: Op, value: &Operand) -> bool {
    match (a, value) {
        (Attribute::Active, Operand::Bool(b)) => {
            let active = u.status == UserStatus::Active;
            match op {
                Op::Eq => active == *b,
                Op::Ne => active != *b,
                _ => false,
            }
        }
        (Attribute::Created, Operand::Time(t)) => order(op, u.created_at.cmp(t)),
        (Attribute::Modified, Operand::Time(t)) => order(op, u.updated_at.cmp(t)),
        (a, Operand::Text(want)) if !a.is_time() && *a != Attribute::Active => {
            let have = texts(u, a);
            if op == Op::Ne {
                return !have.iter().any(|h| text_op(a, Op::Eq, h, want));
            }
            have.iter().any(|h| text_op(a, op, h, want))
        }
        _ => false,
    }
}

fn text_op(a: &Attribute, op: Op, have: &str, want: &str) -> bool {
    let (have, want) = if a.case_exact() {
        (have.to_string(), want.to_string())
    } else {
        (have.to_lowercase(), want.to_lowercase())
    };
    match op {
        Op::Eq => have == want,
        Op::Ne => have != want,
        Op::Co => have.contains(&want),
        Op::Sw => have.starts_with(&want),
        Op::Ew => have.ends_with(&want),
        _ => order(op, have.as_str().cmp(want.as_str())),
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
        assert!(UserFilter::Not(Box::new(both.clone())).reads_status_and_times_only());
        assert!(
            !UserFilter::And(Box::new(both), Box::new(cmp(Attribute::Key, Op::Eq, "k")))
                .reads_status_and_times_only()
        );
        assert!(!UserFilter::Present(Attribute::Email).reads_status_and_times_only());
        // A boolean compared with text, or active with `co`, matches nobody.
        assert!(!cmp(Attribute::Active, Op::Eq, "true").matches(&u));
    }
}
