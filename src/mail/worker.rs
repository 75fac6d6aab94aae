//! The delivery worker: takes due messages from the outbox and sends them, with backoff.
//!
//! Enters: messages through the [`MailQueue`] trait (implemented by the store's durable outbox;
//! this module never touches storage itself), a wake-up [`Notify`] poked when a message is
//! queued, and a shutdown future. Leaves: one call back into the queue per message — `mark_sent`,
//! `defer` (with the next attempt time from [`Backoff`]) or `give_up` — and one log line per
//! outcome carrying the tenant and subject. Without `[mail]`, "sending" means writing an `.eml`
//! file into the outbox folder.
//!
//! The server's worker ([`Worker::live`]) reads `[mail]` from the [`ConfigHandle`] at the start
//! of each pass, so a reload that fixes `smtp_url` (or adds or removes `[mail]`) applies to the
//! next attempt of every queued message; a reload also wakes the worker.

use super::deliver::{deliver_while_ours, write_eml, DeliveryError, SMTP_TIMEOUT};
use super::OutgoingMail;
use crate::config::{ConfigHandle, MailConfig};
use chrono::{DateTime, Utc};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// A message taken from the outbox for one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMail {
    /// The outbox's own key for the message.
    pub id: u64,
    pub mail: OutgoingMail,
    /// Failed attempts so far (0 for a new message).
    pub attempts: u32,
}

/// The durable outbox as the worker sees it. The store implements it; tests use a `Vec`.
///
/// Contract: a message stays in the queue until `mark_sent` or `give_up` is called for it, so a
/// crash between taking and settling it means it is sent again after restart (at least once).
/// Methods are called from async code and should return quickly (an embedded-db call is fine).
pub trait MailQueue: Send + Sync {
    /// Pending messages whose next attempt time is at or before `now`, oldest first.
    fn due(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<QueuedMail>>;
    /// Just before a message is sent: true when this worker may still send it (its node's
    /// claim renewed), false when another node took it in the meantime or it is gone.
    fn still_ours(&self, id: u64) -> anyhow::Result<bool>;
    /// The message was accepted by the SMTP server (or written as `.eml`): remove it.
    fn mark_sent(&self, id: u64) -> anyhow::Result<()>;
    /// The attempt failed but may succeed later: store `attempts` (the new failure count), do
    /// not offer the message again before `next_at`, and keep `last_error` for operators.
    fn defer(
        &self,
        id: u64,
        attempts: u32,
        next_at: DateTime<Utc>,
        last_error: &str,
    ) -> anyhow::Result<()>;
    /// The message is given up (refused for good, or still failing after every attempt, as
    /// `reason` says): stop trying and keep `reason` (the message may
    /// be kept as dead for inspection or removed; the worker never offers it again either way).
    fn give_up(&self, id: u64, reason: &str) -> anyhow::Result<()>;
    /// Some recipients have the message: later attempts go to `recipients` only.
    fn narrow(&self, id: u64, recipients: &[String]) -> anyhow::Result<()>;
}

/// Exponential backoff: `first` after the first failure, doubling, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// 5 s, 10 s, 20 s, ... capped at 15 min.
    pub const DEFAULT: Backoff = Backoff {
        first: Duration::from_secs(5),
        max: Duration::from_secs(15 * 60),
    };

    /// The wait before the next attempt after `attempts` failed attempts (0 → no wait).
    pub fn delay(&self, attempts: u32) -> Duration {
        if attempts == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(attempts - 1).unwrap_or(u32::MAX);
        self.first
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::DEFAULT
    }
}

/// Failed attempts after which a message that keeps failing for a reason that may pass (SMTP
/// down, a 4xx answer) is given up: about three days of trying with the default backoff (eight
/// attempts in the first 21 minutes, then one every 15 minutes). Without a bound a relay down
/// for good, or a mailbox that stays full, kept every report in the outbox for ever (review of
/// 2026-11-30, config F5). The import's report stays in the tenant's `errors/` folder.
pub const MAX_ATTEMPTS: u32 = 300;

/// The waits before trying again a failed `mark_sent` or `narrow` after a delivery.
const SETTLE_RETRIES: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// The default schedule: the wait after `attempts` failed attempts (5 s doubling, ≤ 15 min).
pub fn next_attempt(attempts: u32) -> Duration {
    Backoff::DEFAULT.delay(attempts)
}

/// What one pass over the due messages did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepReport {
    pub sent: usize,
    pub deferred: usize,
    pub given_up: usize,
    /// The earliest `next_at` among the messages deferred in this pass.
    pub next_due: Option<DateTime<Utc>>,
}

