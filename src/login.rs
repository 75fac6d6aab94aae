//! Who may log in: tenants' passwords (argon2id, verified on a blocking thread) and public
//! keys, against the config in force at the moment of the attempt; plus the throttle that slows
//! and then blocks repeated failures per source address and per tenant. SFTP (`crate::sftp`) and
//! the web console (`crate::admin::console`: the tenant portal's password, the operator's
//! token) share one [`LoginThrottle`], so failures on either count toward the same blocks.
//!
//! A login name enters with a password or a verified key and leaves as a yes or no. A tenant
//! blocked by password failures can still log in with its key: keys cannot be guessed, and an
//! attacker must not be able to lock out a nightly HR export by typing wrong passwords.
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

use crate::config::authorized_keys::parse_authorized_key;
use crate::config::{Config, Tenant};
use crate::store::{LoginScope, Store};
use anyhow::anyhow;
use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordVerifier};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// True when `tenant` lists `key` in `authorized_keys`.
pub fn key_is_authorized(tenant: &Tenant, key: &russh::keys::PublicKey) -> bool {
    tenant
        .authorized_keys
        .iter()
        .filter_map(|line| parse_authorized_key(line).ok())
        .any(|k| k.key_data() == key.key_data())
}

/// Hashes a password as an argon2id PHC string with a random salt (`roster hash-password`).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::PasswordHasher;
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow!("cannot hash the password: {e}"))
}

/// A hash of a random password, verified when the login name is unknown so that the answer
/// takes as long as for a real tenant.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0XSsfOIUbEVJFH1EkHwIqJ5NV+nZFzs1OHp9Fk1dcWs";

/// Checks `password` against the tenant's hash on a blocking thread (argon2 costs tens of ms).
pub async fn verify_password(config: &Config, user: &str, password: &str) -> bool {
    let hash = config.tenant(user).and_then(|t| t.password_hash.clone());
    verify_hash(hash, password).await
}

/// The tenant portal's check: `portal_password_hash` when the tenant has one, else its SFTP
/// `password_hash`; a tenant with neither (keys only) cannot sign in to the portal.
pub async fn verify_portal_password(config: &Config, tenant: &str, password: &str) -> bool {
    let hash = config
        .tenant(tenant)
        .and_then(|t| t.portal_password_hash.clone().or(t.password_hash.clone()));
    verify_hash(hash, password).await
}

/// `password` against `hash`; a missing hash is checked against a decoy (same time) and fails.
async fn verify_hash(hash: Option<String>, password: &str) -> bool {
    let known = hash.is_some();
    let hash = hash.unwrap_or_else(|| DECOY_HASH.to_string());
    let password = password.to_string();
    // One argon2 check per core at a time: a burst of logins then queues instead of thrashing
    // memory (each check takes ~19 MiB), and each client waits about its share.
    let _permit = argon2_slots().acquire().await.ok();
    let ok = tokio::task::spawn_blocking(move || match PasswordHash::new(&hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    })
    .await
    .unwrap_or(false);
    known && ok
}

fn argon2_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        tokio::sync::Semaphore::new(cores)
    })
}

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
}

impl Record {
    /// Counts one failure at `now`; true when it starts a block.
    fn bump(&mut self, policy: ThrottlePolicy, now: Instant) -> bool {
        if self.expired(policy, now) {
            *self = Record {
                failures: 0,
                first: Some(now),
                blocked_until: None,
            };
        }
        self.failures += 1;
        if self.failures >= policy.max_failures && self.blocked_until.is_none() {
            self.blocked_until = Some(now + policy.block_for);
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
    /// The store whose shared counters are used too (several nodes), once set.
    shared: Arc<OnceLock<Store>>,
    /// After the store failed, it is left alone until then (logins do not wait on it).
    store_down_until: Arc<Mutex<Option<Instant>>>,
}

/// How long a login waits for the shared counters before it is judged by local counts alone.
pub const SHARED_WAIT: Duration = Duration::from_secs(3);
/// How long the shared counters are left alone after the store failed.
pub const STORE_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Throttles {
    by_addr: HashMap<IpAddr, AddressRecord>,
    by_tenant: HashMap<String, Record>,
}

/// What the throttle says about an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Refused without checking, with the reason to log.
    Blocked(String),
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
        let now = Instant::now();
        self.with(|t| {
            if let Some(a) = addr {
                if let Some(until) = t.by_addr.get(&a).and_then(|r| r.all.blocked_until) {
                    if until > now {
                        return Gate::Blocked(format!(
                            "address {a} is blocked after repeated failed logins"
                        ));
                    }
                }
            }
            if let Some(id) = tenant {
                if let Some(until) = t.by_tenant.get(id).and_then(|r| r.blocked_until) {
                    if until > now {
                        return Gate::Blocked(format!(
                            "password logins for tenant {id} are blocked after repeated failures"
                        ));
                    }
                }
            }
            Gate::Open
        })
    }

