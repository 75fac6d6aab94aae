//! The delivery tasks of `roster serve`: one per tenant and endpoint in the config.
//!
//! Data enters as the live config (a [`ConfigHandle`], looked at again on every reload and
//! every [`POLL`]) and a wake-up (a watch the intake bumps when a run ends, so a commit goes
//! out at once). Each task runs [`EndpointDelivery::pass`] on a blocking thread and sleeps
//! until its next attempt, the next poll, or a wake-up. Each message is sent holding a permit
//! of its tenant ([`SENDING_PER_TENANT`]) and one of all ([`SENDING_AT_ONCE`]), taken for that
//! message only: slow endpoints of one tenant cannot hold every sending slot, and a slow
//! endpoint lets others send between its messages (review s15 F4). A task waits for its
//! first message's permits without a thread; a pass whose next message finds none free ends,
//! so blocking threads never wait for permits (at most [`SENDING_AT_ONCE`] send at once). A
//! task whose endpoint left the config (or whose url, secret or events changed: it is
//! restarted with the new ones) ends and releases its lease.

use super::endpoint::{Backoff, EndpointDelivery, PassOutcome};
use super::{send, EventSource};
use crate::config::{ConfigHandle, WebhookConfig};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

/// How often an idle endpoint looks at the event log (a wake-up comes sooner after an import).
pub const POLL: Duration = Duration::from_secs(2);
/// The longest wait after passes that failed on the store (it is down, or its delivery cursors
/// are not built yet); the wait doubles from [`POLL`] up to this.
pub const MAX_ERROR_WAIT: Duration = Duration::from_secs(60);
/// Deliveries in flight at once over all endpoints (each holds a blocking thread up to
/// `send::TIMEOUT`).
pub const SENDING_AT_ONCE: usize = 16;
/// Deliveries in flight at once for one tenant, over its endpoints.
pub const SENDING_PER_TENANT: usize = 4;

