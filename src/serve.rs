//! `roster serve`: starts every stage of the server and stops them on SIGINT/SIGTERM.
//!
//! The config file enters here, becomes a [`ConfigHandle`] (reloaded on change or SIGHUP), and
//! is handed to every stage: the SFTP listener sends upload events on a channel to the intake;
//! the intake imports through the store and queues mail; the mail worker delivers it; the
//! webhook tasks (`deliver::webhook`) post the events each commit logged, woken when a run ends;
//! the SCIM push worker (`deliver::scim_push`) pushes the change log to applications.
//!
//! The node takes part in a cluster through the store's `Cluster` seam (docs/postgres.md,
//! "Several nodes"): its first heartbeat is recorded before the intake starts, then one every
//! `[cluster] lease_secs / 3`, each followed by the intake's check for claims of dead nodes; on
//! stop the node's row goes and its leases are released. With sled the node is a cluster of
//! one and all of this is bookkeeping.
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit, and SFTP gets a descriptor
//! budget of that limit minus `crate::descriptors::DESCRIPTOR_RESERVE`, half for SSH
//! connections and half for open SFTP handles over all tenants, so that the listener, admin
//! API, store and intake always have descriptors left, however many clients and tenants push
//! at once.

use crate::config::{Config, ConfigHandle};
use crate::descriptors::{descriptor_budget, raise_descriptor_limit};
use crate::intake::Intake;
use crate::sftp::{hostkeys, SftpServer, UploadFinished, UploadSink};
use crate::store::{NodeBeat, NodeStatus, Store};
use anyhow::Context;
use signals::{Signals, Stop};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

mod signals;

/// A running SFTP listener (used by `serve` and by the integration tests).
pub struct RunningSftp {
    pub addr: SocketAddr,
    pub config: ConfigHandle,
    /// The failed-login counts and blocks, shared with the web console's sign-in.
    pub throttle: crate::login::LoginThrottle,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSftp {
    /// Stops accepting new sessions and waits for the listener to end.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Loads the config at `path`, prepares host keys and folders, binds the SFTP listener and starts
/// serving; finished uploads go to `sink`. Also starts the config watchers.
pub async fn start_sftp(path: &Path, sink: Arc<dyn UploadSink>) -> anyhow::Result<RunningSftp> {
    let config = Config::load_to_serve(path)?;
    start_sftp_with(path, config, sink, None).await
}

/// [`start_sftp`] on `config` as already loaded from `path` (the file is read once per start:
/// read twice, an edit in between would start the store on one config and the listener on
/// another), counting failed logins in `store` too when several nodes share it.
async fn start_sftp_with(
    path: &Path,
    config: Config,
    sink: Arc<dyn UploadSink>,
    store: Option<Store>,
) -> anyhow::Result<RunningSftp> {
    let handle = ConfigHandle::new(path, config.clone());
    handle.spawn_watchers();
    let keys = hostkeys::load_or_create(&config.server.host_keys)?;
    for k in &keys {
        tracing::info!(algorithm = %k.algorithm(), fingerprint = %k.fingerprint(), "host key");
    }
    std::fs::create_dir_all(config.server.data_dir.join("tenants")).with_context(|| {
        format!(
            "cannot create the data folder {}",
            config.server.data_dir.display()
        )
    })?;
    crate::private_files::warn_if_shared(&config.server.data_dir);
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, tenants = config.tenants.len(), "SFTP listening");
    let descriptors = raise_descriptor_limit();
    let budget = descriptor_budget(descriptors);
    let max_connections = budget / 2;
    let max_handles = budget - max_connections;
    tracing::info!(
        descriptors,
        max_connections,
        max_handles,
        "SFTP descriptor budget"
    );
    let server = SftpServer::new(handle.clone(), &keys, sink, max_connections, max_handles);
    if let Some(store) = store {
        server.throttle.share_through(store);
    }
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    let throttle = server.throttle.clone();
    let task = tokio::spawn(server.run(listener, rx));
    Ok(RunningSftp {
        addr,
        throttle,
        config: handle,
        shutdown,
        task,
    })
}

/// Opens the store: PostgreSQL when `[store] url` (or `ROSTER_STORE_URL`) is set, connecting
/// and migrating its schema; else sled under `data_dir/store`.
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    if let Some(target) = config.store.postgres().map_err(anyhow::Error::msg)? {
        let node = config.cluster.node_id(&config.server.listen);
        let store = crate::store::postgres::PostgresStore::open(&target, &node)?
            .with_lease_secs(config.cluster.lease_secs);
        return Ok(Store::new(store));
    }
    let dir = config.server.data_dir.join("store");
    Store::open(&dir).with_context(|| format!("cannot open the store in {}", dir.display()))
}

