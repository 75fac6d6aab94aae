//! Login blocks on PostgreSQL as an operator sees them: the blocks in force in
//! `roster.auth_failures`, and lifting one (docs/operators.md, "Lifting a block").
//!
//! Data enters as a scope and subject to lift, or the last lift number a node saw; it leaves
//! as [`SharedBlock`]s and the rows of `roster.login_lifts` (migration 14) that every node's
//! heartbeat reads to forget the lifted subject in its own memory too. The trait methods of
//! `Cluster` in `cluster.rs` call these.

use super::connections::Connections;
use super::PostgresStore;
use crate::store::{LoginScope, SharedBlock};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

impl PostgresStore {
    /// The blocks in force, at most `limit`, the latest ending first.
    pub(super) fn shared_blocks(&self, limit: usize) -> Result<Vec<SharedBlock>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .run(move |pool| async move {
                let client = Connections::client(&pool).await?;
                let rows = client
                    .query(
                        "SELECT scope, subject, failures, blocked_until FROM roster.auth_failures \
                         WHERE blocked_until > now() ORDER BY blocked_until DESC, scope, subject \
                         LIMIT $1",
                        &[&limit],
                    )
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let scope: String = row.try_get(0)?;
                    let Some(scope) = LoginScope::parse(&scope) else {
                        continue; // the table's CHECK allows no other
                    };
                    let failures: i32 = row.try_get(2)?;
                    out.push(SharedBlock {
                        scope,
                        subject: row.try_get(1)?,
                        failures: u32::try_from(failures).unwrap_or(0),
                        blocked_until: row.try_get(3)?,
                    });
                }
                Ok(out)
            })
            .context("cannot read login blocks in PostgreSQL")
    }

    /// Deletes the subject's failures and block and records the lift, in one transaction;
    /// true when a block was in force.
    pub(super) fn lift_shared_block(&self, scope: LoginScope, subject: &str) -> Result<bool> {
        let (scope, subject) = (scope.as_str(), subject.to_string());
        self.db
            .run(move |pool| async move {
                let mut client = Connections::client(&pool).await?;
                let tx = client.transaction().await?;
                let was = tx
                    .query_opt(
                        "DELETE FROM roster.auth_failures WHERE scope = $1 AND subject = $2 \
                         RETURNING coalesce(blocked_until > now(), false)",
                        &[&scope, &subject],
                    )
                    .await?;
                // Lifts commit in the order of their ids: a node reading `id > last seen`
                // while two lifts commit out of order would otherwise pass the first by.
                tx.batch_execute("LOCK TABLE roster.login_lifts IN SHARE ROW EXCLUSIVE MODE")
                    .await?;
                tx.execute(
                    "INSERT INTO roster.login_lifts (scope, subject) VALUES ($1, $2)",
                    &[&scope, &subject],
                )
                .await?;
                tx.commit().await?;
                match was {
                    Some(row) => Ok(row.try_get(0)?),
                    None => Ok(false),
                }
            })
            .context("cannot lift a login block in PostgreSQL")
    }

    /// The lifts after number `after` (None: those recorded at or after `since`), oldest
    /// first, at most 1000.
    pub(super) fn lifts_since(
        &self,
        after: Option<i64>,
        since: DateTime<Utc>,
    ) -> Result<(i64, Vec<(LoginScope, String)>)> {
        self.db
            .run(move |pool| async move {
                let client = Connections::client(&pool).await?;
                let after = match after {
                    Some(after) => after,
                    // Just before the first lift since then, else the latest: lifts commit in
                    // the order of their ids, so any committed later has a larger one.
                    None => client
                        .query_one(
                            "SELECT coalesce(min(id) - 1, \
                             (SELECT coalesce(max(id), 0) FROM roster.login_lifts)) \
                             FROM roster.login_lifts WHERE lifted_at >= $1",
                            &[&since],
                        )
                        .await?
                        .try_get(0)?,
                };
                let rows = client
                    .query(
                        "SELECT id, scope, subject FROM roster.login_lifts WHERE id > $1 \
                         ORDER BY id LIMIT 1000",
                        &[&after],
                    )
                    .await?;
                let mut last = after;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    last = row.try_get(0)?;
                    let scope: String = row.try_get(1)?;
                    if let Some(scope) = LoginScope::parse(&scope) {
                        out.push((scope, row.try_get(2)?));
                    }
                }
                Ok((last, out))
            })
            .context("cannot read lifted login blocks in PostgreSQL")
    }
}
