//! The SCIM push worker of `roster serve`: one thread per tenant with `[tenants.scim_push]`,
//! each pushing its tenant's change log to its application, so a slow application delays only
//! its own tenant (review s15 F1), and a supervisor thread that keeps one such thread per
//! configured tenant.
//!
//! The config enters through the [`ConfigHandle`] (looked at every [`IDLE`], so a reload adds,
//! changes or stops a tenant's push: a changed or removed push ends its thread, and the new
//! one starts only after the old one ended); changes and users enter from the [`Store`]. With
//! several nodes on one store, a node pushes a tenant only while it holds the store lease
//! `scim-push:<tenant>`. A tenant thread runs at most [`BATCHES_PER_ROUND`] batches before it
//! looks at the lease again, and sleeps [`IDLE`] when it had no work. It starts no user later
//! than half of `[cluster] lease_secs` after it last took the lease: a node that froze (a
//! pause, a stalled disk) and whose lease another node took meanwhile does not push stale
//! changes when it wakes (review s27). A stop is seen before
//! each user (the one in flight finishes or times out), and [`Worker::stop`] waits at most its
//! grace. A push that cannot start (its `token_env` unset) says why in the status, and logs it
//! once per change.

use super::push::{Batch, LeaseFence, Pusher, StoreSource};
use crate::config::{ConfigHandle, ScimPushConfig};
use crate::store::Store;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Batches per tenant between two looks at the lease and the config.
pub const BATCHES_PER_ROUND: usize = 8;
/// Pause between rounds without work.
pub const IDLE: Duration = Duration::from_millis(500);
/// Sleeps are cut in steps this long to see a stop.
const STEP: Duration = Duration::from_millis(100);

/// The running worker; [`stop`](Self::stop) ends it before the next user of each tenant.
pub struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the supervisor thread (which starts the tenants' threads).
    pub fn start(config: ConfigHandle, store: Store) -> Worker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("scim-push".into())
            .spawn(move || supervise(config, store, flag))
            .map_err(|e| tracing::error!("cannot start the SCIM push thread: {e}"))
            .ok();
        Worker { stop, thread }
    }

    /// Stops every tenant's push and waits at most `grace` (a request in flight finishes or
    /// times out); what is left resumes from the cursor on the next start.
    pub fn stop(mut self, grace: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let Some(t) = self.thread.take() else { return };
        let until = Instant::now() + grace;
        while !t.is_finished() {
            if Instant::now() >= until {
                tracing::warn!(
                    "SCIM push still running at stop; it resumes from its cursor on restart"
                );
                return;
            }
            std::thread::sleep(STEP.min(grace));
        }
        let _ = t.join();
    }
}

/// One tenant's running push.
struct TenantThread {
    config: ScimPushConfig,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// Keeps one thread per tenant with `[tenants.scim_push]`, as the config now says.
fn supervise(config: ConfigHandle, store: Store, stop: Arc<AtomicBool>) {
    let mut running: HashMap<String, TenantThread> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let current = config.current();
        let wanted: HashMap<&str, &ScimPushConfig> = (current.tenants.iter())
            .filter_map(|t| t.scim_push.as_ref().map(|p| (t.id.as_str(), p)))
            .collect();
        // Changed or removed: told to end; replaced once it has ended.
        for (tenant, t) in &running {
            if wanted.get(tenant.as_str()) != Some(&&t.config) {
                t.stop.store(true, Ordering::Relaxed);
            }
        }
        running.retain(|tenant, t| {
            let ended = t.thread.is_finished();
            if ended && !wanted.contains_key(tenant.as_str()) {
                super::status::set_stopped(tenant, None);
            }
            !ended
        });
        for (tenant, push) in wanted {
            if running.contains_key(tenant) {
                continue;
            }
            let held_for = Duration::from_secs(current.cluster.lease_secs) / 2;
            if let Some(t) = spawn_tenant(&store, tenant, push, &stop, held_for) {
                running.insert(tenant.to_string(), t);
            }
        }
        sleep_unless(&stop, IDLE);
    }
    for (_, t) in running {
        t.stop.store(true, Ordering::Relaxed);
        let _ = t.thread.join();
    }
}