/// Everything `roster serve` runs: SFTP listener, intake, mail delivery, admin API.
pub struct RunningServer {
    pub sftp: RunningSftp,
    pub intake: Intake,
    pub store: Store,
    /// The admin API, `/metrics` and SCIM (its bound address is `admin.addr`).
    pub admin: crate::admin::RunningAdmin,
    webhooks: crate::deliver::webhook::RunningWebhooks,
    mail_stop: tokio::sync::watch::Sender<bool>,
    mail_task: tokio::task::JoinHandle<()>,
    heartbeat: tokio::task::JoinHandle<()>,
    /// Pushes the change log of tenants with `[tenants.scim_push]` (issue 12).
    scim_push: crate::deliver::scim_push::Worker,
}

/// How long the admin listener's requests in flight may hold a stop before their connections
/// are closed ([`crate::admin::RunningAdmin::stop`]).
const ADMIN_STOP: Duration = Duration::from_secs(10);

/// How long leaving the cluster may take at a stop (a store that does not answer).
const LEAVE_BOUND: Duration = Duration::from_secs(10);

/// How long `roster serve` waits for running imports at a stop.
const STOP_GRACE: Duration = Duration::from_secs(120);

/// What the whole stop may take beyond [`STOP_GRACE`] (the admin listener, webhooks, SCIM
/// push, leaving the cluster, the mail worker) before the process exits without the rest.
const STOP_SLACK: Duration = Duration::from_secs(60);

/// How long the runtime waits, after `roster serve` returned, for blocking threads still
/// running (an import past the grace period, a store call that does not answer): after it the
/// process exits without them (`main`). Each import commits in one transaction, so one cut
/// off leaves nothing half-applied, and its claim is finished at the next start.
pub const RUNTIME_EXIT_BOUND: Duration = Duration::from_secs(3);

impl RunningServer {
    /// Graceful stop; see [`RunningServer::finish`], whose error (a failed flush of the store)
    /// this logs.
    pub async fn stop(self, grace: Duration) {
        if let Err(e) = self.finish(grace).await {
            tracing::error!("{e:#}");
        }
    }

    /// Graceful stop, in this order (review s30): the intake takes no new work (requests
    /// waiting for the store or a lease give up and are answered so), SFTP takes no new
    /// sessions, the admin requests in flight get [`ADMIN_STOP`] to finish, running imports get
    /// `grace`, queued mail stays queued, and the node leaves the cluster (its row goes, its
    /// leases are released) unless imports were still running: then the others see its
    /// heartbeat expire, so no node finishes a claim this process may still be applying. An
    /// error when the store cannot be flushed.
    pub async fn finish(self, grace: Duration) -> anyhow::Result<()> {
        self.intake.stop_taking_work();
        self.sftp.stop().await;
        self.admin.stop(ADMIN_STOP).await;
        // Heartbeats go on while running imports finish, so no other node takes them over.
        let finished = self.intake.shutdown(grace).await;
        // Before the node leaves: the delivery tasks release their leases themselves.
        self.webhooks.stop(Duration::from_secs(15)).await;
        let push = self.scim_push;
        let _ = tokio::task::spawn_blocking(move || push.stop(Duration::from_secs(15))).await;
        // After the push: until then this node still pushes and must look alive.
        self.heartbeat.abort();
        let _ = self.heartbeat.await;
        if finished {
            leave(&self.store).await;
        } else {
            tracing::warn!("not leaving the cluster while imports still run: the other nodes see this node's heartbeat expire");
        }
        let _ = self.mail_stop.send(true);
        let _ = self.mail_task.await;
        self.store.flush().context("cannot flush the store")
    }
}

