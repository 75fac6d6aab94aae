//! SCIM pages of a filter that no index narrows, on PostgreSQL: `co`, `ew`, `ne`, `not`, and
//! attributes without an index (`title`, `department`, custom attributes, ...). Such a filter
//! has to be tested on every row of the tenant, once for `totalResults` and, when its matches
//! are sparse, once more to find the page: the two scans ran at the same time on two
//! connections and shared this machine's two cores (a 1,000,000-user tenant, `title co`,
//! 33,334 matches: about 330 ms, each scan alone 135-145 ms).
//!
//! Data enters as the filter (for [`reads_every_row`]) and its translated [`Condition`]
//! (`users_query`), and leaves as a [`UserPage`] ([`PostgresStore::page_of_unnarrowed`]):
//!
//! - fewer than [`ONE_SCAN_CAP`] matches (guessed from a 1 % sample of the table, then
//!   checked): one statement collects their keys in one scan
//!   (PostgreSQL may run it in parallel), counts them, cuts the page from them and joins it to
//!   its rows (`page_by_one_scan`);
//! - more: the matches are dense, so a shallow page is found after a few rows of a walk of
//!   the key index, which is asked for, while a second connection counts them
//!   (`page_by_key_walk`); a page deeper than [`WALK_PAGES_UP_TO`] matches is left to the
//!   caller, which pages as for any filter.
//!
//! The server holds at most the cap's keys; Roster holds the page. What a filter past the
//! cap pays is the part of the scan that found the cap's matches, then the count.

use super::connections::Connections;
use super::users_query::{count_on, decoded, records_on, window, Condition, LIVE};
use super::PostgresStore;
use crate::model::filter::{Attribute, Op};
use crate::model::{UserFilter, UserPage};
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
pub(super) fn indexed(a: &Attribute, op: Op) -> bool {
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

/// Past the cap, a page that ends within this many matches is found by walking the key index
/// ([`PostgresStore::page_by_key_walk`]); a deeper one is left to the planner.
const WALK_PAGES_UP_TO: usize = 5_000;

impl PostgresStore {
    /// The page `(skip, take)` of the live users matching `cond` (a filter no index narrows,
    /// placeholders from `$2`) and their exact count: from one scan while fewer than
    /// [`ONE_SCAN_CAP`] match; past it, counted by a scan while the page is found on the key
    /// index, when the page ends within [`WALK_PAGES_UP_TO`] matches. None otherwise: the
    /// caller pages as for any filter.
    pub(super) fn page_of_unnarrowed(
        &self,
        tenant: &str,
        cond: Condition,
        (skip, take): (usize, usize),
    ) -> Result<Option<UserPage>> {
        if self.sampled_matches(tenant, &cond)? < ONE_SCAN_CAP {
            if let Some(page) = self.page_by_one_scan(tenant, cond.clone(), (skip, take))? {
                return Ok(Some(page));
            }
        }
        if skip.saturating_add(take) > WALK_PAGES_UP_TO {
            return Ok(None);
        }
        self.page_by_key_walk(tenant, cond, (skip, take)).map(Some)
    }

    /// About how many live users match `cond`, from 1 % of the tenant's table
    /// (`TABLESAMPLE SYSTEM`, whole pages, about 3 ms on 1,000,000 users): a filter that many
    /// match goes to the key walk at once, instead of spending most of a scan on finding the
    /// cap's matches first (a 100,000-match filter on 1,000,000 users: 260 ms that way, against
    /// 160 ms). A wrong guess near the cap costs time, never the answer: both ways are exact.
    fn sampled_matches(&self, tenant: &str, cond: &Condition) -> Result<i64> {
        let sql = format!(
            "SELECT count(*) FILTER (WHERE {}) * 100 FROM roster.user_rows TABLESAMPLE SYSTEM (1) \
             WHERE tenant = $1 AND status <> 'deleted'",
            cond.sql
        );
        let (tenant, cond) = (tenant.to_string(), cond.clone());
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let params = cond.bound(&tenant);
            count_on(&client, &sql, &params).await
        })
    }

    /// The page `(skip, take)` of the live users matching `cond` (placeholders from `$2`) and
    /// their exact count, from one scan; None when more than [`ONE_SCAN_CAP`] match.
    fn page_by_one_scan(
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
        let (skip, take) = window(skip, take);
        let rows = self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let mut params = cond.bound(&tenant);
            params.extend([&ONE_SCAN_CAP as &(dyn ToSql + Sync), &take, &skip]);
            Ok(client.query(&sql, &params).await?)
        })?;
        let mut total = 0i64;
        let mut page = Vec::with_capacity(rows.len());
        for r in &rows {
            total = r.try_get(0)?;
            let (key, record): (Option<String>, Option<Vec<u8>>) = (r.try_get(1)?, r.try_get(2)?);
            if let (Some(key), Some(record)) = (key, record) {
                page.push((key, record));
            }
        }
        if total >= ONE_SCAN_CAP {
            return Ok(None);
        }
        Ok(Some(UserPage {
            total: u64::try_from(total).unwrap_or(0),
            users: decoded(page)?,
        }))
    }
}

impl PostgresStore {
    /// A filter that at least [`ONE_SCAN_CAP`] users match (so at least that share of the
    /// tenant): its page walking the key index in byte order, testing each row, which finds a
    /// shallow page after a few rows each; and its count, a scan, on a second connection at
    /// the same time. The planner cannot know the filter is dense (`LIKE '%…%'` has no
    /// statistics) and measured chose a scan and a sort of every match for the page too, so
    /// the walk is asked for: sequential and bitmap scans and sorts are switched off for that
    /// one statement (`SET LOCAL`, in a transaction of its own).
    fn page_by_key_walk(
        &self,
        tenant: &str,
        cond: Condition,
        (skip, take): (usize, usize),
    ) -> Result<UserPage> {
        let n = cond.params.len();
        let count_sql = format!("SELECT count(*) {LIVE} AND {}", cond.sql);
        let page_sql = format!(
            "SELECT key, record {LIVE} AND {} ORDER BY key COLLATE \"C\" LIMIT ${} OFFSET ${}",
            cond.sql,
            n + 2,
            n + 3
        );
        let tenant = tenant.to_string();
        let (skip, take) = window(skip, take);
        let (total, rows) = self.db.run(move |pool| async move {
            let mut client = Connections::client(&pool).await?;
            let params = cond.bound(&tenant);
            let mut page_params = params.clone();
            page_params.extend([&take as &(dyn ToSql + Sync), &skip]);
            let second = Connections::spare(&pool).await;
            let walk = async {
                let tx = client.transaction().await?;
                tx.batch_execute(
                    "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; \
                     SET LOCAL enable_sort = off",
                )
                .await?;
                let rows = records_on(&*tx, &page_sql, &page_params).await?;
                tx.commit().await?;
                anyhow::Ok(rows)
            };
            match &second {
                Some(second) => {
                    let counted = count_on(second, &count_sql, &params);
                    Ok(tokio::try_join!(counted, walk)?)
                }
                None => {
                    let rows = walk.await?;
                    Ok((count_on(&client, &count_sql, &params).await?, rows))
                }
            }
        })?;
        Ok(UserPage {
            total: u64::try_from(total).unwrap_or(0),
            users: decoded(rows)?,
        })
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
