//! Signed webhooks (Standard Webhooks): one delivery task per tenant and endpoint walks the
//! tenant's event log after the endpoint's cursor, in order (docs/delivery.md, docs/operators.md
//! "Webhooks").
//!
//! Data enters through [`EventSource`] (the store implements it: events, change-log ranges,
//! import records, cursors, leases) and the `[[tenants.webhooks]]` config, read on every pass so
//! reloads apply at once. It leaves as HTTP POSTs signed by [`sign`], built by [`message`] and
//! sent by [`send`], and as the endpoint's cursor saved after each outcome ([`endpoint`]):
//! 2xx advances it; a timeout, connection error, 429, 5xx or other 4xx keeps it and schedules a
//! retry with backoff; 410 Gone disables the endpoint until an operator enables it again
//! ([`enable`]). [`run`] keeps one task per endpoint in the config; [`status`] is what the
//! admin API shows.
//!
//! Names: the cursor's consumer id is `webhook:` + hex sha256 of the URL ([`consumer_id`]), so
//! a changed URL is a new endpoint, which starts after the newest event at first sight (what
//! the old URL had not been sent is not sent to it; a 3xx's error says so); the
//! message id is `msg_<tenant>_<event seq>_<event time in ms>` ([`message_id`]), the same on
//! every retry, even after kill -9, so receivers can de-duplicate, and new after a store is
//! restored from a backup (the seq numbers then repeat, their times do not); with several nodes the endpoint's store lease
//! is `webhook:<tenant>:<hash>` ([`lease_name`]), so one node delivers per tenant and endpoint.

pub mod enable;
pub mod endpoint;
pub mod message;
pub mod run;
pub mod send;
pub mod sign;
pub mod status;

pub use enable::enable;
pub use endpoint::{Backoff, EndpointDelivery, PassOutcome};
pub use run::{start, RunningWebhooks};
pub use sign::Signer;
pub use status::{endpoint_status, newest_event, EndpointStatus};

use crate::model::changelog::{Cursor, Event, LoggedChange};
use crate::model::ImportRecord;
use crate::store::Store;
use anyhow::Result;
use sha2::{Digest, Sha256};

