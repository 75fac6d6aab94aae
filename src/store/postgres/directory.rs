//! The [`Directory`] seam on PostgreSQL: a tenant's users are rows of `roster.user_rows` (the
//! packed record plus its typed projection, `rows.rs`); the engine's buckets are assembled from
//! and written into those rows; its commit is one transaction.
//!
//! Data enters as packed buckets (`model::packed`) and [`Commit`]s and leaves as packed buckets
//! and [`TenantState`]s, as from the sled backend, whose semantics these match:
//!
//! - **state**: `tenant_state` (version, last applied sha256) and `bucket_gens` (a version token
//!   per bucket; no row = generation 0), read in one snapshot.
//! - **bucket**: the bucket's rows in byte order of the key (`COLLATE "C"`), read in the same
//!   statement as the bucket's current generation; a generation that a commit replaced since
//!   the caller read the state is an error, as in sled, where the old generation is gone.
//! - **stage** (`staging.rs`): the staged bucket is compared with the bucket's committed rows
//!   (the bucket this thread just read, when its generation is still current; else read again)
//!   and only the difference goes into `staged_rows` (binary COPY) under a fresh generation
//!   (`roster.staged_gen`), tagged with this node: a changed or new row with its typed columns,
//!   a removed key with `record` NULL, and one marker row (key `''`, status [`MARKER`], no
//!   record) that says the generation exists even when nothing differs. The CPU work (decode,
//!   compare, project) runs on the calling thread, the SQL on the store's runtime.
//! - **commit**: one transaction that locks the tenant's state row, refuses (changing nothing)
//!   when its version is not the plan's or when a named generation's marker is gone (its rows
//!   were discarded, or swept by a process that opened the store as the same node: committing
//!   would lose them silently), applies the named generations with one upsert and one delete,
//!   sets the bucket generations (0: the bucket's rows go), bumps the version when buckets
//!   changed, adds the change to the group member counts (`group_counts`), numbers and
//!   publishes the staged changes and the events (`changes::publish`),
//!   and writes the run-log parts (`runs::write_commit_parts`, called only when the
//!   commit carries a record, ledger entry or plan). Durable when PostgreSQL's commit returns.
//!   A commit that wrote many rows then refreshes the planner's statistics (`ANALYZE`).
//! - **update_user**: optimistic. The record is read in one call, `change` (which is neither
//!   `Send` nor `'static`, so it cannot run on the store's runtime) runs on the calling thread,
//!   and the write is a compare-and-set on the record's bytes inside a transaction that also
//!   bumps the version and the bucket's generation. When another writer changed the user in
//!   between, nothing is written and the whole step repeats (so `change` may run again), a few
//!   times at most. A transaction held open across the two calls would tie up a pooled
//!   connection in an open transaction while foreign code runs, and leave it dirty if that
//!   code panicked; the compare-and-set needs no lock while `change` runs.

use super::connections::Connections;
use super::fencing;
use super::rows::{TypedRow, TYPED_COLUMNS};
use super::staging::{self, MARKER};
use super::PostgresStore;
use crate::model::bucket::BUCKETS;
use crate::model::changelog::{between, PendingChange};
use crate::model::packed::{bucket_entries, bucket_push, UserRec};
use crate::store::group_counts::{add_user, GroupDeltas};
use crate::store::{Commit, Directory, TenantState};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Transaction};

/// How often `update_user` tries again when another writer changed the user meanwhile.
const UPDATE_ATTEMPTS: usize = 5;

/// The sentence of a commit refused because the tenant's version moved (the same as sled's).
fn changed_meanwhile(tenant: &str) -> anyhow::Error {
    anyhow!("the directory of tenant {tenant} changed while this import was planned; run it again")
}

