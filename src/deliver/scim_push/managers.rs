//! Reports pushed before their manager: a user whose `manager_email` names somebody the
//! application does not have yet is pushed without `manager`; once that manager is created in
//! (or adopted by) the application, the pusher pushes such reports again so they get it.
//!
//! Data enters from the pusher: [`ManagerWaits::wait`] when a manager lookup found nobody,
//! [`ManagerWaits::arrived`] with the lower-cased `userName` and email of each user created or
//! adopted; it leaves as the report keys [`ManagerWaits::take_ready`] hands back after a batch.
//! In memory and bounded ([`MAX_WAITING`] reports; past it new ones are not kept and only a
//! later change of the report sets its manager): a restart forgets the waits.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

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
