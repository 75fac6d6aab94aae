//! What the SSH layer answers a login it refuses before checking it, and which key-offer
//! signature algorithms it takes: small decisions of `connection`, kept here with their tests.
//!
//! A refusal enters as the throttle's [`Refusal`] and leaves as russh's [`Auth`] (with the
//! methods the client may still try) plus one counted log line; a key offer's algorithm
//! enters as russh names it and leaves as a yes or no.

use super::server::login_methods;
use crate::login::Refusal;
use crate::logs::SharedEverySecond;
use russh::keys::Algorithm;
use russh::server::Auth;
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

/// The answer to a password attempt the throttle refused unchecked. A block takes `password`
/// off the methods offered (russh drops a method answered with a plain reject). A busy
/// refusal (the attempt waited [`TURN_WAIT`](crate::login::TURN_WAIT) for a turn behind
/// checks of its address or tenant) keeps both methods offered: no block applies yet, and
/// design §8 says `password` stays offered until one does (review s29 F4).
pub(super) fn refused_unchecked(refusal: &Refusal) -> Auth {
    match refusal {
        Refusal::Blocked(_) => Auth::reject(),
        Refusal::Busy(_) => Auth::Reject {
            proceed_with_methods: Some(login_methods()),
            partial_success: false,
        },
    }
}

/// Whether a tenant's key may log in under the signature algorithm the client named. SHA-1
/// `ssh-rsa` is refused, as it is for host keys (`server`); an RSA key still logs in with
/// `rsa-sha2-256` or `rsa-sha2-512`, which OpenSSH clients use since 7.2 and alone since 8.8
/// (review s29 F3).
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

    /// Review s29 F4: a busy refusal keeps `password` offered; a block takes it off.
    #[test]
    fn a_busy_refusal_keeps_password_offered() {
        let busy = refused_unchecked(&Refusal::Busy("busy".into()));
        assert_eq!(
            busy,
            Auth::Reject {
                proceed_with_methods: Some(login_methods()),
                partial_success: false,
            }
        );
        assert_eq!(
            refused_unchecked(&Refusal::Blocked("blocked".into())),
            Auth::reject()
        );
    }
}
