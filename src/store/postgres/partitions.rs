//! A tenant's own table of users on PostgreSQL: `roster.user_rows` is partitioned by tenant
//! (migration 8), and this module owns making a tenant's partition.
//!
//! Data enters as a tenant name and, for [`create_filled`], the staged generations of its first
//! commit (rows of `roster.staged_rows`); it leaves as a partition attached to `user_rows`.
//! The partition of a tenant is named by `roster.tenant_partition('user_rows', tenant)` (SQL,
//! migration 8), so every node and the migration agree on it without a catalog of their own.
//!
//! **Why a first commit builds its own table.** A commit that writes into an existing
//! partition adds each row to every index one entry at a time: for a first import of 1,000,000
//! users that was 20 s of 31 s. When the tenant has no partition yet, its first commit
//! (`staging::apply_staged`) instead creates a plain table shaped like `user_rows` with the
//! partition's constraint as a `CHECK` (so attaching needs no scan), fills it in key order, and
//! attaches it. Attaching gives the table each index of `user_rows` (whatever the migrations
//! made), built as `CREATE INDEX` builds one: from a sorted pass over the rows, 8 s in all for
//! the same rows. (Building the indexes first, for attaching to adopt, measured the same.) All
//! of it is inside the commit's transaction, so a failed or interrupted commit leaves no table
//! behind. Attaching takes a `SHARE UPDATE EXCLUSIVE` lock on `user_rows` until the commit
//! ends: reads and writes of other tenants go on; another tenant's first commit waits.
//!
//! Only a commit adds users, so only a commit makes a partition; every other writer
//! (`Directory::update_user`) changes a user that exists, in the partition that holds it.

use super::rows::TYPED_COLUMNS;
use anyhow::{Context, Result};
use tokio_postgres::GenericClient;

/// The name (in schema `roster`, needing no quotes) of `tenant`'s partition of `user_rows`.
async fn name(client: &impl GenericClient, tenant: &str) -> Result<String> {
    let row = client
        .query_one(
            "SELECT roster.tenant_partition('user_rows', $1)",
            &[&tenant],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Whether `tenant` has a partition of `user_rows`.
pub(super) async fn exists(client: &impl GenericClient, tenant: &str) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT to_regclass(format('roster.%I', roster.tenant_partition('user_rows', $1))) \
             IS NOT NULL",
            &[&tenant],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// A statement built on the server with `format(template, name, tenant)`, so the tenant is
/// quoted as a literal by PostgreSQL itself (DDL takes no bound parameters).
async fn formatted(
    client: &impl GenericClient,
    template: &str,
    name: &str,
    tenant: &str,
) -> Result<String> {
    let row = client
        .query_one(
            "SELECT format($1, $2::text, $3::text)",
            &[&template, &name, &tenant],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// The first commit of a tenant without a partition (see the module doc): its partition made
/// from the rows the staged generations `gens` write, attached (and so indexed). Keys the
/// generations remove are not there to remove. Returns how many rows it holds.
pub(super) async fn create_filled(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: &str,
    gens: &[i64],
) -> Result<u64> {
    let name = name(tx, tenant).await?;
    let create = formatted(
        tx,
        "CREATE TABLE roster.%1$I (LIKE roster.user_rows INCLUDING DEFAULTS INCLUDING \
         CONSTRAINTS, CONSTRAINT %1$I CHECK (tenant = %2$L))",
        &name,
        tenant,
    )
    .await?;
    tx.batch_execute(&create)
        .await
        .with_context(|| format!("cannot create the user table of tenant {tenant}"))?;
    let columns = TYPED_COLUMNS.join(", ");
    let written = tx
        .execute(
            &format!(
                "INSERT INTO roster.{name} (tenant, key, bucket, {columns}) \
                 SELECT tenant, key, bucket, {columns} FROM roster.staged_rows \
                 WHERE gen = ANY($1) AND tenant = $2 AND record IS NOT NULL ORDER BY key"
            ),
            &[&gens, &tenant],
        )
        .await?;
    let attach = formatted(
        tx,
        "ALTER TABLE roster.user_rows ATTACH PARTITION roster.%I FOR VALUES IN (%L)",
        &name,
        tenant,
    )
    .await?;
    tx.batch_execute(&attach)
        .await
        .with_context(|| format!("cannot attach the user table of tenant {tenant}"))?;
    Ok(written)
}

/// `ANALYZE` of `tenant`'s partition of `user_rows`.
pub(super) async fn analyze(client: &impl GenericClient, tenant: &str) -> Result<()> {
    let name = name(client, tenant).await?;
    client
        .batch_execute(&format!("ANALYZE roster.{name}"))
        .await?;
    Ok(())
}