/// Removes this node's row and releases its leases, within [`LEAVE_BOUND`].
async fn leave(store: &Store) {
    let store = store.clone();
    let left = tokio::time::timeout(
        LEAVE_BOUND,
        tokio::task::spawn_blocking(move || store.leave()),
    )
    .await;
    match left {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(
            "cannot leave the cluster (the others see this node's heartbeat expire): {e:#}"
        ),
        Ok(Err(e)) => tracing::warn!("cannot leave the cluster: {e}"),
        Err(_) => tracing::warn!(
            "the store did not answer within {} s: not leaving the cluster (the others see \
             this node's heartbeat expire)",
            LEAVE_BOUND.as_secs()
        ),
    }
}

/// True once `stop` asks for a stop (a SIGTERM or SIGINT during start-up).
fn asked_to_stop(stop: &watch::Receiver<Option<Stop>>) -> bool {
    stop.borrow().is_some()
}

/// Returns once `stop` asks for a stop; never if its sender is gone without asking.
async fn stop_asked(stop: &mut watch::Receiver<Option<Stop>>) {
    if stop.wait_for(|s| s.is_some()).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Starts every stage on the config at `path`.
pub async fn start(path: &Path) -> anyhow::Result<RunningServer> {
    let (_never, stop) = watch::channel(None);
    start_until(path, stop)
        .await?
        .context("start-up stopped without a stop signal")
}

/// [`start`], which ends early with None when `stop` asks for a stop before the intake starts:
/// then nothing has been imported and the node never beat. The admin listener is bound before
/// the first heartbeat and the intake (review s30: bound after them, a taken port failed the
/// start after the start-up imports had run, and on PostgreSQL without leaving the cluster).
async fn start_until(
    path: &Path,
    mut stop: watch::Receiver<Option<Stop>>,
) -> anyhow::Result<Option<RunningServer>> {
    let config = Config::load_to_serve(path)?;
    let store = open_store(&config)?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<UploadFinished>();
    let sftp = start_sftp_with(path, config.clone(), Arc::new(tx), Some(store.clone())).await?;
    let admin = match crate::admin::bind(&sftp.config).await {
        Ok(bound) => bound,
        Err(e) => {
            sftp.stop().await;
            return Err(e);
        }
    };
    // The first heartbeat, before the intake starts: other nodes must see this one alive
    // before it takes any lease.
    let beat = NodeBeat {
        sftp: sftp.addr.to_string(),
        admin: admin.addr.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: chrono::Utc::now(),
    };
    let before_intake = async {
        if asked_to_stop(&stop) {
            return Ok(false);
        }
        tokio::select! {
            r = refuse_a_twin(&store, config.cluster.lease_secs) => r?,
            () = stop_asked(&mut stop) => return Ok(false),
        }
        // No live twin: what an earlier process of this id staged is this node's to drop.
        let own = store.clone();
        let forgotten = tokio::task::spawn_blocking(move || own.forget_own_staging()).await;
        (forgotten.map_err(anyhow::Error::from).and_then(|r| r))
            .context("cannot drop what this node left staged")?;
        if asked_to_stop(&stop) {
            return Ok(false);
        }
        let (first, first_beat) = (store.clone(), beat.clone());
        let recorded = tokio::task::spawn_blocking(move || first.heartbeat(&first_beat)).await;
        (recorded.map_err(anyhow::Error::from).and_then(|r| r))
            .context("cannot record this node's first heartbeat")?;
        Ok::<bool, anyhow::Error>(true)
    };
    match before_intake.await {
        Ok(true) => {}
        other => {
            drop(admin);
            sftp.stop().await;
            return other.map(|_| None);
        }
    }
    // Nothing below fails: the node never has to leave the cluster on a failed start.
    let mail_wake = Arc::new(tokio::sync::Notify::new());
    let (mail_stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let mail_task = tokio::spawn(crate::mail::run_delivery(
        Arc::new(store.clone()),
        sftp.config.clone(),
        config.server.data_dir.join("outbox"),
        mail_wake.clone(),
        async move {
            let _ = stop_rx.changed().await;
        },
    ));
    let intake = Intake::start(sftp.config.clone(), store.clone(), rx, mail_wake);
    let admin = admin.serve(
        sftp.config.clone(),
        store.clone(),
        intake.clone(),
        sftp.throttle.clone(),
    );
    let webhooks =
        crate::deliver::webhook::start(sftp.config.clone(), Arc::new(store.clone()), intake.runs());
    let heartbeat = tokio::spawn(heartbeats(
        store.clone(),
        intake.clone(),
        sftp.throttle.clone(),
        beat,
        crate::store::beat_interval(config.cluster.lease_secs),
    ));
    let scim_push = crate::deliver::scim_push::Worker::start(sftp.config.clone(), store.clone());
    Ok(Some(RunningServer {
        sftp,
        intake,
        store,
        admin,
        webhooks,
        mail_stop,
        mail_task,
        heartbeat,
        scim_push,
    }))
}

/// Fails to start while `roster migrate-store` copies into the store (review s25), or when
/// another live process beats under this node's id (two nodes given one
/// `[cluster] node_id`, say by a shared config file): they would share every lease and finish
/// each other's running claims (review s16 cluster F2). A live row of this id whose heartbeat
/// does not move within the lease is this node's own, left by a crash: then it goes on.
async fn refuse_a_twin(store: &Store, lease_secs: u64) -> anyhow::Result<()> {
    if !store.shared_by_nodes() {
        return Ok(()); // the embedded store is locked by one process
    }
    let me = store.node_id().to_string();
    let reading = store.clone();
    let live: Vec<NodeStatus> = tokio::task::spawn_blocking(move || reading.nodes())
        .await??
        .into_iter()
        .filter(|n| n.alive)
        .collect();
    let named = |id: &str| live.iter().find(|n| n.node_id == id).cloned();
    if let Some(copy) = named(crate::store::MIGRATE_STORE_NODE_ID) {
        anyhow::bail!(
            "roster migrate-store is copying into this database (last heartbeat {}): start \
             roster serve when it has finished",
            copy.heartbeat_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    let Some(first) = named(&me) else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(lease_secs + 1);
    tracing::info!(node = %me, "a live heartbeat of this node id is in the store: waiting up to {lease_secs} s to see whether another process beats under it");
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        match live_node(store.clone(), me.clone()).await? {
            None => return Ok(()),
            Some(now) if now.heartbeat_at != first.heartbeat_at => anyhow::bail!(
                "another roster serve is running as node {me:?} (SFTP {}, started {}): give every node its own [cluster] node_id (or leave it out: the host name and SFTP port)",
                now.sftp,
                now.started_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// The node `id` if its heartbeat is alive.
async fn live_node(store: Store, id: String) -> anyhow::Result<Option<NodeStatus>> {
    tokio::task::spawn_blocking(move || {
        let nodes = store.nodes()?;
        Ok::<_, anyhow::Error>(nodes.into_iter().find(|n| n.node_id == id && n.alive))
    })
    .await?
}

/// Records a heartbeat every `every`, lifts here the login blocks an operator lifted on any
/// node (`login::LocalBlock`), and lets the intake take over claims of dead nodes beside it.
/// Each heartbeat is a durable write: its outcome is the store's health (`store::health`,
/// `GET /health`), and an embedded store that fails every write for
/// [`EMBEDDED_GIVE_UP`](crate::store::health::EMBEDDED_GIVE_UP) ends the process (status 1)
/// for its supervisor to start it again: sled does not recover from an I/O error by itself.
async fn heartbeats(
    store: Store,
    intake: Intake,
    throttle: crate::login::LoginThrottle,
    beat: NodeBeat,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // The look for dead nodes' claims runs beside the beats, one at a time: it uses the
    // store's main pool, which statements stuck behind a lock may fill, and the beat must not
    // wait for it (re-read of review s16 cluster F3).
    let mut orphans: Option<tokio::task::JoinHandle<()>> = None;
    // The lifted login blocks are read beside the beats too, one read at a time, each from
    // the number the last one ended at (None at first: start after the latest lift).
    let mut lifts: Option<tokio::task::JoinHandle<Option<i64>>> = None;
    let mut lifts_after: Option<i64> = None;
    loop {
        tick.tick().await;
        let (s, b) = (store.clone(), beat.clone());
        let result = tokio::task::spawn_blocking(move || s.heartbeat(&b))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        match result {
            Ok(()) => store.health().wrote(),
            Err(e) => {
                tracing::warn!("heartbeat not recorded: {e:#}");
                let failing = store.health().failed(&e);
                if crate::store::health::is_schema_newer(&e)
                    || crate::store::health::is_node_id_taken(&e)
                {
                    tracing::error!("stopping: {e:#}");
                    std::process::exit(1);
                }
                if store.is_embedded() && failing >= crate::store::health::EMBEDDED_GIVE_UP {
                    tracing::error!(
                        "the embedded store has failed every write for {} s ({e:#}); stopping so \
                         that a restart opens it again (claims are finished at the next start)",
                        failing.as_secs()
                    );
                    std::process::exit(1);
                }
            }
        }
        if lifts.as_ref().is_none_or(|t| t.is_finished()) {
            if let Some(done) = lifts.take() {
                lifts_after = done.await.unwrap_or(lifts_after);
            }
            let (throttle, after) = (throttle.clone(), lifts_after);
            lifts = Some(tokio::spawn(
                async move { throttle.apply_lifts(after).await },
            ));
        }
        if orphans.as_ref().is_none_or(|t| t.is_finished()) {
            let intake = intake.clone();
            orphans = Some(tokio::spawn(
                async move { intake.take_over_orphans().await },
            ));
        }
    }
}

/// `roster serve`: runs until SIGINT or SIGTERM (see `signals` for a signal during start-up
/// and a second one). Every stage of the stop is bounded; an error when the stop could not
/// flush the store or did not end within [`STOP_GRACE`] + [`STOP_SLACK`].
pub async fn run(path: &Path) -> anyhow::Result<()> {
    crate::private_files::set_private_umask();
    let signals = Signals::listen().context("cannot listen for SIGTERM, SIGINT and SIGHUP")?;
    let Some(server) = start_until(path, signals.stopping()).await? else {
        tracing::info!("stopped during start-up, before the intake started: nothing was imported");
        return Ok(());
    };
    signals.reload_if_asked(&server.sftp.config).await;
    let got = signals.wait().await;
    tracing::info!(
        signal = ?got,
        grace_secs = STOP_GRACE.as_secs(),
        "stopping: no new sessions, no new imports; waiting for running imports (a second \
         SIGTERM or SIGINT exits at once)"
    );
    let bound = STOP_GRACE + STOP_SLACK;
    match tokio::time::timeout(bound, server.finish(STOP_GRACE)).await {
        Ok(finished) => finished?,
        Err(_) => anyhow::bail!(
            "the stop did not end within {} s; exiting without waiting for the rest (claims \
             left are finished at the next start)",
            bound.as_secs()
        ),
    }
    tracing::info!("stopped");
    Ok(())
}
