//! Who may log in: tenants' passwords (argon2id, verified on threads of their own) and public
//! keys, against the config in force at the moment of the attempt; plus the throttle
//! ([`throttle`]) that slows and then blocks repeated failures per source address and per
//! tenant. SFTP (`crate::sftp`) and the web console (`crate::admin::console`: the tenant
//! portal's password, the operator's token) share one [`LoginThrottle`], so failures on either
//! count toward the same blocks.
//!
//! A login name enters with a password or a verified key and leaves as a yes or no. A tenant
//! blocked by password failures can still log in with its key: keys cannot be guessed, and an
//! attacker must not be able to lock out a nightly HR export by typing wrong passwords.
//!
//! A login name is client text of any length (russh accepts about 256 KiB). A name that is not
//! a valid tenant id (`[a-z0-9_-]{1,64}`) is surely no tenant: it enters the throttle as the one
//! key [`INVALID_NAME`] ([`throttle_name`]) and the log cut ([`log_name`]), so it costs no memory
//! per attempt and a bounded line.
//!
//! An unknown name must answer as slowly as a wrong password of a real tenant (else the timing
//! tells which names are tenants), but it need not burn an argon2 check to do so: see
//! [`verify_hash`] and `decoy`.

mod argon2_threads;
mod decoy;

mod throttle;

pub use throttle::*;

use crate::config::authorized_keys::parse_authorized_key;
use crate::config::{Config, Tenant};

/// The key a source address is counted under, by the login throttle and by the connection
/// caps of the SFTP and admin listeners: an IPv4 address itself (also when a dual-stack
/// listener writes it IPv4-mapped, `::ffff:203.0.113.9`), an IPv6 address by its /64 (one
/// client commonly holds a whole /64, and could otherwise rotate through it).
pub fn address_group(addr: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::IpAddr;
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

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
    crate::model::argon::hash(password.as_bytes())
}

/// The throttle key of every login name that is not a valid tenant id (no tenant id can
/// contain parentheses or spaces, so it never names a tenant).
pub const INVALID_NAME: &str = "(invalid name)";

/// The name to count a login's failures under: the name itself when it is a valid tenant id
/// (at most 64 bytes), else [`INVALID_NAME`], so a client cannot make the throttle remember
/// long or ever-new junk names.
pub fn throttle_name(user: &str) -> &str {
    if crate::config::is_valid_tenant_id(user) {
        user
    } else {
        INVALID_NAME
    }
}

/// A login name as it may go into a log line: cut to 64 characters (a tenant id's most), the
/// rest counted (the log escapes control characters).
pub fn log_name(user: &str) -> std::borrow::Cow<'_, str> {
    crate::logs::cut(user, 64)
}

/// Checks `password` against the tenant's hash on the checking threads (argon2 costs tens of
/// ms).
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

/// `password` against `hash`. A missing hash (no such tenant, or one without a password)
/// fails, after a wait as long as a real check takes ([`decoy::wait`]), without an argon2
/// check of its own.
async fn verify_hash(hash: Option<String>, password: &str) -> bool {
    let Some(hash) = hash else {
        decoy::wait().await;
        return false;
    };
    let started = std::time::Instant::now();
    let ok = argon2_threads::check(hash, password.to_string()).await;
    decoy::observed(started.elapsed());
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_names_share_one_throttle_key() {
        assert_eq!(throttle_name("acme-2"), "acme-2");
        assert_eq!(throttle_name(&"a".repeat(65)), INVALID_NAME);
        assert_eq!(throttle_name("Acme"), INVALID_NAME);
        assert_eq!(throttle_name(""), INVALID_NAME);
        assert!(log_name(&"x".repeat(200_000)).len() < 100);
    }
}
