//! The SCIM push worker of `roster serve`: one thread that pushes, for each tenant with
//! `[tenants.scim_push]`, its change log to its application.
//!
//! The config enters through the [`ConfigHandle`] (read each round, so a reload adds, changes
//! or stops a tenant's push); changes and users enter from the [`Store`]. With several nodes on
//! one store, a node pushes a tenant only while it holds the store lease `scim-push:<tenant>`.
//! A round pushes at most [`BATCHES_PER_ROUND`] batches per tenant, so one busy tenant does not
//! starve the others; the thread sleeps [`IDLE`] when no tenant had work.

use super::push::{Batch, Pusher, StoreSource};
use crate::config::{ConfigHandle, ScimPushConfig};
use crate::store::Store;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Batches per tenant per round.
pub const BATCHES_PER_ROUND: usize = 8;
/// Pause between rounds without work.
pub const IDLE: Duration = Duration::from_millis(500);

/// The running worker; [`stop`](Self::stop) ends it after its current batch.
pub struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Starts the worker thread.
    pub fn start(config: ConfigHandle, store: Store) -> Worker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("scim-push".into())
            .spawn(move || run(config, store, flag))
            .map_err(|e| tracing::error!("cannot start the SCIM push thread: {e}"))
            .ok();
        Worker { stop, thread }
    }

    /// Stops the worker and waits for its thread (at most one batch).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(config: ConfigHandle, store: Store, stop: Arc<AtomicBool>) {
    let mut pushers: HashMap<String, (ScimPushConfig, Pusher)> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let current = config.current();
        let wanted: Vec<(String, ScimPushConfig)> = current
            .tenants
            .iter()
            .filter_map(|t| t.scim_push.clone().map(|p| (t.id.clone(), p)))
            .collect();
        pushers.retain(|t, _| wanted.iter().any(|(w, _)| w == t));
        let mut busy = false;
        for (tenant, push) in wanted {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            busy |= round(&store, &tenant, &push, &mut pushers);
        }
        if !busy {
            std::thread::sleep(IDLE);
        }
    }
}

/// One tenant's turn; true when it pushed something.
fn round(
    store: &Store,
    tenant: &str,
    push: &ScimPushConfig,
    pushers: &mut HashMap<String, (ScimPushConfig, Pusher)>,
) -> bool {
    let lease = format!("scim-push:{tenant}");
    match store.take_lease(&lease) {
        Ok(Some(_)) => {}
        Ok(None) => {
            // Another node pushes this tenant now: when the lease comes back, a new pusher
            // starts from the store's saved failing users, not from this node's old ones.
            if pushers.remove(tenant).is_some() {
                super::status::forget_failing(tenant);
            }
            return false;
        }
        Err(e) => {
            tracing::warn!(tenant, "SCIM push: cannot take the lease {lease}: {e:#}");
            return false;
        }
    }
    if pushers.get(tenant).is_none_or(|(c, _)| c != push) {
        match Pusher::new(tenant, push) {
            Ok(p) => {
                pushers.insert(tenant.to_string(), (push.clone(), p));
            }
            Err(e) => {
                tracing::warn!(tenant, "SCIM push stopped: {e}");
                pushers.remove(tenant);
                return false;
            }
        }
    }
    let Some((_, pusher)) = pushers.get(tenant) else {
        return false;
    };
    let src = StoreSource {
        store: store.clone(),
        tenant: tenant.to_string(),
    };
    match pusher.drain(&src, BATCHES_PER_ROUND) {
        Ok(Batch::Pushed { .. }) => true,
        Ok(_) => false,
        Err(e) => {
            tracing::warn!(tenant, "SCIM push: the store failed: {e:#}");
            false
        }
    }
}
