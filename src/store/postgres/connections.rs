//! The PostgreSQL store's connections, and the bridge from Roster's synchronous store traits to
//! the asynchronous client.
//!
//! The store traits are plain functions: the import engine calls them from its worker threads,
//! the admin API from `spawn_blocking`, tests from anywhere. tokio-postgres is asynchronous. So
//! the store owns a small tokio runtime of its own (two worker threads, `roster-pg`) that drives
//! a pool of connections (deadpool-postgres), and [`Connections::run`] hands a future to that
//! runtime and waits for its result on the calling thread. Waiting on a thread of another tokio
//! runtime is announced with `block_in_place` (so that runtime moves its other tasks away); on a
//! current-thread runtime the thread simply blocks, which never deadlocks because the work runs
//! on the store's own runtime.
//!
//! Data enters as a [`PostgresTarget`] and closures over a pooled client; it leaves as their
//! results. A pooled connection that broke (the server restarted) is dropped by the pool and a
//! new one is made for the next call, so the store recovers on its own once PostgreSQL is back.

use super::PostgresTarget;
use anyhow::{anyhow, Context, Result};
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Timeouts};
use std::future::Future;
use std::time::Duration;

/// How long a call waits for a free pooled connection, or for a new one to connect.
const POOL_TIMEOUT: Duration = Duration::from_secs(10);

/// What each new connection sets for its session. `jit = off`: PostgreSQL (11 and later; Roster
/// needs 11) compiles a statement to machine code when its estimated cost passes
/// `jit_above_cost`, which the scans of a large tenant's table do (SCIM's `co` over 1,000,000
/// users, a deep page, a count of everyone), and that took 20-75 ms per statement against the
/// 5-15 ms it saved them (`bench/scim_read.sh`: `title co` 157-224 ms -> 136-154 ms; imports the
/// same). Set after connecting rather than in the startup packet's `options`, which connection
/// poolers such as PgBouncer refuse by default.
/// No `lock_timeout`: a commit waits for another tenant's first commit (`ATTACH PARTITION`) by
/// design, for as long as that takes. A statement stuck behind a DBA's lock holds its pooled
/// connection meanwhile; the heartbeat has a connection of its own, and a full pool says so.
/// `idle_in_transaction_session_timeout`: a node frozen inside a transaction (SIGSTOP, a VM
/// paused) held its row locks for the whole freeze, and the node taking over its tenant
/// waited on them just as long (audit s22 cluster M2). The server now ends such a session
/// after two minutes of silence inside a transaction, far longer than Roster ever pauses
/// between two statements of one transaction; the frozen node's commit then fails and its
/// claim is finished once, by whoever holds the tenant.
const SESSION_SETTINGS: &str = "SET jit = off; SET idle_in_transaction_session_timeout = '120s'";

/// A pool of connections on the store's own runtime, and one connection kept for the node's
/// heartbeat: a pool filled by statements stuck behind a lock (a DBA's `ALTER`, say) must not
/// stop the heartbeat, or the other nodes call this one dead (review s16 cluster F3).
pub struct Connections {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    beats: Pool,
}

