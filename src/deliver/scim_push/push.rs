//! The pusher: walks a tenant's change log after the `scim-push` cursor and makes the
//! application's users match the directory, one batch at a time.
//!
//! Changes enter through a [`ChangeSource`] (the store's change log and users, see
//! [`StoreSource`]; tests hand-build one); requests leave through [`ScimClient`]. A batch is at
//! most [`BATCH`] changes, grouped by user: one user's changes are pushed in order by one
//! thread, at most [`IN_FLIGHT`] users at once. Each user is pushed as it is now in the
//! directory (so re-pushing is harmless): an active user is found (`externalId`, then
//! `userName`) and updated, adopted or created; an inactive one is updated (`active=false`); a
//! user deleted or gone from the directory is deactivated or deleted per `on_missing`.
//!
//! The application's id is looked up by `externalId` each time (no id map in the store): one
//! GET before each write (and for an update by PUT a `GET /Users/{id}` too, see `merge`), and
//! an application whose ids change (a restore from backup) needs nothing from Roster.
//!
//! Durable: the cursor moves past a change only when its user was pushed, or refused for good
//! (a 4xx other than 401/403/408/429: kept in the status with the provider's `detail`, saved in
//! the store so a restart keeps it, and retried with backoff; see `failing`). Refusals that
//! are the push's fault (the breaker) or that a full failing list cannot take hold the cursor
//! instead (see `tally`). A transient failure (no answer, 401/403, 408, 429, 5xx; a 404/405/415
//! from the collection) holds the cursor before that user's
//! first change, no further user of the batch is started, and the whole batch waits for
//! `Retry-After`, else an exponential backoff. After a 429 or 503 users are pushed one at a time
//! until a batch goes through unthrottled, so a rate-limited provider sees progress instead of
//! the same burst again.
//!
//! A report pushed before its manager reached the application is pushed again after the
//! batch that created or adopted the manager ([`ManagerWaits`]), so it gets its `manager`.

mod failing;
mod gap;
pub mod merge;
mod slots;
mod source;
pub use source::{LeaseFence, StoreSource};
mod tally;

use super::client::{id_of, no_id, Found, ScimClient, ScimError};
use super::managers::{self, ManagerIds, ManagerWaits};
use super::resource;
use super::status::{status_of, Failure, PushStatus, MAX_FAILING};
use crate::config::{ScimOnMissing, ScimPushConfig};
use crate::model::changelog::{ChangeKind, Cursor, LoggedChange};
use crate::model::{User, UserStatus};
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The cursor's consumer name in the store.
pub const CONSUMER: &str = "scim-push";
/// The consumer record whose `state` holds the failing users (a JSON list of `Failure`).
pub const FAILING_CONSUMER: &str = "scim-push:failing";
/// Most change-log entries read per batch.
pub const BATCH: usize = 256;
/// Users pushed at once.
pub const IN_FLIGHT: usize = 4;
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Failing users retried per batch.
const RETRIES_PER_BATCH: usize = 16;

/// Where a pusher reads changes and users and keeps its cursor (one tenant).
pub trait ChangeSource: Send + Sync {
    /// Change-log entries with `seq > after`, in order, at most `limit`.
    fn changes(&self, after: u64, limit: usize) -> Result<Vec<LoggedChange>>;
    /// The user as the directory has it now (None: gone).
    fn user(&self, key: &str) -> Result<Option<User>>;
    fn cursor(&self) -> Result<Cursor>;
    fn save_cursor(&self, cursor: &Cursor) -> Result<()>;
    /// The failing users as last saved (none: empty).
    fn failures(&self) -> Result<Vec<Failure>> {
        Ok(Vec::new())
    }
    /// Keeps the failing users durable (they survive a restart).
    fn save_failures(&self, _failures: &[Failure]) -> Result<()> {
        Ok(())
    }
}

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batch {
    /// Nothing after the cursor.
    Idle,
    /// The cursor waits (backoff or `Retry-After`) until then.
    Waiting(DateTime<Utc>),
    /// Users pushed and refused; the cursor is now at `position`.
    Pushed {
        pushed: usize,
        failed: usize,
        position: u64,
    },
}