impl Directory for PostgresStore {
    fn tenant_state(&self, tenant: &str) -> Result<TenantState> {
        let tenant = tenant.to_string();
        self.db.run(move |pool| async move {
            let mut client = Connections::client(&pool).await?;
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let state = read_state(&tx, &tenant).await?;
            tx.commit().await?;
            Ok(state)
        })
    }

    fn fingerprint_key(&self) -> &[u8; 32] {
        &self.secret
    }

    fn bucket(&self, tenant: &str, bucket: u16, gen: u64) -> Result<Option<Vec<u8>>> {
        if gen == 0 {
            staging::remember_read(self.id, tenant, bucket, 0, None);
            return Ok(None);
        }
        let read = {
            let tenant = tenant.to_string();
            self.db.run(move |pool| async move {
                let client = Connections::client(&pool).await?;
                let rows = client
                    .query(
                        "SELECT g.gen, u.key, u.record FROM roster.bucket_gens g \
                     LEFT JOIN roster.user_rows u ON u.tenant = g.tenant AND u.bucket = g.bucket \
                     WHERE g.tenant = $1 AND g.bucket = $2 ORDER BY u.key COLLATE \"C\"",
                        &[&tenant, &to_i16(bucket)?],
                    )
                    .await?;
                let current = match rows.first() {
                    Some(r) => r.try_get::<_, i64>(0)?,
                    None => 0,
                };
                if u64::try_from(current).ok() != Some(gen) {
                    bail!(
                        "bucket {bucket} of tenant {tenant} is missing from the store \
                     (generation {gen} was replaced by another commit); run it again"
                    );
                }
                let mut packed = Vec::new();
                for r in &rows {
                    let key: Option<&str> = r.try_get(1)?;
                    let record: Option<&[u8]> = r.try_get(2)?;
                    if let (Some(k), Some(v)) = (key, record) {
                        bucket_push(&mut packed, k.as_bytes(), v);
                    }
                }
                Ok((!packed.is_empty()).then_some(packed))
            })?
        };
        staging::remember_read(self.id, tenant, bucket, gen, read.as_deref());
        Ok(read)
    }

