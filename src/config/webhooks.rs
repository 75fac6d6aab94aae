//! `[[tenants.webhooks]]`: the endpoints a tenant's events are posted to (docs/delivery.md).
//!
//! Data enters as TOML (`url`, `secret`, optional `previous_secret` while a secret is rotated,
//! optional `events`) and leaves as [`WebhookConfig`],
//! read by `deliver::webhook` on every pass, so a reload that adds, removes or changes an
//! endpoint takes effect without a restart. [`WebhookConfig::problems`] checks each key; the
//! secret is decoded here only to be checked, and again where it signs.

use crate::model::changelog::EventType;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Fewest bytes a decoded secret may have.
pub const SECRET_MIN_BYTES: usize = 24;
/// Most bytes a decoded secret may have.
pub const SECRET_MAX_BYTES: usize = 64;

/// One webhook endpoint of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed (http or https).
    pub url: String,
    /// `whsec_` + base64 of 24 to 64 random bytes (the Standard Webhooks format).
    pub secret: String,
    /// During a rotation, the secret receivers may still verify with: every message is signed
    /// with both (two `v1,` signatures), until it is removed from the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<String>,
    /// Event type names this endpoint gets; None: every type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
}

impl WebhookConfig {
    /// The decoded signing key; an error says what is wrong with `secret`.
    pub fn key(&self) -> Result<Vec<u8>, String> {
        decode_secret(&self.secret)
    }

    /// Whether this endpoint gets events of type `kind`.
    pub fn wants(&self, kind: EventType) -> bool {
        match &self.events {
            None => true,
            Some(names) => names.iter().any(|n| n == kind.as_str()),
        }
    }