/// What was done to one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Adopted,
    Deactivated,
    Deleted,
    Nothing,
}

/// One user's changes in a batch.
struct UserWork {
    key: String,
    first_seq: u64,
    kind: ChangeKind,
    /// Fields the batch left empty.
    cleared: BTreeSet<String>,
}

/// Groups a batch by user, in order of each user's first change.
fn group(changes: &[LoggedChange]) -> Vec<UserWork> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<UserWork> = Vec::new();
    for c in changes {
        let i = *index.entry(c.key.as_str()).or_insert_with(|| {
            out.push(UserWork {
                key: c.key.clone(),
                first_seq: c.seq,
                kind: c.kind,
                cleared: BTreeSet::new(),
            });
            out.len() - 1
        });
        let w = &mut out[i];
        w.kind = c.kind;
        for f in &c.fields {
            if f.new.as_deref().is_none_or(str::is_empty) {
                w.cleared.insert(f.field.clone());
            } else {
                w.cleared.remove(&f.field);
            }
        }
    }
    out
}

/// The lower-cased names a manager is looked up by: `userName`, and the email.
fn arrival_names(u: &User) -> Vec<String> {
    let mut names = vec![resource::user_name(u).to_lowercase()];
    if let Some(email) = &u.email {
        names.push(email.to_lowercase());
    }
    names
}

/// Exponential backoff after `attempts` failures: 1 s, 2 s, 4 s, … up to [`MAX_BACKOFF`].
pub fn backoff(attempts: u32) -> Duration {
    let secs = 1u64 << attempts.saturating_sub(1).min(16);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// How long the cursor waits after its `attempts`-th transient failure `e`: the provider's
/// `Retry-After`, but never less than the backoff, so a `Retry-After: 0` (or 1 s, again and
/// again) cannot make the push hammer the provider (audit F8; webhooks never wait less than
/// their first step either).
fn wait_after(e: &ScimError, attempts: u32) -> Duration {
    let backoff = backoff(attempts);
    e.retry_after.map_or(backoff, |r| r.max(backoff))
}

/// `cleared` with the fields a refused push of `key` left to remove (`Failure::cleared`).
fn with_failing_cleared(
    st: &PushStatus,
    key: &str,
    cleared: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut all = cleared.clone();
    if let Some(f) = st.failing.get(key) {
        all.extend(f.cleared.iter().cloned());
    }
    all
}

fn later(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::seconds(300))
}

type PushResult = Result<Action, ScimError>;

/// Pushes one tenant's changes to one application.
pub struct Pusher {
    tenant: String,
    client: ScimClient,
    on_missing: ScimOnMissing,
    extra: BTreeMap<String, String>,
    /// From `/ServiceProviderConfig`, read once per pusher (None: not yet read).
    patch: Mutex<Option<bool>>,
    /// Managers' application ids by email, for a few minutes (see `managers::resolve`).
    managers: ManagerIds,
    /// Reports pushed before their manager was in the application.
    waits: ManagerWaits,
    /// The last batch was answered 429/503: push one user at a time until a batch goes through.
    throttled: AtomicBool,
    /// Transient failures in a row of users whose batch had others go through (`tally`).
    strikes: Mutex<HashMap<String, u32>>,
    /// The failing users as last saved in the store; None until loaded from it.
    saved_failing: Mutex<Option<Vec<Failure>>>,
    status: Arc<Mutex<PushStatus>>,
    /// Raised (any of them): no further user is started (`roster serve` stops).
    stop: Vec<Arc<AtomicBool>>,
    /// No user is started at or after this instant: the end of the store lease as this node
    /// can be sure of it (set by the worker each time it takes the lease; None: no limit).
    lease_until: Mutex<Option<Instant>>,
}