    fn stage_bucket(&self, tenant: &str, bucket: u16, packed: &[u8]) -> Result<u64> {
        let entries = bucket_entries(packed)
            .with_context(|| format!("a staged bucket of tenant {tenant} is damaged"))?;
        let kept = staging::take_read(self.id, tenant, bucket);
        let b = to_i16(bucket)?;
        let (gen, committed) = {
            let tenant = tenant.to_string();
            self.db.run(move |pool| async move {
                let client = Connections::client(&pool).await?;
                let row = client
                    .query_one(
                        "SELECT nextval('roster.staged_gen'), (SELECT gen FROM roster.bucket_gens \
                         WHERE tenant = $1 AND bucket = $2)",
                        &[&tenant, &b],
                    )
                    .await?;
                let gen: i64 = row.try_get(0)?;
                let current = row.try_get::<_, Option<i64>>(1)?.unwrap_or(0);
                match kept {
                    Some((read, packed)) if i64::try_from(read).ok() == Some(current) => {
                        Ok((gen, packed))
                    }
                    _ => Ok((gen, committed_bucket(&client, &tenant, b).await?)),
                }
            })?
        };
        let staged = staging::differences(tenant, entries, committed.as_deref())?;
        let (tenant, node) = (tenant.to_string(), self.node_id.clone());
        self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            staging::copy_staged(&client, gen, &node, &tenant, b, &staged).await
        })?;
        u64::try_from(gen).map_err(|_| anyhow!("roster.staged_gen handed out {gen}"))
    }

    fn stage_changes(
        &self,
        tenant: &str,
        bucket: u16,
        gen: u64,
        changes: &[PendingChange],
    ) -> Result<()> {
        self.stage_change_rows(tenant, bucket, gen, changes)
    }

    fn discard_staged(&self, tenant: &str, staged: &[(u16, u64)]) -> Result<()> {
        let gens = staged_gens(staged);
        if gens.is_empty() {
            return Ok(());
        }
        let (t, g) = (tenant.to_string(), gens.clone());
        let done = self.db.run(move |pool| async move {
            let client = Connections::client(&pool).await?;
            discard_gens(&**client, &t, &g).await
        });
        if done.is_err() {
            self.remember_unswept(tenant, gens);
        }
        done
    }

    fn commit(&self, c: &Commit) -> Result<TenantState> {
        let c = Commit {
            tenant: c.tenant.clone(),
            expected_version: c.expected_version,
            buckets: c.buckets.clone(),
            last_applied_sha256: c.last_applied_sha256.clone(),
            record: c.record.clone(),
            ledger: c.ledger.clone(),
            put_plan: c.put_plan.clone(),
            remove_plan: c.remove_plan.clone(),
            set_aside_plans: c.set_aside_plans.clone(),
            lease: c.lease.clone(),
            mail: c.mail.clone(),
        };
        let holder = self.lease_holder();
        let lease_secs = self.lease_f64();
        self.db.run(move |pool| async move {
            let mut client = Connections::client(&pool).await?;
            let tx = client.transaction().await?;
            match apply_commit(&tx, &c, (&holder, lease_secs)).await {
                Ok((state, rows)) => {
                    if let Some(mail) = &c.mail {
                        super::outbox::queue_in(&tx, mail).await?;
                    }
                    tx.commit()
                        .await
                        .context("cannot commit the import to the store")?;
                    if rows >= ANALYZE_AFTER_ROWS {
                        refresh_statistics(&client, &c.tenant, rows).await;
                    }
                    Ok(state)
                }
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        })
    }

    /// Twice the cores, at most half the pool: a bucket pass here mostly waits on the server
    /// (reading a bucket, the COPY of what it stages), so more threads than cores keep both
    /// busy. Measured on 2 cores, 1,000,000 users (`bench/postgres.sh`): 4 threads instead of
    /// 2 took the first import 18.6-18.9 s -> 17.5 s and a 1% changed import 4.2 -> 3.7-3.8 s,
    /// peak RSS 172 -> 185 MB. The other half of the pool stays for logins, the admin API and
    /// other tenants' imports.
    fn planning_threads(&self) -> usize {
        (crate::store::cores() * 2).clamp(1, (super::POOL_SIZE / 2).max(1))
    }

    fn update_user(
        &self,
        tenant: &str,
        key: &str,
        change: &mut dyn FnMut(&mut UserRec) -> Result<()>,
    ) -> Result<Option<UserRec>> {
        for _ in 0..UPDATE_ATTEMPTS {
            let old = {
                let (tenant, key) = (tenant.to_string(), key.to_string());
                self.db.run(move |pool| async move {
                    let client = Connections::client(&pool).await?;
                    let row = client
                        .query_opt(
                            "SELECT record FROM roster.user_rows WHERE tenant = $1 AND key = $2",
                            &[&tenant, &key],
                        )
                        .await?;
                    row.map(|r| r.try_get::<_, Vec<u8>>(0))
                        .transpose()
                        .map_err(anyhow::Error::from)
                })?
            };
            let Some(old) = old else {
                return Ok(None);
            };
            let mut rec = UserRec::decode(&old)?;
            let before = rec.clone();
            change(&mut rec)?;
            let logged: Vec<_> = between(key, Some(&before), Some(&rec))
                .into_iter()
                .collect();
            let mut new = Vec::with_capacity(old.len() + 16);
            rec.encode_into(&mut new);
            let mut groups = GroupDeltas::new();
            add_user(&mut groups, Some(&old), Some(&new))?;
            let row = TypedRow::from_rec(&rec, new);
            let (tenant, key) = (tenant.to_string(), key.to_string());
            let written = self.db.run(move |pool| async move {
                let mut client = Connections::client(&pool).await?;
                let tx = client.transaction().await?;
                let written = rewrite_user(&tx, &tenant, &key, &old, &row).await?;
                if written {
                    super::changes::publish(&tx, &tenant, &[], &logged, None).await?;
                    super::group_counts::apply_deltas(&tx, &tenant, &groups).await?;
                }
                tx.commit().await?;
                Ok(written)
            })?;
            if written {
                return Ok(Some(rec));
            }
        }
        bail!("user {key:?} of tenant {tenant} kept changing while it was rewritten; try again")
    }
}

