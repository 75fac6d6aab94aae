//! The pusher's failing users and waiting reports: retrying the users the application refused
//! ([`Pusher::retry_failing`]), keeping that list durable in the store (loaded by a pusher's
//! first batch, saved after any batch that changed it), and pushing again the reports whose
//! manager arrived ([`Pusher::push_waiting_reports`]).
//!
//! Data enters as the pusher's status (`PushStatus::failing`), its `ManagerWaits` and the
//! [`ChangeSource`]'s saved failures; it leaves as SCIM requests (through the pusher) and the
//! list saved back with [`ChangeSource::save_failures`].

use super::{backoff, later, with_failing_cleared, ChangeSource, Pusher, BATCH, RETRIES_PER_BATCH};
use crate::deliver::scim_push::status::Failure;
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

impl Pusher {
    /// Merges the failing users saved in the store into the status, once per pusher.
    pub(super) fn load_failing(&self, src: &dyn ChangeSource) -> Result<()> {
        if self.saved().is_some() {
            return Ok(());
        }
        let kept = src.failures()?;
        {
            let mut st = self.status();
            for f in &kept {
                if !st.failing.contains_key(&f.key) && !st.fail(f.clone()) {
                    break; // saved by this code, so never more than the list takes
                }
            }
        }
        *self.saved() = Some(kept);
        Ok(())
    }

    fn saved(&self) -> std::sync::MutexGuard<'_, Option<Vec<Failure>>> {
        self.saved_failing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Saves the failing users in the store when they differ from what was saved last.
    pub(super) fn save_failing(&self, src: &dyn ChangeSource) -> Result<()> {
        let now: Vec<Failure> = self.status().failing.values().cloned().collect();
        let mut saved = self.saved();
        if saved.as_ref() != Some(&now) {
            src.save_failures(&now)?;
            *saved = Some(now);
        }
        Ok(())
    }

    /// Pushes again (at most [`BATCH`] per call) the reports whose manager reached the
    /// application; one that fails is kept as a failing user (retried with backoff).
    pub(super) fn push_waiting_reports(&self, src: &dyn ChangeSource, now: DateTime<Utc>) {
        let mut ready = self.waits.take_ready(BATCH).into_iter();
        while let Some(key) = ready.next() {
            if self.stopped() {
                self.waits.put_back(std::iter::once(key).chain(ready));
                return;
            }
            let cleared = with_failing_cleared(&self.status(), &key, &BTreeSet::new());
            let r = self.push_one(src, &key, &cleared);
            let mut st = self.status();
            match r {
                Ok(_) => {
                    st.pushed += 1;
                    st.failing.remove(&key);
                }
                Err(e) => {
                    tracing::warn!(tenant = %self.tenant, %key,
                        "SCIM push: setting the manager failed: {e}");
                    let kept = st.fail(Failure {
                        cleared,
                        key: key.clone(),
                        kind: "manager".into(),
                        status: e.status,
                        detail: e.detail,
                        at: now,
                        attempts: 1,
                        next_attempt: later(now, backoff(1)),
                    });
                    if !kept {
                        tracing::warn!(tenant = %self.tenant, %key,
                            "SCIM push: the failing list is full, so this report's manager is set only when it changes or by a reconcile");
                    }
                }
            }
        }
    }

    /// Tries again the failing users whose next attempt is due (a few per call).
    pub(super) fn retry_failing(&self, src: &dyn ChangeSource, now: DateTime<Utc>) {
        let due: Vec<Failure> = self
            .status()
            .failing
            .values()
            .filter(|f| f.next_attempt <= now)
            .take(RETRIES_PER_BATCH)
            .cloned()
            .collect();
        for f in due {
            if self.stopped() {
                return; // the rest stay on the failing list, due
            }
            let r = self.push_one(src, &f.key, &f.cleared);
            let mut st = self.status();
            match r {
                Ok(_) => {
                    st.failing.remove(&f.key);
                    st.pushed += 1;
                }
                Err(e) => {
                    let attempts = f.attempts.saturating_add(1);
                    // Always kept: the list holds this user already.
                    let _kept = st.fail(Failure {
                        status: e.status,
                        detail: e.detail,
                        at: now,
                        attempts,
                        next_attempt: later(now, backoff(attempts)),
                        ..f
                    });
                }
            }
        }
    }
}
