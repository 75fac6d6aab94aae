//! The login throttle: failures counted per source address and per tenant, slowing and then
//! blocking repeated failures of SFTP and console logins alike.
//!
//! With a store several nodes share (PostgreSQL; [`LoginThrottle::share_through`]), failures
//! are also counted, and blocks checked, in the store, so a brute force cannot rotate across
//! nodes. The store is synchronous: it is called on a blocking thread, for at most
//! [`SHARED_WAIT`], and after a failure it is left alone for [`STORE_BACKOFF`] so logins do not
//! wait on a database that is down. The in-memory counts always run as well, and a block the
//! store reports is remembered in them, so when the store fails (logged) a client blocked
//! before stays blocked and everyone else is judged by this node's own counts: never all
//! locked out. A successful
//! login clears its address's shared failures (not a block in force); the tenant's shared
//! count is not cleared by a login, so password guesses against one tenant stay bounded
//! whatever the address.
//!
//! A password attempt is counted before its password is checked, not after:
//! [`LoginThrottle::begin`] refuses a blocked address or tenant and otherwise counts the
//! attempt as *in flight*, both in one step under the throttle's lock. While an address's (or a
//! tenant's) failures plus its attempts in flight reach `max_failures`, a further attempt waits
//! for one of them to end (at most [`TURN_WAIT`]) instead of being checked. The [`Attempt`] it
//! returns ends as a failure (counted, as before) or a success (released); dropped unfinished
//! (the client went away during the check) it counts as a failure, so a client cannot have
//! passwords checked, or argon2 run, without paying for it. So a burst of concurrent guesses
//! from one address, or against one tenant, gets at most `max_failures` password checks per
//! block window on this node, however many requests it sends at once, and cannot fill the
//! argon2 checking queue ahead of other logins.

use crate::store::{LoginScope, Store};
use anyhow::anyhow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod lifts;
mod shared;
pub use lifts::LocalBlock;
use shared::ask_store;

/// How many failures lead to what.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures (per address or per tenant) before a block.
    pub max_failures: u32,
    /// How long a block lasts; also the window over which failures are counted.
    pub block_for: Duration,
}

#[derive(Debug, Default)]
struct Record {
    failures: u32,
    first: Option<Instant>,
    blocked_until: Option<Instant>,
    /// Password checks under way ([`LoginThrottle::begin`]), counted before they are made.
    in_flight: u32,
}

/// `now + wait`, never panicking: a wait past what an `Instant` can hold (a config that slipped
/// past validation's bounds) ends as late as an `Instant` allows, a year at most.
pub(crate) fn instant_after(now: Instant, wait: Duration) -> Instant {
    const YEAR: Duration = Duration::from_secs(365 * 86_400);
    now.checked_add(wait)
        .or_else(|| now.checked_add(YEAR))
        .unwrap_or(now)
}

impl Record {
    /// Counts one failure at `now`; true when it starts a block.
    fn bump(&mut self, policy: ThrottlePolicy, now: Instant) -> bool {
        if self.expired(policy, now) {
            *self = Record {
                failures: 0,
                first: Some(now),
                blocked_until: None,
                in_flight: self.in_flight,
            };
        }
        self.failures += 1;
        if self.failures >= policy.max_failures && self.blocked_until.is_none() {
            self.blocked_until = Some(instant_after(now, policy.block_for));
            return true;
        }
        false
    }

    /// The counting window and any block are over.
    fn expired(&self, policy: ThrottlePolicy, now: Instant) -> bool {
        self.first
            .is_none_or(|f| now.duration_since(f) > policy.block_for)
            && self.blocked_until.is_none_or(|u| u <= now)
    }

    /// True when failures in the window plus the checks under way reach `max_failures`: one
    /// more check could make more failures than allowed.
    fn full(&self, policy: ThrottlePolicy, now: Instant) -> bool {
        let failures = if self.expired(policy, now) {
            0
        } else {
            self.failures
        };
        failures.saturating_add(self.in_flight) >= policy.max_failures
    }

