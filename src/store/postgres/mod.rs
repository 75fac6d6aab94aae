//! The PostgreSQL backend of the store (issue 11): the only code that speaks SQL. It implements
//! every seam of `store` ([`Directory`](super::Directory), [`Users`](super::Users),
//! [`RunLog`](super::RunLog), [`MailOutbox`](super::MailOutbox)) on one database that several
//! `roster serve` nodes may share.
//!
//! Data enters as the text of `[store] url`, parsed and its password resolved in `target.rs`
//! into a [`PostgresTarget`]; [`PostgresStore::open`] migrates the schema (`migrate.rs`,
//! `schema/NNNN_*.sql`, compiled in) and keeps a pool of connections on its own small runtime
//! (`connections.rs`), through which the synchronous trait calls run. Values leave as `model`
//! values and packed buckets, as from every backend; no SQL type crosses the traits.
//!
//! | file | owns |
//! |---|---|
//! | `target.rs`, `tls.rs` | where the database is, how to reach it |
//! | `migrate.rs`, `schema/` | schema `roster` and its versions |
//! | `connections.rs` | the pool and the sync-to-async bridge |
//! | `rows.rs` | a packed user record as the typed columns of `roster.users` |
//! | `directory.rs`, `users.rs` | [`Directory`](super::Directory) and [`Users`](super::Users) on `user_rows` |
//! | `staging.rs` | an import's staged rows: the difference a staged bucket makes, its COPY, its move into `user_rows` |
//! | `partitions.rs` | a tenant's partitions of `user_rows` and `changes`, filled and then indexed in bulk by its first commit |
//! | `users_query.rs`, `scan_page.rs` | SCIM filters as SQL, paged and counted by the database; one scan for a filter no index narrows |
//! | `runs.rs`, `outbox.rs` | [`RunLog`](super::RunLog) and [`MailOutbox`](super::MailOutbox) |
//! | `cluster.rs` | [`Cluster`](super::Cluster): nodes, leases, ticks, login failures, orphan claims |
//! | `fill.rs` | what `roster migrate-store` writes beyond the traits (plans, ledger, stamps, outbox as it stands, tenant state) |
//!
//! # Tables
//!
//! Schema `roster`. `roster.schema_version` is kept by the migrator. Applications read only the
//! views `roster.users` and `roster.imports` (the read contract, docs/postgres.md); the tables
//! behind them and the others are Roster's own:
//!
//! | table | holds |
//! |---|---|
//! | `user_rows` | one row per user: fields as typed columns, the packed record (`record`), the `model::bucket` partition as a column (indexed with the tenant and key); partitioned by tenant, one table per tenant (`partitions.rs`) |
//! | `tenant_state`, `bucket_gens` | `store::TenantState`: commit version, last applied sha256, a version token per bucket |
//! | `staged_rows` | what a running import staged: per staged generation, the rows it writes and the keys it removes |
//! | `import_records` | the history, one row per `model::ImportRecord` |
//! | `changes`, `events`, `cursors`, `staged_changes` | the `ChangeLog`: change log (partitioned by tenant) and event log (numbered from `tenant_state.change_seq`/`event_seq` by the commit), delivery cursors, changes staged with a bucket generation (one row of arrays each) |
//! | `held_plans`, `ledger`, `claims`, `claim_stamps` | the rest of `RunLog` |
//! | `outbox` | queued mail, with a per-node delivery claim |
//! | `meta` | the password-fingerprint key |
//! | `nodes`, `leases`, `schedule_ticks`, `auth_failures`, `login_lifts` | a cluster's shared state (`login_lifts`: blocks operators lifted) |

mod changes;
mod cluster;
mod connections;
mod directory;
mod fencing;
mod fill;
// Group member counts (user_groups, migration 7; h-scimspeed).
mod group_counts;
mod login_lifts;
mod migrate;
mod outbox;
mod partitions;
mod record_rows;
mod rows;
mod runs;
mod scan_page;
mod staging;
mod sweep;
mod target;
mod tls;
mod users;
mod users_query;

/// The throwaway PostgreSQL cluster the integration tests use, for this folder's unit tests.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../../tests/support/postgres.rs"]
mod test_postgres;

pub use fill::{refuse_unfinished_copy_at, COPY_MARKER};
pub use migrate::{migrate, migrate_to, refuse_newer, schema_version, Migrated, SCHEMA_VERSION};
pub use target::{parse_url, PostgresTarget, TlsMode};

use connections::Connections;

use anyhow::Context;
use std::time::Duration;

/// How long a connection attempt may take when the URL sets no `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `target`, secured as its `sslmode` says (the connector of `tls.rs`, the same
/// the pool uses), and drives the connection on the current tokio runtime until the client is
/// dropped. A certificate the TLS handshake refuses is said in a sentence naming the mode.
pub async fn connect(target: &PostgresTarget) -> anyhow::Result<tokio_postgres::Client> {
    let mut config = target.config.clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    // The driver bounds only the TCP connect by `connect_timeout`: a server (or a pooler, a
    // firewall) that accepts and then says nothing would hold `serve`'s start and
    // `check-config` for ever (review s16 cluster F4). The whole exchange gets the same bound.
    let limit = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    match tokio::time::timeout(limit, connect_within(target, config)).await {
        Ok(connected) => connected,
        Err(_) => anyhow::bail!(
            "cannot connect to PostgreSQL at {}: it accepted the connection but did not complete the sign-in within {} s (a stuck server, pooler or firewall?)",
            target.describe(),
            limit.as_secs()
        ),
    }
}

