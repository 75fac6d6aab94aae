//! SCIM pages of a filter that no index narrows, on PostgreSQL: `co`, `ew`, `ne`, `not`, and
//! attributes without an index (`title`, `department`, custom attributes, ...). Such a filter
//! has to be tested on every row of the tenant, once for `totalResults` and, when its matches
//! are sparse, once more to find the page: the two scans ran at the same time on two
//! connections and shared this machine's two cores (a 1,000,000-user tenant, `title co`,
//! 33,334 matches: about 330 ms, each scan alone 135-145 ms).
//!
//! Data enters as the filter (for [`reads_every_row`]) and its translated [`Condition`]
//! (`users_query`), and leaves as a [`UserPage`]. [`PostgresStore::page_by_one_scan`] does
//! both in one statement: the keys of at most [`ONE_SCAN_CAP`] matches are collected by one
//! scan (PostgreSQL may run it in parallel), counted, and the page is cut from them and
//! joined to its rows. When more users match than the cap, it answers None and the caller
//! counts and pages as for any other filter (a dense match finds its page quickly by walking
//! the key index). The server holds at most the cap's keys; Roster holds the page.

use super::users_query::{Condition, Param, LIVE};
use super::PostgresStore;
use crate::model::filter::{Attribute, Op};
use crate::model::packed::UserRec;
use crate::model::{User, UserFilter, UserPage};
use anyhow::Result;
use tokio_postgres::types::ToSql;

/// At most this many matches are collected by the one scan (their keys only, on the server).
pub(super) const ONE_SCAN_CAP: i64 = 50_000;

/// True when no index of `user_rows` narrows `f`, so PostgreSQL reads every live row of the
/// tenant to test it (docs/operators.md, SCIM, lists the filters an index serves). One side of
/// an `and` that an index narrows is enough; both sides of an `or` must be.
pub(super) fn reads_every_row(f: &UserFilter) -> bool {
    match f {
        UserFilter::Everyone => false,
        UserFilter::And(a, b) => reads_every_row(a) && reads_every_row(b),
        UserFilter::Or(a, b) => reads_every_row(a) || reads_every_row(b),
        UserFilter::Not(_) => true,
        UserFilter::Present(a) => !matches!(
            a,
            Attribute::Active | Attribute::Created | Attribute::Modified
        ),
        UserFilter::Compare(a, op, _) => !indexed(a, *op),
    }
}

/// Whether an index answers `a op …` (migrations 4 to 9).
fn indexed(a: &Attribute, op: Op) -> bool {
    matches!(
        (a, op),
        (Attribute::Active, Op::Eq | Op::Ne)
            | (
                Attribute::Modified | Attribute::Key,
                Op::Eq | Op::Gt | Op::Ge | Op::Lt | Op::Le
            )
            | (
                Attribute::UserName | Attribute::Email | Attribute::MappingCode,
                Op::Eq
            )
            | (Attribute::Field("groups"), Op::Eq)
            | (
                Attribute::UserName | Attribute::Email | Attribute::LastName | Attribute::FullName,
                Op::Sw
            )
    )
}

impl PostgresStore {
    /// The page `(skip, take)` of the live users matching `cond` (placeholders from `$2`) and
    /// their exact count, from one scan; None when more than [`ONE_SCAN_CAP`] match.
    pub(super) fn page_by_one_scan(
        &self,
        tenant: &str,
        cond: Condition,
        (skip, take): (usize, usize),
    ) -> Result<Option<UserPage>> {
        let n = cond.params.len();
        let sql = format!(
            "WITH m AS MATERIALIZED (SELECT key {LIVE} AND {} LIMIT ${}), \
             p AS MATERIALIZED (SELECT key FROM m ORDER BY key COLLATE \"C\" LIMIT ${} OFFSET ${}) \
             SELECT c.n, u.key, u.record FROM (SELECT count(*) AS n FROM m) c \
             LEFT JOIN (p JOIN roster.user_rows u ON u.tenant = $1 AND u.key = p.key) ON true \
             ORDER BY u.key COLLATE \"C\"",
            cond.sql,
            n + 2,
            n + 3,
            n + 4
        );
        let tenant = tenant.to_string();
        let (skip, take) = (
            i64::try_from(skip).unwrap_or(i64::MAX),
            i64::try_from(take).unwrap_or(i64::MAX),
        );
        let rows = self.db.run(move |pool| async move {
            let client = super::connections::Connections::client(&pool).await?;
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant];
            params.extend(cond.params.iter().map(Param::as_sql));
            params.extend([&ONE_SCAN_CAP as &(dyn ToSql + Sync), &take, &skip]);
            Ok(client.query(&sql, &params).await?)
        })?;
        let mut total = 0i64;
        let mut users = Vec::with_capacity(rows.len());
        for r in &rows {
            total = r.try_get(0)?;
            let (key, record): (Option<String>, Option<Vec<u8>>) = (r.try_get(1)?, r.try_get(2)?);
            if let (Some(key), Some(record)) = (key, record) {
                users.push(User::from_rec(&key, &UserRec::decode(&record)?));
            }
        }
        if total >= ONE_SCAN_CAP {
            return Ok(None);
        }
        Ok(Some(UserPage {
            total: u64::try_from(total).unwrap_or(0),
            users,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::filter::Operand;

    fn text(a: Attribute, op: Op) -> UserFilter {
        UserFilter::Compare(a, op, Operand::Text("x".into()))
    }

    #[test]
    fn only_filters_no_index_narrows_read_every_row() {
        let co = text(Attribute::Field("job_title"), Op::Co);
        let eq = text(Attribute::Email, Op::Eq);
        assert!(reads_every_row(&co));
        assert!(reads_every_row(&text(Attribute::UserName, Op::Ew)));
        assert!(reads_every_row(&text(
            Attribute::Field("job_title"),
            Op::Eq
        )));
        assert!(reads_every_row(&UserFilter::Not(Box::new(eq.clone()))));
        assert!(!reads_every_row(&eq));
        assert!(!reads_every_row(&text(Attribute::UserName, Op::Sw)));
        assert!(!reads_every_row(&UserFilter::Everyone));
        let and = UserFilter::And(Box::new(co.clone()), Box::new(eq.clone()));
        let or = UserFilter::Or(Box::new(co), Box::new(eq));
        assert!(
            !reads_every_row(&and),
            "one narrowed side of an and is enough"
        );
        assert!(reads_every_row(&or), "an or needs both sides narrowed");
    }
}
