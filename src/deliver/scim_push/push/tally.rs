//! What a batch's results say: which users went through, which the application refused (kept
//! as failing users), and where the cursor must stop, with the error it waits on.
//!
//! Data enters as the batch's users ([`UserWork`]) and one result each; it leaves as the
//! pusher's status (pushed, failing users, last error) and a [`Tally`] for the cursor. Besides
//! each user's own result, two rules look at the batch as a whole, so that a fault of the push
//! (a wrong `url`, a provider that rejects every filter) is not taken for a refusal of every
//! user, which moved the cursor past the whole backlog (audit):
//! - the breaker: when at least [`BREAKER_MIN`] users were refused, none went through, and
//!   every refusal has the same status, the cursor waits before them with that error;
//! - a full failing list ([`MAX_FAILING`]) takes no new user: the cursor waits before it.
//!
//! And one the other way: a user whose push failed transiently (a 5xx, a timeout) in
//! [`MAX_STRIKES`] batches in a row in which other users went through is taken as refused (kept
//! as failing with the provider's detail, retried with backoff), so one user the provider
//! always answers with a 500 no longer stalls the tenant (audit F2). A 429, and a failure of the
//! push as a whole (`Scope::Push`), never count: they say nothing about the user.

use super::{backoff, later, with_failing_cleared, PushResult, Pusher, UserWork};
use crate::deliver::scim_push::client::{ScimError, Scope};
use crate::deliver::scim_push::status::{Failure, MAX_FAILING};
use chrono::{DateTime, Utc};

/// Fewest refusals in a batch with no success that trip the breaker.
pub(super) const BREAKER_MIN: usize = 5;
/// Transient failures of one user, in batches where others went through, after which it is
/// taken as refused.
pub(super) const MAX_STRIKES: u32 = 5;
/// Users whose strikes are remembered (the map is emptied when full).
const STRIKES_KEPT: usize = 10_000;

/// What a batch's results say.
#[derive(Default)]
pub(super) struct Tally {
    pub pushed: usize,
    pub failed: usize,
    /// The first change the cursor must not pass (a transient failure or a user not started).
    pub hold_seq: Option<u64>,
    /// The error of the earliest user the cursor waits for, with its first change.
    pub hold_err: Option<(u64, ScimError)>,
}

impl Tally {
    /// The cursor must stop before `seq`; `e` is why (None: a user not started).
    fn hold(&mut self, seq: u64, e: Option<ScimError>) {
        self.hold_seq = Some(self.hold_seq.map_or(seq, |s| s.min(seq)));
        if let Some(e) = e {
            if self.hold_err.as_ref().is_none_or(|(s, _)| seq < *s) {
                self.hold_err = Some((seq, e));
            }
        }
    }
}

/// The error the push waits on when the batch's refusals look like the push's fault rather
/// than each user's (see the module's doc); None when they do not.
pub(super) fn breaker(refused: &[(&UserWork, ScimError)], pushed: usize) -> Option<ScimError> {
    let (_, first) = refused.first()?;
    if pushed > 0 || refused.len() < BREAKER_MIN {
        return None;
    }
    if refused.iter().any(|(_, e)| e.status != first.status) {
        return None;
    }
    Some(ScimError {
        scope: Scope::Push,
        detail: format!(
            "all {} users of the batch were refused with the same status and none went through, so the push waits instead of skipping them (is `url` or the application's configuration wrong?): {}",
            refused.len(),
            first.detail
        ),
        ..first.clone()
    })
}

impl Pusher {
    /// Counts the batch's transient failures against their users when others went through
    /// (`progress`), and forgets the strikes of users that went through. Each failure comes
    /// back as it was, or, for a user struck out ([`MAX_STRIKES`]), as that user's refusal.
    fn strike<'w>(
        &self,
        work: &'w [UserWork],
        transient: Vec<(&'w UserWork, ScimError)>,
        progress: bool,
    ) -> Vec<(&'w UserWork, ScimError)> {
        let mut strikes = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
        let failed: std::collections::HashSet<&str> =
            transient.iter().map(|(w, _)| w.key.as_str()).collect();
        for w in work.iter().filter(|w| !failed.contains(w.key.as_str())) {
            strikes.remove(&w.key);
        }
        if !progress {
            return transient;
        }
        if strikes.len() >= STRIKES_KEPT {
            strikes.clear();
        }
        let mut out = Vec::with_capacity(transient.len());
        for (w, e) in transient {
            if e.status == Some(429) || e.scope == Scope::Push {
                out.push((w, e));
                continue;
            }
            let n = strikes.entry(w.key.clone()).or_insert(0);
            *n += 1;
            if *n < MAX_STRIKES {
                out.push((w, e));
                continue;
            }
            strikes.remove(&w.key);
            tracing::warn!(tenant = %self.tenant, key = %w.key,
                "SCIM push: this user failed {MAX_STRIKES} times in a row while others went through; kept as failing so the push goes on: {e}");
            let detail = format!(
                "failed {MAX_STRIKES} times in a row while other users went through (kept as failing so the push goes on): {}",
                e.detail
            );
            out.push((
                w,
                ScimError {
                    scope: Scope::User,
                    detail,
                    ..e
                },
            ));
        }
        out
    }

    /// Records a batch's results in the status; says where the cursor must stop.
    pub(super) fn tally(
        &self,
        work: &[UserWork],
        results: Vec<Option<PushResult>>,
        now: DateTime<Utc>,
    ) -> Tally {
        let mut t = Tally::default();
        let mut refused: Vec<(&UserWork, ScimError)> = Vec::new();
        let mut transient: Vec<(&UserWork, ScimError)> = Vec::new();
        let mut st = self.status();
        for (w, r) in work.iter().zip(results) {
            match r {
                None => t.hold(w.first_seq, None),
                Some(Ok(_)) => {
                    t.pushed += 1;
                    st.failing.remove(&w.key);
                }
                Some(Err(e)) if e.transient() => transient.push((w, e)),
                Some(Err(e)) => refused.push((w, e)),
            }
        }
        for (w, e) in self.strike(work, transient, t.pushed > 0) {
            match e.transient() {
                true => t.hold(w.first_seq, Some(e)),
                false => refused.push((w, e)),
            }
        }
        if let Some(e) = breaker(&refused, t.pushed) {
            for (w, _) in refused.drain(..) {
                t.hold(w.first_seq, Some(e.clone()));
            }
        }
        for (w, e) in refused {
            if !st.takes(&w.key) {
                let detail = format!(
                    "{MAX_FAILING} users are failing already, so the push waits before this one until some go through: {}",
                    e.detail
                );
                let e = ScimError {
                    scope: Scope::Push,
                    detail,
                    ..e
                };
                t.hold(w.first_seq, Some(e));
                continue;
            }
            t.failed += 1;
            let attempts = st.failing.get(&w.key).map_or(0, |f| f.attempts) + 1;
            tracing::warn!(tenant = %self.tenant, key = %w.key, "SCIM push refused: {e}");
            let cleared = with_failing_cleared(&st, &w.key, &w.cleared);
            // Kept: `takes` said so.
            let _kept = st.fail(Failure {
                key: w.key.clone(),
                kind: format!("{:?}", w.kind).to_lowercase(),
                status: e.status,
                detail: e.detail,
                at: now,
                attempts,
                next_attempt: later(now, backoff(attempts)),
                cleared,
            });
        }
        st.pushed += t.pushed as u64;
        if t.pushed > 0 {
            st.last_success = Some(now);
        }
        st.last_error = t.hold_err.as_ref().map(|(_, e)| e.to_string());
        t
    }
}
