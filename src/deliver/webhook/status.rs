//! What the admin API shows of a tenant's endpoints (`GET /api/tenants/{t}/webhooks`).
//!
//! Data enters as the endpoint config and its cursor and the event log read through the
//! [`EventSource`]; it leaves as one [`EndpointStatus`] per endpoint (never the secret).

use super::{consumer_id, EventSource};
use crate::config::WebhookConfig;
use crate::model::changelog::{Cursor, EventType};
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One endpoint as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStatus {
    pub url: String,
    /// The event types it gets (every type when the config names none).
    pub events: Vec<String>,
    /// The last event delivered or passed over (null before the endpoint was first seen).
    pub position: Option<u64>,
    /// Events after the cursor (including types it does not get, until passed over).
    pub backlog: u64,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Failed attempts at the next event.
    pub attempts: u32,
    pub next_attempt: Option<DateTime<Utc>>,
    /// It answered 410 Gone: nothing is sent to it until it is enabled again (or its url
    /// changes).
    pub disabled: bool,
    /// Events the retention sweep removed before this endpoint got them (0: none), and the
    /// last such gap in words; the endpoint went on after them.
    #[serde(default)]
    pub lost_events: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_note: Option<String>,
}

/// The status of `hook` of `tenant`.
pub fn endpoint_status(
    source: &dyn EventSource,
    tenant: &str,
    hook: &WebhookConfig,
) -> Result<EndpointStatus> {
    let cursor = source.cursor(tenant, &consumer_id(&hook.url))?;
    let seen = cursor != Cursor::default();
    let newest = newest_event(source, tenant)?;
    let lost = (cursor.state.as_ref())
        .map(|s| s["lost"].clone())
        .unwrap_or_default();
    let events = EventType::ALL
        .iter()
        .filter(|t| hook.wants(**t))
        .map(|t| t.as_str().to_string())
        .collect();
    Ok(EndpointStatus {
        url: super::shown_url(&hook.url),
        events,
        position: seen.then_some(cursor.position),
        backlog: if seen {
            newest.saturating_sub(cursor.position)
        } else {
            0
        },
        last_success: cursor.last_success,
        last_error: cursor.last_error,
        attempts: cursor.attempts,
        next_attempt: cursor.next_attempt,
        disabled: cursor.disabled,
        lost_events: lost["events"].as_u64().unwrap_or(0),
        lost_note: lost["last"]["note"].as_str().map(str::to_string),
    })
}

/// The `seq` of the tenant's newest event (0 when there is none), found with O(log n) reads of
/// one event each: "is there an event after x" holds exactly for x below the newest.
pub fn newest_event(source: &dyn EventSource, tenant: &str) -> Result<u64> {
    let after =
        |x: u64| -> Result<Option<u64>> { Ok(source.events(tenant, x, 1)?.first().map(|e| e.seq)) };
    let Some(first) = after(0)? else {
        return Ok(0);
    };
    // `low` has an event after it; find a `high` that has none.
    let (mut low, mut step) = (first, 1u64);
    let mut high = loop {
        let probe = low.saturating_add(step);
        match after(probe)? {
            Some(seq) if probe < u64::MAX => {
                low = seq.max(probe);
                step = step.saturating_mul(2);
            }
            _ => break probe,
        }
    };
    // Now: the newest is in [low, high] and nothing follows high.
    while high - low > 0 {
        let mid = low + (high - low) / 2;
        match after(mid)? {
            Some(seq) => low = seq.max(mid + 1),
            None => high = mid,
        }
    }
    Ok(high)
}
