//! SCIM reads done by PostgreSQL: a [`UserFilter`] translated into a SQL condition over the
//! typed columns of `roster.user_rows`, paged and counted by the database (`users_matching`),
//! and the members of one group (`group_members`; the groups and their counts are
//! `group_counts`'s).
//!
//! Data enters as a `UserFilter` (parsed from SCIM by `admin::filter`) and leaves as a
//! [`UserPage`] or [`GroupPage`]. Every value of the filter is a bound parameter; the SQL text
//! holds only column names and operators chosen here, never text from the request. The
//! condition gives the same answer as [`UserFilter::matches`]: every comparison is made
//! two-valued with `value IS NOT NULL AND …` (a missing value fails every comparison but
//! `ne`; written so, not with `coalesce`, so that the indexes of migration 4 still apply),
//! case-insensitive attributes compare `roster.fold()` of both sides (every letter lower-cased
//! as sled's `to_lowercase` does, whatever the database's collation: migration 12; `email eq`
//! compares the column, stored lower-case, with the folded value), `gt ge lt le` compare in byte
//! order (`COLLATE "C"`), `co sw ew` are `LIKE` with the value's `%`, `_` and `\` escaped, a
//! list column (`groups`, `teams`) matches when any item does, `meta.*` compare `created_at`
//! and `updated_at`, `custom.*` read the `attributes` jsonb.
//!
//! A filter on an attribute whose typed column is a lossy projection of the record (`sex`,
//! the date columns, or a field without a column) is not translated ([`condition`] is None):
//! the caller then evaluates it row by row (`Users::users_page`), as sled does. Pages are
//! `ORDER BY key COLLATE "C"` with `LIMIT`/`OFFSET` over the index of migration 7 (keys first,
//! then the page's rows: [`PostgresStore::page_in`]), so a page costs its rows, the offset's
//! index entries and the count, never the tenant's whole directory in memory.

use super::connections::Connections;
use super::rows::{LIST_COLUMNS, TEXT_COLUMNS};
use super::PostgresStore;
use crate::model::filter::{Attribute, Op, Operand};
use crate::model::packed::UserRec;
use crate::model::{User, UserFilter, UserPage};
use crate::store::SEARCH_COUNT_CAP;
use anyhow::Result;
use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;

/// A bound value of a translated filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(String),
    Time(DateTime<Utc>),
}

impl Param {
    pub(super) fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::Text(t) => t,
            Param::Time(t) => t,
        }
    }
}

/// A translated filter: SQL text whose placeholders start at the `first` given to
/// [`condition`], and their values in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub sql: String,
    pub params: Vec<Param>,
}

impl Condition {
    /// The statement's parameters: `$1` the tenant, then the condition's values from `$2`.
    pub(super) fn bound<'a>(&'a self, tenant: &'a String) -> Vec<&'a (dyn ToSql + Sync)> {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![tenant];
        params.extend(self.params.iter().map(Param::as_sql));
        params
    }
}

/// Translates `f` to a SQL condition whose first placeholder is `$first`; None when an
/// attribute has no exact column (the caller evaluates the filter itself).
pub fn condition(f: &UserFilter, first: usize) -> Option<Condition> {
    let mut b = Builder {
        params: Vec::new(),
        first,
    };
    let sql = b.filter(f)?;
    Some(Condition {
        sql,
        params: b.params,
    })
}

struct Builder {
    params: Vec<Param>,
    first: usize,
}

/// Where an attribute's text lives.
enum Source {
    /// One value: an SQL expression (NULL when missing).
    One(String),
    /// A `text[]` column: any item.
    List(&'static str),
}

impl Builder {
    fn bind(&mut self, p: Param) -> String {
        let cast = match p {
            Param::Text(_) => "text",
            Param::Time(_) => "timestamptz",
        };
        self.params.push(p);
        format!("${}::{cast}", self.first + self.params.len() - 1)
    }

    fn filter(&mut self, f: &UserFilter) -> Option<String> {
        Some(match f {
            UserFilter::Everyone => "true".into(),
            UserFilter::And(a, b) => format!("({} AND {})", self.filter(a)?, self.filter(b)?),
            UserFilter::Or(a, b) => format!("({} OR {})", self.filter(a)?, self.filter(b)?),
            UserFilter::Not(a) => format!("(NOT {})", self.filter(a)?),
            UserFilter::Present(a) => self.present(a)?,
            UserFilter::Compare(a, op, v) => self.compare(a, *op, v)?,
        })
    }