/// The tenant's state as `tx` sees it.
/// Deletes the staged rows and changes of `tenant`'s generations `gens`.
pub(super) async fn discard_gens(
    client: &impl tokio_postgres::GenericClient,
    tenant: &str,
    gens: &[i64],
) -> Result<()> {
    client
        .execute(
            "DELETE FROM roster.staged_rows WHERE tenant = $1 AND gen = ANY($2)",
            &[&tenant, &gens],
        )
        .await?;
    PostgresStore::discard_change_rows(client, tenant, gens).await
}

pub(super) async fn read_state(tx: &Transaction<'_>, tenant: &str) -> Result<TenantState> {
    let row = tx
        .query_opt(
            "SELECT version, last_applied_sha256 FROM roster.tenant_state WHERE tenant = $1",
            &[&tenant],
        )
        .await?;
    let (version, last_applied_sha256) = match row {
        Some(r) => (r.try_get::<_, i64>(0)?, r.try_get::<_, Option<String>>(1)?),
        None => (0, None),
    };
    let mut gens = vec![0u64; BUCKETS];
    let rows = tx
        .query(
            "SELECT bucket, gen FROM roster.bucket_gens WHERE tenant = $1",
            &[&tenant],
        )
        .await?;
    for r in rows {
        let (b, g): (i16, i64) = (r.try_get(0)?, r.try_get(1)?);
        let slot = usize::try_from(b).ok().and_then(|b| gens.get_mut(b));
        if let (Some(slot), Ok(g)) = (slot, u64::try_from(g)) {
            *slot = g;
        }
    }
    Ok(TenantState {
        version: u64::try_from(version)
            .map_err(|_| anyhow!("the stored version of tenant {tenant} is negative"))?,
        last_applied_sha256,
        gens,
    })
}

/// Makes sure the tenant has a state row and locks it for the rest of `tx`: every writer of a
/// tenant's users goes through this lock first, so writers of one tenant run one at a time and
/// never deadlock. Returns the version.
pub(super) async fn lock_state(tx: &Transaction<'_>, tenant: &str) -> Result<u64> {
    tx.execute(
        "INSERT INTO roster.tenant_state (tenant) VALUES ($1) ON CONFLICT (tenant) DO NOTHING",
        &[&tenant],
    )
    .await?;
    let version: i64 = tx
        .query_one(
            "SELECT version FROM roster.tenant_state WHERE tenant = $1 FOR UPDATE",
            &[&tenant],
        )
        .await?
        .try_get(0)?;
    u64::try_from(version).map_err(|_| anyhow!("the stored version of tenant {tenant} is negative"))
}

/// A commit that wrote or removed at least this many user rows refreshes the planner's
/// statistics of `user_rows` at once (`refresh_statistics`).
const ANALYZE_AFTER_ROWS: u64 = 50_000;

/// `ANALYZE` of the tenant's partition of `user_rows` after a large commit. Until autovacuum's next analyze (up to a
/// minute or more later) the planner would still believe the tenant small: measured on a
/// first import of 1,000,000 users, a console page at offset 10,000 took 443 ms (a bitmap scan
/// of every row, then a sort) instead of 4.6 ms (the key index); the ANALYZE took 0.3 s. Only
/// the tenant's partition: the whole table would sample every tenant's. The commit has already
/// succeeded: a failure here is only logged.
async fn refresh_statistics(client: &tokio_postgres::Client, tenant: &str, rows: u64) {
    if let Err(e) = super::partitions::analyze(client, tenant).await {
        tracing::warn!(%tenant, rows, "cannot refresh the statistics of the users of tenant {tenant} after a large import (autovacuum will): {e:#}");
    }
}

