//! Turns for directory listings: SCIM `/Users` and `/Groups`, the admin API's `/users` and the
//! console's user pages each test a tenant's whole directory, so only a few run at once. The
//! console's other heavy reads take the same turns: a run's report, a page of history, and
//! today's file (there and in the admin API's `today`), which lists the tenant's folder.
//!
//! A request asks [`HeavyTurns::turn`] with its tenant and leaves holding a [`HeavyTurn`]
//! (dropped when the answer is ready) or with None, which the caller answers 503 with
//! `Retry-After`. At most [`HEAVY_REQUESTS`] run and [`HEAVY_QUEUE`] are admitted in this
//! process; one tenant holds at most [`TENANT_RUNNING`] of the running turns and
//! [`TENANT_ADMITTED`] of the admitted ones, so a tenant flooding searches of its own directory
//! (its portal users, its SCIM client) slows itself, not every other tenant's provisioning
//! (review of 2026-11-30, console F2).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Directory listings served at once (each scans a tenant's whole directory).
pub(crate) const HEAVY_REQUESTS: usize = 4;
/// Listings admitted (running or waiting); more are answered 503 with `Retry-After` at once.
const HEAVY_QUEUE: usize = 64;
/// Running turns one tenant may hold: the rest stay free for the other tenants.
const TENANT_RUNNING: usize = HEAVY_REQUESTS / 2;
/// Admitted listings one tenant may have (running or waiting).
const TENANT_ADMITTED: usize = HEAVY_QUEUE / 4;
/// How long an admitted listing waits for its turn before it is answered 503.
const HEAVY_WAIT: Duration = Duration::from_secs(10);
/// Past this many tenants with a share, shares nobody holds are forgotten.
const SHARES_KEPT: usize = 1024;

/// One tenant's part of the turns.
struct Share {
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
}

/// The turns of this process (cloned handles share them).
#[derive(Clone)]
pub struct HeavyTurns {
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    shares: Arc<Mutex<HashMap<String, Share>>>,
}

/// A listing's turn: held while it runs.
pub struct HeavyTurn {
    _permits: [OwnedSemaphorePermit; 4],
}

impl Default for HeavyTurns {
    fn default() -> Self {
        HeavyTurns {
            running: Arc::new(Semaphore::new(HEAVY_REQUESTS)),
            admitted: Arc::new(Semaphore::new(HEAVY_QUEUE)),
            shares: Arc::default(),
        }
    }
}

impl HeavyTurns {
    /// A turn for a listing of `tenant`'s directory, waiting at most [`HEAVY_WAIT`]; None when
    /// the process or the tenant has too many admitted, or the wait ran out.
    pub async fn turn(&self, tenant: &str) -> Option<HeavyTurn> {
        let admitted = self.admitted.clone().try_acquire_owned().ok()?;
        let (tenant_running, tenant_admitted) = self.share(tenant);
        let tenant_admitted = tenant_admitted.try_acquire_owned().ok()?;
        let wait = async {
            let mine = tenant_running.acquire_owned().await.ok()?;
            let any = self.running.clone().acquire_owned().await.ok()?;
            Some((mine, any))
        };
        let (mine, any) = tokio::time::timeout(HEAVY_WAIT, wait).await.ok()??;
        Some(HeavyTurn {
            _permits: [admitted, tenant_admitted, mine, any],
        })
    }

    /// The semaphores of `tenant`'s share (made on first use).
    fn share(&self, tenant: &str) -> (Arc<Semaphore>, Arc<Semaphore>) {
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        if shares.len() >= SHARES_KEPT && !shares.contains_key(tenant) {
            shares.retain(|_, s| {
                Arc::strong_count(&s.running) > 1 || Arc::strong_count(&s.admitted) > 1
            });
        }
        let s = shares.entry(tenant.to_string()).or_insert_with(|| Share {
            running: Arc::new(Semaphore::new(TENANT_RUNNING)),
            admitted: Arc::new(Semaphore::new(TENANT_ADMITTED)),
        });
        (s.running.clone(), s.admitted.clone())
    }

    /// Takes every admitted turn of `tenant`'s share, so its next request is refused at once
    /// (for the tests of the pages that take a turn).
    #[cfg(test)]
    pub(crate) fn take_share(&self, tenant: &str) -> Vec<OwnedSemaphorePermit> {
        let (_, admitted) = self.share(tenant);
        std::iter::from_fn(|| admitted.clone().try_acquire_owned().ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_tenant_cannot_take_every_turn() {
        let turns = HeavyTurns::default();
        let mut mine = Vec::new();
        for _ in 0..TENANT_RUNNING {
            mine.push(turns.turn("flood").await.expect("a turn within the share"));
        }
        // The flooding tenant's next listing waits for its own share ...
        let more = turns.turn("flood");
        tokio::pin!(more);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut more)
                .await
                .is_err(),
            "a tenant past its share waits"
        );
        // ... while another tenant gets a turn at once.
        let other = tokio::time::timeout(Duration::from_millis(50), turns.turn("quiet")).await;
        assert!(
            matches!(other, Ok(Some(_))),
            "another tenant is not starved"
        );
        drop(mine);
        assert!(more.await.is_some(), "the share's turn comes back");
    }

    #[tokio::test]
    async fn a_tenant_past_its_admitted_share_is_refused_at_once() {
        let turns = HeavyTurns::default();
        let mut waiting = Vec::new();
        for _ in 0..TENANT_ADMITTED {
            let t = turns.clone();
            waiting.push(tokio::spawn(async move {
                let held = t.turn("flood").await;
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(held);
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = tokio::time::timeout(Duration::from_millis(50), turns.turn("flood")).await;
        assert!(matches!(refused, Ok(None)), "refused without waiting");
        let other = tokio::time::timeout(Duration::from_millis(50), turns.turn("quiet")).await;
        assert!(matches!(other, Ok(Some(_))), "another tenant is admitted");
        for w in waiting {
            w.abort();
        }
    }
}