impl Connections {
    /// Makes the runtime and the pool (at most `size` connections). Connects lazily: the first
    /// [`run`](Self::run) that needs a connection makes it.
    pub fn open(target: &PostgresTarget, size: usize) -> Result<Connections> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("roster-pg")
            .enable_all()
            .build()
            .context("cannot start the PostgreSQL store's runtime")?;
        let mut config = target.config.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_TIMEOUT);
        }
        let pool = make_pool(target, &config, size.max(1))?;
        let beats = make_pool(target, &config, 1)?;
        Ok(Connections {
            runtime: Some(runtime),
            pool,
            beats,
        })
    }

    /// Runs `work` with the pool on the store's runtime and waits for its result.
    pub fn run<T, F, Fut>(&self, work: F) -> Result<T>
    where
        F: FnOnce(Pool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.run_on(self.pool.clone(), work)
    }

    /// As [`run`](Self::run), with the connection kept for the heartbeat.
    pub fn run_beat<T, F, Fut>(&self, work: F) -> Result<T>
    where
        F: FnOnce(Pool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.run_on(self.beats.clone(), work)
    }

    fn run_on<T, F, Fut>(&self, pool: Pool, work: F) -> Result<T>
    where
        F: FnOnce(Pool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| anyhow!("the PostgreSQL store is closed"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(work(pool).await);
        });
        let wait = move || rx.recv();
        let received = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        let result =
            received.map_err(|_| anyhow!("a PostgreSQL store task stopped before it answered"))?;
        result.map_err(|e| {
            if lost_the_server(&e) && !crate::store::is_unavailable(&e) {
                e.context(crate::store::Unavailable)
            } else {
                e
            }
        })
    }

    /// A pooled client, with a sentence that says the database is unreachable, or that every
    /// connection of the pool is busy (statements waiting on a lock, or slow).
    pub async fn client(pool: &Pool) -> Result<deadpool_postgres::Object> {
        pool.get().await.map_err(|e| match &e {
            deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                anyhow::Error::new(crate::store::PoolBusy(format!(
                    "all {} connections to PostgreSQL are busy (statements waiting on a lock, or slow); none came free within {} s",
                    pool.status().max_size,
                    POOL_TIMEOUT.as_secs()
                )))
                .context(crate::store::Unavailable)
            }
            _ => anyhow!("PostgreSQL cannot be reached: {e}").context(crate::store::Unavailable),
        })
    }

    /// A second pooled client if one is free (or can be made) at once; None rather than
    /// waiting, so a request never holds one connection while it waits for another.
    pub async fn spare(pool: &Pool) -> Option<deadpool_postgres::Object> {
        let now = Timeouts {
            wait: Some(Duration::ZERO),
            create: Some(Duration::from_secs(2)),
            recycle: Some(Duration::from_secs(2)),
        };
        pool.timeout_get(&now).await.ok()
    }
}

/// A pool of at most `size` connections to `target`, each set up with [`SESSION_SETTINGS`].
fn make_pool(
    target: &PostgresTarget,
    config: &tokio_postgres::Config,
    size: usize,
) -> Result<Pool> {
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match super::tls::connector(target)? {
        Some(tls) => Manager::from_config(config.clone(), tls, manager_config),
        None => Manager::from_config(config.clone(), tokio_postgres::NoTls, manager_config),
    };
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(POOL_TIMEOUT),
            create: Some(POOL_TIMEOUT),
            recycle: Some(POOL_TIMEOUT),
        })
        .post_create(Hook::async_fn(|client, _| {
            Box::pin(async move {
                client
                    .batch_execute(SESSION_SETTINGS)
                    .await
                    .map_err(HookError::Backend)
            })
        }))
        .build()
        .context("cannot make the PostgreSQL connection pool")
}

/// True when `e` says the server went away or refused to serve (connection closed or broken,
/// SQLSTATE class 08 "connection exception", 57P "operator intervention": shutdown, restart,
/// cannot connect now), rather than that a statement was wrong.
fn lost_the_server(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        if let Some(pe) = cause.downcast_ref::<tokio_postgres::Error>() {
            let code = pe.code().map(|c| c.code()).unwrap_or("");
            return pe.is_closed()
                || code.starts_with("08")
                || code.starts_with("57P")
                || (code.is_empty()
                    && std::error::Error::source(pe).is_some_and(|s| s.is::<std::io::Error>()));
        }
        cause.is::<deadpool_postgres::PoolError>() || cause.is::<std::io::Error>()
    })
}

impl Drop for Connections {
    /// Stops the runtime without waiting: dropping a runtime inside another runtime's task
    /// would panic, and a store handle may be dropped anywhere.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
#[path = "connections_tests.rs"]
mod tests;
