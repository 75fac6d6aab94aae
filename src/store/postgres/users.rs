//! The [`Users`] seam on PostgreSQL: [`User`] values listed, paged, counted and looked up from
//! `roster.user_rows`. Users enter only through the directory's commits (`directory.rs`); a
//! `User` is made from the packed `record` column (the truth, `rows.rs`), so it never carries
//! the password hash, and the hash itself never leaves this module (`verify_user_password`
//! checks it here).
//!
//! Listings read the tenant's rows in batches of [`BATCH`] (keyset over the index
//! `(tenant, bucket, key)`) through the store's runtime and decode and filter them on the
//! calling thread, so memory is one batch plus what the caller keeps. The result is sorted in
//! byte order of the key, as the sled backend sorts it, whatever the database's collation: a
//! scan `ORDER BY key COLLATE "C"` could not use an index (the key's index has the database's
//! default collation), so the scan goes in index order and the order is made here.
//! `users_page` keeps the keys of the first `skip + take` matches (`store::FirstKeys`, as sled does), then
//! reads the page's users by key.

use super::connections::Connections;
use super::rows::status_text;
use super::users_query::{condition, rows_of, search_rows_of, Count};
use super::PostgresStore;
use crate::model::filter::{Attribute, Op, Operand};
use crate::model::packed::{UserRec, STATUS_ACTIVE, STATUS_DELETED, STATUS_INACTIVE};
use crate::model::{User, UserFilter, UserPage, UserStatus};
use crate::store::{FirstKeys, GroupPage, Users};
use anyhow::{anyhow, Result};

/// Rows per round trip of a listing.
const BATCH: i64 = 1000;

/// Where a listing's next batch starts: after this (bucket, key).
type After = Option<(i16, String)>;

impl Users for PostgresStore {
    fn users(&self, tenant: &str, status: Option<UserStatus>) -> Result<Vec<User>> {
        let mut out = Vec::new();
        self.scan(tenant, status, &mut |key, record| {
            out.push(User::from_rec(key, &UserRec::decode(record)?));
            Ok(())
        })?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn users_page(
        &self,
        tenant: &str,
        keep: &(dyn Fn(&User) -> bool + Sync),
        skip: usize,
        take: usize,
    ) -> Result<UserPage> {
        let mut first: FirstKeys<String> = FirstKeys::new(skip, take);
        self.scan(tenant, None, &mut |key, record| {
            if keep(&User::from_rec(key, &UserRec::decode(record)?)) {
                first.offer(key);
            }
            Ok(())
        })?;
        let (total, page) = first.page();
        let mut users = Vec::with_capacity(page.len());
        for (key, record) in self.records(tenant, page)? {
            users.push(User::from_rec(&key, &UserRec::decode(&record)?));
        }
        users.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(UserPage { total, users })
    }

    /// Translated to SQL (`users_query`) when every attribute has an exact column, else
    /// evaluated row by row as `users_page` does. The total of a filter that is exactly
    /// `groups eq "…"` comes from `user_groups` when one group has that name in any case. A
    /// filter no index narrows is counted and paged by one scan when it matches fewer than
    /// `scan_page::ONE_SCAN_CAP` users (`scan_page`).
    fn users_matching(
        &self,
        tenant: &str,
        filter: &UserFilter,
        skip: usize,
        take: usize,
    ) -> Result<UserPage> {
        match condition(filter, 2) {
            Some(cond) => {
                let count = match group_eq(filter) {
                    Some(name) => self.group_eq_members(tenant, name)?.map(Count::Known),
                    None => None,
                };
                if count.is_none() && super::scan_page::reads_every_row(filter) {
                    let unnarrowed = self.page_of_unnarrowed(tenant, cond.clone(), (skip, take))?;
                    if let Some(page) = unnarrowed {
                        return Ok(page);
                    }
                }
                self.page_where(tenant, cond, (skip, take), count.unwrap_or(Count::All))
            }
            None => {
                let keep = |u: &User| u.status != UserStatus::Deleted && filter.matches(u);
                self.users_page(tenant, &keep, skip, take)
            }
        }
    }

    fn users_matching_status(
        &self,
        tenant: &str,
        filter: &UserFilter,
        status: Option<UserStatus>,
        skip: usize,
        take: usize,
    ) -> Result<UserPage> {
        match condition(filter, 2) {
            Some(cond) if *filter == UserFilter::Everyone => {
                let cap = Count::UpTo(crate::store::SEARCH_COUNT_CAP + 1);
                self.page_in(tenant, rows_of(status), cond, (skip, take), cap)
            }
            Some(cond) => self.search_in(tenant, search_rows_of(status), cond, skip, take),
            None => {
                let keep = |u: &User| status.is_none_or(|s| u.status == s) && filter.matches(u);
                let mut page = self.users_page(tenant, &keep, skip, take)?;
                page.total = page.total.min(crate::store::SEARCH_COUNT_CAP + 1);
                Ok(page)
            }
        }
    }

    fn groups_page(
        &self,
        tenant: &str,
        name: Option<&str>,
        skip: usize,
        take: usize,
    ) -> Result<GroupPage> {
        self.group_counts_page(tenant, name, skip, take)
    }

    fn group_members(
        &self,
        tenant: &str,
        group: &str,
        skip: usize,
        take: usize,
    ) -> Result<UserPage> {
        self.members_where(tenant, group, skip, take)
    }

    fn user_counts(&self, tenant: &str) -> Result<(u64, u64, u64)> {
        let tenant = tenant.to_string();
        let rows: Vec<(String, i64)> = self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let rows = client
                .query(
                    "SELECT status, count(*) FROM roster.user_rows WHERE tenant = $1 \
                     GROUP BY status",
                    &[&tenant],
                )
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })?;
        let mut c = (0, 0, 0);
        for (status, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            if status == status_text(STATUS_ACTIVE) {
                c.0 += n;
            } else if status == status_text(STATUS_DELETED) {
                c.2 += n;
            } else {
                c.1 += n;
            }
        }
        Ok(c)
    }

    fn user(&self, tenant: &str, key: &str) -> Result<Option<User>> {
        crate::model::user::find_user(key, |k| self.user_rec(tenant, k))
    }

    /// Whether `password` is the user's imported password (argon2id check of the stored hash,
    /// on the calling thread; false when the user or the hash is missing).
    fn verify_user_password(&self, tenant: &str, key: &str, password: &str) -> Result<bool> {
        Ok(self
            .user_rec(tenant, key)?
            .is_some_and(|rec| crate::model::user::password_matches(&rec, password)))
    }
}

