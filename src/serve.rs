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
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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

impl RunningServer {
    /// Graceful stop: no new sessions, running imports finish (bounded), queued mail stays
    /// queued, and the node leaves the cluster (its row goes, its leases are released).
    pub async fn stop(self, grace: Duration) {
        self.admin.stop().await;
        self.sftp.stop().await;
        // Heartbeats go on while running imports finish, so no other node takes them over.
        self.intake.shutdown(grace).await;
        // Before the node leaves: the delivery tasks release their leases themselves.
        self.webhooks.stop(Duration::from_secs(15)).await;
        let push = self.scim_push;
        let _ = tokio::task::spawn_blocking(move || push.stop(Duration::from_secs(15))).await;
        // After the push: until then this node still pushes and must look alive.
        self.heartbeat.abort();
        let _ = self.heartbeat.await;
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.leave()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                "cannot leave the cluster (the others see this node's heartbeat expire): {e:#}"
            ),
            Err(e) => tracing::warn!("cannot leave the cluster: {e}"),
        }
        let _ = self.mail_stop.send(true);
        let _ = self.mail_task.await;
        if let Err(e) = self.store.flush() {
            tracing::error!("cannot flush the store: {e:#}");
        }
    }
}

/// Starts every stage on the config at `path`.
pub async fn start(path: &Path) -> anyhow::Result<RunningServer> {
    let config = Config::load_to_serve(path)?;
    let store = open_store(&config)?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<UploadFinished>();
    let sftp = start_sftp_with(path, config.clone(), Arc::new(tx), Some(store.clone())).await?;
    // The first heartbeat, before the intake starts: other nodes must see this one alive
    // before it takes any lease. The admin address is the configured one until it is bound.
    let mut beat = NodeBeat {
        sftp: sftp.addr.to_string(),
        admin: config.admin.listen.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: chrono::Utc::now(),
    };
    if let Err(e) = refuse_a_twin(&store, config.cluster.lease_secs).await {
        sftp.stop().await;
        return Err(e);
    }
    // No live twin: what an earlier process of this id staged is this node's to drop.
    let own = store.clone();
    let forgotten = tokio::task::spawn_blocking(move || own.forget_own_staging()).await;
    if let Err(e) = forgotten.map_err(anyhow::Error::from).and_then(|r| r) {
        sftp.stop().await;
        return Err(e.context("cannot drop what this node left staged"));
    }
    let first = store.clone();
    let first_beat = beat.clone();
    let recorded = tokio::task::spawn_blocking(move || first.heartbeat(&first_beat)).await;
    if let Err(e) = recorded.map_err(anyhow::Error::from).and_then(|r| r) {
        sftp.stop().await;
        return Err(e.context("cannot record this node's first heartbeat"));
    }
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
    let admin = match crate::admin::start(
        sftp.config.clone(),
        store.clone(),
        intake.clone(),
        sftp.throttle.clone(),
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            // Release what already runs (the store above all) before reporting.
            intake.shutdown(Duration::from_secs(5)).await;
            sftp.stop().await;
            let _ = mail_stop.send(true);
            let _ = mail_task.await;
            return Err(e);
        }
    };
    beat.admin = admin.addr.to_string();
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
    Ok(RunningServer {
        sftp,
        intake,
        store,
        admin,
        webhooks,
        mail_stop,
        mail_task,
        heartbeat,
        scim_push,
    })
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

/// `roster serve`: runs until SIGINT or SIGTERM.
pub async fn run(path: &Path) -> anyhow::Result<()> {
    crate::private_files::set_private_umask();
    let server = start(path).await?;
    wait_for_stop_signal().await;
    tracing::info!("stopping: no new sessions; waiting for running imports");
    server.stop(Duration::from_secs(120)).await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