    /// Nothing to remember: no failure, no block in force, no check under way.
    fn idle(&self, now: Instant) -> bool {
        self.in_flight == 0 && self.failures == 0 && self.blocked_until.is_none_or(|u| u <= now)
    }
}

/// An address's failures, and how many of them were against each tenant name (so that a login
/// as one tenant clears only the failures against that tenant).
#[derive(Debug, Default)]
struct AddressRecord {
    all: Record,
    by_tenant: HashMap<String, u32>,
}

/// Names remembered per address; failures against further names still count, but no login
/// clears them.
const NAMES_PER_ADDRESS: usize = 64;
/// Above this many records, expired ones are dropped (names and addresses come from clients).
const RECORDS_BEFORE_PRUNING: usize = 4096;

/// Counts failed logins per address and per tenant; slows and then blocks them.
#[derive(Clone, Default)]
pub struct LoginThrottle {
    inner: Arc<Mutex<Throttles>>,
    /// Woken whenever an attempt in flight ends, for the attempts waiting for a turn.
    turns: Arc<tokio::sync::Notify>,
    /// The store whose shared counters are used too (several nodes), once set.
    shared: Arc<OnceLock<Store>>,
    /// After the store failed, it is left alone until then (logins do not wait on it).
    store_down_until: Arc<Mutex<Option<Instant>>>,
    /// Grows with every lifted block ([`LoginThrottle::lift`]): a shared block read before a
    /// lift is not remembered after it.
    lifts: Arc<std::sync::atomic::AtomicU64>,
    /// When the shared counters were first used: the first read of the lifts other nodes
    /// recorded starts a little before it ([`LoginThrottle::apply_lifts`]).
    shared_since: Arc<OnceLock<chrono::DateTime<chrono::Utc>>>,
}

/// An address as the throttle keys it ([`address_group`](super::address_group)): an
/// IPv4-mapped IPv6 address as the IPv4 address, so one client has one key whichever listener
/// it reached and an operator lifting `203.0.113.9` finds it; an IPv6 address as its /64, so
/// a client cannot step past its block to the next address of its network.
pub fn address_key(addr: Option<IpAddr>) -> Option<IpAddr> {
    addr.map(super::address_group)
}

/// How long a login waits for the shared counters before it is judged by local counts alone.
pub const SHARED_WAIT: Duration = Duration::from_secs(3);
/// How long the shared counters are left alone after the store failed.
pub const STORE_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Throttles {
    by_addr: HashMap<IpAddr, AddressRecord>,
    by_tenant: HashMap<String, Record>,
    /// The sizes at which the next prune of each map runs (0: [`RECORDS_BEFORE_PRUNING`]):
    /// twice what the last one kept, so an attacker holding many records alive does not make
    /// every attempt walk them all (review s25).
    prune_addr_at: usize,
    prune_tenant_at: usize,
}

/// What the throttle says about an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Refused without checking, with the reason to log.
    Blocked(String),
}

/// How long a password attempt waits for a turn while its address's (or tenant's) failures
/// plus the attempts in flight reach `max_failures`; then it is refused unchecked.
pub const TURN_WAIT: Duration = Duration::from_secs(15);

/// Why [`LoginThrottle::begin`] refused an attempt without checking it (the text is for logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The address or the tenant is blocked.
    Blocked(String),
    /// `max_failures` attempts of this address or tenant were being checked for all of
    /// [`TURN_WAIT`].
    Busy(String),
}

impl Refusal {
    /// The reason, for the log.
    pub fn reason(&self) -> &str {
        match self {
            Refusal::Blocked(why) | Refusal::Busy(why) => why,
        }
    }
}

/// What [`LoginThrottle::try_reserve`] found.
enum Reserve {
    Taken,
    Busy(String),
    Blocked(String),
}

/// A password attempt counted as in flight by [`LoginThrottle::begin`]. End it with
/// [`failed`](Attempt::failed), [`succeeded`](Attempt::succeeded) or
/// [`verified`](Attempt::verified); dropped unfinished (the request or connection went away
/// during the check) it counts as a failure.
pub struct Attempt {
    throttle: LoginThrottle,
    policy: ThrottlePolicy,
    addr: Option<IpAddr>,
    tenant: Option<String>,
    open: bool,
}

