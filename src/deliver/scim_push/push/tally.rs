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

use super::{backoff, later, with_failing_cleared, PushResult, Pusher, UserWork};
use crate::deliver::scim_push::client::{ScimError, Scope};
use crate::deliver::scim_push::status::{Failure, MAX_FAILING};
use chrono::{DateTime, Utc};

/// Fewest refusals in a batch with no success that trip the breaker.
pub(super) const BREAKER_MIN: usize = 5;

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
    /// Records a batch's results in the status; says where the cursor must stop.
    pub(super) fn tally(
        &self,
        work: &[UserWork],
        results: Vec<Option<PushResult>>,
        now: DateTime<Utc>,
    ) -> Tally {
        let mut t = Tally::default();
        let mut refused: Vec<(&UserWork, ScimError)> = Vec::new();
        let mut st = self.status();
        for (w, r) in work.iter().zip(results) {
            match r {
                None => t.hold(w.first_seq, None),
                Some(Ok(_)) => {
                    t.pushed += 1;
                    st.failing.remove(&w.key);
                }
                Some(Err(e)) if e.transient() => t.hold(w.first_seq, Some(e)),
                Some(Err(e)) => refused.push((w, e)),
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