/// The commit's work inside its transaction (see the module doc); the caller commits or rolls
/// back. Returns the new state and how many user rows were written or removed.
async fn apply_commit(
    tx: &Transaction<'_>,
    c: &Commit,
    (holder, lease_secs): (&fencing::LeaseHolder, f64),
) -> Result<(TenantState, u64)> {
    if let Some(lease) = &c.lease {
        fencing::still_leased(tx, lease, holder).await?;
    }
    let (state, rows) = apply_locked(tx, c).await?;
    if let Some(lease) = &c.lease {
        fencing::renew_as_it_ends(tx, lease, holder, lease_secs).await?;
    }
    Ok((state, rows))
}

/// The commit's writes, once its lease is checked (see [`apply_commit`]).
async fn apply_locked(tx: &Transaction<'_>, c: &Commit) -> Result<(TenantState, u64)> {
    let version = lock_state(tx, &c.tenant).await?;
    if version != c.expected_version {
        return Err(changed_meanwhile(&c.tenant));
    }
    // The last entry of a bucket wins, as in sled.
    let mut last: HashMap<u16, u64> = HashMap::new();
    for &(b, g) in &c.buckets {
        last.insert(b, g);
    }
    let (mut set_buckets, mut set_gens, mut emptied) = (Vec::new(), Vec::new(), Vec::new());
    for (b, g) in last {
        if g == 0 {
            emptied.push(to_i16(b)?);
        } else {
            set_buckets.push(to_i16(b)?);
            set_gens.push(i64::try_from(g).map_err(|_| anyhow!("generation {g} out of range"))?);
        }
    }
    // The markers are locked (FOR SHARE) until the commit ends: the sweep of staged buckets
    // (`sweep.rs`) takes them FOR UPDATE SKIP LOCKED, so it never deletes the rows of a
    // generation this commit is applying, however long this node stalls in between.
    let marked: i64 = tx
        .query_one(
            "SELECT count(DISTINCT gen) FROM (SELECT gen FROM roster.staged_rows \
             WHERE gen = ANY($1) AND tenant = $2 AND status = $3 AND record IS NULL \
             FOR SHARE) m",
            &[&set_gens, &c.tenant, &MARKER],
        )
        .await?
        .try_get(0)?;
    if usize::try_from(marked).ok() != Some(set_gens.len()) {
        bail!(
            "the rows this import staged for tenant {} are gone (discarded, or swept when this \
             node's store was opened again); nothing was changed; run it again",
            c.tenant
        );
    }
    let mut ordered_gens = Vec::new();
    for &(_, g) in &c.buckets {
        let g = i64::try_from(g).map_err(|_| anyhow!("generation {g} out of range"))?;
        if g != 0 && !ordered_gens.contains(&g) {
            ordered_gens.push(g);
        }
    }
    super::changes::publish(tx, &c.tenant, &ordered_gens, &[], c.record.as_ref()).await?;
    // Group member counts (h-scimspeed): from the staged rows and the rows they replace.
    super::group_counts::apply_commit(tx, &c.tenant, &set_gens, &emptied).await?;
    let rows = staging::apply_staged(tx, &c.tenant, &set_gens).await?;
    if !emptied.is_empty() {
        for table in ["user_rows", "bucket_gens"] {
            tx.execute(
                &format!(
                    "DELETE FROM roster.{table} WHERE tenant = $1 AND bucket = ANY($2::smallint[])"
                ),
                &[&c.tenant, &emptied],
            )
            .await?;
        }
    }
    if !set_buckets.is_empty() {
        tx.execute(
            "INSERT INTO roster.bucket_gens (tenant, bucket, gen) \
             SELECT $1, b, g FROM unnest($2::smallint[], $3::bigint[]) AS s(b, g) \
             ON CONFLICT (tenant, bucket) DO UPDATE SET gen = EXCLUDED.gen",
            &[&c.tenant, &set_buckets, &set_gens],
        )
        .await?;
    }
    let version = version + u64::from(!c.buckets.is_empty());
    tx.execute(
        "UPDATE roster.tenant_state SET version = $2, \
         last_applied_sha256 = COALESCE($3, last_applied_sha256), updated_at = now() \
         WHERE tenant = $1",
        &[&c.tenant, &to_i64(version)?, &c.last_applied_sha256],
    )
    .await?;
    let run_log_parts = c.record.is_some()
        || c.ledger.is_some()
        || c.put_plan.is_some()
        || c.remove_plan.is_some()
        || !c.set_aside_plans.is_empty();
    if run_log_parts {
        super::runs::write_commit_parts(tx, c).await?;
    }
    Ok((read_state(tx, &c.tenant).await?, rows))
}

