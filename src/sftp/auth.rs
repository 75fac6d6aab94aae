//! Authentication of tenants: passwords (argon2id, verified on a blocking thread) and public
//! keys, against the config in force at the moment of the attempt; plus the throttle that slows
//! and then blocks repeated failures per source address and per tenant.
//!
//! A login name enters with a password or a verified key and leaves as a [`Verdict`]. A tenant
//! blocked by password failures can still log in with its key: keys cannot be guessed, and an
//! attacker must not be able to lock out a nightly HR export by typing wrong passwords.

use crate::config::authorized_keys::parse_authorized_key;
use crate::config::{Config, Tenant};
use anyhow::anyhow;
use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordVerifier};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
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
}

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
                if r.by_tenant.len() < NAMES_PER_ADDRESS || r.by_tenant.contains_key(tenant) {
                    *r.by_tenant.entry(tenant.to_string()).or_insert(0) += 1;
                }
                worst = worst.max(r.all.failures);
            }
            let r = t.by_tenant.entry(tenant.to_string()).or_default();
            if r.bump(policy, now) {
                log_block(&format!("tenant {tenant}"), r, policy);
            }
            worst = worst.max(r.failures);
            // The first three failures answer at the normal pace; then each adds 500 ms, up to 3 s.
            Duration::from_millis((u64::from(worst.saturating_sub(3)) * 500).min(3000))
        })
    }

    /// A successful login as `tenant` clears its address's failures against that tenant only.
    pub fn succeeded(&self, addr: Option<IpAddr>, tenant: &str) {
        let Some(a) = addr else { return };
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
