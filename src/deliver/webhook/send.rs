//! One HTTP POST of a signed message, and what its answer means for the cursor.
//!
//! Data enters as the URL, the signed headers and the body; it leaves as a [`SendOutcome`]:
//! 2xx delivered; 410 gone; anything else (timeout, connection error, 429 with its
//! `Retry-After`, 5xx, 3xx and other 4xx) a retry. At most [`MAX_RESPONSE_BYTES`] of an
//! answer are read, redirects are not followed, and a request lasts at most [`TIMEOUT`], so a
//! slow or hostile receiver holds one thread for at most that long and no memory beyond that.
//! Blocking (ureq): run it on a blocking thread.

use chrono::{DateTime, Utc};
use std::io::Read;
use std::time::Duration;

/// The longest one delivery may take, connection to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of an answer read (kept in the cursor's `last_error`).
pub const MAX_RESPONSE_BYTES: u64 = 2048;
/// The longest `Retry-After` honoured; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// What one POST came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// A 2xx answer (the status).
    Delivered(u16),
    /// 410 Gone: the receiver asks never to be sent to again.
    Gone(String),
    /// Try again later: why, and the wait the receiver asked for (429 `Retry-After`, capped).
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
}

/// An HTTP client for deliveries: [`TIMEOUT`], no redirects, every status returned as is.
pub fn agent(timeout: Duration) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("Roster-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build();
    ureq::Agent::new_with_config(config)
}

/// POSTs `body` as JSON with `headers` to `url`.
pub fn post(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(&'static str, String)],
    body: &[u8],
) -> SendOutcome {
    let mut request = agent.post(url).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let mut response = match request.send(body) {
        Ok(r) => r,
        Err(e) => {
            return SendOutcome::Retry {
                error: format!("no answer: {e}"),
                retry_after: None,
            }
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, Utc::now()));
    let mut text = Vec::new();
    let _ = response
        .body_mut()
        .as_reader()
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut text);
    let said = String::from_utf8_lossy(&text);
    let said: String = said.trim().chars().take(200).collect();
    match status {
        200..=299 => SendOutcome::Delivered(status),
        410 => SendOutcome::Gone(format!("answered 410 Gone: {said}")),
        429 => SendOutcome::Retry {
            error: format!("answered 429 Too Many Requests: {said}"),
            retry_after,
        },
        // Redirects are not followed (the signature names this URL): say where it points, and
        // what changing `url` costs: the cursor is keyed by the URL, so a new URL starts after
        // the newest event and the messages not delivered here are never sent to it (audit F6:
        // "set url to where it points" skipped them without a word).
        300..=399 => {
            let to = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(200).collect::<String>())
                .unwrap_or_default();
            SendOutcome::Retry {
                error: format!(
                    "answered {status}, a redirect to {to:?} that is not followed; pointing url there makes a new endpoint that starts after the newest event, so the messages not yet delivered here are not sent to it (to keep them, have this URL answer them first)"
                ),
                retry_after: None,
            }
        }
        _ => SendOutcome::Retry {
            error: format!("answered {status}: {said}"),
            retry_after: None,
        },
    }
}

/// A `Retry-After` value (seconds, or an HTTP date in any of its three forms: IMF-fixdate,
/// RFC 850 and asctime, RFC 9110 §5.6.7) as a wait from `now`, at most [`MAX_RETRY_AFTER`]
/// (also for a number of seconds too large for u64); None when it cannot be read.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Seconds past u64: the longest wait, as any other value past the cap.
        MAX_RETRY_AFTER
    } else {
        let at = match httpdate::parse_http_date(value) {
            Ok(t) => DateTime::<Utc>::from(t),
            // Not an HTTP date, but a date all the same (an offset instead of GMT, say).
            Err(_) => DateTime::parse_from_rfc2822(value)
                .ok()?
                .with_timezone(&Utc),
        };
        (at - now).to_std().unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date_and_capped() {
        let now = DateTime::parse_from_rfc3339("2026-11-29T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 08:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("99999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 08:00:30 +0000", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("Sun, 29 Nov 2026 08:00:30", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    /// RFC 9110 §5.6.7: the obsolete RFC 850 and asctime forms are HTTP dates too.
    #[test]
    fn retry_after_reads_every_http_date_form() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T06:43:48Z")
            .unwrap()
            .with_timezone(&Utc);
        let five_minutes = Some(Duration::from_secs(300));
        for date in [
            "Mon, 30 Nov 2026 06:48:48 GMT",
            "Monday, 30-Nov-26 06:48:48 GMT",
            "Mon Nov 30 06:48:48 2026",
        ] {
            assert_eq!(parse_retry_after(date, now), five_minutes, "{date}");
        }
    }
}