/// The committed rows of `bucket` (packed, in no particular order; None when it has none).
async fn committed_bucket(
    client: &tokio_postgres::Client,
    tenant: &str,
    bucket: i16,
) -> Result<Option<Vec<u8>>> {
    let rows = client
        .query(
            "SELECT key, record FROM roster.user_rows WHERE tenant = $1 AND bucket = $2",
            &[&tenant, &bucket],
        )
        .await?;
    let mut packed = Vec::new();
    for r in &rows {
        let key: &str = r.try_get(0)?;
        let record: &[u8] = r.try_get(1)?;
        bucket_push(&mut packed, key.as_bytes(), record);
    }
    Ok((!packed.is_empty()).then_some(packed))
}

/// Rewrites one user inside `tx` if its record is still `old`; then bumps the tenant's version
/// and the bucket's generation. False (nothing written) when the record changed meanwhile or
/// the user is gone.
async fn rewrite_user(
    tx: &Transaction<'_>,
    tenant: &str,
    key: &str,
    old: &[u8],
    row: &TypedRow,
) -> Result<bool> {
    let version = lock_state(tx, tenant).await?;
    let sets = TYPED_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 4))
        .collect::<Vec<_>>()
        .join(", ");
    let update = format!(
        "UPDATE roster.user_rows SET {sets} WHERE tenant = $1 AND key = $2 AND record = $3 \
         RETURNING bucket"
    );
    let mut values: Vec<&(dyn ToSql + Sync)> = vec![&tenant, &key, &old];
    values.extend(row.values());
    let Some(updated) = tx.query_opt(&update, &values).await? else {
        return Ok(false);
    };
    let bucket: i16 = updated.try_get(0)?;
    tx.execute(
        "INSERT INTO roster.bucket_gens (tenant, bucket, gen) \
         VALUES ($1, $2, nextval('roster.staged_gen')) \
         ON CONFLICT (tenant, bucket) DO UPDATE SET gen = EXCLUDED.gen",
        &[&tenant, &bucket],
    )
    .await?;
    tx.execute(
        "UPDATE roster.tenant_state SET version = $2, updated_at = now() WHERE tenant = $1",
        &[&tenant, &to_i64(version + 1)?],
    )
    .await?;
    Ok(true)
}

/// The generations (not 0) of `staged`, as the database keeps them.
fn staged_gens(staged: &[(u16, u64)]) -> Vec<i64> {
    staged
        .iter()
        .filter(|(_, g)| *g != 0)
        .filter_map(|(_, g)| i64::try_from(*g).ok())
        .collect()
}

fn to_i16(bucket: u16) -> Result<i16> {
    i16::try_from(bucket).map_err(|_| anyhow!("bucket {bucket} out of range"))
}

fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| anyhow!("version {v} out of range"))
}
