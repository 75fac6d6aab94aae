//! The intake: decides *when* a file is imported, and runs each import once.
//!
//! Triggers enter as [`UploadFinished`] events from the SFTP server, folder-watch events
//! (files copied in locally or written through `roster sftp-server`), cron schedules, `run-now`,
//! and a start-up scan (see `triggers`). After a short settle time each becomes a request to
//! import one file name of one tenant, put on that tenant's queue: one worker per tenant
//! (`worker`) runs its requests one at a time in arrival order, and a semaphore bounds how
//! many tenants import at once (the number of cores). A request for a name already waiting is merged into it, so
//! several sessions or triggers never start two imports of one file. Approving a held run (the
//! admin API's `approve`) is a request on the same queue, so every import that changes a
//! directory runs here, one per tenant at a time. Each run (see `run`)
//! leaves a history record, an archived file and a queued mail. A run starts by claiming its
//! file (`claim`); every step in a tenant home goes through folder handles that never follow a
//! link (`nofollow`); leftovers of a killed process are cleaned at start (`cleanup`). Each
//! request that imports holds the tenant's store lease (`lease`), so on several nodes sharing
//! one store and data folder a tenant's imports still run one at a time, and the claims of a
//! node that died are finished by another.
//!
//! Which files qualify: directly in the tenant root, matching the tenant's `file` pattern, not a
//! temp name, and not marked as an unfinished upload by the SFTP server. Tenants with
//! `trigger = "schedule"` are imported only when their schedule fires (or on `run-now`).

pub mod archive;
mod claim;
mod cleanup;
mod lease;
pub(crate) mod nofollow;
pub mod pattern;
mod ready;
mod retry;
mod run;
mod run_mail;
mod schedules;
mod superseded;
mod tick_watch;
mod triggers;
mod worker;
// the web console's overview shows each tenant's next scheduled run (h-console-runs)
pub use ready::candidates;
use ready::qualifies;
pub use schedules::next_fire;

use crate::config::{ConfigHandle, Tenant, Trigger};
use crate::model::{ImportRecord, ImportStatus, User};
use crate::sftp::{InProgress, UploadFinished};
use crate::store::Store;
use pattern::FilePattern;
use retry::{store_answers, with_retries};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, Notify, Semaphore};

/// The import a tenant is running now (for the admin API's progress view).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunProgress {
    pub file: String,
    /// Size of the file.
    pub bytes: u64,
    /// Rows read so far (updated every few thousand rows).
    pub rows_read: u64,
    pub started_at: chrono::DateTime<chrono::Utc>,
}

type ProgressMap = Arc<Mutex<HashMap<String, RunProgress>>>;

fn set_progress(map: &ProgressMap, tenant: &str, p: Option<RunProgress>) {
    let mut m = map.lock().unwrap_or_else(PoisonError::into_inner);
    match p {
        Some(p) => {
            m.insert(tenant.to_string(), p);
        }
        None => {
            m.remove(tenant);
        }
    }
}

/// What the intake shares between its tasks.
pub struct Shared {
    pub config: ConfigHandle,
    pub store: Store,
    pub mail_wake: Arc<Notify>,
    permits: Arc<Semaphore>,
    queues: Mutex<HashMap<String, TenantQueue>>,
    running: tokio::sync::watch::Sender<usize>,
    stopping: std::sync::atomic::AtomicBool,
    progress: ProgressMap,
    /// Every task the intake started, ended at shutdown so the store is released.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Claim ids this process made or gave up on: recovery leaves them alone (see `lease`).
    settled: Mutex<HashSet<String>>,
    /// Files waiting out `settle_ms` before they are asked for, by (tenant, name), and whether
    /// more events came meanwhile: one waiting task per file however many events it gets
    /// (`triggers::settle_then_request`).
    settling: Mutex<HashMap<(String, String), bool>>,
}

#[derive(Clone)]
struct TenantQueue {
    tx: mpsc::UnboundedSender<Request>,
    waiting: Arc<Mutex<HashSet<String>>>,
}

