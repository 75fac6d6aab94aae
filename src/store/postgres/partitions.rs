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

/// `tenant`'s table: its name in schema `roster` (needing no quotes), and whether it exists
/// (is attached as the tenant's partition of `user_rows`).
pub(super) async fn table_of(client: &impl GenericClient, tenant: &str) -> Result<(String, bool)> {
    let row = client
        .query_one(
            "SELECT p, to_regclass('roster.' || p) IS NOT NULL \
             FROM roster.tenant_partition('user_rows', $1) AS p",
            &[&tenant],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Runs the statement `format(template, table, tenant)` built on the server, so the tenant is
/// quoted as a literal by PostgreSQL itself (DDL takes no bound parameters); `what` says what
/// failed.
async fn run_formatted(
    tx: &tokio_postgres::Transaction<'_>,
    template: &str,
    table: &str,
    tenant: &str,
    what: &str,
) -> Result<()> {
    let statement: String = tx
        .query_one(
            "SELECT format($1, $2::text, $3::text)",
            &[&template, &table, &tenant],
        )
        .await?
        .try_get(0)?;
    tx.batch_execute(&statement)
        .await
        .with_context(|| format!("cannot {what} the user table of tenant {tenant}"))?;
    Ok(())
}

/// The first commit of a tenant without a partition (see the module doc): its partition
/// `table` (from [`table_of`]) made from the rows the staged generations `gens` write,
/// attached (and so indexed). Keys the
/// generations remove are not there to remove. Returns how many rows it holds.
pub(super) async fn create_filled(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: &str,
    table: &str,
    gens: &[i64],
) -> Result<u64> {
    run_formatted(
        tx,
        "CREATE TABLE roster.%1$I (LIKE roster.user_rows INCLUDING DEFAULTS INCLUDING \
         CONSTRAINTS, CONSTRAINT %1$I CHECK (tenant = %2$L))",
        table,
        tenant,
        "create",
    )
    .await?;
    let columns = TYPED_COLUMNS.join(", ");
    let written = tx
        .execute(
            &format!(
                "INSERT INTO roster.{table} (tenant, key, bucket, {columns}) \
                 SELECT tenant, key, bucket, {columns} FROM roster.staged_rows \
                 WHERE gen = ANY($1) AND tenant = $2 AND record IS NOT NULL ORDER BY key"
            ),
            &[&gens, &tenant],
        )
        .await?;
    run_formatted(
        tx,
        "ALTER TABLE roster.user_rows ATTACH PARTITION roster.%I FOR VALUES IN (%L)",
        table,
        tenant,
        "attach",
    )
    .await?;
    Ok(written)
}

/// `ANALYZE` of `tenant`'s partition of `user_rows`.
pub(super) async fn analyze(client: &impl GenericClient, tenant: &str) -> Result<()> {
    let (table, _) = table_of(client, tenant).await?;
    client
        .batch_execute(&format!("ANALYZE roster.{table}"))
        .await?;
    Ok(())
}
