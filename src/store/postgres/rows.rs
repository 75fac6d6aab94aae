//! A packed user record ([`UserRec`]) as the typed columns of `roster.user_rows` and
//! `roster.staged_rows`: what applications read through the view `roster.users`.
//!
//! Data enters as a decoded [`UserRec`] (from a staged bucket or a rewritten user) and leaves as
//! a [`TypedRow`] whose values bind, in [`TYPED_COLUMNS`] order, to a COPY or an `UPDATE`. The
//! names are those of `model::fields`; every built-in field with a column gets it, `custom.*`
//! fields go into `attributes` (jsonb, keyed by the full name), list fields (`groups`, `teams`)
//! are split on [`LIST_SEP`] into `text[]`, dates (stored ISO) become `date`, the status byte
//! becomes its text, the millisecond times `timestamptz` (`deleted_at` NULL when 0).
//!
//! **The typed columns are a projection, never the truth.** Roster reads users back only from
//! the packed `record` column. A value that does not convert must not fail an import, so it
//! leaves its typed column NULL instead: a date that is not `YYYY-MM-DD`, a `sex` other than `M`
//! or `F` (the table's check), and any text holding a NUL character (PostgreSQL text and jsonb
//! cannot hold one; for a list the whole column, for an attribute that one key). A time outside
//! what `timestamptz` holds (only a damaged record has one) is NULL for `deleted_at` and the
//! epoch for the two columns that cannot be NULL. Fields without a column (`password`,
//! `active`, `deactivate`) are not projected. Pure: no I/O.

use crate::model::fields::{custom_name, LIST_SEP};
use crate::model::packed::{UserRec, STATUS_ACTIVE, STATUS_DELETED};
use crate::model::user::millis_to_time;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use tokio_postgres::types::{ToSql, Type};

/// The text columns, in [`TYPED_COLUMNS`] order; each is the field of the same name.
pub const TEXT_COLUMNS: [&str; 16] = [
    "email",
    "username",
    "mapping_code",
    "first_name",
    "last_name",
    "manager_email",
    "sex",
    "language",
    "national_id",
    "phone",
    "job_title",
    "role",
    "timezone",
    "org_unit",
    "location",
    "workplace",
];
/// The date columns, in [`TYPED_COLUMNS`] order.
pub const DATE_COLUMNS: [&str; 2] = ["date_of_birth", "start_date"];
/// The list columns, in [`TYPED_COLUMNS`] order.
pub const LIST_COLUMNS: [&str; 2] = crate::model::fields::LIST_FIELDS;

/// Every typed column of a user row, in the order [`TypedRow::values`] binds them.
pub const TYPED_COLUMNS: [&str; 26] = [
    "status",
    "email",
    "username",
    "mapping_code",
    "first_name",
    "last_name",
    "manager_email",
    "sex",
    "language",
    "national_id",
    "phone",
    "job_title",
    "role",
    "timezone",
    "org_unit",
    "location",
    "workplace",
    "date_of_birth",
    "start_date",
    "groups",
    "teams",
    "attributes",
    "created_at",
    "updated_at",
    "deleted_at",
    "record",
];

/// The PostgreSQL types of [`TYPED_COLUMNS`], in the same order (for binary COPY).
pub fn typed_column_types() -> Vec<Type> {
    let mut t = vec![Type::TEXT];
    t.extend([Type::TEXT; 16]);
    t.extend([Type::DATE; 2]);
    t.extend([Type::TEXT_ARRAY; 2]);
    t.extend([Type::JSONB, Type::TIMESTAMPTZ, Type::TIMESTAMPTZ]);
    t.extend([Type::TIMESTAMPTZ, Type::BYTEA]);
    t
}

static NULL_TEXT: Option<&str> = None;
static NULL_DATE: Option<NaiveDate> = None;
static NULL_LIST: Option<Vec<String>> = None;
static NULL_JSON: Option<serde_json::Value> = None;
static NULL_TIME: Option<DateTime<Utc>> = None;
static NULL_BYTES: Option<Vec<u8>> = None;

