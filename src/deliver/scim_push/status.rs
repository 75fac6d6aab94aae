//! What SCIM push reports about itself: per tenant, the last success and the users whose
//! changes the application refused, with the provider's `detail`.
//!
//! The pusher writes a tenant's [`PushStatus`] after every batch; the admin API
//! (`GET /api/tenants/{t}/scim-push`) reads it through [`status_of`]. Kept in this process's
//! memory; the failing users are also saved in the store by the pusher whenever they change
//! (`push::FAILING_CONSUMER`) and loaded back by the first batch after a restart, so they are
//! still shown and retried. Bounded: at most [`MAX_FAILING`] users are kept. [`backlog`] reads
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

/// Most failing users kept per tenant; past it the oldest failure is dropped.
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
    /// Why this node does not push the tenant at all (its `token_env` is unset), if so.
    pub stopped: Option<String>,
}

impl PushStatus {
    /// Keeps `f` (replacing the user's previous failure), dropping the oldest past the bound.
    pub fn fail(&mut self, f: Failure) {
        self.failing.insert(f.key.clone(), f);
        while self.failing.len() > MAX_FAILING {
            let oldest = self
                .failing
                .values()
                .min_by_key(|f| f.at)
                .map(|f| f.key.clone());
            match oldest {
                Some(k) => {
                    tracing::warn!(key = %k, "SCIM push: more than {MAX_FAILING} users are failing; the oldest failure is no longer kept, so that user is pushed again only when it changes or by a reconcile");
                    self.failing.remove(&k)
                }
                None => break,
            };
        }
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