    fn source(&mut self, a: &Attribute) -> Option<Source> {
        Some(Source::One(match a {
            Attribute::Key => "key".into(),
            Attribute::UserName => "coalesce(username, email, key)".into(),
            Attribute::Email => "email".into(),
            Attribute::MappingCode => "mapping_code".into(),
            Attribute::FirstName => "first_name".into(),
            Attribute::LastName => "last_name".into(),
            Attribute::FullName => "nullif(btrim(coalesce(first_name, '') || ' ' || \
                                    coalesce(last_name, '')), '')"
                .into(),
            Attribute::Field(name) => {
                if let Some(list) = LIST_COLUMNS.iter().find(|c| *c == name) {
                    return Some(Source::List(list));
                }
                // `sex` keeps only M/F in its column: not exact, so not translated.
                let column = TEXT_COLUMNS.iter().find(|c| *c == name && **c != "sex")?;
                (*column).to_string()
            }
            Attribute::Custom(name) => {
                let key = self.bind(Param::Text(format!("custom.{name}")));
                format!("(attributes ->> {key})")
            }
            Attribute::Active | Attribute::Created | Attribute::Modified => return None,
        }))
    }

    fn present(&mut self, a: &Attribute) -> Option<String> {
        Some(match a {
            Attribute::Active | Attribute::Created | Attribute::Modified => "true".into(),
            _ => match self.source(a)? {
                Source::One(e) => format!("({e} IS NOT NULL AND {e} <> '')"),
                Source::List(c) => {
                    format!("EXISTS (SELECT 1 FROM unnest({c}) AS item(v) WHERE v <> '')")
                }
            },
        })
    }

    fn compare(&mut self, a: &Attribute, op: Op, v: &Operand) -> Option<String> {
        match (a, v) {
            (Attribute::Active, Operand::Bool(want)) => Some(
                match (op, *want) {
                    (Op::Eq, true) | (Op::Ne, false) => "status = 'active'",
                    (Op::Eq, false) | (Op::Ne, true) => "status <> 'active'",
                    _ => "false",
                }
                .into(),
            ),
            (Attribute::Created | Attribute::Modified, Operand::Time(t)) => {
                Some(self.time_compare(a, op, *t))
            }
            (a, Operand::Text(want))
                if !matches!(
                    a,
                    Attribute::Active | Attribute::Created | Attribute::Modified
                ) =>
            {
                self.text_compare(a, op, want)
            }
            _ => Some("false".into()),
        }
    }

    fn text_compare(&mut self, a: &Attribute, op: Op, want: &str) -> Option<String> {
        let source = self.source(a)?;
        let exact = a.case_exact();
        let (test_op, negate) = if op == Op::Ne {
            (Op::Eq, true)
        } else {
            (op, false)
        };
        // An index on the folded text serves it: the expression must be the index's.
        let indexed = super::scan_page::indexed(a, test_op);
        let test = |b: &mut Builder, e: &str| b.text_test(e, exact, indexed, test_op, want);
        let yes = match source {
            Source::One(e) => format!("({e} IS NOT NULL AND {})", test(self, &e)),
            // eq on `groups`: through the GIN index of lower-cased items (migration 4).
            Source::List("groups") if test_op == Op::Eq && !exact => {
                let p = self.bind(Param::Text(want.to_string()));
                format!("(groups IS NOT NULL AND roster.lower_items(groups) @> ARRAY[roster.fold({p})])")
            }
            Source::List(c) => {
                let item = |b: &mut Builder, e: &str| b.text_test(e, exact, false, test_op, want);
                format!(
                    "EXISTS (SELECT 1 FROM unnest({c}) AS item(v) WHERE {})",
                    item(self, "v")
                )
            }
        };
        Some(if negate { format!("(NOT {yes})") } else { yes })
    }

