//! Reports pushed before their manager: a user whose `manager_email` names somebody the
//! application does not have yet is pushed without `manager`; once that manager is created in
//! (or adopted by) the application, the pusher pushes such reports again so they get it.
//!
//! Data enters from the pusher: [`ManagerWaits::wait`] when a manager lookup found nobody,
//! [`ManagerWaits::arrived`] with the lower-cased `userName` and email of each user created or
//! adopted; it leaves as the report keys [`ManagerWaits::take_ready`] hands back after a batch.
//! In memory and bounded ([`MAX_WAITING`] reports; past it new ones are not kept and only a
//! later change of the report sets its manager): a restart forgets the waits.
//!
//! Also here: [`resolve`], which decides what a push does with a report's `manager`
//! (set, remove, keep: `resource::Manager`), and [`ManagerIds`], the managers' ids it
//! remembers for a few minutes.

use super::client::ScimClient;
use super::resource::{self, Manager, MANAGER_EMAIL};
use crate::model::User;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Managers' ids remembered per pusher (the map is emptied when full).
const MANAGERS_KEPT: usize = 10_000;
/// How long a manager's id is used without asking the application again.
pub const ID_LIFETIME: Duration = Duration::from_secs(300);

/// Managers' application ids by lower-cased email, each used for at most [`ID_LIFETIME`].
///
/// An id can go stale: the manager deleted and re-created in the application (by its admin,
/// another source, or this pusher) gets a new id, and reports pushed with the old one point at
/// nobody, or at a deleted user. Dropping entries when the pusher creates, adopts or deletes a
/// user ([`forget`](Self::forget)) covers only the pusher's own writes; the lifetime bounds the
/// rest (the application's own changes) to a few minutes, for one lookup per manager per
/// lifetime. Both are kept: forgetting is what makes a re-creation by this pusher correct at
/// once, the lifetime is what makes any other change correct at all.
#[derive(Default)]
pub struct ManagerIds {
    inner: Mutex<HashMap<String, (String, Instant)>>,
}

impl ManagerIds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The id remembered for `email` (lower-cased) at `now`, if not older than [`ID_LIFETIME`].
    pub fn get(&self, email: &str, now: Instant) -> Option<String> {
        let mut known = self.lock();
        match known.get(email) {
            Some((id, at)) if now.saturating_duration_since(*at) < ID_LIFETIME => Some(id.clone()),
            Some(_) => {
                known.remove(email);
                None
            }
            None => None,
        }
    }

    /// Remembers `id` for `email` (lower-cased), found at `now`.
    pub fn insert(&self, email: &str, id: &str, now: Instant) {
        let mut known = self.lock();
        if known.len() >= MANAGERS_KEPT {
            known.clear();
        }
        known.insert(email.to_string(), (id.to_string(), now));
    }

    /// Forgets the ids of these lower-cased names (a user's `userName` and emails): the pusher
    /// created, adopted or deleted that user, whose id may now be another.
    pub fn forget(&self, names: &[String]) {
        let mut known = self.lock();
        for name in names {
            known.remove(name);
        }
    }
}

/// The lower-cased `userName` and `emails[].value` of an application's user `app`.
pub fn app_names(app: &Value) -> Vec<String> {
    let mut names: Vec<String> = (app.get("userName").and_then(Value::as_str))
        .map(str::to_lowercase)
        .into_iter()
        .collect();
    if let Some(Value::Array(emails)) = app.get("emails") {
        names.extend(
            (emails.iter())
                .filter_map(|e| e.get("value").and_then(Value::as_str))
                .map(str::to_lowercase),
        );
    }
    names
}

/// What to do with `u`'s enterprise `manager`, from its `manager_email`:
/// - none: [`Manager::Keep`] (an emptied `manager_email` is removed as a cleared field,
///   `resource::cleared_paths`);
/// - the application has that user: [`Manager::Set`] with its id (from `ids`, else looked up
///   and remembered);
/// - the application has nobody of that email: [`Manager::Remove`], and `u` waits for that
///   manager (`waits`), to be pushed again with it once it arrives. The safest: `manager_email`
///   changed to somebody not yet provisioned must not leave approvals going to the previous
///   manager meanwhile, and a manager gone from the application is no manager;
/// - the lookup failed: [`Manager::Keep`]. It says nothing about who the manager is, and
///   removing on it would wipe every report's manager while a provider is unwell (a transient
///   failure) or refuses the lookup's filter (a permanent one, which no retry would fix).
pub fn resolve(client: &ScimClient, ids: &ManagerIds, waits: &ManagerWaits, u: &User) -> Manager {
    let Some(email) = resource::field_value(u, MANAGER_EMAIL).map(|e| e.to_lowercase()) else {
        return Manager::Keep;
    };
    if let Some(id) = ids.get(&email, Instant::now()) {
        return Manager::Set(id);
    }
    match client.id_by_email(&email) {
        Ok(Some(id)) => {
            ids.insert(&email, &id, Instant::now());
            Manager::Set(id)
        }
        Ok(None) => {
            waits.wait(&email, &u.key); // bounded: past it, not kept
            Manager::Remove
        }
        Err(_) => Manager::Keep,
    }
}

