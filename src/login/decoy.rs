//! How long a login for a name that is no tenant (or a tenant without a password) waits before
//! its "no", so that the answer's timing does not tell which names are tenants.
//!
//! The wait is one of the last [`SAMPLES`] durations of real password checks of the last
//! minute (the wait in the checking threads' queue included), picked at random and jittered by
//! ±10 %, taken in by [`observed`] from every real check. Without such a check, it is the time of one argon2
//! check of [`DECOY_HASH`], made once per process (`calibrated`) in the same queue as real
//! checks.
//!
//! Why not an argon2 check per unknown name, as before: it made unknown names cost a real check
//! each, so a flood of made-up names from many addresses queued real tenants' logins behind
//! ~19 MiB, tens-of-ms checks. A sleep costs nothing, and as it copies recent real checks
//! (queueing included) the timing stays as close to a real tenant's as a decoy check's was.
//! The throttle still counts each attempt first, so unknown names are slowed and blocked as
//! before.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A hash of a random password, checked once to calibrate the wait when no real check has been
/// seen yet.
pub(super) const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0XSsfOIUbEVJFH1EkHwIqJ5NV+nZFzs1OHp9Fk1dcWs";

/// Real check durations remembered.
const SAMPLES: usize = 32;
/// Samples older than this are left out: after a busy spell, old queueing times would make
/// unknown names answer slower than real tenants do now (re-read of s15).
const SAMPLE_AGE: Duration = Duration::from_secs(60);

/// (when it ended, how long it took) of the last real checks.
static RECENT: Mutex<VecDeque<(Instant, Duration)>> = Mutex::new(VecDeque::new());

/// A real password check took `took` (waiting for its slot included).
pub(super) fn observed(took: Duration) {
    let mut recent = RECENT.lock().unwrap_or_else(PoisonError::into_inner);
    if recent.len() >= SAMPLES {
        recent.pop_front();
    }
    recent.push_back((Instant::now(), took));
}

/// One remembered duration of the last [`SAMPLE_AGE`], at random; None without one.
fn pick() -> Option<Duration> {
    use rand::Rng;
    let mut recent = RECENT.lock().unwrap_or_else(PoisonError::into_inner);
    recent.retain(|(at, _)| at.elapsed() < SAMPLE_AGE);
    if recent.is_empty() {
        return None;
    }
    let at = rand::thread_rng().gen_range(0..recent.len());
    recent.get(at).map(|(_, took)| *took)
}

/// The time of one argon2 check of [`DECOY_HASH`], measured once per process (concurrent first
/// callers wait for the same check).
async fn calibrated() -> Duration {
    static ONCE: tokio::sync::OnceCell<Duration> = tokio::sync::OnceCell::const_new();
    *ONCE
        .get_or_init(|| async {
            let started = Instant::now();
            let _ = super::argon2_threads::check(DECOY_HASH.to_string(), String::new()).await;
            started.elapsed()
        })
        .await
}

/// Waits about as long as a real password check takes (see the module doc).
pub(super) async fn wait() {
    use rand::Rng;
    let base = match pick() {
        Some(d) => d,
        None => {
            // The calibration itself took about a check's time for its first caller.
            let started = Instant::now();
            let d = calibrated().await;
            d.saturating_sub(started.elapsed())
        }
    };
    let jitter = rand::thread_rng().gen_range(0.9..1.1);
    tokio::time::sleep(base.mul_f64(jitter)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoy_hash_parses() {
        assert!(argon2::password_hash::phc::PasswordHash::new(DECOY_HASH).is_ok());
    }

    #[tokio::test]
    async fn the_wait_copies_real_checks() {
        observed(Duration::from_millis(40));
        let started = Instant::now();
        wait().await;
        let took = started.elapsed();
        // Some remembered check (this test's 40 ms, or another test's) ±10 %.
        assert!(took >= Duration::from_millis(1), "{took:?}");
    }
}