/// One request on a tenant's queue.
enum Request {
    /// Import this file of the tenant root, if it still qualifies.
    File(String),
    /// Finish the tenant's claim folders left by an earlier process or by a node that stopped
    /// or died (under the tenant's lease; see `lease`).
    Recover,
    /// Ask for each file the tenant's folder holds now (queued once instead of more names
    /// than [`MAX_WAITING_FILES`]).
    Look,
    /// A schedule fired at this tick: import what is there, or record `missing` unless a file
    /// came and was run since the tick before.
    Scheduled(chrono::DateTime<chrono::Utc>),
    /// `run-now`: import what is there now; answer with the records, or why nothing ran.
    Now(tokio::sync::oneshot::Sender<Result<Vec<ImportRecord>, String>>),
    /// `approve`: apply this held run; answer with its record, or why it was not applied.
    Approve(
        String,
        tokio::sync::oneshot::Sender<anyhow::Result<ImportRecord>>,
    ),
    /// `restore`: bring this user back; answer with the user, or why not. On the queue like
    /// every write of the directory, so it never lands in the middle of an import's run (which
    /// then failed its commit and waited a minute: review s15).
    Restore(String, tokio::sync::oneshot::Sender<anyhow::Result<User>>),
}

/// The running intake. Cloning is cheap.
#[derive(Clone)]
pub struct Intake {
    shared: Arc<Shared>,
}

impl Intake {
    /// Starts the intake: the upload-event consumer, folder watcher, schedules, the start-up
    /// recovery and the daily retention sweep.
    pub fn start(
        config: ConfigHandle,
        store: Store,
        uploads: mpsc::UnboundedReceiver<UploadFinished>,
        mail_wake: Arc<Notify>,
    ) -> Intake {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let (running, _) = tokio::sync::watch::channel(0);
        let intake = Intake {
            shared: Arc::new(Shared {
                config,
                store,
                mail_wake,
                permits: Arc::new(Semaphore::new(cores)),
                queues: Mutex::new(HashMap::new()),
                running,
                stopping: std::sync::atomic::AtomicBool::new(false),
                tasks: Mutex::new(Vec::new()),
                progress: Arc::new(Mutex::new(HashMap::new())),
                settled: Mutex::new(HashSet::new()),
                settling: Mutex::new(HashMap::new()),
            }),
        };
        triggers::start(intake.clone(), uploads);
        intake
    }

