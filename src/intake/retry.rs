//! When a run cannot go on for a reason outside its file: the store is unavailable (PostgreSQL
//! down or restarting), or an archive folder or the store failed. A tenant's queue waits for the
//! store before it claims anything ([`store_answers`]), so uploads stay in the tenant folder;
//! a claimed run is retried a few times and waits out an unavailable store without spending an
//! attempt ([`with_retries`]).
//!
//! Data enters as the intake's shared state and a run to try; it leaves as whether the run
//! succeeded. Nothing is written here: the runs write.

use super::{Intake, Shared};
use crate::store::Store;
use std::time::Duration;

/// The first pause between probes of an unavailable store; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(15);

/// Why the store cannot answer for `tenant` right now, if it cannot (one cheap read). Any
/// other answer, even an error, means it is reachable.
fn unavailable(store: &Store, tenant: &str) -> Option<anyhow::Error> {
    match store.tenant_state(tenant) {
        Err(e) if crate::store::is_unavailable(&e) => Some(e),
        _ => None,
    }
}

fn next_pause(pause: Duration) -> Duration {
    (pause * 2).min(MAX_PAUSE)
}

/// Waits until the store answers for `tenant` (at once, unless it is unavailable: PostgreSQL
/// down or restarting). Meanwhile the request waits on the tenant's queue and its upload waits
/// in the tenant folder, unclaimed. False when the intake stops while waiting.
pub(super) async fn store_answers(intake: &Intake, tenant: &str) -> bool {
    let mut pause = FIRST_PAUSE;
    let mut said = false;
    loop {
        if intake.stopping() {
            return false;
        }
        let store = intake.shared.store.clone();
        let t = tenant.to_string();
        let probe = tokio::task::spawn_blocking(move || unavailable(&store, &t)).await;
        match probe {
            Ok(Some(e)) => {
                if !said {
                    tracing::warn!(%tenant, "the store is unavailable; uploads wait in the tenant folder until it is back: {e:#}");
                    said = true;
                }
            }
            _ => {
                if said {
                    tracing::info!(%tenant, "the store is back; imports resume");
                }
                return true;
            }
        }
        tokio::time::sleep(pause).await;
        pause = next_pause(pause);
    }
}

/// Retries a run that failed for a reason outside the file (store, archive folder): three more
/// times, a minute apart; after that the claim stays and is retried on the next start.
/// A failure because the store is unavailable does not count as an attempt: the run waits
/// until the store answers again (or the intake stops), then goes on. A run whose tenant lease
/// another node took meanwhile is given up to that node (`lease::HeldElsewhere`). True when
/// an attempt succeeded.
pub(super) fn with_retries(
    shared: &Shared,
    tenant: &str,
    what: &str,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> bool {
    let mut attempt = 1;
    while attempt <= 4 {
        match f() {
            Ok(()) => return true,
            Err(e) if super::lease::is_held_elsewhere(&e) => {
                tracing::warn!(%tenant, file = what, "giving the run up: {e:#}");
                return false;
            }
            Err(e) if crate::store::is_unavailable(&e) => {
                tracing::warn!(%tenant, file = what, "run interrupted: the store is unavailable; it is retried when the store is back: {e:#}");
                if !wait_for_store(shared, tenant) {
                    tracing::warn!(%tenant, file = what, "stopping: the run stays claimed and is finished on the next start");
                    return false;
                }
            }
            Err(e) if attempt < 4 => {
                attempt += 1;
                tracing::error!(%tenant, file = what, attempt, "run failed, retrying in a minute: {e:#}");
                let pause = Duration::from_secs(if cfg!(debug_assertions) { 5 } else { 60 });
                if !pause_without_a_slot(&shared.permits, &shared.stopping, pause) {
                    tracing::warn!(%tenant, file = what, "stopping: the run stays claimed and is finished on the next start");
                    return false;
                }
            }
            Err(e) => {
                tracing::error!(%tenant, file = what, "run failed; it stays claimed and is retried on the next start: {e:#}");
                return false;
            }
        }
    }
    false
}

/// Sleeps `pause` between attempts of a failed run without keeping one of the intake's import
/// slots (`Shared::permits`, one per core) from the other tenants: the slot is lent to the
/// semaphore for the pause and taken back after it (review s15: a failing tenant's three
/// one-minute pauses kept another tenant's three-row upload waiting 63 s on two cores). The
/// run's own permit stays with its task, so the count is the same before and after. False when
/// the intake stops meanwhile.
fn pause_without_a_slot(
    permits: &tokio::sync::Semaphore,
    stopping: &std::sync::atomic::AtomicBool,
    pause: Duration,
) -> bool {
    use std::sync::atomic::Ordering;
    use tokio::sync::TryAcquireError;
    let step = Duration::from_millis(50);
    permits.add_permits(1);
    let until = std::time::Instant::now() + pause;
    loop {
        if stopping.load(Ordering::SeqCst) {
            // Slots no longer matter once the intake stops.
            return false;
        }
        if std::time::Instant::now() >= until {
            match permits.try_acquire() {
                Ok(lent) => {
                    lent.forget();
                    return true;
                }
                Err(TryAcquireError::Closed) => return false,
                Err(TryAcquireError::NoPermits) => {}
            }
        }
        std::thread::sleep(step);
    }
}

/// Blocks until the store answers for `tenant` again; false when the intake stops first.
fn wait_for_store(shared: &Shared, tenant: &str) -> bool {
    let mut pause = FIRST_PAUSE;
    while !shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(pause);
        if unavailable(&shared.store, tenant).is_none() {
            return true;
        }
        pause = next_pause(pause);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    #[test]
    fn a_pausing_run_lends_its_slot_and_takes_one_back() {
        let permits = Arc::new(Semaphore::new(1));
        let run = permits.clone().try_acquire_owned().unwrap();
        let stopping = Arc::new(AtomicBool::new(false));
        let (p, s) = (permits.clone(), stopping.clone());
        let pausing =
            std::thread::spawn(move || pause_without_a_slot(&p, &s, Duration::from_millis(300)));
        // While the run pauses, another tenant's run gets a slot.
        let other = loop {
            if let Ok(slot) = permits.clone().try_acquire_owned() {
                break slot;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        drop(other);
        assert!(pausing.join().unwrap(), "the pause ended normally");
        assert_eq!(
            permits.available_permits(),
            0,
            "the lent slot was taken back"
        );
        drop(run);
        assert_eq!(permits.available_permits(), 1, "one slot, as before");
    }

    #[test]
    fn a_pause_ends_when_the_intake_stops() {
        let permits = Semaphore::new(0);
        let stopping = AtomicBool::new(true);
        assert!(!pause_without_a_slot(
            &permits,
            &stopping,
            Duration::from_secs(60)
        ));
    }
}