    /// `e OP want` for one text value (NULL when `e` is NULL). `indexed`: an index of
    /// `roster.fold(e)` answers it, so the test is written on that expression.
    ///
    /// Otherwise every row is tested, and `roster.fold` (ICU) costs about twice `lower()` per
    /// value (a `co` scan of 1,000,000 titles on one core: 515-590 ms against 275-280 ms). For
    /// text that is all ASCII the two agree, so a scan tests `lower(e)` first and folds only
    /// text with other characters (310-365 ms), with `roster.fold`'s answer ([`Builder::scan_test`]).
    fn text_test(&mut self, e: &str, exact: bool, indexed: bool, op: Op, want: &str) -> String {
        let fold = |x: String| {
            if exact {
                x
            } else {
                format!("roster.fold({x})")
            }
        };
        let pattern = |s: &str| match op {
            Op::Co => format!("%{}%", like_escape(s)),
            Op::Sw => format!("{}%", like_escape(s)),
            _ => format!("%{}", like_escape(s)),
        };
        let email_eq = op == Op::Eq && e == "email";
        if !(exact || indexed || email_eq) {
            return self.scan_test(e, op, want, pattern(want));
        }
        let have = fold(e.to_string());
        match op {
            // Stored emails are lower-case (migration 5): the column itself, so the read
            // contract's index (tenant, email) answers it.
            Op::Eq | Op::Ne if e == "email" && !exact => {
                let p = self.bind(Param::Text(want.to_string()));
                format!("(email = roster.fold({p}))")
            }
            Op::Eq | Op::Ne => {
                let p = self.bind(Param::Text(want.to_string()));
                format!("({have} = {})", fold(p))
            }
            Op::Co | Op::Sw | Op::Ew => {
                let p = self.bind(Param::Text(pattern(want)));
                format!("({have} LIKE {})", fold(p))
            }
            Op::Gt | Op::Ge | Op::Lt | Op::Le => {
                let sign = match op {
                    Op::Gt => ">",
                    Op::Ge => ">=",
                    Op::Lt => "<",
                    _ => "<=",
                };
                let p = self.bind(Param::Text(want.to_string()));
                format!("({have} COLLATE \"C\" {sign} {} COLLATE \"C\")", fold(p))
            }
        }
    }
}

impl Builder {
    /// A case-insensitive `e OP want` that no index serves (see [`Builder::text_test`]). With
    /// `q` the folded value: `=` and `LIKE` are `lower(e) OP q OR (e is not all ASCII AND
    /// roster.fold(e) OP q)`, which is `roster.fold(e) OP q` (for ASCII text `lower` and
    /// `roster.fold` agree; and `lower` leaves other letters as they are, which a folded `q`
    /// only holds where folding keeps them); an order compares `roster.fold(e)` only for text
    /// that is not all ASCII.
    fn scan_test(&mut self, e: &str, op: Op, want: &str, pattern: String) -> String {
        let ascii = format!("octet_length({e}) = char_length({e})");
        match op {
            Op::Eq | Op::Ne | Op::Co | Op::Sw | Op::Ew => {
                let (sign, value) = if matches!(op, Op::Eq | Op::Ne) {
                    ("=", want.to_string())
                } else {
                    ("LIKE", pattern)
                };
                let p = self.bind(Param::Text(value));
                format!(
                    "(lower({e}) {sign} roster.fold({p}) OR \
                     (NOT {ascii} AND roster.fold({e}) {sign} roster.fold({p})))"
                )
            }
            Op::Gt | Op::Ge | Op::Lt | Op::Le => {
                let sign = match op {
                    Op::Gt => ">",
                    Op::Ge => ">=",
                    Op::Lt => "<",
                    _ => "<=",
                };
                let p = self.bind(Param::Text(want.to_string()));
                format!(
                    "((CASE WHEN {ascii} THEN lower({e}) ELSE roster.fold({e}) END) \
                     COLLATE \"C\" {sign} roster.fold({p}) COLLATE \"C\")"
                )
            }
        }
    }
}

/// `s` with the `LIKE` wildcards and the escape character escaped (backslash, the default).
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A member of the group bound to `$2` (exact), found through the GIN index of lower-cased
/// items (migration 4; migration 5 dropped the index of `groups` as it is).
const GROUP_MEMBER: &str =
    "(roster.lower_items(groups) @> ARRAY[roster.fold($2::text)] AND groups @> ARRAY[$2::text])";

/// Rows that are not deleted, of the tenant bound to `$1`.
pub(super) const LIVE: &str = "FROM roster.user_rows WHERE tenant = $1 AND status <> 'deleted'";

/// The rows of the tenant bound to `$1` whose status is `status` (every row when None): one of
/// four fixed texts, never text from a request.
pub(super) fn rows_of(status: Option<crate::model::UserStatus>) -> &'static str {
    use crate::model::UserStatus;
    match status {
        None => "FROM roster.user_rows WHERE tenant = $1",
        Some(UserStatus::Active) => "FROM roster.user_rows WHERE tenant = $1 AND status = 'active'",
        Some(UserStatus::Inactive) => {
            "FROM roster.user_rows WHERE tenant = $1 AND status = 'inactive'"
        }
        Some(UserStatus::Deleted) => {
            "FROM roster.user_rows WHERE tenant = $1 AND status = 'deleted'"
        }
    }
}