/// What a delivery task reads and writes. The store implements it ([`Store`]); the tests
/// implement it with hand-built events. Calls block (run them off the async runtime).
pub trait EventSource: Send + Sync + 'static {
    /// The tenant's events with `seq > after`, in order, at most `limit`.
    fn events(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<Event>>;
    /// The tenant's change-log entries with `seq > after`, in order, at most `limit`.
    fn changes(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<LoggedChange>>;
    /// One import record.
    fn import_record(&self, tenant: &str, id: &str) -> Result<Option<ImportRecord>>;
    /// The consumer's cursor (the default for a consumer never saved).
    fn cursor(&self, tenant: &str, consumer: &str) -> Result<Cursor>;
    /// Stores the consumer's cursor, durable on return.
    fn save_cursor(&self, tenant: &str, consumer: &str, cursor: &Cursor) -> Result<()>;
    /// Stores the consumer's cursor only while this node holds `lease` under `fencing`, in
    /// one step ([`ChangeLog::save_cursor_leased`](crate::store::ChangeLog::save_cursor_leased));
    /// false, and nothing written, once the lease passed.
    fn save_cursor_leased(
        &self,
        tenant: &str,
        consumer: &str,
        cursor: &Cursor,
        lease: (&str, u64),
    ) -> Result<bool>;
    /// Takes the lease `name` for this node: its fencing number, or None while another live
    /// node holds it.
    fn take_lease(&self, name: &str) -> Result<Option<u64>>;
    /// Releases the lease `name` if this node holds it.
    fn release_lease(&self, name: &str) -> Result<()>;
}

impl EventSource for Store {
    fn events(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<Event>> {
        crate::store::ChangeLog::events(&**self, tenant, after, limit)
    }
    fn changes(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<LoggedChange>> {
        crate::store::ChangeLog::changes(&**self, tenant, after, limit)
    }
    fn import_record(&self, tenant: &str, id: &str) -> Result<Option<ImportRecord>> {
        crate::store::RunLog::import_record(&**self, tenant, id)
    }
    fn cursor(&self, tenant: &str, consumer: &str) -> Result<Cursor> {
        crate::store::ChangeLog::cursor(&**self, tenant, consumer)
    }
    fn save_cursor(&self, tenant: &str, consumer: &str, cursor: &Cursor) -> Result<()> {
        crate::store::ChangeLog::save_cursor(&**self, tenant, consumer, cursor)
    }
    fn save_cursor_leased(
        &self,
        tenant: &str,
        consumer: &str,
        cursor: &Cursor,
        lease: (&str, u64),
    ) -> Result<bool> {
        crate::store::ChangeLog::save_cursor_leased(&**self, tenant, consumer, cursor, lease)
    }
    fn take_lease(&self, name: &str) -> Result<Option<u64>> {
        crate::store::Cluster::take_lease(&**self, name)
    }
    fn release_lease(&self, name: &str) -> Result<()> {
        crate::store::Cluster::release_lease(&**self, name)
    }
}

/// Hex sha256 of an endpoint URL.
pub fn url_hash(url: &str) -> String {
    hex::encode(Sha256::digest(url.as_bytes()))
}

/// The cursor's consumer id of the endpoint at `url`: `webhook:<hex sha256 of the URL>`.
pub fn consumer_id(url: &str) -> String {
    format!("webhook:{}", url_hash(url))
}

/// The store lease one node holds to deliver to `url` for `tenant`.
pub fn lease_name(tenant: &str, url: &str) -> String {
    format!("webhook:{tenant}:{}", url_hash(url))
}

/// `url` as logs and the admin API show it (credentials and query hidden); it lives in
/// `config` since review s30, so that config problems show URLs the same way.
pub use crate::config::webhooks::shown_url;

/// The `webhook-id` of the tenant's `event`: `msg_<tenant>_<seq>_<time in ms since 1970>`.
/// Both parts are stored with the event, so a retry, also by another node or after kill -9,
/// sends the same id. Decision (gap of s26): the id was `msg_<tenant>_<seq>`, and a store
/// restored from a backup numbers its next events again from the backup's seq, so receivers
/// that de-duplicate by id dropped those new messages as repeats; the event's time (written
/// once, in the commit that logged it) tells them apart. Milliseconds, because a store copied
/// by `migrate-store` keeps an event's time to the microsecond.
pub fn message_id(tenant: &str, event: &Event) -> String {
    format!("msg_{tenant}_{}_{}", event.seq, event.at.timestamp_millis())
}

/// The `webhook-id` of the part of `event` that starts with change `from` (`message::Part`):
/// the event's own id for its first part, `<id>_c<first change>` for a later one (a
/// `directory.changed` event whose changes did not fit in one body).
pub fn part_id(tenant: &str, event: &Event, from: Option<u64>) -> String {
    let first = event.changes.map(|(first, _)| first);
    match from {
        Some(from) if Some(from) != first => format!("{}_c{from}", message_id(tenant, event)),
        _ => message_id(tenant, event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::changelog::EventType;
    use chrono::TimeZone;

    fn event(seq: u64, ms: i64) -> Event {
        Event {
            seq,
            at: chrono::Utc
                .timestamp_millis_opt(ms)
                .single()
                .unwrap_or_default(),
            kind: EventType::ImportFinished,
            import_id: None,
            changes: None,
        }
    }

    #[test]
    fn a_shown_url_hides_credentials_and_the_query() {
        let shown = shown_url("https://bob:s3cret@hooks.example:8443/in/acme?token=abc#x");
        assert_eq!(shown, "https://***@hooks.example:8443/in/acme?***");
        assert_eq!(
            shown_url("https://hooks.example/in"),
            "https://hooks.example/in"
        );
        assert_eq!(shown_url("http://a@b@h/p"), "http://***@h/p");
        assert_eq!(shown_url("not a url"), "not a url");
    }

    #[test]
    fn a_message_id_names_the_event_and_its_time() {
        let first = event(7, 1_733_232_000_123);
        assert_eq!(message_id("acme", &first), "msg_acme_7_1733232000123");
        assert_eq!(
            message_id("acme", &first.clone()),
            message_id("acme", &first)
        );
        // The same seq again after a restore, at another time: another message.
        let again = event(7, 1_733_318_400_456);
        assert_ne!(message_id("acme", &again), message_id("acme", &first));
    }
}