    /// Spawns a task that ends with the intake.
    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(fut).abort_handle();
        let mut tasks = self
            .shared
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Finished tasks are dropped when the list would grow, not on every spawn: a spawn
        // costs the same however many tasks run (review s21: each one looked at all of them).
        if tasks.len() == tasks.capacity() {
            tasks.retain(|h| !h.is_finished());
        }
        tasks.push(handle);
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The tenant's queue, with its worker. A worker that ended while the intake runs (a panic
    /// in it: it ends only when the intake stops) is started again, and its first request is a
    /// look at the folder, since what its queue held is gone (review s26: the tenant stopped
    /// importing in silence, every request sent to a closed queue).
    fn queue(&self, tenant: &str) -> TenantQueue {
        let mut map = self
            .shared
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let dead = map
            .get(tenant)
            .is_some_and(|q| q.tx.is_closed() && !self.stopping());
        if dead {
            tracing::error!(%tenant, "the tenant's intake worker had stopped; starting a new one, which looks at the folder first");
            map.remove(tenant);
        }
        let q = map
            .entry(tenant.to_string())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let q = TenantQueue {
                    tx,
                    waiting: Arc::new(Mutex::new(HashSet::new())),
                };
                self.spawn(worker::worker(
                    self.clone(),
                    tenant.to_string(),
                    rx,
                    q.waiting.clone(),
                ));
                q
            })
            .clone();
        if dead && lock(&q.waiting).insert(LOOK_KEY.to_string()) {
            let _ = q.tx.send(Request::Look);
        }
        q
    }

    /// Asks for `name` of `tenant` to be imported (merged with a request already waiting).
    /// Past [`MAX_WAITING_FILES`] names waiting, the name is not kept: one look at the folder,
    /// queued behind them, asks for what is there then (a client creating and removing
    /// thousands of names while an import runs must not grow the queue).
    pub fn request_file(&self, tenant: &str, name: &str) {
        let q = self.queue(tenant);
        let mut waiting = lock(&q.waiting);
        if waiting.contains(name) {
            return;
        }
        let (key, req) = if waiting.len() < MAX_WAITING_FILES {
            (name, Request::File(name.to_string()))
        } else {
            (LOOK_KEY, Request::Look)
        };
        if waiting.insert(key.to_string()) {
            let _ = q.tx.send(req);
        }
    }

    /// Asks for the tenant's claim folders to be finished (merged with a request waiting).
    fn request_recover(&self, tenant: &str) {
        let q = self.queue(tenant);
        let fresh = q
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(RECOVER_KEY.to_string());
        if fresh {
            let _ = q.tx.send(Request::Recover);
        }
    }

    fn request(&self, tenant: &str, r: Request) {
        let _ = self.queue(tenant).tx.send(r);
    }

    /// Imports the tenant's current file(s) now, after whatever is queued; returns the records
    /// (none: no file was waiting), or a sentence saying why the request did not run (the
    /// tenant's lease could not be taken, no waiting file's run finished, the intake is
    /// stopping), never an empty list for a run that did not happen (review s27).
    pub async fn run_now(&self, tenant: &str) -> Result<Vec<ImportRecord>, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.request(tenant, Request::Now(tx));
        rx.await.unwrap_or_else(|_| {
            Err(format!(
                "run-now did not run for tenant {tenant}: the intake is stopping or the tenant was removed"
            ))
        })
    }

    /// Applies the held run `import_id` of the tenant, after whatever is queued (like every
    /// import: on the tenant's queue, under the import semaphore). `None` when the request was
    /// dropped unrun (the intake is stopping, or the tenant is no longer configured).
    pub async fn approve(
        &self,
        tenant: &str,
        import_id: &str,
    ) -> Option<anyhow::Result<ImportRecord>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.request(tenant, Request::Approve(import_id.to_string(), tx));
        rx.await.ok()
    }

    /// Restores user `key` of `tenant` on the tenant's queue (see [`Request::Restore`]); None
    /// when the intake is stopping or the tenant was removed.
    pub async fn restore(&self, tenant: &str, key: &str) -> Option<anyhow::Result<User>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.request(tenant, Request::Restore(key.to_string(), tx));
        rx.await.ok()
    }

    /// The imports running now, by tenant.
    pub fn progress(&self) -> HashMap<String, RunProgress> {
        self.shared
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The number of imports running, changed whenever one starts or ends: delivery workers
    /// (webhooks) wake on it to send what a run committed at once.
    pub fn runs(&self) -> tokio::sync::watch::Receiver<usize> {
        self.shared.running.subscribe()
    }

    /// Stops taking new work, first of all at a stop (review s30): no import starts after
    /// this, and the requests waiting (for the store to answer, for the tenant's lease, between
    /// attempts of a failed run) give up at their next look, so `run-now`, `approve` and
    /// `restore` waiting on them are answered "the intake is stopping". Imports running now go
    /// on; [`Intake::shutdown`] waits for them.
    pub fn stop_taking_work(&self) {
        self.shared
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops taking new work and waits (at most `grace`) for running imports to finish. False
    /// when some were still running: their threads cannot be stopped from here, their claims
    /// stay (finished at the next start), and the process exits without waiting for them.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.stop_taking_work();
        let mut rx = self.shared.running.subscribe();
        let idle = async {
            while *rx.borrow_and_update() > 0 {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        };
        let finished = tokio::time::timeout(grace, idle).await.is_ok();
        if !finished {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "imports still running after the grace period: not waiting for them; each is \
                 cut off when the process exits, leaves nothing half-applied, and is finished \
                 from its claim at the next start"
            );
        }
        let tasks = std::mem::take(
            &mut *self
                .shared
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for t in tasks {
            t.abort();
        }
        self.shared
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        // Aborted tasks drop their state on their next poll: wait (briefly) until only this
        // handle holds the intake, so the store is released when the caller drops it.
        for _ in 0..100 {
            if Arc::strong_count(&self.shared) <= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        finished
    }

    fn stopping(&self) -> bool {
        self.shared
            .stopping
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// True when uploads (and folder events) of this tenant start imports.
fn on_upload(t: &Tenant) -> bool {
    matches!(t.import.trigger, Trigger::Upload | Trigger::Both)
}

/// `m` locked; a panic that poisoned it left nothing half-done that these maps care about.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `waiting` entry of a queued [`Request::Recover`] (no file name holds a NUL).
const RECOVER_KEY: &str = "\0recover";
/// The `waiting` entry of a queued [`Request::Look`].
const LOOK_KEY: &str = "\0look";
/// File names one tenant's queue keeps waiting; see [`Intake::request_file`].
pub const MAX_WAITING_FILES: usize = 1024;