    /// Records a failure; returns how long to delay the answer.
    pub fn failed(&self, policy: ThrottlePolicy, addr: Option<IpAddr>, tenant: &str) -> Duration {
        self.failed_as(policy, addr, Some(tenant))
    }

    /// [`failed`](Self::failed) for an attempt that names a tenant, or (None: the console's
    /// operator token) only an address.
    fn failed_as(
        &self,
        policy: ThrottlePolicy,
        addr: Option<IpAddr>,
        tenant: Option<&str>,
    ) -> Duration {
        let now = Instant::now();
        self.with(|t| {
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

    /// A successful login as `tenant` clears its address's failures against that tenant only
    /// (and, with shared counters, the address's shared failures, in the background).
    pub fn succeeded(&self, addr: Option<IpAddr>, tenant: &str) {
        let Some(a) = addr else { return };
        if let (Some(store), Ok(rt)) = (self.shared_store(), tokio::runtime::Handle::try_current())
        {
            let this = self.clone();
            rt.spawn(async move {
                let subject = a.to_string();
                let cleared = ask_store(move || store.login_cleared(LoginScope::Address, &subject));
                if let Err(e) = cleared.await {
                    this.store_failed();
                    tracing::warn!(address = %a, "cannot clear the shared failed logins: {e:#}");
                }
            });
        }
        self.with(|t| {
            let Some(r) = t.by_addr.get_mut(&a) else {
                return;
            };
            let mine = r.by_tenant.remove(tenant).unwrap_or(0);
            r.all.failures = r.all.failures.saturating_sub(mine);
            if r.all.failures == 0 && r.all.blocked_until.is_none() {
                t.by_addr.remove(&a);
            }
        });
    }
}

impl LoginThrottle {
    /// Counts and checks failures in `store` too, when several nodes share it (a no-op for a
    /// one-node store, and after the first call).
    pub fn share_through(&self, store: Store) {
        if store.shared_by_nodes() {
            let _ = self.shared.set(store);
        }
    }

    /// [`gate`](Self::gate), then the shared blocks (remembered locally when found). When the
    /// store cannot answer, the local answer stands (logged).
    pub async fn check(&self, addr: Option<IpAddr>, tenant: Option<&str>) -> Gate {
        let local = self.gate(addr, tenant);
        let Some(store) = self.shared_store() else {
            return local;
        };
        if local != Gate::Open {
            return local;
        }
        let subjects = subjects(addr, tenant);
        let found = ask_store(move || {
            for (scope, subject) in subjects {
                if let Some(until) = store.login_blocked(scope, &subject)? {
                    return Ok(Some((scope, subject, until)));
                }
            }
            Ok(None)
        })
        .await;
        match found {
            Ok(None) => Gate::Open,
            Ok(Some((scope, subject, until))) => {
                self.remember_block(scope, &subject, until);
                Gate::Blocked(blocked_reason(scope, &subject))
            }
            Err(e) => {
                self.store_failed();
                tracing::warn!(
                    "cannot read the shared login blocks; judging by this node's own counts: {e:#}"
                );
                Gate::Open
            }
        }
    }

    /// [`failed`](Self::failed), and the failure counted in the shared counters too (a block
    /// they report is remembered locally). Returns how long to delay the answer.
    pub async fn record_failure(
        &self,
        policy: ThrottlePolicy,
        addr: Option<IpAddr>,
        tenant: &str,
    ) -> Duration {
        self.record_failure_as(policy, addr, Some(tenant)).await
    }

    /// A wrong operator token in the web console: counted against the address only (a tenant
    /// name is not involved, and no one may lock the operator out from every address).
    pub async fn record_operator_failure(
        &self,
        policy: ThrottlePolicy,
        addr: Option<IpAddr>,
    ) -> Duration {
        self.record_failure_as(policy, addr, None).await
    }

    async fn record_failure_as(
        &self,
        policy: ThrottlePolicy,
        addr: Option<IpAddr>,
        tenant: Option<&str>,
    ) -> Duration {
        let delay = self.failed_as(policy, addr, tenant);
        let Some(store) = self.shared_store() else {
            return delay;
        };
        let subjects = subjects(addr, tenant);
        let counted = ask_store(move || {
            let mut blocks = Vec::new();
            for (scope, subject) in subjects {
                let until =
                    store.login_failed(scope, &subject, policy.max_failures, policy.block_for)?;
                if let Some(until) = until {
                    blocks.push((scope, subject, until));
                }
            }
            Ok(blocks)
        })
        .await;
        match counted {
            Ok(blocks) => {
                for (scope, subject, until) in blocks {
                    self.remember_block(scope, &subject, until);
                }
            }
            Err(e) => {
                self.store_failed();
                tracing::warn!(
                    "cannot count a failed login in the shared counters; this node counts it alone: {e:#}"
                )
            }
        }
        delay
    }

    /// The store of the shared counters, unless there is none or it failed in the last
    /// [`STORE_BACKOFF`].
    fn shared_store(&self) -> Option<Store> {
        let store = self.shared.get()?;
        let mut down = self
            .store_down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *down {
            Some(until) if Instant::now() < until => None,
            _ => {
                *down = None;
                Some(store.clone())
            }
        }
    }

    /// The store failed: leave it alone for [`STORE_BACKOFF`].
    fn store_failed(&self) {
        let mut down = self
            .store_down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *down = Some(Instant::now() + STORE_BACKOFF);
    }

    /// Keeps a block the shared counters reported, so it holds while the store is unreachable.
    fn remember_block(
        &self,
        scope: LoginScope,
        subject: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) {
        let Ok(left) = (until - chrono::Utc::now()).to_std() else {
            return;
        };
        let until = Instant::now() + left;
        let later = |r: &mut Record| {
            if r.blocked_until.is_none_or(|u| u < until) {
                r.blocked_until = Some(until);
            }
        };
        self.with(|t| match scope {
            LoginScope::Address => {
                if let Ok(a) = subject.parse::<IpAddr>() {
                    later(&mut t.by_addr.entry(a).or_default().all);
                }
            }
            LoginScope::Tenant => later(t.by_tenant.entry(subject.to_string()).or_default()),
        });
    }
}

/// The shared counters an attempt touches: its address, and the tenant of a password attempt.
fn subjects(addr: Option<IpAddr>, tenant: Option<&str>) -> Vec<(LoginScope, String)> {
    let mut out = Vec::new();
    if let Some(a) = addr {
        out.push((LoginScope::Address, a.to_string()));
    }
    if let Some(t) = tenant {
        out.push((LoginScope::Tenant, t.to_string()));
    }
    out
}

fn blocked_reason(scope: LoginScope, subject: &str) -> String {
    match scope {
        LoginScope::Address => {
            format!("address {subject} is blocked after repeated failed logins (on any node)")
        }
        LoginScope::Tenant => format!(
            "password logins for tenant {subject} are blocked after repeated failures (on any node)"
        ),
    }
}

/// Runs a store call on a blocking thread, for at most [`SHARED_WAIT`].
async fn ask_store<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    match tokio::time::timeout(SHARED_WAIT, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(anyhow!("the store task failed: {e}")),
        Err(_) => Err(anyhow!(
            "the store did not answer within {} s",
            SHARED_WAIT.as_secs()
        )),
    }
}

impl Throttles {
    fn prune(&mut self, policy: ThrottlePolicy, now: Instant) {
        if self.by_addr.len() > RECORDS_BEFORE_PRUNING {
            self.by_addr.retain(|_, r| !r.all.expired(policy, now));
        }
        if self.by_tenant.len() > RECORDS_BEFORE_PRUNING {
            self.by_tenant.retain(|_, r| !r.expired(policy, now));
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
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_and_expires() {
        let th = LoginThrottle::default();
        let policy = ThrottlePolicy {
            max_failures: 3,
            block_for: Duration::from_millis(200),
        };
        let addr: IpAddr = "127.0.0.9".parse().unwrap();
        assert_eq!(th.gate(Some(addr), Some("acme")), Gate::Open);
        for _ in 0..3 {
            th.failed(policy, Some(addr), "acme");
        }
        assert!(matches!(th.gate(Some(addr), None), Gate::Blocked(_)));
        assert!(matches!(th.gate(None, Some("acme")), Gate::Blocked(_)));
        assert_eq!(th.gate(None, Some("other")), Gate::Open);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(th.gate(Some(addr), Some("acme")), Gate::Open);
    }

    #[test]
    fn a_login_clears_only_failures_against_its_own_tenant() {
        let th = LoginThrottle::default();
        let policy = ThrottlePolicy {
            max_failures: 3,
            block_for: Duration::from_secs(60),
        };
        let addr = IpAddr::from([127, 0, 0, 9]);
        th.failed(policy, Some(addr), "beta");
        th.failed(policy, Some(addr), "beta");
        th.succeeded(Some(addr), "acme");
        th.failed(policy, Some(addr), "gamma");
        assert!(matches!(th.gate(Some(addr), None), Gate::Blocked(_)));

        let other = IpAddr::from([127, 0, 0, 10]);
        th.failed(policy, Some(other), "beta");
        th.failed(policy, Some(other), "beta");
        th.succeeded(Some(other), "beta");
        th.failed(policy, Some(other), "gamma");
        assert_eq!(th.gate(Some(other), None), Gate::Open);
    }

    #[test]
    fn decoy_hash_parses() {
        assert!(PasswordHash::new(DECOY_HASH).is_ok());
    }
}