impl Pusher {
    /// A pusher for `tenant` with its `[tenants.scim_push]`; fails when the token is missing.
    pub fn new(tenant: &str, config: &ScimPushConfig) -> Result<Pusher, String> {
        Ok(Pusher {
            tenant: tenant.to_string(),
            client: ScimClient::new(&config.url, config.bearer()?),
            on_missing: config.on_missing,
            extra: config.attributes.clone(),
            patch: Mutex::new(None),
            throttled: AtomicBool::new(false),
            managers: ManagerIds::default(),
            waits: ManagerWaits::default(),
            strikes: Mutex::new(HashMap::new()),
            saved_failing: Mutex::new(None),
            status: status_of(tenant),
            stop: Vec::new(),
            lease_until: Mutex::new(None),
        })
    }

    /// The same pusher, starting no further user once one of `flags` is raised.
    pub fn with_stop(mut self, flags: Vec<Arc<AtomicBool>>) -> Pusher {
        self.stop = flags;
        self
    }

    /// Starts no user at or after `deadline` (the lease as taken now may have passed to another
    /// node by then): the cursor waits before the users left, as at a stop.
    pub fn hold_until(&self, deadline: Instant) {
        *self.lease_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(deadline);
    }

    /// Whether a stop flag is raised, or the lease's time is up.
    fn stopped(&self) -> bool {
        let lease_over = (self.lease_until.lock().unwrap_or_else(|p| p.into_inner()))
            .is_some_and(|d| Instant::now() >= d);
        lease_over || self.stop.iter().any(|f| f.load(Ordering::Relaxed))
    }

    pub fn client(&self) -> &ScimClient {
        &self.client
    }

    pub fn extra(&self) -> &BTreeMap<String, String> {
        &self.extra
    }

    fn status(&self) -> std::sync::MutexGuard<'_, PushStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether updates go as PATCH (else PUT), asking the provider the first time.
    fn use_patch(&self) -> Result<bool, ScimError> {
        let mut known = self.patch.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = *known {
            return Ok(p);
        }
        let p = self.client.patch_supported()?;
        tracing::info!(tenant = %self.tenant, patch = p, "SCIM push: read the provider's ServiceProviderConfig");
        *known = Some(p);
        Ok(p)
    }

    /// What to do with `u`'s enterprise `manager` (set, remove, keep: `managers::resolve`).
    fn manager(&self, u: &User) -> resource::Manager {
        managers::resolve(&self.client, &self.managers, &self.waits, u)
    }

    /// `u` was created in or adopted by the application: reports waiting for it are pushed
    /// again, and a manager id remembered under its names is asked again.
    fn arrived(&self, u: &User) {
        let names = arrival_names(u);
        self.managers.forget(&names);
        self.waits.arrived(&names);
    }

    /// Writes our values over the application's user `id`; `cleared` fields that are still
    /// empty are removed from it. Without PATCH, a PUT of the application's own user with our
    /// values written over it (`merge`: a PUT replaces the whole user).
    pub fn update(&self, id: &str, u: &User, cleared: &BTreeSet<String>) -> Result<(), ScimError> {
        let still_empty: BTreeSet<String> = (cleared.iter())
            .filter(|f| resource::field_is_empty(u, f))
            .cloned()
            .collect();
        let mut remove = resource::cleared_paths(&still_empty, &self.extra);
        let manager = self.manager(u);
        resource::with_manager_removed(&manager, &mut remove);
        if self.use_patch()? {
            let mut body = resource::patch(u, &self.extra, &remove);
            resource::with_manager(&mut body, &manager);
            self.client.patch(id, &body)
        } else {
            let mut body = resource::resource(u, &self.extra, Some(id));
            resource::with_manager(&mut body, &manager);
            self.put_merged(id, &body, &remove)
        }
    }

    /// Sets `active=false` on the application's user `app`: a PATCH, or a PUT of the
    /// application's own representation with `active` false when the provider does not take
    /// PATCH (its ServiceProviderConfig), as for updates.
    fn deactivate(&self, id: &str, app: &serde_json::Value) -> Result<(), ScimError> {
        if self.use_patch()? {
            self.client.patch(id, &resource::patch_active(false))
        } else {
            self.client.replace(id, &resource::deactivated(app))
        }
    }