impl Attempt {
    /// The password was wrong: the attempt becomes a failure (locally in the same step, then
    /// in the shared counters). Returns how long to delay the answer.
    pub async fn failed(mut self) -> Duration {
        self.open = false;
        let (policy, addr, tenant) = (self.policy, self.addr, self.tenant.take());
        let delay = self
            .throttle
            .failed_local(policy, addr, tenant.as_deref(), true);
        self.throttle.turns.notify_waiters();
        self.throttle
            .record_shared(policy, addr, tenant.as_deref())
            .await;
        delay
    }

    /// The password was right: the attempt is released and, for a tenant's password, its
    /// address's failures against that tenant are cleared (as [`LoginThrottle::succeeded`]).
    pub fn succeeded(self) {
        let (throttle, addr, tenant) = (self.throttle.clone(), self.addr, self.tenant.clone());
        self.released();
        if let Some(tenant) = tenant {
            throttle.succeeded(addr, &tenant);
        }
    }

    /// The password was right: the attempt is released, nothing is cleared (for a caller that
    /// clears the failures itself, as SFTP's login does for every method).
    pub fn verified(self) {
        self.released();
    }

    /// Ends the attempt without counting it.
    fn released(mut self) {
        self.open = false;
        self.throttle.release(self.addr, self.tenant.as_deref());
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        // Dropped during the check: the client went away, perhaps to have passwords checked
        // for free. It counts as a failure (locally at once; in the shared counters in the
        // background).
        let (policy, addr, tenant) = (self.policy, self.addr, self.tenant.take());
        self.throttle
            .failed_local(policy, addr, tenant.as_deref(), true);
        self.throttle.turns.notify_waiters();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            if self.throttle.shared_store().is_some() {
                let throttle = self.throttle.clone();
                rt.spawn(async move {
                    throttle
                        .record_shared(policy, addr, tenant.as_deref())
                        .await;
                });
            }
        }
    }
}

