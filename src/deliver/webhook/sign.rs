//! Standard Webhooks signatures (standardwebhooks.com): `webhook-id`, `webhook-timestamp` and
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
//!
//! Data enters as the endpoint's `whsec_` secret (decoded by `config::webhooks`) and the exact
//! body bytes of one message; it leaves as the three header values. Pure: no I/O.

use crate::config::webhooks::decode_secret;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2_hmac::Sha256;

/// Signs messages for one endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Signer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// A signer for `whsec_<base64>`; the error says what is wrong with the secret.
    pub fn from_secret(secret: &str) -> Result<Signer, String> {
        let key = decode_secret(secret)?;
        let mac = Hmac::<Sha256>::new_from_slice(&key)
            .map_err(|_| "is not a usable HMAC key".to_string())?;
        Ok(Signer { mac })
    }

    /// `v1,<base64 signature>` of `body` sent as message `id` at `timestamp` (Unix seconds).
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
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
}