/// NULL for every one of [`TYPED_COLUMNS`], each of its column's type (a removed key's staged
/// row).
pub fn null_values() -> Vec<&'static (dyn ToSql + Sync)> {
    let mut v: Vec<&'static (dyn ToSql + Sync)> = vec![&NULL_TEXT];
    v.extend([&NULL_TEXT as &(dyn ToSql + Sync); 16]);
    v.extend([&NULL_DATE as &(dyn ToSql + Sync); 2]);
    v.extend([&NULL_LIST as &(dyn ToSql + Sync); 2]);
    v.extend([
        &NULL_JSON as &(dyn ToSql + Sync),
        &NULL_TIME,
        &NULL_TIME,
        &NULL_TIME,
    ]);
    v.push(&NULL_BYTES);
    v
}

/// The status column's text for a packed status byte (as `UserStatus::from_byte` reads it).
pub fn status_text(status: u8) -> &'static str {
    match status {
        STATUS_ACTIVE => "active",
        STATUS_DELETED => "deleted",
        _ => "inactive",
    }
}

/// One user as typed column values, plus its packed record. No `Debug`: the record holds the
/// password hash.
pub struct TypedRow {
    pub status: &'static str,
    /// Values of [`TEXT_COLUMNS`].
    pub texts: [Option<String>; 16],
    /// Values of [`DATE_COLUMNS`].
    pub dates: [Option<NaiveDate>; 2],
    /// Values of [`LIST_COLUMNS`].
    pub lists: [Option<Vec<String>>; 2],
    /// `custom.*` fields by their full name (a JSON object).
    pub attributes: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// The packed record (`UserRec::encode_into`): what Roster reads back.
    pub record: Vec<u8>,
}

impl TypedRow {
    /// Projects a record; `record` is its packed form (kept as given).
    pub fn from_rec(rec: &UserRec, record: Vec<u8>) -> TypedRow {
        let field = |name: &str| rec.get(name).filter(|v| !v.contains('\0'));
        let texts = TEXT_COLUMNS.map(|c| match c {
            "sex" => field(c)
                .filter(|v| *v == "M" || *v == "F")
                .map(str::to_string),
            _ => field(c).map(str::to_string),
        });
        let dates = DATE_COLUMNS.map(|c| field(c).and_then(iso_date));
        let lists = LIST_COLUMNS.map(|c| field(c).map(split_list));
        let mut attributes = serde_json::Map::new();
        for (name, value) in &rec.fields {
            if custom_name(name).is_some() && !name.contains('\0') && !value.contains('\0') {
                attributes.insert(name.clone(), serde_json::Value::String(value.clone()));
            }
        }
        TypedRow {
            status: status_text(rec.status),
            texts,
            dates,
            lists,
            attributes: serde_json::Value::Object(attributes),
            created_at: pg_time(rec.created_at).unwrap_or_default(),
            updated_at: pg_time(rec.updated_at).unwrap_or_default(),
            deleted_at: (rec.deleted_at != 0)
                .then(|| pg_time(rec.deleted_at))
                .flatten(),
            record,
        }
    }

    /// The values of [`TYPED_COLUMNS`], in that order, to bind to a statement or a COPY row.
    pub fn values(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut v: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(TYPED_COLUMNS.len());
        v.push(&self.status);
        for t in &self.texts {
            v.push(t);
        }
        for d in &self.dates {
            v.push(d);
        }
        for l in &self.lists {
            v.push(l);
        }
        v.push(&self.attributes);
        v.push(&self.created_at);
        v.push(&self.updated_at);
        v.push(&self.deleted_at);
        v.push(&self.record);
        v
    }
}

/// A time in milliseconds as `timestamptz` holds it; None outside its range (4713 BC to
/// 294276 AD, with a margin).
fn pg_time(ms: i64) -> Option<DateTime<Utc>> {
    let t = millis_to_time(ms);
    (t.timestamp_millis() == ms && (-4700..=294_000).contains(&t.year())).then_some(t)
}

/// A stored ISO date (`YYYY-MM-DD`); None for anything else.
fn iso_date(value: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()
}

