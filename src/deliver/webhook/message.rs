//! The body of one webhook message, built at delivery time from an event and the logs:
//! `{"type", "timestamp", "data"}` (docs/operators.md "Webhooks").
//!
//! Data enters as an [`Event`] and what the [`EventSource`] holds for it: for
//! `directory.changed` the change-log entries of its range (at most 500), for the other types
//! the import record. It leaves as a [`Part`]: the exact JSON bytes that are signed and sent,
//! and for `directory.changed` where the next part starts when the event's changes did not
//! all fit.
//!
//! Decision (reviewer s28): a row may hold up to 1 MiB, so 500 changes with their old and new
//! values could make a body of hundreds of MB, built in memory for each of 16 messages in
//! flight. A `directory.changed` body now holds the changes that fit in [`BODY_BYTES`] (always
//! at least one); the rest of the event goes in further parts, each its own message
//! ([`super::message_id`] with the part's first change). Changes are read [`READ_PAGE`] at a
//! time. An event of ordinary rows (a few hundred bytes each) is one message, as before.

use super::EventSource;
use crate::model::changelog::{Event, EventType};
use anyhow::Result;
use chrono::SecondsFormat;
use serde_json::json;

/// The most bytes of changes one `directory.changed` body carries (past the first change).
pub const BODY_BYTES: usize = 4 << 20;
/// Change-log entries of the first read while a body is built.
const READ_PAGE: usize = 16;

/// One message of an event.
#[derive(Debug)]
pub struct Part {
    pub body: Vec<u8>,
    /// For `directory.changed`: the change the next part of the event starts with, when this
    /// one did not reach the end of the event's range.
    pub next: Option<u64>,
}

/// The part of `event` that starts with change `from` (None: the event's first change).
pub fn part(
    source: &dyn EventSource,
    tenant: &str,
    event: &Event,
    from: Option<u64>,
) -> Result<Part> {
    let timestamp = event.at.to_rfc3339_opts(SecondsFormat::Millis, true);
    let (data, next) = match (event.kind, event.changes) {
        (EventType::DirectoryChanged, Some((first, last))) => {
            let from = from.unwrap_or(first).max(first);
            changes_data(source, tenant, event, from, last)?
        }
        _ => (
            serde_json::to_vec(&record_data(source, tenant, event)?)?,
            None,
        ),
    };
    let mut body = Vec::with_capacity(data.len() + 96);
    body.extend_from_slice(br#"{"type":"#);
    serde_json::to_writer(&mut body, event.kind.as_str())?;
    body.extend_from_slice(br#","timestamp":"#);
    serde_json::to_writer(&mut body, &timestamp)?;
    body.extend_from_slice(br#","data":"#);
    body.extend_from_slice(&data);
    body.push(b'}');
    Ok(Part { body, next })
}

/// `{"tenant", "import_id", "changes": [...]}` as bytes: the entries `from..=last` still in
/// the log (entries trimmed by retention are left out) that fit in [`BODY_BYTES`], and the
/// change after the last one taken when the range goes on.
fn changes_data(
    source: &dyn EventSource,
    tenant: &str,
    event: &Event,
    from: u64,
    last: u64,
) -> Result<(Vec<u8>, Option<u64>)> {
    let mut data = Vec::new();
    data.extend_from_slice(br#"{"tenant":"#);
    serde_json::to_writer(&mut data, tenant)?;
    data.extend_from_slice(br#","import_id":"#);
    serde_json::to_writer(&mut data, &event.import_id)?;
    data.extend_from_slice(br#","changes":["#);
    let (start, mut taken, mut bytes) = (data.len(), 0u64, 0usize);
    let max = crate::model::changelog::EVENT_CHANGES_MAX;
    let mut after = from.saturating_sub(1);
    let mut next = None;
    let mut page_size = READ_PAGE;
    'pages: loop {
        let page = source.changes(tenant, after, page_size)?;
        let (page_len, bytes_before) = (page.len(), bytes);
        for change in page {
            if change.seq > last {
                break 'pages;
            }
            let one = serde_json::to_vec(&change)?;
            if taken > 0 && (bytes.saturating_add(one.len()) > BODY_BYTES || taken >= max) {
                next = Some(change.seq);
                break 'pages;
            }
            if data.len() > start {
                data.push(b',');
            }
            bytes = bytes.saturating_add(one.len());
            data.extend_from_slice(&one);
            taken += 1;
            after = change.seq;
        }
        if page_len < page_size || after >= last {
            break;
        }
        // Small changes (the usual rows): read more at once, so an ordinary event of 500
        // takes a few reads, not thirty-two.
        if bytes - bytes_before < BODY_BYTES / 16 {
            page_size = (page_size * 4).min(max as usize);
        }
    }
    data.extend_from_slice(b"]}");
    Ok((data, next))
}

/// The import record as `roster history --json` shows it; when the record is gone (trimmed),
/// `{"tenant", "id"}`.
fn record_data(source: &dyn EventSource, tenant: &str, event: &Event) -> Result<serde_json::Value> {
    let Some(id) = event.import_id.as_deref() else {
        return Ok(json!({ "tenant": tenant, "id": null }));
    };
    match source.import_record(tenant, id)? {
        Some(record) => Ok(serde_json::to_value(record)?),
        None => Ok(json!({ "tenant": tenant, "id": id })),
    }
}