/// [`rows_of`] for a search (`search_in`): the status compared under `COLLATE "C"`, which the
/// index on `(tenant, status)` cannot serve, so the planner drives a search by the search's
/// own indexes instead of walking every active user to filter them (1.8 s instead of under a
/// millisecond for a prefix matching nobody, on 1,000,000 users).
pub(super) fn search_rows_of(status: Option<crate::model::UserStatus>) -> &'static str {
    use crate::model::UserStatus;
    match status {
        None => "FROM roster.user_rows WHERE tenant = $1",
        Some(UserStatus::Active) => {
            "FROM roster.user_rows WHERE tenant = $1 AND status COLLATE \"C\" = 'active'"
        }
        Some(UserStatus::Inactive) => {
            "FROM roster.user_rows WHERE tenant = $1 AND status COLLATE \"C\" = 'inactive'"
        }
        Some(UserStatus::Deleted) => {
            "FROM roster.user_rows WHERE tenant = $1 AND status COLLATE \"C\" = 'deleted'"
        }
    }
}

/// How a page's `total` is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Count {
    /// Every match counted.
    All,
    /// Matches counted only up to this many (the total then says "at least").
    UpTo(u64),
    /// Known already (`user_groups` for `groups eq`): no count statement.
    Known(u64),
}

impl PostgresStore {
    /// One page of the users matching `cond` (placeholders from `$2`) and the match count.
    pub(super) fn page_where(
        &self,
        tenant: &str,
        cond: Condition,
        (skip, take): (usize, usize),
        count: Count,
    ) -> Result<UserPage> {
        self.page_in(tenant, LIVE, cond, (skip, take), count)
    }