    /// Makes the application's user of `key` match `user` (None: gone from the directory).
    pub fn sync_user(
        &self,
        key: &str,
        user: Option<&User>,
        cleared: &BTreeSet<String>,
    ) -> Result<Action, ScimError> {
        let live = user.filter(|u| u.status != UserStatus::Deleted);
        let name = live.map(resource::user_name).unwrap_or(key);
        let found = self.client.find(key, name)?;
        let Some(u) = live else {
            let Found::Ours(app) = found else {
                return Ok(Action::Nothing);
            };
            let id = id_of(&app).ok_or_else(no_id)?;
            return match self.on_missing {
                ScimOnMissing::Delete => self.client.delete(&id).map(|_| {
                    self.managers.forget(&managers::app_names(&app));
                    Action::Deleted
                }),
                ScimOnMissing::Deactivate => {
                    self.deactivate(&id, &app).map(|_| Action::Deactivated)
                }
            };
        };
        match found {
            Found::Ours(app) => {
                let id = id_of(&app).ok_or_else(no_id)?;
                self.update(&id, u, cleared).map(|_| match u.status {
                    UserStatus::Active => Action::Updated,
                    _ => Action::Deactivated,
                })
            }
            Found::Adoptable(app) => {
                let id = id_of(&app).ok_or_else(no_id)?;
                self.update(&id, u, cleared)?;
                self.arrived(u);
                Ok(Action::Adopted)
            }
            // An inactive user the application never had: nothing to tell it.
            Found::Nobody | Found::Taken(_) if u.status != UserStatus::Active => {
                Ok(Action::Nothing)
            }
            // Taken: the provider decides (most answer 409 uniqueness, kept with its detail).
            Found::Nobody | Found::Taken(_) => {
                let mut body = resource::resource(u, &self.extra, None);
                resource::with_manager(&mut body, &self.manager(u));
                self.client.create(&body)?;
                self.arrived(u);
                Ok(Action::Created)
            }
        }
    }

    /// Reads the user from `src` and pushes it.
    fn push_one(
        &self,
        src: &dyn ChangeSource,
        key: &str,
        cleared: &BTreeSet<String>,
    ) -> Result<Action, ScimError> {
        let user = src.user(key).map_err(|e| {
            ScimError::new(None, format!("cannot read the user from the store: {e:#}"))
        })?;
        self.sync_user(key, user.as_ref(), cleared)
    }