/// The delivery worker. Build with [`Worker::new`], adjust, then [`Worker::run`] it (or call
/// [`Worker::step`] yourself).
pub struct Worker {
    queue: Arc<dyn MailQueue>,
    mail: MailSource,
    outbox_dir: PathBuf,
    backoff: Backoff,
    smtp_timeout: Duration,
    poll_interval: Duration,
    max_attempts: u32,
}

/// Where the worker finds `[mail]`.
enum MailSource {
    /// Fixed when the worker was built.
    Fixed(Option<MailConfig>),
    /// The config in force at each pass.
    Live(ConfigHandle),
}

impl Worker {
    /// `mail` is the `[mail]` section (None: write `.eml` files into `outbox_dir`).
    pub fn new(queue: Arc<dyn MailQueue>, mail: Option<MailConfig>, outbox_dir: PathBuf) -> Self {
        Worker::with_source(queue, MailSource::Fixed(mail), outbox_dir)
    }

    /// A worker that takes `[mail]` from the config in force at each pass (and is woken by
    /// each reload): what `roster serve` runs.
    pub fn live(queue: Arc<dyn MailQueue>, config: ConfigHandle, outbox_dir: PathBuf) -> Self {
        Worker::with_source(queue, MailSource::Live(config), outbox_dir)
    }

    fn with_source(queue: Arc<dyn MailQueue>, mail: MailSource, outbox_dir: PathBuf) -> Self {
        Worker {
            queue,
            mail,
            outbox_dir,
            backoff: Backoff::DEFAULT,
            smtp_timeout: SMTP_TIMEOUT,
            poll_interval: Duration::from_secs(30),
            max_attempts: MAX_ATTEMPTS,
        }
    }