impl LoginThrottle {
    fn with<T>(&self, f: impl FnOnce(&mut Throttles) -> T) -> T {
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// May this address try again (`tenant` given for password attempts)?
    pub fn gate(&self, addr: Option<IpAddr>, tenant: Option<&str>) -> Gate {
        let addr = address_key(addr);
        let now = Instant::now();
        self.with(|t| match t.blocked(addr, tenant, now) {
            Some(why) => Gate::Blocked(why),
            None => Gate::Open,
        })
    }

    /// How long `addr` stays blocked here (a block the shared counters reported included);
    /// None when it is not blocked. A cheap in-memory look, for the bearer-token routes.
    pub fn address_blocked_for(&self, addr: IpAddr) -> Option<Duration> {
        let addr = super::address_group(addr);
        let now = Instant::now();
        self.with(|t| {
            let until = t.by_addr.get(&addr)?.all.blocked_until?;
            (until > now).then(|| until.duration_since(now))
        })
    }

    /// Starts a password attempt (`tenant` None: the console's operator token, counted against
    /// the address only): refused when the address or tenant is blocked (here or, with shared
    /// counters, on any node); otherwise counted as in flight in the same step, waiting first
    /// (at most [`TURN_WAIT`]) while failures plus attempts in flight reach `max_failures`.
    pub async fn begin(
        &self,
        policy: ThrottlePolicy,
        addr: Option<IpAddr>,
        tenant: Option<&str>,
    ) -> Result<Attempt, Refusal> {
        let addr = address_key(addr);
        let deadline = tokio::time::Instant::now() + TURN_WAIT;
        loop {
            // Registered before looking, so an attempt that ends in between still wakes us.
            let turn = self.turns.notified();
            tokio::pin!(turn);
            turn.as_mut().enable();
            match self.try_reserve(policy, addr, tenant) {
                Reserve::Taken => break,
                Reserve::Blocked(why) => return Err(Refusal::Blocked(why)),
                Reserve::Busy(why) => {
                    if tokio::time::timeout_at(deadline, turn).await.is_err() {
                        return Err(Refusal::Busy(why));
                    }
                }
            }
        }
        let attempt = Attempt {
            throttle: self.clone(),
            policy,
            addr,
            tenant: tenant.map(str::to_string),
            open: true,
        };
        match self.shared_gate(addr, tenant).await {
            Gate::Blocked(why) => {
                // Not checked after all.
                attempt.released();
                Err(Refusal::Blocked(why))
            }
            Gate::Open => Ok(attempt),
        }
    }

    /// The gate and the count in one step: refused when blocked; busy when failures plus
    /// attempts in flight reach `max_failures`; else counted as in flight.
    fn try_reserve(
        &self,
        policy: ThrottlePolicy,
        addr: Option<IpAddr>,
        tenant: Option<&str>,
    ) -> Reserve {
        let now = Instant::now();
        self.with(|t| {
            if let Some(why) = t.blocked(addr, tenant, now) {
                return Reserve::Blocked(why);
            }
            if let Some(a) = addr {
                if t.by_addr.get(&a).is_some_and(|r| r.all.full(policy, now)) {
                    return Reserve::Busy(format!(
                        "address {a} has {} failed or unfinished logins",
                        policy.max_failures
                    ));
                }
            }
            if let Some(id) = tenant {
                if t.by_tenant.get(id).is_some_and(|r| r.full(policy, now)) {
                    return Reserve::Busy(format!(
                        "tenant {id} has {} failed or unfinished password logins",
                        policy.max_failures
                    ));
                }
            }
            t.prune(policy, now);
            if let Some(a) = addr {
                t.by_addr.entry(a).or_default().all.in_flight += 1;
            }
            if let Some(id) = tenant {
                t.by_tenant.entry(id.to_string()).or_default().in_flight += 1;
            }
            Reserve::Taken
        })
    }

    /// Ends an attempt in flight without counting it (a success, or a client that went away),
    /// and wakes the attempts waiting for a turn.
    fn release(&self, addr: Option<IpAddr>, tenant: Option<&str>) {
        let now = Instant::now();
        self.with(|t| t.release(addr, tenant, now));
        self.turns.notify_waiters();
    }

    /// Records a failure; returns how long to delay the answer.
    pub fn failed(&self, policy: ThrottlePolicy, addr: Option<IpAddr>, tenant: &str) -> Duration {
        self.failed_local(policy, address_key(addr), Some(tenant), false)
    }

    /// [`failed`](Self::failed) for an attempt that names a tenant, or (None: the console's
    /// operator token) only an address; `in_flight`: the attempt was counted by
    /// [`begin`](Self::begin) and becomes this failure (in the same step).
    fn failed_local(
        &self,
        policy: ThrottlePolicy,
        addr: Option<IpAddr>,
        tenant: Option<&str>,
        in_flight: bool,
    ) -> Duration {
        let now = Instant::now();
        self.with(|t| {
            if in_flight {
                t.release(addr, tenant, now);
            }
            t.prune(policy, now);
            let mut worst = 0;
            if let Some(a) = addr {
                let r = t.by_addr.entry(a).or_default();
                if r.all.expired(policy, now) {
                    r.by_tenant.clear();
                }
                if r.all.bump(policy, now) {
                    log_block(&format!("address {a}"), &r.all, policy);
                }
                if let Some(tenant) = tenant {
                    if r.by_tenant.len() < NAMES_PER_ADDRESS || r.by_tenant.contains_key(tenant) {
                        *r.by_tenant.entry(tenant.to_string()).or_insert(0) += 1;
                    }
                }
                worst = worst.max(r.all.failures);
            }
            if let Some(tenant) = tenant {
                let r = t.by_tenant.entry(tenant.to_string()).or_default();
                if r.bump(policy, now) {
                    log_block(&format!("tenant {tenant}"), r, policy);
                }
                worst = worst.max(r.failures);
            }
            // The first three failures answer at the normal pace; then each adds 500 ms, up to 3 s.
            Duration::from_millis((u64::from(worst.saturating_sub(3)) * 500).min(3000))
        })
    }

    /// A successful login as `tenant` clears its address's failures against that tenant only,
    /// here and (with shared counters, in the background) in the address's shared count: the
    /// failures this node counted against that tenant come off it. Those other nodes counted
    /// stay until the count's window ends, stricter and never looser (review s27: the whole
    /// shared count was cleared, so a valid login could reset a spray against other tenants).
    pub fn succeeded(&self, addr: Option<IpAddr>, tenant: &str) {
        let Some(a) = address_key(addr) else { return };
        let mine = self.with(|t| {
            let r = t.by_addr.get_mut(&a)?;
            let mine = r.by_tenant.remove(tenant).unwrap_or(0);
            r.all.failures = r.all.failures.saturating_sub(mine);
            if r.all.failures == 0 && r.all.blocked_until.is_none() && r.all.in_flight == 0 {
                t.by_addr.remove(&a);
            }
            Some(mine)
        });
        let Some(mine) = mine.filter(|n| *n > 0) else {
            return;
        };
        if let (Some(store), Ok(rt)) = (self.shared_store(), tokio::runtime::Handle::try_current())
        {
            let this = self.clone();
            rt.spawn(async move {
                let subject = a.to_string();
                let forgiven =
                    ask_store(move || store.login_forgiven(LoginScope::Address, &subject, mine));
                if let Err(e) = forgiven.await {
                    this.store_failed();
                    tracing::warn!(address = %a, "cannot clear the shared failed logins: {e:#}");
                }
            });
        }
    }
}

impl Throttles {
    fn prune(&mut self, policy: ThrottlePolicy, now: Instant) {
        let next = |kept: usize| kept.saturating_mul(2).max(RECORDS_BEFORE_PRUNING);
        if self.by_addr.len() > self.prune_addr_at.max(RECORDS_BEFORE_PRUNING) {
            self.by_addr
                .retain(|_, r| r.all.in_flight > 0 || !r.all.expired(policy, now));
            self.prune_addr_at = next(self.by_addr.len());
        }
        if self.by_tenant.len() > self.prune_tenant_at.max(RECORDS_BEFORE_PRUNING) {
            self.by_tenant
                .retain(|_, r| r.in_flight > 0 || !r.expired(policy, now));
            self.prune_tenant_at = next(self.by_tenant.len());
        }
    }