    /// [`Self::page_where`] over `rows` (`LIVE` or one of [`rows_of`]), `(skip, take)`.
    ///
    /// The page is found as keys first (`ORDER BY key COLLATE "C" LIMIT/OFFSET` over the index
    /// `(tenant, key COLLATE "C") INCLUDE (status)` of migration 7: an index-only scan when
    /// the condition needs no other column, so a deep `startIndex` skips index entries, not
    /// rows), then only the page's rows are read, by key. The count is a statement of its own,
    /// so each gets the plan that suits it, and runs at the same time on a second pooled
    /// connection when one is free at once (else after the page, on the same connection): the
    /// request waits for the slower of the two, not their sum. As before, the two statements
    /// do not share a snapshot.
    pub(super) fn page_in(
        &self,
        tenant: &str,
        rows: &'static str,
        cond: Condition,
        (skip, take): (usize, usize),
        count: Count,
    ) -> Result<UserPage> {
        let tenant = tenant.to_string();
        let n = cond.params.len();
        let count_sql = match count {
            Count::All => Some(format!("SELECT count(*) {rows} AND {}", cond.sql)),
            Count::UpTo(cap) => Some(format!(
                "SELECT count(*) FROM (SELECT 1 {rows} AND {} LIMIT {cap}) capped",
                cond.sql
            )),
            Count::Known(_) => None,
        };
        let known = match count {
            Count::Known(total) => i64::try_from(total).unwrap_or(i64::MAX),
            _ => 0,
        };
        let page_sql = format!(
            "WITH page AS MATERIALIZED (SELECT key {rows} AND {} \
             ORDER BY key COLLATE \"C\" LIMIT ${} OFFSET ${}) \
             SELECT u.key, u.record FROM page JOIN roster.user_rows u \
             ON u.tenant = $1 AND u.key = page.key ORDER BY u.key COLLATE \"C\"",
            cond.sql,
            n + 2,
            n + 3
        );
        let (skip, take) = window(skip, take);
        let (total, rows): (i64, Vec<(String, Vec<u8>)>) = self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let params = cond.bound(&tenant);
            let mut page_params = params.clone();
            page_params.push(&take);
            page_params.push(&skip);
            let page = records_on(&**client, &page_sql, &page_params);
            let Some(count_sql) = &count_sql else {
                return Ok((known, page.await?));
            };
            match Connections::spare(&pool).await {
                Some(second) => {
                    let counted = count_on(&second, count_sql, &params);
                    let (total, rows) = tokio::try_join!(counted, page)?;
                    Ok((total, rows))
                }
                None => {
                    let rows = page.await?;
                    Ok((count_on(&client, count_sql, &params).await?, rows))
                }
            }
        })?;
        let users = decoded(rows)?;
        Ok(UserPage {
            total: u64::try_from(total).unwrap_or(0),
            users,
        })
    }

    /// The console's search on PostgreSQL (`Users::users_matching_status` with a filter):
    /// first at most [`SEARCH_COUNT_CAP`]` + 1` matching keys in no order, which PostgreSQL
    /// finds through the indexes of migrations 4 and 5 (a BitmapOr) without walking the tenant;
    /// when that is all of them, the count is exact and the page is cut from them. Only a
    /// search matching more (a broad prefix) walks the key index for its page, counted as
    /// `SEARCH_COUNT_CAP + 1` ("more than"): dense matches fill a page quickly. One statement
    /// cannot do both well, as the planner cannot know which case a prefix is.
    pub(super) fn search_in(
        &self,
        tenant: &str,
        rows: &'static str,
        cond: Condition,
        skip: usize,
        take: usize,
    ) -> Result<UserPage> {
        let tenant = tenant.to_string();
        let n = cond.params.len();
        let candidates_sql = format!(
            "WITH m AS MATERIALIZED (SELECT key {rows} AND {} LIMIT ${}) \
             SELECT (SELECT count(*) FROM m), \
                    (SELECT coalesce(array_agg(key), '{{}}') FROM \
                        (SELECT key FROM m ORDER BY key COLLATE \"C\" LIMIT ${} OFFSET ${}) p)",
            cond.sql,
            n + 2,
            n + 3,
            n + 4
        );
        let walk_sql = format!(
            "SELECT key, record {rows} AND {} ORDER BY key COLLATE \"C\" LIMIT ${} OFFSET ${}",
            cond.sql,
            n + 2,
            n + 3
        );
        let cap = i64::try_from(SEARCH_COUNT_CAP).unwrap_or(i64::MAX);
        let (skip, take) = window(skip, take);
        let (total, rows): (i64, Vec<(String, Vec<u8>)>) = self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let mut params = cond.bound(&tenant);
            let limit = cap + 1;
            let mut first = params.clone();
            first.extend([&limit as &(dyn ToSql + Sync), &take, &skip]);
            let found = client.query_one(&candidates_sql, &first).await?;
            let (count, keys): (i64, Vec<String>) = (found.try_get(0)?, found.try_get(1)?);
            let rows = if count <= cap {
                client
                    .query(
                        "SELECT key, record FROM roster.user_rows WHERE tenant = $1 AND key = ANY($2)",
                        &[&tenant, &keys],
                    )
                    .await?
            } else {
                params.push(&take);
                params.push(&skip);
                client.query(&walk_sql, &params).await?
            };
            let rows = rows
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_>>()?;
            Ok((count, rows))
        })?;
        let mut users = decoded(rows)?;
        users.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(UserPage {
            total: u64::try_from(total).unwrap_or(0),
            users,
        })
    }

    /// [`crate::store::Users::group_members`] on PostgreSQL ([`GROUP_MEMBER`], which the GIN
    /// index of migration 4 serves); the total is the group's count in `user_groups`.
    pub(super) fn members_where(
        &self,
        tenant: &str,
        group: &str,
        skip: usize,
        take: usize,
    ) -> Result<UserPage> {
        let cond = Condition {
            sql: GROUP_MEMBER.into(),
            params: vec![Param::Text(group.to_string())],
        };
        let count = match self
            .group_counts_page(tenant, Some(group), 0, 1)?
            .groups
            .first()
        {
            Some(g) => Count::Known(g.members),
            None => Count::Known(0),
        };
        self.page_where(tenant, cond, (skip, take), count)
    }
}

/// A page's `skip` and `take` as SQL's `OFFSET` and `LIMIT` values (beyond `i64`: no limit).
pub(super) fn window(skip: usize, take: usize) -> (i64, i64) {
    let big = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    (big(skip), big(take))
}

/// `sql`'s single count on `client`.
pub(super) async fn count_on(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<i64> {
    Ok(client.query_one(sql, params).await?.try_get(0)?)
}

/// `sql`'s (key, record) rows on `client`.
pub(super) async fn records_on(
    client: &impl tokio_postgres::GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<(String, Vec<u8>)>> {
    client
        .query(sql, params)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Users from `(key, packed record)` rows.
pub(super) fn decoded(rows: Vec<(String, Vec<u8>)>) -> Result<Vec<User>> {
    rows.iter()
        .map(|(key, record)| Ok(User::from_rec(key, &UserRec::decode(record)?)))
        .collect()
}

mod times;

#[cfg(test)]
mod tests;