impl PostgresStore {
    /// Calls `each` with (key, packed record) of every user of the tenant (of `status` only,
    /// when given), batch by batch, in index order (not key order).
    fn scan(
        &self,
        tenant: &str,
        status: Option<UserStatus>,
        each: &mut dyn FnMut(&str, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let status = status.map(|s| {
            status_text(match s {
                UserStatus::Active => STATUS_ACTIVE,
                UserStatus::Inactive => STATUS_INACTIVE,
                UserStatus::Deleted => STATUS_DELETED,
            })
        });
        let mut after: After = None;
        loop {
            let batch = self.batch(tenant, status, after.take())?;
            let full = batch.len() as i64 == BATCH;
            for (_, key, record) in &batch {
                each(key, record)?;
            }
            match (full, batch.into_iter().last()) {
                (true, Some((bucket, key, _))) => after = Some((bucket, key)),
                _ => return Ok(()),
            }
        }
    }

    /// One batch of (bucket, key, record) after `after`, in index order.
    fn batch(
        &self,
        tenant: &str,
        status: Option<&'static str>,
        after: After,
    ) -> Result<Vec<(i16, String, Vec<u8>)>> {
        let tenant = tenant.to_string();
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let rows = match after {
                None => {
                    client
                        .query(
                            "SELECT bucket, key, record FROM roster.user_rows \
                             WHERE tenant = $1 AND ($2::text IS NULL OR status = $2) \
                             ORDER BY bucket, key LIMIT $3",
                            &[&tenant, &status, &BATCH],
                        )
                        .await?
                }
                Some((bucket, key)) => {
                    client
                        .query(
                            "SELECT bucket, key, record FROM roster.user_rows \
                             WHERE tenant = $1 AND ($2::text IS NULL OR status = $2) \
                             AND (bucket, key) > ($4, $5) ORDER BY bucket, key LIMIT $3",
                            &[&tenant, &status, &BATCH, &bucket, &key],
                        )
                        .await?
                }
            };
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect()
        })
    }

    /// (key, packed record) of the given keys that exist.
    fn records(&self, tenant: &str, keys: Vec<String>) -> Result<Vec<(String, Vec<u8>)>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let tenant = tenant.to_string();
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let rows = client
                .query(
                    "SELECT key, record FROM roster.user_rows WHERE tenant = $1 AND key = ANY($2)",
                    &[&tenant, &keys],
                )
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
    }

    /// The packed record of exactly this key, decoded.
    fn user_rec(&self, tenant: &str, key: &str) -> Result<Option<UserRec>> {
        let (tenant, key) = (tenant.to_string(), key.to_string());
        let record: Option<Vec<u8>> = self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            let row = client
                .query_opt(
                    "SELECT record FROM roster.user_rows WHERE tenant = $1 AND key = $2",
                    &[&tenant, &key],
                )
                .await?;
            row.map(|r| r.try_get(0))
                .transpose()
                .map_err(|e| anyhow!(e))
        })?;
        record.map(|r| UserRec::decode(&r)).transpose()
    }
}

/// The name a filter that is exactly `groups eq "…"` asks for.
fn group_eq(filter: &UserFilter) -> Option<&str> {
    match filter {
        UserFilter::Compare(Attribute::Field("groups"), Op::Eq, Operand::Text(name)) => Some(name),
        _ => None,
    }
}