/// A stored list value as its items.
fn split_list(value: &str) -> Vec<String> {
    value.split(LIST_SEP).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::packed::{STATUS_DELETED, STATUS_INACTIVE};

    fn rec(fields: &[(&str, &str)]) -> UserRec {
        let mut r = UserRec {
            status: STATUS_ACTIVE,
            created_at: 1_700_000_000_123,
            updated_at: 1_700_000_500_000,
            pw_hash: "$argon2id$secret".into(),
            ..Default::default()
        };
        for (n, v) in fields {
            r.set(n, Some(v));
        }
        r
    }

    fn text<'a>(row: &'a TypedRow, column: &str) -> Option<&'a str> {
        let i = TEXT_COLUMNS.iter().position(|c| *c == column)?;
        row.texts[i].as_deref()
    }

    #[test]
    fn every_typed_field_lands_in_its_column() {
        let r = rec(&[
            ("email", "ann@x.example"),
            ("first_name", "Ann"),
            ("sex", "F"),
            ("workplace", "HQ"),
            ("date_of_birth", "1990-02-03"),
            ("start_date", "2020-12-31"),
            ("groups", "sales\u{1f}emea"),
            ("teams", "a"),
            ("custom.badge", "7"),
            ("password", "never-projected"),
        ]);
        let row = TypedRow::from_rec(&r, vec![1, 2, 3]);
        assert_eq!(row.status, "active");
        assert_eq!(text(&row, "email"), Some("ann@x.example"));
        assert_eq!(text(&row, "first_name"), Some("Ann"));
        assert_eq!(text(&row, "sex"), Some("F"));
        assert_eq!(text(&row, "workplace"), Some("HQ"));
        assert_eq!(text(&row, "username"), None);
        assert_eq!(row.dates[0], NaiveDate::from_ymd_opt(1990, 2, 3));
        assert_eq!(row.dates[1], NaiveDate::from_ymd_opt(2020, 12, 31));
        assert_eq!(
            row.lists[0],
            Some(vec!["sales".to_string(), "emea".to_string()])
        );
        assert_eq!(row.lists[1], Some(vec!["a".to_string()]));
        assert_eq!(row.attributes, serde_json::json!({"custom.badge": "7"}));
        assert_eq!(row.created_at.timestamp_millis(), 1_700_000_000_123);
        assert_eq!(row.updated_at.timestamp_millis(), 1_700_000_500_000);
        assert_eq!(row.deleted_at, None);
        assert_eq!(row.record, vec![1, 2, 3]);
        assert_eq!(row.values().len(), TYPED_COLUMNS.len());
        assert_eq!(typed_column_types().len(), TYPED_COLUMNS.len());
        assert_eq!(null_values().len(), TYPED_COLUMNS.len());
    }

    #[test]
    fn values_that_do_not_convert_leave_their_column_null() {
        let r = rec(&[
            ("date_of_birth", "03.02.1990"),
            ("start_date", "2020-02-30"),
            ("sex", "X"),
            ("phone", "12\u{0}34"),
            ("groups", "a\u{0}b"),
            ("custom.bad", "x\u{0}"),
            ("custom.good", "y"),
        ]);
        let row = TypedRow::from_rec(&r, Vec::new());
        assert_eq!(row.dates, [None, None]);
        assert_eq!(text(&row, "sex"), None);
        assert_eq!(text(&row, "phone"), None);
        assert_eq!(row.lists[0], None);
        assert_eq!(row.attributes, serde_json::json!({"custom.good": "y"}));
    }

    #[test]
    fn status_and_deletion_time_follow_the_record() {
        let mut r = rec(&[]);
        r.status = STATUS_DELETED;
        r.deleted_at = 1_700_000_900_000;
        let row = TypedRow::from_rec(&r, Vec::new());
        assert_eq!(row.status, "deleted");
        assert_eq!(
            row.deleted_at.map(|t| t.timestamp_millis()),
            Some(1_700_000_900_000)
        );
        assert_eq!(status_text(STATUS_INACTIVE), "inactive");
        assert_eq!(status_text(9), "inactive");
        assert_eq!(row.attributes, serde_json::json!({}));
        // Times PostgreSQL cannot hold (a damaged record).
        r.created_at = i64::MIN;
        r.deleted_at = 400_000 * 365 * 86_400_000;
        let row = TypedRow::from_rec(&r, Vec::new());
        assert_eq!(row.created_at.timestamp_millis(), 0);
        assert_eq!(row.deleted_at, None);
    }
}
