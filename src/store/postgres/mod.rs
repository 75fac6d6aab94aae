//! The PostgreSQL backend of the store (issue 11): the only code that speaks SQL. This first
//! increment owns the connection and the schema; the store traits (`Directory`, `Users`,
//! `RunLog`, `MailOutbox`) are not implemented for it yet, so `roster serve` refuses a
//! PostgreSQL `[store] url` (see `main.rs` and docs/postgres.md).
//!
//! Data enters as the text of `[store] url`, parsed and its password resolved in `target.rs`
//! into a `tokio_postgres::Config`, and leaves as a connected client ([`connect`]), the schema
//! version found in a database ([`schema_version`]) and the result of [`migrate`]. The schema lives in
//! `schema/NNNN_*.sql`, compiled in; `migrate` (in `migrate.rs`) applies them.
//!
//! # Tables
//!
//! Schema `roster`. `roster.schema_version` is kept by the migrator; version 1
//! (`schema/0001_initial.sql`) creates the rest. Applications read only the views
//! `roster.users` and `roster.imports` (the read contract, docs/postgres.md); the tables
//! behind them and the others are Roster's own:
//!
//! | table | holds |
//! |---|---|
//! | `user_rows` | one row per user, fields as typed columns, plus private columns: `bucket` (the `model::bucket` partition as a column, indexed with the tenant), password hash and fingerprint, row digest, flags |
//! | `tenant_state`, `bucket_gens` | `store::TenantState`: commit version, last applied sha256, a version token per bucket |
//! | `staged_buckets` | packed buckets staged by a running import, applied by its commit |
//! | `import_records` | the history, one row per `model::ImportRecord` |
//! | `held_plans`, `ledger`, `claims`, `claim_stamps` | the rest of `RunLog` |
//! | `outbox` | queued mail, with a per-node delivery claim |
//! | `meta` | the password-fingerprint key |
//! | `nodes`, `leases`, `schedule_ticks`, `auth_failures` | a cluster's shared state (not used yet) |

mod migrate;
mod target;

pub use migrate::{migrate, refuse_newer, schema_version, Migrated, SCHEMA_VERSION};
pub use target::{parse_url, PostgresTarget};

use anyhow::Context;
use std::time::Duration;

/// How long a connection attempt may take when the URL sets no `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects (without TLS: `target.rs` accepts only `sslmode=disable` so far) and drives the
/// connection on the current tokio runtime until the client is dropped.
pub async fn connect(config: &tokio_postgres::Config) -> anyhow::Result<tokio_postgres::Client> {
    let mut config = config.clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .context("cannot connect to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}
