//! How long a login for a name that is no tenant (or a tenant without a password) waits before
//! its "no", so that the answer's timing does not tell which names are tenants.
//!
//! The wait is one of the last [`SAMPLES`] durations of real password checks (the wait in the
//! checking threads' queue included), whatever their age, picked at random and jittered by
//! ±10 %, taken in by [`observed`] from every real check. Before the first real check of the
//! process, it is the time of one argon2 check of [`DECOY_HASH`], made once per process
//! (`calibrated`) in the same queue as real checks.
//!
//! Why samples do not expire: they used to be dropped after a minute, and after a quiet minute
//! an unknown name waited the calibrated time (one check of [`DECOY_HASH`], with its own argon2
//! parameters, on the server as it was then) while a tenant's wrong password took a real check
//! of that tenant's hash, so an attacker could time the two apart (review of 2026-12-03). The
//! newest samples are always the nearest thing to what a real check takes now; after a busy
//! spell they follow the lighter load within [`SAMPLES`] real checks.
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

/// Real check durations remembered: the newest, whatever their age.
const SAMPLES: usize = 32;

/// How long the last real checks took, oldest first (at most [`SAMPLES`]).
static RECENT: Mutex<VecDeque<Duration>> = Mutex::new(VecDeque::new());

/// A real password check took `took` (waiting for its slot included).
pub(super) fn observed(took: Duration) {
    let mut recent = RECENT.lock().unwrap_or_else(PoisonError::into_inner);
    remember(&mut recent, took);
}

/// Adds `took` to the ring of samples, dropping the oldest when it holds [`SAMPLES`].
fn remember(ring: &mut VecDeque<Duration>, took: Duration) {
    while ring.len() >= SAMPLES {
        ring.pop_front();
    }
    ring.push_back(took);
}

/// The wait copied from `ring`: its sample number `at` (modulo its length) times `jitter`; None
/// when it holds none.
fn chosen(ring: &VecDeque<Duration>, at: usize, jitter: f64) -> Option<Duration> {
    let took = ring.get(at.checked_rem(ring.len())?)?;
    Some(took.mul_f64(jitter))
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
    let (at, jitter) = {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        (rng.gen::<usize>(), rng.gen_range(0.9..1.1))
    };
    let sampled = {
        let recent = RECENT.lock().unwrap_or_else(PoisonError::into_inner);
        chosen(&recent, at, jitter)
    };
    let delay = match sampled {
        Some(d) => d,
        None => {
            // The calibration itself took about a check's time for its first caller.
            let started = Instant::now();
            let d = calibrated().await;
            d.saturating_sub(started.elapsed()).mul_f64(jitter)
        }
    };
    tokio::time::sleep(delay).await;
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

    #[test]
    fn samples_are_kept_whatever_their_age_and_the_newest_replace_the_oldest() {
        // Samples taken long ago (past the minute after which they used to be dropped, which
        // made an unknown name wait the calibrated time instead): still what a wait copies.
        let mut ring = VecDeque::new();
        for ms in 1..=SAMPLES as u64 + 8 {
            remember(&mut ring, Duration::from_millis(ms * 10));
        }
        assert_eq!(ring.len(), SAMPLES);
        // The oldest 8 went; the newest are kept, in order.
        assert_eq!(ring.front(), Some(&Duration::from_millis(90)));
        assert_eq!(ring.back(), Some(&Duration::from_millis(400)));
        assert_eq!(chosen(&ring, 0, 1.0), Some(Duration::from_millis(90)));
        assert_eq!(
            chosen(&ring, SAMPLES - 1, 1.0),
            Some(Duration::from_millis(400))
        );
        // Any pick is a sample, jittered.
        let wait = chosen(&ring, SAMPLES + 3, 0.9).unwrap();
        assert_eq!(wait, Duration::from_millis(120).mul_f64(0.9));
        assert_eq!(chosen(&VecDeque::new(), 5, 1.0), None);
    }

    #[test]
    fn the_global_ring_keeps_the_newest_samples() {
        for _ in 0..SAMPLES + 1 {
            observed(Duration::from_millis(7));
        }
        let recent = RECENT.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(recent.len(), SAMPLES);
        // (Other tests may add their own samples meanwhile, never past the bound.)
        assert!(chosen(&recent, 0, 1.0).is_some());
    }
}
