//! Standard Webhooks signatures (standardwebhooks.com): `webhook-id`, `webhook-timestamp` and
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
//!
//! Data enters as the endpoint's `whsec_` secret, and during a rotation its `previous_secret`
//! (decoded by `config::webhooks`), and the exact body bytes of one message; it leaves as the
//! three header values. With two secrets the signature header carries two space-separated
//! `v1,` signatures, the current secret's first (the specification's form for rotation), so a
//! receiver verifying with either secret accepts the message. Pure: no I/O.

use crate::config::webhooks::decode_secret;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2_hmac::Sha256;

/// Signs messages for one endpoint: with its secret, and its previous one during a rotation.
/// Cheap to clone.
#[derive(Clone)]
pub struct Signer {
    macs: Vec<Hmac<Sha256>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// A signer for `whsec_<base64>`; the error says what is wrong with the secret.
    pub fn from_secret(secret: &str) -> Result<Signer, String> {
        Signer::rotating(secret, None)
    }

    /// A signer for `secret` that also signs with `previous` while a rotation lasts; the error
    /// says what is wrong with either (prefixed `previous_secret` for the second).
    pub fn rotating(secret: &str, previous: Option<&str>) -> Result<Signer, String> {
        let mut macs = vec![mac_of(secret)?];
        if let Some(old) = previous {
            macs.push(mac_of(old).map_err(|why| format!("(previous_secret) {why}"))?);
        }
        Ok(Signer { macs })
    }

    /// `v1,<base64 signature>` of `body` sent as message `id` at `timestamp` (Unix seconds),
    /// one per secret, separated by a space.
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let signed = |mac: &Hmac<Sha256>| {
            let mut mac = mac.clone();
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            let tag = mac.finalize().into_bytes();
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(tag)
            )
        };
        let all: Vec<String> = self.macs.iter().map(signed).collect();
        all.join(" ")
    }

    /// The three headers of a message, as (name, value).
    pub fn headers(&self, id: &str, timestamp: i64, body: &[u8]) -> [(&'static str, String); 3] {
        [
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", self.signature(id, timestamp, body)),
        ]
    }
}

/// The HMAC keyed with a decoded `whsec_` secret.
fn mac_of(secret: &str) -> Result<Hmac<Sha256>, String> {
    let key = decode_secret(secret)?;
    Hmac::<Sha256>::new_from_slice(&key).map_err(|_| "is not a usable HMAC key".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specification_example_signs_as_the_reference_library_does() {
        // The example of the Standard Webhooks test suites (checked with the Python library).
        let s = Signer::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = s.signature(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let h = s.headers("msg_a_1", 5, b"{}");
        assert_eq!(h[0], ("webhook-id", "msg_a_1".to_string()));
        assert_eq!(h[1], ("webhook-timestamp", "5".to_string()));
        assert!(Signer::from_secret("whsec_c2hvcnQ=").is_err());
    }

    #[test]
    fn a_rotation_signs_with_both_secrets_the_current_one_first() {
        let (new, old) = (
            "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        );
        let body = br#"{"test": 2432232314}"#;
        let both = Signer::rotating(new, Some(old)).unwrap();
        let sig = both.signature("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        let alone = |s: &str| {
            Signer::from_secret(s).unwrap().signature(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                body,
            )
        };
        assert_eq!(sig, format!("{} {}", alone(new), alone(old)));
        assert!(sig.ends_with(" v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
        let bad = Signer::rotating(new, Some("whsec_c2hvcnQ=")).unwrap_err();
        assert!(bad.starts_with("(previous_secret)"), "{bad}");
    }
}
