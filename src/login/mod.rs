//! Who may log in: tenants' passwords (argon2id, verified on a blocking thread) and public
//! keys, against the config in force at the moment of the attempt; plus the throttle
//! ([`throttle`]) that slows and then blocks repeated failures per source address and per
//! tenant. SFTP (`crate::sftp`) and the web console (`crate::admin::console`: the tenant
//! portal's password, the operator's token) share one [`LoginThrottle`], so failures on either
//! count toward the same blocks.
//!
//! A login name enters with a password or a verified key and leaves as a yes or no. A tenant
//! blocked by password failures can still log in with its key: keys cannot be guessed, and an
//! attacker must not be able to lock out a nightly HR export by typing wrong passwords.

mod throttle;

pub use throttle::*;

use crate::config::authorized_keys::parse_authorized_key;
use crate::config::{Config, Tenant};
use anyhow::anyhow;
use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordVerifier};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoy_hash_parses() {
        assert!(PasswordHash::new(DECOY_HASH).is_ok());
    }
}