/// The running delivery tasks.
pub struct RunningWebhooks {
    stop: Arc<AtomicBool>,
    stop_tx: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningWebhooks {
    /// Stops every task between two messages (one in flight finishes or times out) and waits
    /// at most `grace`; leases are released.
    pub async fn stop(self, grace: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stop_tx.send(true);
        if tokio::time::timeout(grace, self.task).await.is_err() {
            tracing::warn!("webhook deliveries still running at stop; they resume on restart");
        }
    }
}

/// What every endpoint task shares.
#[derive(Clone)]
struct Shared {
    source: Arc<dyn EventSource>,
    config: ConfigHandle,
    wake: watch::Receiver<usize>,
    stop: Arc<AtomicBool>,
    stop_rx: watch::Receiver<bool>,
    sending: Arc<Semaphore>,
    /// Each tenant's sending permits (created on its first message).
    per_tenant: Arc<std::sync::Mutex<HashMap<String, Arc<Semaphore>>>>,
    agent: ureq::Agent,
}

/// Starts the tasks for every endpoint in `config`, following reloads, until stopped.
pub fn start(
    config: ConfigHandle,
    source: Arc<dyn EventSource>,
    wake: watch::Receiver<usize>,
) -> RunningWebhooks {
    let stop = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Shared {
        source,
        config,
        wake,
        stop: stop.clone(),
        stop_rx,
        sending: Arc::new(Semaphore::new(SENDING_AT_ONCE)),
        per_tenant: Arc::default(),
        agent: send::agent(send::TIMEOUT),
    };
    let task = tokio::spawn(supervise(shared));
    RunningWebhooks {
        stop,
        stop_tx,
        task,
    }
}

/// Keeps one task per tenant and endpoint URL with the endpoint's current config. A task
/// whose config changed or left ends by itself (it looks after every reload); its successor
/// starts only once it has ended, so one endpoint never has two deliveries at once.
async fn supervise(shared: Shared) {
    let mut reloads = shared.config.subscribe();
    let mut stop_rx = shared.stop_rx.clone();
    let mut tasks: HashMap<(String, String), JoinHandle<()>> = HashMap::new();
    loop {
        let config = shared.config.current();
        tasks.retain(|_, task| !task.is_finished());
        for tenant in &config.tenants {
            for hook in &tenant.webhooks {
                let key = (tenant.id.clone(), hook.url.clone());
                if tasks.contains_key(&key) {
                    continue; // running with this config, or ending: its successor waits
                }
                let task = tokio::spawn(endpoint_task(shared.clone(), key.0.clone(), hook.clone()));
                tasks.insert(key, task);
            }
        }
        tokio::select! {
            _ = reloads.changed() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = stop_rx.wait_for(|s| *s) => break,
        }
    }
    for (_, task) in tasks {
        let _ = task.await;
    }
}

/// Whether `hook` of `tenant` is still in the current config, exactly as given.
fn still_configured(config: &ConfigHandle, tenant: &str, hook: &WebhookConfig) -> bool {
    config
        .current()
        .tenant(tenant)
        .is_some_and(|t| t.webhooks.contains(hook))
}

/// Delivers to one endpoint until the config drops it or the server stops.
async fn endpoint_task(shared: Shared, tenant: String, hook: WebhookConfig) {
    let url = super::shown_url(&hook.url);
    let delivery = match EndpointDelivery::new(&tenant, hook.clone(), shared.agent.clone()) {
        Ok(d) => Arc::new(d),
        Err(why) => {
            tracing::error!(%tenant, %url, "webhook endpoint not started: its secret {why}");
            return;
        }
    };
    let mut wake = shared.wake.clone();
    let mut stop_rx = shared.stop_rx.clone();
    let mut reloads = shared.config.subscribe();
    let mut failed_passes = 0u32;
    while !shared.stop.load(Ordering::Relaxed) && still_configured(&shared.config, &tenant, &hook) {
        let outcome = run_pass(&shared, &delivery).await;
        failed_passes = if outcome.is_err() {
            failed_passes.saturating_add(1)
        } else {
            0
        };
        let wait = match outcome {
            Ok(PassOutcome::More) => continue,
            Ok(PassOutcome::WaitUntil(at)) => (at - Utc::now()).to_std().unwrap_or_default(),
            Ok(PassOutcome::Stopped) => break,
            Ok(PassOutcome::CaughtUp | PassOutcome::Disabled | PassOutcome::OtherNode) => POLL,
            Err(e) => {
                tracing::warn!(%tenant, %url, "webhook delivery pass failed: {e:#}");
                Backoff {
                    first: POLL,
                    max: MAX_ERROR_WAIT,
                }
                .delay(failed_passes)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.changed() => {}
            _ = reloads.changed() => {}
            _ = stop_rx.wait_for(|s| *s) => break,
        }
    }
    let (source, lease) = (shared.source.clone(), delivery.lease().to_string());
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || source.release_lease(&lease)).await {
        tracing::warn!(%tenant, %url, "cannot release the webhook lease: {e:#}");
    }
}

/// One pass on a blocking thread; each message takes its tenant's and a global permit.
async fn run_pass(
    shared: &Shared,
    delivery: &Arc<EndpointDelivery>,
) -> anyhow::Result<PassOutcome> {
    let tenant = shared
        .per_tenant
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(delivery.tenant.clone())
        .or_insert_with(|| Arc::new(Semaphore::new(SENDING_PER_TENANT)))
        .clone();
    let all = shared.sending.clone();
    // The first message's permits are waited for here, without a thread; tenant first, then
    // all, always in this order (no two tasks wait on each other). Later messages of the pass
    // take them only if they are free at once, else the pass ends and the task comes back here
    // (re-read of s15: a pass parked on a blocking thread per waiting endpoint could fill
    // tokio's blocking pool).
    let first = {
        let mine = tenant.clone().acquire_owned().await?;
        let any = all.clone().acquire_owned().await?;
        std::sync::Mutex::new(Some((mine, any)))
    };
    let (source, delivery, stop) = (shared.source.clone(), delivery.clone(), shared.stop.clone());
    let config = shared.config.clone();
    tokio::task::spawn_blocking(move || {
        // An endpoint a reload removed or changed gets no further message of this pass
        // (audit s22: up to a batch of 100 still went to a removed URL), nor passes over
        // another event under its old subscription (reviewer s28).
        let current = || still_configured(&config, &delivery.tenant, &delivery.hook);
        let permit = || -> Option<Box<dyn Send>> {
            let given = first.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(both) = given {
                return Some(Box::new(both));
            }
            let mine = tenant.clone().try_acquire_owned().ok()?;
            let any = all.clone().try_acquire_owned().ok()?;
            Some(Box::new((mine, any)))
        };
        delivery.pass_gated(source.as_ref(), &stop, &current, &permit)
    })
    .await?
}