    /// Pushes the users of `work`, [`IN_FLIGHT`] at once (one at a time after the provider
    /// throttled), in `work`'s order; once one fails transiently no further user is started.
    /// None: a user not started.
    fn push_all(&self, src: &dyn ChangeSource, work: &[UserWork]) -> Vec<Option<PushResult>> {
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let results: Mutex<Vec<Option<PushResult>>> = Mutex::new(vec![None; work.len()]);
        let in_flight = if self.throttled.load(Ordering::Relaxed) {
            1
        } else {
            IN_FLIGHT
        };
        // A user refused earlier may still owe the application the removal of fields emptied
        // then: its push carries them too.
        let cleared: Vec<BTreeSet<String>> = {
            let st = self.status();
            work.iter()
                .map(|w| with_failing_cleared(&st, &w.key, &w.cleared))
                .collect()
        };
        std::thread::scope(|s| {
            for lane in 0..in_flight.min(work.len()) {
                let (next, stop, results, cleared) = (&next, &stop, &results, &cleared);
                s.spawn(move || loop {
                    if stop.load(Ordering::Relaxed) || self.stopped() {
                        break;
                    }
                    // Every lane but the first takes one of the process's slots (every
                    // tenant's pushes share them); the first needs none, so a tenant always
                    // moves, whatever slow applications of other tenants hold (reviewer s28).
                    let _slot = match lane {
                        0 => None,
                        _ => match slots::GLOBAL.take(&|| self.stopped()) {
                            Some(slot) => Some(slot),
                            None => break,
                        },
                    };
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let (Some(w), Some(cleared)) = (work.get(i), cleared.get(i)) else {
                        break;
                    };
                    let r = self.push_one(src, &w.key, cleared);
                    if r.as_ref().is_err_and(ScimError::transient) {
                        stop.store(true, Ordering::Relaxed);
                    }
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                });
            }
        });
        results.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// Pushes the next batch after the cursor (or waits, or retries failing users when idle).
    pub fn run_batch(&self, src: &dyn ChangeSource, now: DateTime<Utc>) -> Result<Batch> {
        self.load_failing(src)?;
        let batch = self.push_batch(src, now);
        self.save_failing(src)?;
        batch
    }

    /// One batch (see [`run_batch`](Self::run_batch)).
    fn push_batch(&self, src: &dyn ChangeSource, now: DateTime<Utc>) -> Result<Batch> {
        let mut cursor = src.cursor()?;
        if let Some(t) = cursor.next_attempt.filter(|t| *t > now) {
            return Ok(Batch::Waiting(t));
        }
        // A full failing list holds the cursor (`tally`): its users are retried meanwhile, or
        // it would never empty.
        if self.status().failing.len() >= MAX_FAILING && !self.stopped() {
            self.retry_failing(src, now);
        }
        let changes = src.changes(cursor.position, BATCH)?;
        let Some(last_seq) = changes.last().map(|c| c.seq) else {
            if !self.stopped() {
                self.retry_failing(src, now);
                self.push_waiting_reports(src, now);
            }
            return Ok(Batch::Idle);
        };
        if let Some(first) = changes.first() {
            self.note_gap(&mut cursor, first.seq, now);
        }
        let work = group(&changes);
        let results = self.push_all(src, &work);
        let tally::Tally {
            pushed,
            failed,
            hold_seq,
            hold_err,
        } = self.tally(&work, results, now);
        let throttled = hold_err
            .as_ref()
            .is_some_and(|(_, e)| matches!(e.status, Some(429) | Some(503)));
        self.throttled.store(throttled, Ordering::Relaxed);
        if pushed > 0 {
            cursor.last_success = Some(now);
        }
        let had_error = hold_err.is_some();
        let hold = hold_seq.map(|seq| {
            let e = (hold_err.map(|(_, e)| e))
                .unwrap_or_else(|| ScimError::new(None, "users of the batch were not pushed"));
            (seq, e)
        });
        // Users left unstarted by a stop: the cursor waits before them, with no failure counted.
        let stopped = !had_error && self.stopped();
        match hold {
            Some((seq, _)) if stopped => {
                cursor.position = cursor.position.max(seq.saturating_sub(1));
            }
            None => {
                cursor.position = last_seq;
                cursor.attempts = 0;
                cursor.next_attempt = None;
                cursor.last_error = None;
            }
            Some((seq, e)) => {
                tracing::warn!(tenant = %self.tenant, "SCIM push waits: {e}");
                cursor.position = cursor.position.max(seq.saturating_sub(1));
                // Attempts count the waits in a row with nothing pushed: a provider that
                // rate-limits but takes users between its 429s is waited for as it asks.
                cursor.attempts = match pushed {
                    0 => cursor.attempts.saturating_add(1),
                    _ => 1,
                };
                let wait = wait_after(&e, cursor.attempts);
                cursor.next_attempt = Some(later(now, wait));
                cursor.last_error = Some(e.to_string());
            }
        }
        // The failing list first: the cursor may now be past a refused user, which from then
        // on only the list remembers; saved the other way round, a kill -9 between the two
        // writes lost that user (audit). The other way round it is pushed again: harmless.
        self.save_failing(src)?;
        src.save_cursor(&cursor)?;
        if !self.stopped() {
            self.push_waiting_reports(src, now);
        }
        Ok(Batch::Pushed {
            pushed,
            failed,
            position: cursor.position,
        })
    }

    /// Runs batches until nothing is left or the cursor waits, at most `max_batches`.
    pub fn drain(&self, src: &dyn ChangeSource, max_batches: usize) -> Result<Batch> {
        let mut last = Batch::Idle;
        for _ in 0..max_batches {
            last = self.run_batch(src, Utc::now())?;
            if matches!(last, Batch::Idle | Batch::Waiting(_)) || self.stopped() {
                break;
            }
        }
        Ok(last)
    }
}

#[cfg(test)]
mod tests;