fn spawn_tenant(
    store: &Store,
    tenant: &str,
    push: &ScimPushConfig,
    all: &Arc<AtomicBool>,
    held_for: Duration,
) -> Option<TenantThread> {
    let own = Arc::new(AtomicBool::new(false));
    let stop = Stop {
        own: own.clone(),
        all: all.clone(),
    };
    let (store, name, config) = (store.clone(), tenant.to_string(), push.clone());
    let thread = std::thread::Builder::new()
        .name(format!("scim-push {tenant}"))
        .spawn(move || run_tenant(store, name, config, stop, held_for))
        .map_err(|e| tracing::error!(tenant, "cannot start the SCIM push thread: {e}"))
        .ok()?;
    Some(TenantThread {
        config: push.clone(),
        stop: own,
        thread,
    })
}

/// A tenant thread's stop: its own (its push changed or left) or the server's.
#[derive(Clone)]
struct Stop {
    own: Arc<AtomicBool>,
    all: Arc<AtomicBool>,
}

impl Stop {
    fn raised(&self) -> bool {
        self.own.load(Ordering::Relaxed) || self.all.load(Ordering::Relaxed)
    }

    /// Sleeps `d`, or less when the stop is raised meanwhile.
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.raised() && Instant::now() < until {
            std::thread::sleep(STEP);
        }
    }
}

fn sleep_unless(stop: &Arc<AtomicBool>, d: Duration) {
    Stop {
        own: stop.clone(),
        all: stop.clone(),
    }
    .sleep(d)
}

/// A pusher for the tenant; when it cannot be made (`token_env` unset), None, the reason in
/// the status, and a warning when the reason differs from the last one `said`.
fn build(
    tenant: &str,
    push: &ScimPushConfig,
    stop: &Stop,
    said: &mut Option<String>,
) -> Option<Pusher> {
    match Pusher::new(tenant, push) {
        Ok(p) => {
            if said.take().is_some() {
                tracing::info!(tenant, "SCIM push started");
            }
            super::status::set_stopped(tenant, None);
            Some(p.with_stop(vec![stop.own.clone(), stop.all.clone()]))
        }
        Err(e) => {
            let why = format!("SCIM push stopped: {e}");
            if said.as_deref() != Some(why.as_str()) {
                tracing::warn!(tenant, "{why}");
            }
            super::status::set_stopped(tenant, Some(why.clone()));
            *said = Some(why);
            None
        }
    }
}

/// Pushes one tenant until its push changes, leaves the config, or the server stops; each
/// time the lease is taken, the pusher may start users for `held_for` more (a lease is lost
/// when the node's heartbeat is `lease_secs` old, and heartbeats come every third of that).
fn run_tenant(store: Store, tenant: String, push: ScimPushConfig, stop: Stop, held_for: Duration) {
    let lease = format!("scim-push:{tenant}");
    let src = StoreSource {
        store: store.clone(),
        tenant: tenant.clone(),
        lease: Some(LeaseFence {
            name: lease.clone(),
            fencing: AtomicU64::new(0),
        }),
    };
    let mut pusher: Option<Pusher> = None;
    let mut said = None;
    let mut holding = false;
    while !stop.raised() {
        if pusher.is_none() {
            pusher = build(&tenant, &push, &stop, &mut said);
        }
        let Some(p) = &pusher else {
            stop.sleep(IDLE);
            continue;
        };
        let busy = match store.take_lease(&lease) {
            Ok(Some(fencing)) => {
                if let Some(fence) = &src.lease {
                    fence.fencing.store(fencing, Ordering::Release);
                }
                holding = true;
                p.hold_until(Instant::now() + held_for);
                round(p, &src, &stop)
            }
            Ok(None) => {
                // Another node pushes this tenant now: when the lease comes back, a new pusher
                // starts from the store's saved failing users, not from this node's old ones.
                if holding {
                    super::status::forget_failing(&tenant);
                    pusher = None;
                    holding = false;
                }
                false
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant, "SCIM push: cannot take the lease {lease}: {e:#}");
                false
            }
        };
        if !busy {
            stop.sleep(IDLE);
        }
    }
    if holding {
        if let Err(e) = store.release_lease(&lease) {
            tracing::warn!(tenant = %tenant, "SCIM push: cannot release the lease {lease}: {e:#}");
        }
    }
}

/// Up to [`BATCHES_PER_ROUND`] batches; true when something was pushed.
fn round(pusher: &Pusher, src: &StoreSource, stop: &Stop) -> bool {
    let mut busy = false;
    for _ in 0..BATCHES_PER_ROUND {
        if stop.raised() {
            break;
        }
        match pusher.run_batch(src, chrono::Utc::now()) {
            Ok(Batch::Pushed { .. }) => busy = true,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(tenant = %src.tenant, "SCIM push: the store failed: {e:#}");
                break;
            }
        }
    }
    busy
}