    /// Every problem of this endpoint, each as (key, sentence); `at` names it
    /// (`webhooks[0]`).
    pub fn problems(&self, at: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Err(why) = check_url(&self.url) {
            out.push((format!("{at}.url"), why));
        }
        if let Err(why) = self.key() {
            out.push((format!("{at}.secret"), why));
        }
        if let Some(previous) = &self.previous_secret {
            if let Err(why) = decode_secret(previous) {
                out.push((format!("{at}.previous_secret"), why));
            } else if *previous == self.secret {
                out.push((
                    format!("{at}.previous_secret"),
                    "is the same as secret; during a rotation it holds the old secret".into(),
                ));
            }
        }
        if self.events.as_ref().is_some_and(Vec::is_empty) {
            out.push((
                format!("{at}.events"),
                "is empty: the endpoint would get no event; leave `events` out for every type"
                    .into(),
            ));
        }
        for name in self.events.iter().flatten() {
            if !EventType::ALL.iter().any(|t| t.as_str() == name) {
                let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                out.push((
                    format!("{at}.events"),
                    format!(
                        "{name:?} is not an event type (one of {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        out
    }
}

/// Decodes `whsec_<base64>`: 24 to 64 bytes.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let Some(b64) = secret.strip_prefix(SECRET_PREFIX) else {
        return Err(
            "must start with \"whsec_\" (the Standard Webhooks format: whsec_ + base64)".into(),
        );
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| "is not whsec_ followed by base64".to_string())?;
    if !(SECRET_MIN_BYTES..=SECRET_MAX_BYTES).contains(&key.len()) {
        return Err(format!(
            "decodes to {} bytes; use {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} random bytes \
             (for example: echo whsec_$(openssl rand -base64 32))",
            key.len()
        ));
    }
    Ok(key)
}

/// `url` as logs and the admin API show it: a user name and password (`https://user:pass@host`,
/// sent as Basic auth) become `***@`, and a query (where tokens often travel) `?***`. The path
/// is kept, so an operator can still tell endpoints apart. Reviewer s28: the credentials were
/// in every retry warning and in `GET .../webhooks`. Config problems (a rejected reload is
/// logged) show URLs this way too (review s30, F6).
pub fn shown_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let tail = match tail.find('?') {
        Some(q) => format!("{}?***", &tail[..q]),
        None => tail.to_string(),
    };
    format!("{}{host}{tail}", &url[..scheme_end])
}

/// An http(s) URL with a host; a problem shows it as [`shown_url`] does.
fn check_url(url: &str) -> Result<(), String> {
    let shown = shown_url(url);
    let uri: ureq::http::Uri = url.parse().map_err(|_| format!("{shown:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("{shown:?} must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{shown:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str, secret: &str, events: Option<&[&str]>) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            secret: secret.into(),
            previous_secret: None,
            events: events.map(|e| e.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn secrets_urls_and_event_names_are_checked() {
        let good = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert_eq!(decode_secret(good).map(|k| k.len()), Ok(24));
        assert!(hook("https://a.example/h", good, None)
            .problems("webhooks[0]")
            .is_empty());
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(decode_secret("whsec_c2hvcnQ=")
            .unwrap_err()
            .contains("5 bytes"));
        assert!(decode_secret("whsec_!!!").is_err());
        let bad = hook(
            "ftp://a.example/",
            "whsec_",
            Some(&["import.finished", "user.made"]),
        );
        let keys: Vec<String> = bad
            .problems("webhooks[1]")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            [
                "webhooks[1].url",
                "webhooks[1].secret",
                "webhooks[1].events"
            ]
        );
        let none = hook("http://127.0.0.1:9/", good, Some(&[]));
        let why = none.problems("webhooks[1]");
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].1.contains("is empty"), "{why:?}");
        let some = hook("http://127.0.0.1:9/", good, Some(&["file.missing"]));
        assert!(some.wants(EventType::FileMissing));
        assert!(!some.wants(EventType::DirectoryChanged));
        assert!(hook("http://x/", good, None).wants(EventType::ImportHeld));
        let mut rotating = hook("http://x/", good, None);
        rotating.previous_secret =
            Some("whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into());
        assert!(rotating.problems("webhooks[0]").is_empty());
        for bad in ["s3cret", good] {
            rotating.previous_secret = Some(bad.into());
            let keys: Vec<String> = rotating
                .problems("webhooks[0]")
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            assert_eq!(keys, ["webhooks[0].previous_secret"], "{bad}");
        }
    }
}

#[cfg(test)]
mod config_tests {
    use crate::config::Config;

    const TENANT: &str = "[[tenants]]\nid = \"acme\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0XSsfOIUbEVJFH1EkHwIqJ5NV+nZFzs1OHp9Fk1dcWs\"\n";

    #[test]
    fn a_config_names_the_tenant_and_key_of_each_bad_webhook() {
        let good = format!(
            "{TENANT}[[tenants.webhooks]]\nurl = \"https://app.example/hooks\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nevents = [\"directory.changed\"]\n"
        );
        let config = Config::parse(&good).unwrap();
        assert_eq!(config.tenants[0].webhooks.len(), 1);
        let bad = format!(
            "{TENANT}[[tenants.webhooks]]\nurl = \"https://app.example/hooks\"\nsecret = \"s3cret\"\n[[tenants.webhooks]]\nurl = \"https://app.example/hooks\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nevents = [\"user.created\"]\n"
        );
        let problems = Config::parse(&bad).unwrap_err();
        let joined = problems.join("\n");
        assert!(
            joined.contains("tenant \"acme\": webhooks[0].secret must start with \"whsec_\""),
            "{joined}"
        );
        assert!(
            joined.contains(
                "tenant \"acme\": webhooks[1].events \"user.created\" is not an event type"
            ),
            "{joined}"
        );
        assert!(
            joined.contains(
                "tenant \"acme\": webhooks[1].url \"https://app.example/hooks\" is listed twice"
            ),
            "{joined}"
        );
        let unknown = format!("{TENANT}[[tenants.webhooks]]\nurl = \"http://a/\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nsigning = 1\n");
        assert!(Config::parse(&unknown).unwrap_err()[0].contains("signing"));
    }
}
