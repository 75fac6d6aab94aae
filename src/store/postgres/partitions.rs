//! A tenant's own tables on PostgreSQL: `roster.user_rows` (migration 8) and `roster.changes`
//! (migration 9) are partitioned by tenant, and this module owns making a tenant's partition.
//!
//! Data enters as a tenant name and, for [`create_filled`], the staged generations of its first
//! commit (rows of `roster.staged_rows`); it leaves as a partition attached to its table. The
//! partition of a tenant is named by `roster.tenant_partition(table, tenant)` (SQL, migration
//! 8), so every node and the migration agree on it without a catalog of their own. The indexes
//! of both tables leave `tenant` out of their keys (migration 9): each partition holds one.
//!
//! **Why a first commit builds its own table.** A commit that writes into an existing
//! partition adds each row to every index one entry at a time: for a first import of 1,000,000
//! users that was 20 s of 31 s. When the tenant has no partition yet, its first commit
//! (`staging::apply_staged`) instead creates a plain table shaped like `user_rows` with the
//! partition's constraint as a `CHECK` (so attaching needs no scan), fills it, and
//! attaches it. Attaching gives the table each index of `user_rows` (whatever the migrations
//! made), built as `CREATE INDEX` builds one: from a sorted pass over the rows: 6 s in all for
//! the same rows, filling 1.6 s and attaching 4.4 s (schema 9). (Building the indexes first, for attaching to adopt, measured the same.) All
//! of it is inside the commit's transaction, so a failed or interrupted commit leaves no table
//! behind. Attaching takes a `SHARE UPDATE EXCLUSIVE` lock on `user_rows` until the commit
//! ends: reads and writes of other tenants go on; another tenant's first commit waits.
//!
//! Only a commit adds users, so only a commit makes a partition; every other writer
//! (`Directory::update_user`) changes a user that exists, in the partition that holds it.
//!
//! **The change log** takes the same path: the first commit that logs a change of a tenant
//! ([`create`], then `changes::publish` writes into the new table, then [`attach`]) builds the
//! partition's two indexes in bulk, where a first import of 1,000,000 users added its
//! 1,000,000 entries to an indexed table one at a time. A commit that publishes takes the
//! change log's lock before the users' one, so two first commits never wait on each other in
//! a circle.

use super::rows::TYPED_COLUMNS;
use anyhow::{Context, Result};
use tokio_postgres::GenericClient;

/// A table of schema `roster` partitioned by tenant.
#[derive(Clone, Copy, Debug)]
pub(super) enum Partitioned {
    /// The users (`user_rows`, migration 8).
    UserRows,
    /// The change log (`changes`, migration 9).
    Changes,
}

impl Partitioned {
    fn name(self) -> &'static str {
        match self {
            Partitioned::UserRows => "user_rows",
            Partitioned::Changes => "changes",
        }
    }
}

/// `tenant`'s partition of `base`: its name in schema `roster` (needing no quotes), and
/// whether it exists (is attached as the tenant's partition).
pub(super) async fn table_of(
    client: &impl GenericClient,
    base: Partitioned,
    tenant: &str,
) -> Result<(String, bool)> {
    let row = client
        .query_one(
            "SELECT p, to_regclass('roster.' || p) IS NOT NULL \
             FROM roster.tenant_partition($1, $2) AS p",
            &[&base.name(), &tenant],
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
        .with_context(|| format!("cannot {what} a table of tenant {tenant}"))?;
    Ok(())
}

/// Creates `table` (from [`table_of`]), shaped like `base`, with the partition's constraint as
/// a `CHECK` so that [`attach`] needs no scan; not yet a partition, so without indexes.
pub(super) async fn create(
    tx: &tokio_postgres::Transaction<'_>,
    base: Partitioned,
    table: &str,
    tenant: &str,
) -> Result<()> {
    let template = format!(
        "CREATE TABLE roster.%1$I (LIKE roster.{} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, \
         CONSTRAINT %1$I CHECK (tenant = %2$L))",
        base.name()
    );
    run_formatted(tx, &template, table, tenant, "create").await
}

/// Attaches `table` (made by [`create`], filled) as `tenant`'s partition of `base`, which
/// builds each index of `base` on it in one sorted pass.
pub(super) async fn attach(
    tx: &tokio_postgres::Transaction<'_>,
    base: Partitioned,
    table: &str,
    tenant: &str,
) -> Result<()> {
    let template = format!(
        "ALTER TABLE roster.{} ATTACH PARTITION roster.%I FOR VALUES IN (%L)",
        base.name()
    );
    run_formatted(tx, &template, table, tenant, "attach").await
}

/// The first commit of a tenant without a partition of `user_rows` (see the module doc): its
/// partition `table` (from [`table_of`]) made from the rows the staged generations `gens`
/// write, attached (and so indexed). Keys the generations remove are not there to remove.
/// The rows go in as staged, bucket by bucket, unsorted: the indexes are built afterwards by
/// sorting anyway (sorting the rows by key first cost 1 s of 2.6 s for 1,000,000), and a later
/// import's read of one bucket then finds its rows together. Returns how many rows it holds.
pub(super) async fn create_filled(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: &str,
    table: &str,
    gens: &[i64],
) -> Result<u64> {
    create(tx, Partitioned::UserRows, table, tenant).await?;
    let columns = TYPED_COLUMNS.join(", ");
    let written = tx
        .execute(
            &format!(
                "INSERT INTO roster.{table} (tenant, key, bucket, {columns}) \
                 SELECT tenant, key, bucket, {columns} FROM roster.staged_rows \
                 WHERE gen = ANY($1) AND tenant = $2 AND record IS NOT NULL"
            ),
            &[&gens, &tenant],
        )
        .await?;
    attach(tx, Partitioned::UserRows, table, tenant).await?;
    Ok(written)
}

/// `ANALYZE` of `tenant`'s partition of `user_rows`.
pub(super) async fn analyze(client: &impl GenericClient, tenant: &str) -> Result<()> {
    let (table, _) = table_of(client, Partitioned::UserRows, tenant).await?;
    client
        .batch_execute(&format!("ANALYZE roster.{table}"))
        .await?;
    Ok(())
}