    /// Failed attempts after which a message is given up ([`MAX_ATTEMPTS`] by default).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn smtp_timeout(mut self, timeout: Duration) -> Self {
        self.smtp_timeout = timeout;
        self
    }

    /// Longest sleep between passes when nothing wakes the worker (catches messages deferred
    /// before a restart, whose times this worker does not know). Default 30 s.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Loops until `shutdown` completes: a pass over due messages, then sleep until `wake` is
    /// notified, the earliest deferred message is due, or the poll interval passes. Shutdown is
    /// checked between messages; a delivery already under way finishes (bounded by the SMTP
    /// timeout) so that a message the server accepted is also marked sent.
    pub async fn run(self, wake: Arc<Notify>, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        tracing::info!(
            smtp = self.mail_config().is_some(),
            outbox = %self.outbox_dir.display(),
            "mail delivery worker started"
        );
        let mut reloads = match &self.mail {
            MailSource::Live(config) => Some(config.subscribe()),
            MailSource::Fixed(_) => None,
        };
        // The earliest deferred message still ahead: a wake-up (a new message, a reload) that
        // finds nothing due must not forget it until the next poll.
        let mut next_due: Option<DateTime<Utc>> = None;
        loop {
            let started = Utc::now();
            let report = self.pass(started, Some(&mut shutdown)).await;
            let report = match report {
                Some(r) => r,
                None => break,
            };
            next_due = next_due.filter(|at| *at > started);
            if let Some(at) = report.next_due {
                next_due = Some(next_due.map_or(at, |t| t.min(at)));
            }
            let mut wait = self.poll_interval;
            if let Some(at) = next_due {
                let until = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                wait = wait.min(until);
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = wake.notified() => {}
                _ = reloaded(&mut reloads) => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!("mail delivery worker stopped");
    }

    /// One pass: every message due at `now` is attempted once and settled in the queue.
    pub async fn step(&self, now: DateTime<Utc>) -> StepReport {
        self.pass::<std::future::Pending<()>>(now, None)
            .await
            .unwrap_or_default()
    }

    /// Whether the message may still be sent by this worker (see [`MailQueue::still_ours`]),
    /// asked on a blocking thread; logged when not.
    async fn still_ours(&self, id: u64) -> bool {
        match self.on_queue(move |q| q.still_ours(id)).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::info!(
                    id,
                    "mail left to another node: its claim passed before this node got to it"
                );
                false
            }
            Err(e) => {
                tracing::warn!(id, error = %format!("{e:#}"), "cannot renew the claim of a mail; it is tried in a later pass");
                false
            }
        }
    }

    /// The `[mail]` section in force now.
    fn mail_config(&self) -> Option<MailConfig> {
        match &self.mail {
            MailSource::Fixed(mail) => mail.clone(),
            MailSource::Live(config) => config.current().mail.clone(),
        }
    }

    /// Returns None if shutdown was seen.
    async fn pass<F: Future<Output = ()>>(
        &self,
        now: DateTime<Utc>,
        mut shutdown: Option<&mut std::pin::Pin<&mut F>>,
    ) -> Option<StepReport> {
        let mut report = StepReport::default();
        // One `[mail]` for the whole pass: a reload during it applies from the next pass.
        let mail = self.mail_config();
        let batch = match self.on_queue(move |q| q.due(now)).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "reading the mail outbox failed");
                return Some(report);
            }
        };
        // Once the server is unreachable, the rest of the pass is deferred without trying.
        let mut unreachable: Option<String> = None;
        for item in batch {
            if let Some(s) = shutdown.as_mut() {
                if is_ready(s).await {
                    return None;
                }
            }
            let outcome = match &unreachable {
                Some(why) => Err(DeliveryError::Unavailable(format!("not tried: {why}"))),
                None if !self.still_ours(item.id).await => continue,
                None => self.attempt(mail.as_ref(), &item.mail, item.id).await,
            };
            self.settle_outcome(&item, outcome, &mut report, &mut unreachable)
                .await;
        }
        Some(report)
    }

    /// Settles one attempted message in the queue and counts it in `report`; an outage seen
    /// here is kept in `unreachable` so the rest of the pass is not tried.
    async fn settle_outcome(
        &self,
        item: &QueuedMail,
        outcome: Result<String, DeliveryError>,
        report: &mut StepReport,
        unreachable: &mut Option<String>,
    ) {
        if let Err(DeliveryError::Partly { remaining, .. }) = &outcome {
            let (id, remaining) = (item.id, remaining.clone());
            let narrowed = self
                .settle_retrying(item.id, "narrow", move |q| q.narrow(id, &remaining))
                .await;
            if !narrowed {
                // Deferring the whole envelope would send the message again to those who
                // have it at the next attempt (review s30): leave it as it is; it comes back
                // when the claim ends, at the earliest.
                tracing::error!(
                    tenant = %item.mail.tenant,
                    subject = %item.mail.subject,
                    "the recipients that have the mail could not be taken off it; it is not deferred, and may reach them again"
                );
                report.deferred += 1;
                return;
            }
        }
        match outcome {
            Ok(how) => {
                tracing::info!(
                    tenant = %item.mail.tenant,
                    subject = %item.mail.subject,
                    to = %item.mail.to.join(", "),
                    attempts = item.attempts.saturating_add(1),
                    "mail {how}"
                );
                let id = item.id;
                self.settle_retrying(item.id, "mark_sent", move |q| q.mark_sent(id))
                    .await;
                report.sent += 1;
                crate::metrics::mail_sent();
            }
            Err(e) if e.is_retryable() && item.attempts.saturating_add(1) >= self.max_attempts => {
                tracing::error!(
                    tenant = %item.mail.tenant,
                    subject = %item.mail.subject,
                    to = %item.mail.to.join(", "),
                    attempts = item.attempts.saturating_add(1),
                    error = %e,
                    "mail not delivered after every attempt; giving up"
                );
                let reason = format!(
                    "not delivered after {} attempts: {e}",
                    item.attempts.saturating_add(1)
                );
                let id = item.id;
                let done = self.on_queue(move |q| q.give_up(id, &reason)).await;
                self.settle(item.id, "give_up", done);
                report.given_up += 1;
                crate::metrics::mail_failed(true);
            }
            Err(e) if e.is_retryable() => {
                if let (DeliveryError::Unavailable(why), None) = (&e, &unreachable) {
                    *unreachable = Some(why.clone());
                }
                self.defer(item, &e, report).await;
            }
            Err(e) => {
                tracing::error!(
                    tenant = %item.mail.tenant,
                    subject = %item.mail.subject,
                    to = %item.mail.to.join(", "),
                    error = %e,
                    "mail refused permanently; giving up"
                );
                let (id, reason) = (item.id, format!("refused for good: {e}"));
                let done = self.on_queue(move |q| q.give_up(id, &reason)).await;
                self.settle(item.id, "give_up", done);
                report.given_up += 1;
                crate::metrics::mail_failed(true);
            }
        }
    }

    /// Defers `item` after the failed attempt `e`, with backoff.
    async fn defer(&self, item: &QueuedMail, e: &DeliveryError, report: &mut StepReport) {
        let attempts = item.attempts.saturating_add(1);
        let delay = self.backoff.delay(attempts);
        let next_at = chrono::Duration::from_std(delay)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        tracing::warn!(
            tenant = %item.mail.tenant,
            subject = %item.mail.subject,
            attempts,
            retry_in_secs = delay.as_secs(),
            error = %e,
            "mail not delivered; will retry"
        );
        let (id, reason) = (item.id, e.to_string());
        let res = self
            .on_queue(move |q| q.defer(id, attempts, next_at, &reason))
            .await;
        self.settle(item.id, "defer", res);
        report.deferred += 1;
        crate::metrics::mail_failed(false);
        report.next_due = Some(report.next_due.map_or(next_at, |t| t.min(next_at)));
    }

    /// Runs a call that records a delivery (`mark_sent`, `narrow`), tried again after
    /// [`SETTLE_RETRIES`] when it fails: the mail is out, and a lost record sends it again
    /// once the claim ends (review s30). True when a try succeeded.
    async fn settle_retrying<F>(&self, id: u64, what: &str, call: F) -> bool
    where
        F: Fn(&dyn MailQueue) -> anyhow::Result<()> + Clone + Send + 'static,
    {
        let mut waits = SETTLE_RETRIES.iter();
        loop {
            let res = self.on_queue(call.clone()).await;
            match (res, waits.next()) {
                (Ok(()), _) => return true,
                (Err(e), Some(wait)) => {
                    tracing::warn!(id, error = %format!("{e:#}"), "mail outbox {what} failed; trying again");
                    tokio::time::sleep(*wait).await;
                }
                (Err(e), None) => {
                    self.settle(id, what, Err(e));
                    return false;
                }
            }
        }
    }

    /// Sends over SMTP, or writes an `.eml` without `[mail]`. Ok carries a word for the log.
    async fn attempt(
        &self,
        config: Option<&MailConfig>,
        mail: &OutgoingMail,
        queued: u64,
    ) -> Result<String, DeliveryError> {
        match config {
            // The claim is renewed before each recipient tried on its own as well.
            Some(cfg) => deliver_while_ours(&cfg.smtp_url, mail, self.smtp_timeout, &|| {
                Box::pin(self.still_ours(queued))
            })
            .await
            .map(|()| "delivered".to_string()),
            None => {
                let dir = self.outbox_dir.clone();
                let mail = mail.clone();
                match tokio::task::spawn_blocking(move || write_eml(&dir, &mail, queued)).await {
                    Ok(Ok(path)) => Ok(format!("written to {}", path.display())),
                    // A full or unwritable disk may recover: retry like an unreachable server.
                    Ok(Err(e)) => Err(DeliveryError::Transient(format!("{e:#}"))),
                    Err(e) => Err(DeliveryError::Transient(format!("writing the .eml: {e}"))),
                }
            }
        }
    }

    /// Runs one call of the queue on a blocking thread: the store's calls block (a sled flush,
    /// a PostgreSQL round trip) and must not stall a runtime worker that serves SFTP sessions
    /// (reviewer s28).
    async fn on_queue<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn MailQueue) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || call(queue.as_ref()))
            .await
            .map_err(|e| anyhow::anyhow!("the mail outbox call did not finish: {e}"))?
    }

    fn settle(&self, id: u64, what: &str, res: anyhow::Result<()>) {
        if let Err(e) = res {
            tracing::error!(id, error = %format!("{e:#}"), "mail outbox {what} failed");
        }
    }
}

/// Returns at the next config reload; never without a config to follow.
async fn reloaded(reloads: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match reloads {
        Some(rx) => {
            if rx.changed().await.is_err() {
                // The handle is gone (the server is stopping): wait for the other wake-ups.
                *reloads = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// True if `fut` has completed, without waiting for it.
async fn is_ready<F: Future<Output = ()>>(fut: &mut std::pin::Pin<&mut F>) -> bool {
    tokio::select! {
        biased;
        _ = fut.as_mut() => true,
        _ = std::future::ready(()) => false,
    }
}

/// Runs the delivery worker with the default backoff until `shutdown` completes, taking `[mail]`
/// from the config in force at each pass. Poke `wake` (`notify_one`) after queueing a message
/// so it goes out at once.
pub async fn run_delivery(
    queue: Arc<dyn MailQueue>,
    config: ConfigHandle,
    outbox_dir: PathBuf,
    wake: Arc<Notify>,
    shutdown: impl Future<Output = ()> + Send,
) {
    Worker::live(queue, config, outbox_dir)
        .run(wake, shutdown)
        .await
}
