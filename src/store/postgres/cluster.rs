//! The [`Cluster`] seam on PostgreSQL: what several `roster serve` nodes on one database share
//! (docs/postgres.md, "Several nodes").
//!
//! Data enters as this node's heartbeats, lease names, schedule ticks, login failures and the
//! periodic call for orphan claims; it leaves as rows of `roster.nodes`, `roster.leases`,
//! `roster.schedule_ticks`, `roster.auth_failures` and `roster.claims`, and as the answers of
//! the trait. Every time is the database's (`now()`), so the nodes' clocks never matter here;
//! the schedules read it too ([`Cluster::clock`]).
//!
//! * A node is **alive** while its `nodes.heartbeat_at` is younger than its own `lease_secs`
//!   (the value its heartbeats write; a row without one is judged by this node's value).
//! * A **lease** row is held by `node_id`'s process `holder` (a token each store makes when it
//!   opens: another process under the same node id is another holder) while `expires_at` is
//!   in the future *and* the holder
//!   is alive. Heartbeats extend the leases this process holds (taken, not released: one
//!   whose release failed is not extended and ends with its time); a release sets
//!   `expires_at` to now. One
//!   `INSERT … ON CONFLICT DO UPDATE … WHERE <free>` takes it, so two nodes racing for it are
//!   ordered by the row lock and the second sees the first's row. `fencing` grows with every
//!   new holder (not when a holder takes its own lease again).
//! * A **tick** is one row `(tenant, tick)`; the node whose insert made it fires, or a node
//!   that asks again once that node is no longer alive (the row becomes its own).
//! * **Login failures** are one row per (scope, subject): a count in a window of `block_for`,
//!   and `blocked_until` once `max` is reached.
//! * **Orphan claims**: rows of `roster.claims` whose node is not alive are moved to this
//!   node by one `UPDATE … WHERE node_id = <dead node> RETURNING` (rows another survivor is
//!   moving are skipped); what the dead nodes staged is left to the heartbeat's sweep
//!   (`sweep.rs`).

use super::connections::Connections;
use super::PostgresStore;
use crate::store::{Cluster, LoginScope, NodeBeat, NodeStatus, OrphanClaim, SharedBlock};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// `[cluster] lease_secs` when the caller sets none.
pub(super) const DEFAULT_LEASE_SECS: u64 = 30;

/// How long heartbeats keep a login-failure row that is not blocking, before this node has
/// counted a failure (and so knows the window), and how long they keep lifted blocks.
const FAILURES_KEPT: &str = "1 day";
/// Fired ticks are kept this long (a tick is only ever compared with recent ones).
const TICKS_KEPT: &str = "7 days";

impl PostgresStore {
    /// The leases this process holds ([`PostgresStore`]'s `held_leases`).
    fn held(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.held_leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets `[cluster] lease_secs`: how long a node may go without a heartbeat before the
    /// others treat it as dead (default 30).
    pub fn with_lease_secs(mut self, secs: u64) -> PostgresStore {
        self.lease_secs = secs.max(1);
        self
    }

    pub(super) fn lease_f64(&self) -> f64 {
        self.lease_secs as f64
    }
}

/// `address` of a node row: `sftp=<addr> admin=<addr>` (addresses hold no spaces).
fn address_text(beat: &NodeBeat) -> String {
    format!("sftp={} admin={}", beat.sftp, beat.admin)
}

/// (sftp, admin) from an `address` written by [`address_text`]; empty parts when absent.
fn address_parts(address: &str) -> (String, String) {
    let mut sftp = String::new();
    let mut admin = String::new();
    for part in address.split_whitespace() {
        if let Some(v) = part.strip_prefix("sftp=") {
            sftp = v.to_string();
        } else if let Some(v) = part.strip_prefix("admin=") {
            admin = v.to_string();
        }
    }
    (sftp, admin)
}

impl Cluster for PostgresStore {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn shared_by_nodes(&self) -> bool {
        true
    }

    fn clock(&self) -> Result<DateTime<Utc>> {
        self.db
            .run(move |pool| async move {
                let client = Connections::client(&pool).await?;
                let row = client.query_one("SELECT clock_timestamp()", &[]).await?;
                Ok(row.try_get(0)?)
            })
            .context("cannot read the database's clock")
    }