/// [`connect`] without its overall bound.
async fn connect_within(
    target: &PostgresTarget,
    config: tokio_postgres::Config,
) -> anyhow::Result<tokio_postgres::Client> {
    let connected = match tls::connector(target)? {
        Some(tls) => config.connect(tls).await.map(|(client, connection)| {
            tokio::spawn(drive(connection));
            client
        }),
        None => config
            .connect(tokio_postgres::NoTls)
            .await
            .map(|(client, connection)| {
                tokio::spawn(drive(connection));
                client
            }),
    };
    connected.map_err(|e| explain_connect_error(target, e))
}

/// Runs a connection until its client is dropped or it breaks.
async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::warn!("PostgreSQL connection ended: {e}");
    }
}

/// The driver's error with a sentence in front: which database, and for a refused certificate
/// what `sslmode=verify-full` checks.
fn explain_connect_error(target: &PostgresTarget, e: tokio_postgres::Error) -> anyhow::Error {
    let at = target.describe();
    let mut causes = std::iter::successors(Some(&e as &dyn std::error::Error), |c| c.source());
    let refused = causes.any(|c| c.to_string().contains("invalid peer certificate"));
    let sentence = if refused {
        format!(
            "cannot connect to PostgreSQL at {at}: the server's TLS certificate was refused \
             (sslmode=verify-full checks it against {} and the host name {:?})",
            match &target.tls {
                TlsMode::VerifyFull {
                    root_cert: Some(path),
                } => format!("the CA certificates of sslrootcert {}", path.display()),
                _ => "the public CA roots (set sslrootcert for a private CA)".to_string(),
            },
            target.host
        )
    } else {
        format!("cannot connect to PostgreSQL at {at}")
    };
    anyhow::Error::new(e).context(sentence)
}

/// Connections a store keeps at most (the import engine stages buckets from several threads).
const POOL_SIZE: usize = 8;

/// The PostgreSQL store; shareable across threads (the [`Store`](super::Store) handle clones it).
pub struct PostgresStore {
    db: Connections,
    /// Tells this store from others in the same process (`staging.rs` keeps the bucket a
    /// thread just read under it).
    id: u64,
    /// This node's id: staged rows, claims and outbox deliveries carry it.
    node_id: String,
    /// A random token of this store's process: the leases it takes carry it, and only it
    /// renews, releases or commits under them (a second process under the same node id is
    /// another holder).
    holder: String,
    /// The key of password fingerprints, kept in `roster.meta`.
    secret: [u8; 32],
    /// `[cluster] lease_secs` (see `cluster.rs`, `with_lease_secs`).
    lease_secs: u64,
    /// The leases this process holds (taken and not released): heartbeats renew these only,
    /// so a lease whose release failed ends with its time (`cluster.rs`).
    held_leases: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// Staged generations whose discard failed (tenant, generations): the heartbeat deletes
    /// them once the database answers again (`cluster.rs`).
    unswept: sweep::Unswept,
    /// The longest login-failure window (`auth_block_secs`, whole seconds) this store has
    /// counted a failure under; 0 before the first. Heartbeats delete non-blocking failure
    /// rows older than it (`cluster.rs`).
    login_window_secs: std::sync::atomic::AtomicU64,
}

impl PostgresStore {
    /// Connects, migrates the schema to this binary's version (refusing a newer one), reads or
    /// makes the fingerprint key, and sweeps rows this node staged before it last stopped.
    /// Refuses a store that `roster migrate-store` began to fill and did not finish (its
    /// marker in `roster.meta`, see `fill.rs`): serving a partly copied directory would take
    /// the users not copied yet for new ones (review s30).
    pub fn open(target: &PostgresTarget, node_id: &str) -> anyhow::Result<PostgresStore> {
        let store = PostgresStore::open_for_copy(target, node_id)?;
        store.refuse_unfinished_copy(target)?;
        Ok(store)
    }

    /// [`PostgresStore::open`] without the check for an unfinished copy: for `roster
    /// migrate-store` only, which writes and clears that marker itself.
    pub fn open_for_copy(target: &PostgresTarget, node_id: &str) -> anyhow::Result<PostgresStore> {
        let db = Connections::open(target, POOL_SIZE)?;
        let migrated = target.clone();
        db.run(move |_| async move { migrate(&migrated).await.map(|_| ()) })
            .with_context(|| {
                format!(
                    "cannot prepare the PostgreSQL store at {}",
                    target.describe()
                )
            })?;
        let secret = db.run(|pool| async move {
            let client = Connections::client(&pool).await?;
            let fresh: [u8; 32] = rand::random();
            client
                .execute(
                    "INSERT INTO roster.meta (name, value) VALUES ('fingerprint_key', $1) \
                     ON CONFLICT (name) DO NOTHING",
                    &[&&fresh[..]],
                )
                .await?;
            let row = client
                .query_one(
                    "SELECT value FROM roster.meta WHERE name = 'fingerprint_key'",
                    &[],
                )
                .await?;
            let value: Vec<u8> = row.try_get(0)?;
            <[u8; 32]>::try_from(value.as_slice())
                .map_err(|_| anyhow::anyhow!("roster.meta fingerprint_key is not 32 bytes"))
        })?;
        static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(PostgresStore {
            db,
            id: OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            node_id: node_id.to_string(),
            holder: format!("{:016x}", rand::random::<u64>()),
            secret,
            lease_secs: cluster::DEFAULT_LEASE_SECS,
            held_leases: Default::default(),
            unswept: Default::default(),
            login_window_secs: Default::default(),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }
}

impl super::Backend for PostgresStore {
    /// Every commit is durable when it returns (PostgreSQL's own commit); nothing to flush.
    fn flush(&self) -> anyhow::Result<()> {
        Ok(())
    }
}
