//! Versioned schema migrations: `schema/NNNN_*.sql`, compiled in, applied in order.
//!
//! [`migrate`] takes a connection, opens one transaction, takes the transaction-scoped advisory
//! lock [`MIGRATION_LOCK`] (so several nodes starting at once migrate one after the other; the
//! lock ends with the transaction), creates schema `roster` and `roster.schema_version` if
//! missing, reads the version, refuses a database newer than this binary, applies every newer
//! migration with its `schema_version` row, and commits: all of it or none. A second migrator
//! that waited on the lock finds the version current and applies nothing.
//! [`schema_version`] only reads.

use anyhow::{bail, Context};

/// The schema version this binary creates and expects.
pub const SCHEMA_VERSION: i32 = 15;

/// Key of the advisory lock migrations run under ("Roster" in ASCII, then 1).
const MIGRATION_LOCK: i64 = 0x0052_6f73_7465_7201;

struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, oldest first; the last one's version is [`SCHEMA_VERSION`].
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("schema/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "packed_rows",
        sql: include_str!("schema/0002_packed_rows.sql"),
    },
    Migration {
        version: 3,
        name: "change_log",
        sql: include_str!("schema/0003_change_log.sql"),
    },
    Migration {
        version: 4,
        name: "scim_read",
        sql: include_str!("schema/0004_scim_read.sql"),
    },
    Migration {
        version: 5,
        name: "import_speed",
        sql: include_str!("schema/0005_import_speed.sql"),
    },
    Migration {
        version: 6,
        name: "console_search",
        sql: include_str!("schema/0006_console_search.sql"),
    },
    Migration {
        version: 7,
        name: "scim_speed",
        sql: include_str!("schema/0007_scim_speed.sql"),
    },
    Migration {
        version: 8,
        name: "tenant_partitions",
        sql: include_str!("schema/0008_tenant_partitions.sql"),
    },
    Migration {
        version: 9,
        name: "partition_keys",
        sql: include_str!("schema/0009_partition_keys.sql"),
    },
    Migration {
        version: 10,
        name: "packed_staged_changes",
        sql: include_str!("schema/0010_packed_staged_changes.sql"),
    },
    Migration {
        version: 11,
        name: "lower_items_plpgsql",
        sql: include_str!("schema/0011_lower_items_plpgsql.sql"),
    },
    Migration {
        version: 12,
        name: "fold_every_letter",
        sql: include_str!("schema/0012_fold_every_letter.sql"),
    },
    Migration {
        version: 13,
        name: "staged_markers",
        sql: include_str!("schema/0013_staged_markers.sql"),
    },
    Migration {
        version: 14,
        name: "login_lifts",
        sql: include_str!("schema/0014_login_lifts.sql"),
    },
    Migration {
        version: 15,
        name: "node_lease",
        sql: include_str!("schema/0015_node_lease.sql"),
    },
];

/// What schema `roster` and its version table look like before any migration.
const BOOTSTRAP: &str = "
CREATE SCHEMA IF NOT EXISTS roster;
CREATE TABLE IF NOT EXISTS roster.schema_version (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);";

/// The versions before and after a [`migrate`] (equal when nothing was applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: i32,
    pub to: i32,
}

/// Brings the database at `target` to [`SCHEMA_VERSION`] in one transaction under the
/// migration lock; refuses (changing nothing) a database whose schema is newer.
pub async fn migrate(target: &super::PostgresTarget) -> anyhow::Result<Migrated> {
    migrate_to(target, SCHEMA_VERSION).await
}

/// [`migrate`], stopping at version `to` (at most [`SCHEMA_VERSION`]): what a test of a
/// migration uses to make the database an older binary left.
pub async fn migrate_to(target: &super::PostgresTarget, to: i32) -> anyhow::Result<Migrated> {
    let mut client = super::connect(target).await?;
    let version: String = client
        .query_one("SHOW server_version_num", &[])
        .await?
        .try_get(0)
        .context("cannot read the server's version")?;
    refuse_old_server(&version)?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .context("cannot take the migration lock")?;
    tx.batch_execute(BOOTSTRAP)
        .await
        .context("cannot create schema roster")?;
    let from: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM roster.schema_version",
            &[],
        )
        .await?
        .try_get(0)
        .context("roster.schema_version does not hold what this roster wrote there")?;
    refuse_newer(from)?;
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > from && m.version <= to)
    {
        tx.batch_execute(m.sql)
            .await
            .with_context(|| format!("migration {} ({}) failed", m.version, m.name))?;
        tx.execute(
            "INSERT INTO roster.schema_version (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
    }
    tx.commit().await.context("cannot commit the migration")?;
    Ok(Migrated {
        from,
        to: to.min(SCHEMA_VERSION).max(from),
    })
}

/// The schema version of the database at `target` (0: no roster schema yet); changes nothing.
pub async fn schema_version(target: &super::PostgresTarget) -> anyhow::Result<i32> {
    let client = super::connect(target).await?;
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('roster.schema_version') IS NOT NULL",
            &[],
        )
        .await?
        .try_get(0)
        .context("cannot tell whether roster.schema_version exists")?;
    if !exists {
        return Ok(0);
    }
    let version: i32 = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM roster.schema_version",
            &[],
        )
        .await?
        .try_get(0)
        .context("roster.schema_version does not hold what this roster wrote there")?;
    Ok(version)
}

/// The oldest PostgreSQL Roster runs on: 12. Before 12, `ATTACH PARTITION` locks the parent
/// table exclusively, so a tenant's first commit (which attaches its partitions) would stop
/// every tenant's reads of `roster.users` and the change log for the rest of that commit
/// (review s27).
pub const OLDEST_SERVER: u32 = 120_000;

/// Refuses a server older than [`OLDEST_SERVER`] (`server_version_num`, such as `150018`).
pub fn refuse_old_server(server_version_num: &str) -> anyhow::Result<()> {
    let n: u32 = server_version_num.trim().parse().map_err(|_| {
        anyhow::anyhow!("the server's version {server_version_num:?} is not a number")
    })?;
    if n < OLDEST_SERVER {
        bail!(
            "PostgreSQL {}.{} is too old: Roster needs PostgreSQL 12 or later (before 12, \
             attaching a tenant's partitions locks every tenant's reads)",
            n / 10_000,
            n % 10_000 / 100
        );
    }
    Ok(())
}

/// The sentence for a database migrated by a newer roster.
pub fn refuse_newer(found: i32) -> anyhow::Result<()> {
    if found > SCHEMA_VERSION {
        bail!(
            "the database's roster schema is at version {found}, newer than this roster binary \
             understands (version {SCHEMA_VERSION}): run a roster at least as new as the one \
             that migrated it; nothing was changed"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_older_than_12_is_refused() {
        let old = refuse_old_server("110022").unwrap_err().to_string();
        assert!(old.contains("PostgreSQL 11.0 is too old"), "{old}");
        assert!(refuse_old_server("120000").is_ok());
        assert!(refuse_old_server("150018").is_ok());
        assert!(refuse_old_server("x").is_err());
    }

    #[test]
    fn migrations_are_numbered_in_order_up_to_the_schema_version() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.name);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }
}
