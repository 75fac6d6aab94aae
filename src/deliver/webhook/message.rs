//! The body of one webhook message, built at delivery time from an event and the logs:
//! `{"type", "timestamp", "data"}` (docs/operators.md "Webhooks").
//!
//! Data enters as an [`Event`] and what the [`EventSource`] holds for it: for
//! `directory.changed` the change-log entries of its range (at most 500), for the other types
//! the import record. It leaves as the exact JSON bytes that are signed and sent.

use super::EventSource;
use crate::model::changelog::{Event, EventType};
use anyhow::Result;
use chrono::SecondsFormat;
use serde_json::{json, Value};

/// The JSON body of `event` of `tenant`.
pub fn body(source: &dyn EventSource, tenant: &str, event: &Event) -> Result<Vec<u8>> {
    let data = match (event.kind, event.changes) {
        (EventType::DirectoryChanged, Some((first, last))) => {
            changes_data(source, tenant, event, first, last)?
        }
        _ => record_data(source, tenant, event)?,
    };
    let body = json!({
        "type": event.kind.as_str(),
        "timestamp": event.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    });
    Ok(serde_json::to_vec(&body)?)
}

/// `{"tenant", "import_id", "changes": [...]}`: the entries `first..=last` still in the log
/// (entries trimmed by retention are left out).
fn changes_data(
    source: &dyn EventSource,
    tenant: &str,
    event: &Event,
    first: u64,
    last: u64,
) -> Result<Value> {
    let want = usize::try_from(last.saturating_sub(first).saturating_add(1))
        .unwrap_or(usize::MAX)
        .min(crate::model::changelog::EVENT_CHANGES_MAX as usize);
    let mut changes = source.changes(tenant, first.saturating_sub(1), want)?;
    changes.retain(|c| c.seq >= first && c.seq <= last);
    Ok(json!({
        "tenant": tenant,
        "import_id": event.import_id,
        "changes": changes,
    }))
}

/// The import record as `roster history --json` shows it; when the record is gone (trimmed),
/// `{"tenant", "id"}`.
fn record_data(source: &dyn EventSource, tenant: &str, event: &Event) -> Result<Value> {
    let Some(id) = event.import_id.as_deref() else {
        return Ok(json!({ "tenant": tenant, "id": null }));
    };
    match source.import_record(tenant, id)? {
        Some(record) => Ok(serde_json::to_value(record)?),
        None => Ok(json!({ "tenant": tenant, "id": id })),
    }
}