    fn forget_own_staging(&self) -> Result<()> {
        let node = self.node_id.clone();
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            for table in ["staged_rows", "staged_changes"] {
                let sql = format!("DELETE FROM roster.{table} WHERE node_id = $1");
                client.execute(&sql, &[&node]).await?;
            }
            Ok(())
        })
    }

    fn heartbeat(&self, beat: &NodeBeat) -> Result<()> {
        let (node, lease) = (self.node_id.clone(), self.lease_f64());
        let process = self.holder.clone();
        let held: Vec<String> = self.held().iter().cloned().collect();
        let unswept = self.unswept.clone();
        // A failure row that is not blocking and whose window (`auth_block_secs`) has ended
        // says nothing: `login_failed` would start it again from one. So it is deleted once
        // its window ends, not a day later (review s29: every made-up tenant-style name left a
        // row for a day). A block stays until it ends. The window is the longest this node
        // counted under; the nodes share their config, and a node on a longer window would
        // only see its count start again sooner.
        let window = self
            .login_window_secs
            .load(std::sync::atomic::Ordering::Relaxed);
        let failures_kept = match window {
            0 => FAILURES_KEPT.to_string(),
            secs => format!("{secs} seconds"),
        };
        let (address, version, started) =
            (address_text(beat), beat.version.clone(), beat.started_at);
        self.db
            .run_beat(move |pool| async move {
                let mut client = Connections::client(&pool).await?;
                // The row is this process's when it names this start, or when its node is
                // dead (a crash of this node left it); a live row of another start is a twin's.
                let beat = client
                    .execute(
                        "INSERT INTO roster.nodes (node_id, address, version, started_at, heartbeat_at, lease_secs) \
                         VALUES ($1, $2, $3, $4, now(), $5) \
                         ON CONFLICT (node_id) DO UPDATE SET address = EXCLUDED.address, \
                         version = EXCLUDED.version, started_at = EXCLUDED.started_at, heartbeat_at = now(), \
                         lease_secs = EXCLUDED.lease_secs \
                         WHERE roster.nodes.started_at = EXCLUDED.started_at \
                            OR roster.nodes.heartbeat_at <= now() - coalesce(roster.nodes.lease_secs, $5) * interval '1 second'",
                        &[&node, &address, &version, &started, &lease],
                    )
                    .await?;
                if beat == 0 {
                    return Err(anyhow::Error::new(crate::store::health::NodeIdTaken(
                        node.clone(),
                    )));
                }
                // A lease whose row this node's own commit holds is passed over, not waited
                // for: waiting stopped the heartbeats for the whole commit, so a commit longer
                // than `lease_secs` made the other nodes call this one dead and take its claim
                // (review s16 cluster F1). The commit renews that lease itself as it ends.
                client
                    .execute(
                        "UPDATE roster.leases l SET expires_at = now() + $2::float8 * interval '1 second' \
                         FROM (SELECT name FROM roster.leases WHERE node_id = $1 AND holder = $4 \
                                 AND expires_at > now() AND name = ANY($3) FOR NO KEY UPDATE SKIP LOCKED) free \
                         WHERE l.name = free.name",
                        &[&node, &lease, &held, &process],
                    )
                    .await?;
                client
                    .batch_execute(&format!(
                        "DELETE FROM roster.auth_failures WHERE window_start < now() - interval '{failures_kept}' \
                         AND (blocked_until IS NULL OR blocked_until < now()); \
                         DELETE FROM roster.schedule_ticks WHERE fired_at < now() - interval '{TICKS_KEPT}'; \
                         DELETE FROM roster.login_lifts WHERE lifted_at < now() - interval '{FAILURES_KEPT}'"
                    ))
                    .await?;
                // A newer roster may have migrated the database meanwhile (a rolling
                // upgrade): this node's SQL may no longer fit it (review of 2026-11-30,
                // PostgreSQL F5).
                let found: i32 = client
                    .query_one("SELECT coalesce(max(version), 0) FROM roster.schema_version", &[])
                    .await?
                    .try_get(0)?;
                if found > super::migrate::SCHEMA_VERSION {
                    return Err(anyhow::Error::new(crate::store::SchemaNewer {
                        found,
                        known: super::migrate::SCHEMA_VERSION,
                    }));
                }
                // Best effort: a sweep that fails is tried again at the next heartbeat and
                // never makes this node look unhealthy.
                match super::sweep::sweep_staged(&mut client, &node, lease, &unswept).await {
                    Ok(0) => {}
                    Ok(swept) => tracing::info!(generations = swept, "swept the staged buckets of nodes that are no longer alive"),
                    Err(e) => tracing::warn!("cannot sweep staged buckets now (next heartbeat tries again): {e:#}"),
                }
                Ok(())
            })
            .context("cannot record this node's heartbeat in PostgreSQL")
    }

    fn leave(&self) -> Result<()> {
        let (node, process) = (self.node_id.clone(), self.holder.clone());
        self.db
            .run(move |pool| async move {
                let client = Connections::client(&pool).await?;
                client
                    .execute("DELETE FROM roster.nodes WHERE node_id = $1", &[&node])
                    .await?;
                client
                    .execute(
                        "UPDATE roster.leases SET expires_at = now() \
                         WHERE node_id = $1 AND holder = $2 AND expires_at > now()",
                        &[&node, &process],
                    )
                    .await?;
                Ok(())
            })
            .context("cannot remove this node from roster.nodes")
    }

    fn nodes(&self) -> Result<Vec<NodeStatus>> {
        let lease = self.lease_f64();
        self.db
            .run(move |pool| async move {
                let client = Connections::client(&pool).await?;
                let rows = client
                    .query(
                        "SELECT node_id, coalesce(address, ''), coalesce(version, ''), started_at, \
                         heartbeat_at, heartbeat_at > now() - coalesce(lease_secs, $1::float8) * interval '1 second' \
                         FROM roster.nodes ORDER BY node_id",
                        &[&lease],
                    )
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let address: String = row.try_get(1)?;
                    let (sftp, admin) = address_parts(&address);
                    out.push(NodeStatus {
                        node_id: row.try_get(0)?,
                        sftp,
                        admin,
                        version: row.try_get(2)?,
                        started_at: row.try_get(3)?,
                        heartbeat_at: row.try_get(4)?,
                        alive: row.try_get(5)?,
                    });
                }
                Ok(out)
            })
            .context("cannot list the nodes in PostgreSQL")
    }

    fn take_lease(&self, name: &str) -> Result<Option<u64>> {
        let (node, lease, name) = (self.node_id.clone(), self.lease_f64(), name.to_string());
        let process = self.holder.clone();
        let held_leases = self.held_leases.clone();
        let what = format!("cannot take the lease {name} in PostgreSQL");
        self.db
            .run(move |pool| async move {
                let client = Connections::client(&pool).await?;
                let row = client
                    .query_opt(
                        "INSERT INTO roster.leases AS l (name, node_id, holder, fencing, acquired_at, expires_at) \
                         VALUES ($1, $2, $4, 1, now(), now() + $3::float8 * interval '1 second') \
                         ON CONFLICT (name) DO UPDATE SET \
                           fencing = CASE WHEN l.node_id = EXCLUDED.node_id AND l.holder = EXCLUDED.holder \
                                          AND l.expires_at > now() \
                                          THEN l.fencing ELSE l.fencing + 1 END, \
                           acquired_at = CASE WHEN l.node_id = EXCLUDED.node_id AND l.holder = EXCLUDED.holder \
                                          AND l.expires_at > now() \
                                          THEN l.acquired_at ELSE now() END, \
                           node_id = EXCLUDED.node_id, \
                           holder = EXCLUDED.holder, \
                           expires_at = EXCLUDED.expires_at \
                         WHERE (l.node_id = EXCLUDED.node_id AND l.holder = EXCLUDED.holder) \
                            OR l.expires_at <= now() \
                            OR NOT EXISTS (SELECT 1 FROM roster.nodes n WHERE n.node_id = l.node_id \
                                 AND n.heartbeat_at > now() - coalesce(n.lease_secs, $3::float8) * interval '1 second') \
                         RETURNING fencing",
                        &[&name, &node, &lease, &process],
                    )
                    .await?;
                match row {
                    Some(row) => {
                        held_leases.lock().unwrap_or_else(|p| p.into_inner()).insert(name);
                        let fencing: i64 = row.try_get(0)?;
                        Ok(Some(u64::try_from(fencing).unwrap_or(0)))
                    }
                    None => Ok(None),
                }
            })
            .context(what)
    }

    fn release_lease(&self, name: &str) -> Result<()> {
        // Forgotten first: should the release fail, heartbeats no longer renew the lease and it
        // ends with its time (review of 2026-11-30, PostgreSQL F3: it was renewed for good).
        self.held().remove(name);
        let (node, name) = (self.node_id.clone(), name.to_string());
        let process = self.holder.clone();
        let what = format!("cannot release the lease {name} in PostgreSQL");
        self.db
            .run(move |pool| async move {
                let client = Connections::client(&pool).await?;
                client
                    .execute(
                        "UPDATE roster.leases SET expires_at = now() \
                         WHERE name = $1 AND node_id = $2 AND holder = $3 AND expires_at > now()",
                        &[&name, &node, &process],
                    )
                    .await?;
                Ok(())
            })
            .context(what)
    }

    fn fire_tick(&self, tenant: &str, tick: DateTime<Utc>) -> Result<bool> {
        let (node, tenant) = (self.node_id.clone(), tenant.to_string());
        let lease = self.lease_f64();
        self.db
            .run(move |pool| async move {
                let client = Connections::client(&pool).await?;
                // The node that made the row fires; asked again (its first answer was lost
                // with the connection), the same node is told yes again. Another node is told
                // yes only once the row's node is no longer alive (it died between firing and
                // running the tick, gap of s26): the row becomes its own. Otherwise the WHERE
                // leaves the row alone and no row comes back: no. A conflicting insert that
                // committed while this one waited is seen by the WHERE, so two nodes never
                // both hear yes while the first lives.
                let row = client
                    .query_opt(
                        "INSERT INTO roster.schedule_ticks AS t (tenant, tick, node_id) \
                         VALUES ($1, $2, $3) ON CONFLICT (tenant, tick) \
                         DO UPDATE SET node_id = EXCLUDED.node_id, \
                           fired_at = CASE WHEN t.node_id = EXCLUDED.node_id THEN t.fired_at ELSE now() END \
                         WHERE t.node_id = EXCLUDED.node_id \
                            OR NOT EXISTS (SELECT 1 FROM roster.nodes n WHERE n.node_id = t.node_id \
                                 AND n.heartbeat_at > now() - coalesce(n.lease_secs, $4::float8) * interval '1 second') \
                         RETURNING t.node_id",
                        &[&tenant, &tick, &node, &lease],
                    )
                    .await?;
                Ok(row.is_some())
            })
            .context("cannot record a schedule tick in PostgreSQL")
    }

    fn login_failed(
        &self,
        scope: LoginScope,
        subject: &str,
        max: u32,
        block_for: Duration,
    ) -> Result<Option<DateTime<Utc>>> {
        let (scope, subject) = (scope.as_str(), subject.to_string());
        let max = i32::try_from(max.max(1)).unwrap_or(i32::MAX);
        let block = block_for.as_secs_f64();
        let window = block_for.as_secs() + u64::from(block_for.subsec_nanos() > 0);
        self.login_window_secs
            .fetch_max(window, std::sync::atomic::Ordering::Relaxed);
        self.db
            .run(move |pool| async move {
                let client = Connections::client(&pool).await?;
                let row = client
                    .query_one(
                        "WITH p AS (SELECT now() + $4::float8 * interval '1 second' AS until, \
                                           now() - $4::float8 * interval '1 second' AS window_floor) \
                         INSERT INTO roster.auth_failures AS f (scope, subject, failures, window_start, blocked_until) \
                         SELECT $1, $2, 1, now(), CASE WHEN 1 >= $3 THEN p.until END FROM p \
                         ON CONFLICT (scope, subject) DO UPDATE SET \
                           failures = CASE WHEN f.window_start < (SELECT window_floor FROM p) \
                                            AND coalesce(f.blocked_until <= now(), true) \
                                           THEN 1 ELSE f.failures + 1 END, \
                           window_start = CASE WHEN f.window_start < (SELECT window_floor FROM p) \
                                            AND coalesce(f.blocked_until <= now(), true) \
                                           THEN now() ELSE f.window_start END, \
                           blocked_until = CASE \
                             WHEN f.window_start < (SELECT window_floor FROM p) \
                                  AND coalesce(f.blocked_until <= now(), true) \
                               THEN CASE WHEN 1 >= $3 THEN (SELECT until FROM p) END \
                             WHEN coalesce(f.blocked_until <= now(), true) AND f.failures + 1 >= $3 \
                               THEN (SELECT until FROM p) \
                             ELSE f.blocked_until END \
                         RETURNING CASE WHEN blocked_until > now() THEN blocked_until END",
                        &[&scope, &subject, &max, &block],
                    )
                    .await?;
                Ok(row.try_get(0)?)
            })
            .context("cannot count a failed login in PostgreSQL")
    }

    fn login_blocked(&self, scope: LoginScope, subject: &str) -> Result<Option<DateTime<Utc>>> {
        let (scope, subject) = (scope.as_str(), subject.to_string());
        self.db
            .run(move |pool| async move {
                let client = Connections::client(&pool).await?;
                let row = client
                    .query_opt(
                        "SELECT blocked_until FROM roster.auth_failures \
                         WHERE scope = $1 AND subject = $2 AND blocked_until > now()",
                        &[&scope, &subject],
                    )
                    .await?;
                match row {
                    Some(row) => Ok(Some(row.try_get(0)?)),
                    None => Ok(None),
                }
            })
            .context("cannot read login blocks in PostgreSQL")
    }

    fn login_forgiven(&self, scope: LoginScope, subject: &str, failures: u32) -> Result<()> {
        let (scope, subject) = (scope.as_str(), subject.to_string());
        let failures = i32::try_from(failures).unwrap_or(i32::MAX);
        self.db
            .run(move |pool| async move {
                let client = Connections::client(&pool).await?;
                // One statement: the row goes when nothing is left of it, else shrinks.
                client
                    .execute(
                        "WITH gone AS (DELETE FROM roster.auth_failures WHERE scope = $1 \
                         AND subject = $2 AND failures <= $3 \
                         AND (blocked_until IS NULL OR blocked_until <= now()) RETURNING 1) \
                         UPDATE roster.auth_failures SET failures = failures - $3 \
                         WHERE scope = $1 AND subject = $2 AND failures > $3 \
                         AND (blocked_until IS NULL OR blocked_until <= now())",
                        &[&scope, &subject, &failures],
                    )
                    .await?;
                Ok(())
            })
            .context("cannot clear login failures in PostgreSQL")
    }

    fn login_blocks(&self, limit: usize) -> Result<Vec<SharedBlock>> {
        self.shared_blocks(limit)
    }

    fn lift_login_block(&self, scope: LoginScope, subject: &str) -> Result<bool> {
        self.lift_shared_block(scope, subject)
    }

    fn login_lifts_since(
        &self,
        after: Option<i64>,
        since: DateTime<Utc>,
    ) -> Result<(i64, Vec<(LoginScope, String)>)> {
        self.lifts_since(after, since)
    }

    fn orphan_claims(&self) -> Result<Vec<OrphanClaim>> {
        let (node, lease) = (self.node_id.clone(), self.lease_f64());
        self.db
            .run(move |pool| async move {
                let mut client = Connections::client(&pool).await?;
                let tx = client.transaction().await?;
                let rows = tx
                    .query(
                        "WITH dead AS ( \
                           SELECT c.tenant, c.file, c.node_id FROM roster.claims c \
                            WHERE c.node_id IS NOT NULL AND c.node_id <> $1 \
                              AND NOT EXISTS (SELECT 1 FROM roster.nodes n WHERE n.node_id = c.node_id \
                                    AND n.heartbeat_at > now() - coalesce(n.lease_secs, $2::float8) * interval '1 second') \
                            FOR UPDATE OF c SKIP LOCKED) \
                         UPDATE roster.claims c SET node_id = $1 FROM dead \
                          WHERE c.tenant = dead.tenant AND c.file = dead.file AND c.node_id = dead.node_id \
                         RETURNING c.tenant, c.file, c.claim, dead.node_id",
                        &[&node, &lease],
                    )
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    out.push(OrphanClaim {
                        tenant: row.try_get(0)?,
                        file: row.try_get(1)?,
                        claim: row.try_get(2)?,
                        from_node: row.try_get(3)?,
                    });
                }
                // What the dead nodes staged is left to the heartbeat's sweep (`sweep.rs`),
                // which never takes a generation a commit is applying.
                tx.commit().await?;
                Ok(out)
            })
            .context("cannot take over the claims of dead nodes in PostgreSQL")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_row_round_trips() {
        let beat = NodeBeat {
            sftp: "127.0.0.1:2222".into(),
            admin: "[::1]:8080".into(),
            version: "0.1.0".into(),
            started_at: Utc::now(),
        };
        let text = address_text(&beat);
        assert_eq!(text, "sftp=127.0.0.1:2222 admin=[::1]:8080");
        assert_eq!(
            address_parts(&text),
            ("127.0.0.1:2222".to_string(), "[::1]:8080".to_string())
        );
        assert_eq!(address_parts(""), (String::new(), String::new()));
    }
}