    /// Why the address or the tenant may not try now, if it is blocked.
    fn blocked(&self, addr: Option<IpAddr>, tenant: Option<&str>, now: Instant) -> Option<String> {
        if let Some(a) = addr {
            if let Some(until) = self.by_addr.get(&a).and_then(|r| r.all.blocked_until) {
                if until > now {
                    return Some(format!(
                        "address {a} is blocked after repeated failed logins"
                    ));
                }
            }
        }
        if let Some(id) = tenant {
            if let Some(until) = self.by_tenant.get(id).and_then(|r| r.blocked_until) {
                if until > now {
                    return Some(format!(
                        "password logins for tenant {id} are blocked after repeated failures"
                    ));
                }
            }
        }
        None
    }

    /// One attempt in flight fewer for the address and the tenant; records left with nothing
    /// to remember are dropped.
    fn release(&mut self, addr: Option<IpAddr>, tenant: Option<&str>, now: Instant) {
        if let Some(a) = addr {
            if let Some(r) = self.by_addr.get_mut(&a) {
                r.all.in_flight = r.all.in_flight.saturating_sub(1);
                if r.all.idle(now) && r.by_tenant.is_empty() {
                    self.by_addr.remove(&a);
                }
            }
        }
        if let Some(id) = tenant {
            if let Some(r) = self.by_tenant.get_mut(id) {
                r.in_flight = r.in_flight.saturating_sub(1);
                if r.idle(now) {
                    self.by_tenant.remove(id);
                }
            }
        }
    }
}

fn log_block(who: &str, r: &Record, policy: ThrottlePolicy) {
    tracing::warn!(
        who,
        failures = r.failures,
        block_secs = policy.block_for.as_secs(),
        "login blocked after repeated failures"
    );
}

#[cfg(test)]
mod tests;
