//! Schedule ticks this node did not fire, asked for again while they may still be lost: one
//! another node fired (it may die before running it) or one the store could not be asked
//! about (no node may have fired it). Decision (gap of s26): a node killed between firing a
//! tick and claiming the file left the night's file waiting for the next tick, with no record
//! and no `missing` mail.
//!
//! The schedules (`schedules.rs`) hand a tick in with [`TickWatch::watch`] and take back the
//! ticks to ask for now with [`TickWatch::due`]; asking goes through the store's `fire_tick`,
//! which answers yes to one node at a time, and to another once the firing node is no longer
//! alive (`Cluster::fire_tick`). A tick fired twice that way is run twice: the second run
//! finds the file imported (or the dead node's claim finished first, `worker::recover_first`)
//! and records nothing new, since a file that came and was run since the tick before is not
//! reported missing.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::Duration;
use std::time::Instant;

/// How long a tick is watched: the longest a run waits for the tenant's lease, and two leases.
fn watch_for(lease_secs: u64) -> Duration {
    super::lease::LEASE_WAIT + Duration::from_secs(lease_secs.saturating_mul(2))
}

/// How often a watched tick is asked for again: once per lease (a dead node is known as dead
/// only after it), at least every 2 s and at most every minute.
fn ask_every(lease_secs: u64) -> Duration {
    Duration::from_secs(lease_secs.clamp(2, 60))
}

struct Watched {
    tick: DateTime<Utc>,
    until: Instant,
    next_ask: Instant,
}

/// The newest watched tick of each tenant (a later tick's run takes the files an earlier one
/// left, so one per tenant is enough and the map stays as small as the tenant list).
#[derive(Default)]
pub(super) struct TickWatch {
    by_tenant: HashMap<String, Watched>,
}

impl TickWatch {
    /// Watches `tick` of `tenant` instead of any earlier tick of it, from `now`.
    pub(super) fn watch(
        &mut self,
        tenant: &str,
        tick: DateTime<Utc>,
        lease_secs: u64,
        now: Instant,
    ) {
        let watched = Watched {
            tick,
            until: now + watch_for(lease_secs),
            next_ask: now + ask_every(lease_secs),
        };
        self.by_tenant.insert(tenant.to_string(), watched);
    }

    /// Stops watching the tenant (this node fired a later tick, or the tenant is gone).
    pub(super) fn forget(&mut self, tenant: &str) {
        self.by_tenant.remove(tenant);
    }

    /// Keeps the tenants `keep` says yes to.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.by_tenant.retain(|t, _| keep(t));
    }

    /// The ticks to ask for again at `now`; those past their watch are dropped.
    pub(super) fn due(&mut self, lease_secs: u64, now: Instant) -> Vec<(String, DateTime<Utc>)> {
        self.by_tenant.retain(|_, w| now < w.until);
        let mut out = Vec::new();
        for (tenant, w) in &mut self.by_tenant {
            if now >= w.next_ask {
                w.next_ask = now + ask_every(lease_secs);
                out.push((tenant.clone(), w.tick));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_tick_is_due_once_per_lease_until_its_watch_ends() {
        let mut w = TickWatch::default();
        let (tick, start) = (Utc::now(), Instant::now());
        let at = |secs: u64| start + Duration::from_secs(secs);
        w.watch("acme", tick, 5, start);
        assert!(w.due(5, at(4)).is_empty(), "not before a lease has passed");
        assert_eq!(w.due(5, at(5)), [("acme".to_string(), tick)]);
        assert!(w.due(5, at(6)).is_empty(), "asked again only a lease later");
        // A later tick replaces the earlier one.
        let later = tick + chrono::Duration::minutes(1);
        w.watch("acme", later, 5, at(6));
        assert_eq!(w.due(5, at(11)), [("acme".to_string(), later)]);
        let end = at(6) + watch_for(5);
        assert!(w.due(5, end).is_empty(), "the watch ended");
        w.watch("beta", tick, 5, end);
        w.forget("beta");
        assert!(w.due(5, end + Duration::from_secs(5)).is_empty());
    }
}
