//! An operator looks at the blocks and lifts one (docs/operators.md, "Lifting a block"):
//! this node's blocks in force, and forgetting one address's or tenant's failures and block.
//!
//! Data enters as a scope and subject from the admin API (`admin::login_blocks`), or from the
//! lifts other nodes recorded in the shared store, which `serve`'s heartbeat reads
//! ([`LoginThrottle::apply_lifts`]); it leaves as [`LocalBlock`]s and the throttle's records
//! reset. Attempts in flight stay counted as in flight: they end as usual.

use super::*;

/// A block in force in this node's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalBlock {
    pub scope: LoginScope,
    pub subject: String,
    pub failures: u32,
    /// How long it still lasts.
    pub remaining: Duration,
}

impl LoginThrottle {
    /// This node's blocks in force, at most `limit`, the longest lasting first.
    pub fn local_blocks(&self, limit: usize) -> Vec<LocalBlock> {
        let now = Instant::now();
        let mut out: Vec<LocalBlock> = self.with(|t| {
            let addresses = t
                .by_addr
                .iter()
                .map(|(a, r)| (LoginScope::Address, a.to_string(), &r.all));
            let tenants = t
                .by_tenant
                .iter()
                .map(|(id, r)| (LoginScope::Tenant, id.clone(), r));
            addresses
                .chain(tenants)
                .filter_map(|(scope, subject, r)| {
                    let until = r.blocked_until.filter(|u| *u > now)?;
                    Some(LocalBlock {
                        scope,
                        subject,
                        failures: r.failures,
                        remaining: until.duration_since(now),
                    })
                })
                .collect()
        });
        out.sort_by(|a, b| {
            b.remaining
                .cmp(&a.remaining)
                .then(a.subject.cmp(&b.subject))
        });
        out.truncate(limit);
        out
    }

    /// Forgets the failures and block of `subject` here (an address as `IpAddr` writes it, or
    /// a tenant id); true when a block was in force.
    pub fn lift(&self, scope: LoginScope, subject: &str) -> bool {
        let now = Instant::now();
        // Counted first: a shared block read before this lift is not remembered after it.
        self.lifts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let lifted = self.with(|t| match scope {
            LoginScope::Address => {
                let Ok(addr) = subject.parse::<IpAddr>().map(crate::login::address_group) else {
                    return false;
                };
                let Some(r) = t.by_addr.get_mut(&addr) else {
                    return false;
                };
                let was = r.all.blocked_until.is_some_and(|u| u > now);
                r.all = Record {
                    in_flight: r.all.in_flight,
                    ..Record::default()
                };
                r.by_tenant.clear();
                if r.all.in_flight == 0 {
                    t.by_addr.remove(&addr);
                }
                was
            }
            LoginScope::Tenant => {
                let Some(r) = t.by_tenant.get_mut(subject) else {
                    return false;
                };
                let was = r.blocked_until.is_some_and(|u| u > now);
                *r = Record {
                    in_flight: r.in_flight,
                    ..Record::default()
                };
                if r.in_flight == 0 {
                    t.by_tenant.remove(subject);
                }
                was
            }
        });
        if lifted {
            tracing::info!(
                scope = scope.as_str(),
                subject,
                "login block lifted on this node"
            );
        }
        self.turns.notify_waiters();
        lifted
    }

    /// Lifts here what other nodes lifted (the store's records after number `after`; None at
    /// first: those recorded since a minute before the shared counters were first used, so a
    /// lift made between this node's start and its first read is not passed by, whatever the
    /// clocks' skew); returns the number to read after next time. Without shared counters, or
    /// while the store is failing, nothing is read and `after` comes back.
    pub async fn apply_lifts(&self, after: Option<i64>) -> Option<i64> {
        let Some(store) = self.shared_store() else {
            return after; // no shared counters, or the store is left alone for a while
        };
        let since = self
            .shared_since
            .get()
            .copied()
            .unwrap_or_else(chrono::Utc::now)
            - chrono::Duration::seconds(60);
        let read = ask_store(move || store.login_lifts_since(after, since)).await;
        match read {
            Ok((last, lifts)) => {
                for (scope, subject) in lifts {
                    self.lift(scope, &subject);
                }
                Some(last)
            }
            Err(e) => {
                self.store_failed();
                tracing::warn!("cannot read the login blocks other nodes lifted: {e:#}");
                after
            }
        }
    }
}
