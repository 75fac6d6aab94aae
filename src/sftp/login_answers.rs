//! How the SSH layer logs a login it refuses before checking it, and which key-offer
//! signature algorithms it takes: small decisions of `connection`, kept here with their tests.
//!
//! A refusal's reason enters as text and leaves as one counted log line; a key offer's
//! algorithm enters as russh names it and leaves as a yes or no.

use crate::logs::SharedEverySecond;
use russh::keys::Algorithm;
use std::net::SocketAddr;

/// Login refusals of a blocked address or tenant: one line a second, counted.
static REFUSED_LOGINS: SharedEverySecond = SharedEverySecond::new();

/// A login refused unchecked (blocked or busy): counted, and logged at most once a second.
pub(super) fn log_refused_login(peer: SocketAddr, why: &str) {
    crate::metrics::login_blocked();
    if let Some(n) = REFUSED_LOGINS.hit() {
        tracing::warn!(%peer, refused = n, "login refused: {why} (refusals of the last second counted)");
    }
}

/// Whether a tenant's key may log in under the signature algorithm the client named. SHA-1
/// `ssh-rsa` is refused, as it is for host keys (`server`); an RSA key still logs in with
/// `rsa-sha2-256` or `rsa-sha2-512`, which OpenSSH clients use since 7.2 and alone since 8.8
/// (review s30 F3).
pub(super) fn key_algorithm_allowed(algorithm: &Algorithm) -> bool {
    !matches!(algorithm, Algorithm::Rsa { hash: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::HashAlg;

    #[test]
    fn sha1_rsa_offers_are_refused_and_sha2_ones_taken() {
        assert!(!key_algorithm_allowed(&Algorithm::Rsa { hash: None }));
        for hash in [HashAlg::Sha256, HashAlg::Sha512] {
            assert!(key_algorithm_allowed(&Algorithm::Rsa { hash: Some(hash) }));
        }
        assert!(key_algorithm_allowed(&Algorithm::Ed25519));
    }
}
