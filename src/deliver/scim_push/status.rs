//! What SCIM push reports about itself: per tenant, the last success and the users whose
//! changes the application refused, with the provider's `detail`.
//!
//! The pusher writes a tenant's [`PushStatus`] after every batch; the admin API
//! (`GET /api/tenants/{t}/scim-push`) reads it through [`status_of`]. Kept in this process's
//! memory; the failing users are also saved in the store by the pusher whenever they change
//! (`push::FAILING_CONSUMER`) and loaded back by the first batch after a restart, so they are
//! still shown and retried. Bounded: at most [`MAX_FAILING`] users are kept (a full list holds
//! the push's cursor rather than drop anyone). [`backlog`] reads
//! how far the pusher is behind from the store (its cursor and the change log after it).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

/// The pusher's cursor of `tenant` and the changes after it, counted up to `up_to + 1` (more
/// than `up_to` means "at least").
pub fn backlog(
    store: &crate::store::Store,
    tenant: &str,
    up_to: usize,
) -> anyhow::Result<(crate::model::changelog::Cursor, usize)> {
    let cursor = store.cursor(tenant, super::CONSUMER)?;
    let pending = store.changes(tenant, cursor.position, up_to + 1)?.len();
    Ok((cursor, pending))
}

/// Most failing users kept per tenant. A full list takes no new user: the pusher holds its
/// cursor before that user's change instead (audit: dropping the oldest lost users for good).
pub const MAX_FAILING: usize = 1000;

/// A user the application refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub key: String,
    /// The change-log kind of the last change pushed (or "reconcile").
    pub kind: String,
    /// The HTTP status, if the application answered.
    pub status: Option<u16>,
    /// The provider's `detail`.
    pub detail: String,
    pub at: DateTime<Utc>,
    pub attempts: u32,
    /// When the pusher tries this user again.
    pub next_attempt: DateTime<Utc>,
    /// Fields emptied by changes the application has not taken yet: removed from its user by
    /// the next push of this user that goes through (a retry, or a later change).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub cleared: BTreeSet<String>,
}

/// One tenant's push, as the admin API shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushStatus {
    /// Users pushed since this process started.
    pub pushed: u64,
    pub last_success: Option<DateTime<Utc>>,
    /// The last error of the push as a whole (the application unreachable, 429, 5xx).
    pub last_error: Option<String>,
    /// Users whose push failed, by key.
    pub failing: BTreeMap<String, Failure>,
    /// The last gap this process saw: changes removed by retention before they were pushed
    /// (`push::gap`; the store keeps it in the cursor's `state`).
    pub gap: Option<String>,
    /// Why this node does not push the tenant at all (its `token_env` is unset), if so.
    pub stopped: Option<String>,
}

impl PushStatus {
    /// Keeps `f` (replacing the user's previous failure). False, and `f` not kept, when the
    /// list is full ([`MAX_FAILING`]) and does not hold this user yet.
    #[must_use]
    pub fn fail(&mut self, f: Failure) -> bool {
        if self.failing.len() >= MAX_FAILING && !self.failing.contains_key(&f.key) {
            return false;
        }
        self.failing.insert(f.key.clone(), f);
        true
    }

    /// Whether the failing list takes `key` ([`fail`](Self::fail) would keep it).
    pub fn takes(&self, key: &str) -> bool {
        self.failing.len() < MAX_FAILING || self.failing.contains_key(key)
    }
}

type Registry = Mutex<HashMap<String, Arc<Mutex<PushStatus>>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The shared status of `tenant` (created empty on first use).
pub fn status_of(tenant: &str) -> Arc<Mutex<PushStatus>> {
    let mut map = registry().lock().unwrap_or_else(|p| p.into_inner());
    map.entry(tenant.to_string()).or_default().clone()
}

/// Records why `tenant`'s push cannot run on this node (None: it runs).
pub fn set_stopped(tenant: &str, why: Option<String>) {
    status_of(tenant)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .stopped = why;
}

/// Forgets the failing users this process holds for `tenant` (another node pushes it now;
/// the store keeps the list).
pub fn forget_failing(tenant: &str) {
    status_of(tenant)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .failing
        .clear();
}

/// A copy of `tenant`'s status.
pub fn snapshot(tenant: &str) -> PushStatus {
    status_of(tenant)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}