/// Most reports kept waiting for their manager, per pusher.
pub const MAX_WAITING: usize = 10_000;

#[derive(Default)]
struct Waits {
    /// Report keys by the manager's lower-cased email.
    by_manager: HashMap<String, BTreeSet<String>>,
    /// Reports kept (the sum of the sets' sizes).
    count: usize,
    /// Managers who arrived since the last `take_ready`.
    arrived: BTreeSet<String>,
    /// Reports whose manager arrived, not yet handed back (past a call's limit).
    ready: BTreeSet<String>,
}

/// The reports waiting for their manager to reach the application.
#[derive(Default)]
pub struct ManagerWaits {
    inner: Mutex<Waits>,
}

impl ManagerWaits {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waits> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `report` was pushed without its manager `manager_email` (lower-cased): the application
    /// has no such user yet. False when the bound is reached (not kept).
    pub fn wait(&self, manager_email: &str, report: &str) -> bool {
        let mut w = self.lock();
        if w.count >= MAX_WAITING {
            return false;
        }
        let added = w
            .by_manager
            .entry(manager_email.to_string())
            .or_default()
            .insert(report.to_string());
        if added {
            w.count += 1;
        }
        true
    }

    /// A user reached the application under these lower-cased names (userName, email).
    pub fn arrived(&self, names: &[String]) {
        let mut w = self.lock();
        if w.count == 0 {
            return;
        }
        for name in names {
            if w.by_manager.contains_key(name) {
                w.arrived.insert(name.clone());
            }
        }
    }

    /// At most `limit` reports whose manager arrived, no longer waiting (the rest come with
    /// the next calls).
    pub fn take_ready(&self, limit: usize) -> Vec<String> {
        let mut w = self.lock();
        let arrived = std::mem::take(&mut w.arrived);
        for name in arrived {
            if let Some(reports) = w.by_manager.remove(&name) {
                w.count -= reports.len();
                w.ready.extend(reports);
            }
        }
        std::iter::from_fn(|| w.ready.pop_first())
            .take(limit)
            .collect()
    }

    /// Hands back reports taken by [`take_ready`](Self::take_ready) but not pushed (the
    /// pusher stopped first): the next call takes them again.
    pub fn put_back(&self, reports: impl IntoIterator<Item = String>) {
        self.lock().ready.extend(reports);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manager_s_id_lives_a_few_minutes_and_is_forgotten_when_its_user_changes() {
        let ids = ManagerIds::default();
        let t0 = Instant::now();
        ids.insert("boss@x", "m-1", t0);
        assert_eq!(
            ids.get("boss@x", t0 + ID_LIFETIME / 2).as_deref(),
            Some("m-1")
        );
        assert_eq!(ids.get("boss@x", t0 + ID_LIFETIME), None, "expired");
        assert!(ids.lock().is_empty(), "an expired entry is dropped");
        ids.insert("boss@x", "m-1", t0);
        let app = serde_json::json!({"userName": "Boss",
            "emails": [{"value": "BOSS@x"}, {"type": "home"}]});
        assert_eq!(app_names(&app), ["boss", "boss@x"]);
        ids.forget(&app_names(&app));
        assert_eq!(ids.get("boss@x", t0), None, "forgotten");
    }

    #[test]
    fn reports_wait_for_their_manager_and_are_handed_back_once() {
        let w = ManagerWaits::default();
        w.arrived(&["boss@x".into()]); // nobody waits: nothing remembered
        assert!(w.take_ready(10).is_empty());
        assert!(w.wait("boss@x", "emp1"));
        assert!(w.wait("boss@x", "emp2"));
        assert!(w.wait("boss@x", "emp1"));
        assert!(w.wait("other@x", "emp3"));
        assert!(w.take_ready(10).is_empty());
        w.arrived(&["boss".into(), "boss@x".into()]);
        assert_eq!(w.take_ready(1), ["emp1"]);
        assert_eq!(w.take_ready(10), ["emp2"]);
        assert!(w.take_ready(10).is_empty());
        assert_eq!(w.lock().count, 1);
        for i in 0..MAX_WAITING {
            w.wait("many@x", &format!("r{i}"));
        }
        assert!(!w.wait("many@x", "one-too-many"));
        assert_eq!(w.lock().count, MAX_WAITING);
    }
}
