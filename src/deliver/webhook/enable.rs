//! Re-enabling an endpoint that `410 Gone` disabled (`POST /api/tenants/{t}/webhooks/{n}/enable`,
//! `roster webhooks TENANT --enable N`).
//!
//! Data enters as the endpoint's config and its cursor read through the [`EventSource`]; it
//! leaves as the cursor saved back with `disabled` cleared, `attempts` reset and the next
//! attempt due now. The position is kept: the event the endpoint refused with 410 is the next
//! one sent, so nothing is lost. The delivery task looks at the cursor on its next pass (at most
//! `run::POLL` later).

use super::{consumer_id, EventSource};
use crate::config::WebhookConfig;
use crate::model::changelog::Cursor;
use anyhow::Result;
use chrono::Utc;

/// Clears `disabled` on `hook`'s cursor; true when it was disabled (false: nothing to do,
/// including an endpoint never seen yet).
pub fn enable(source: &dyn EventSource, tenant: &str, hook: &WebhookConfig) -> Result<bool> {
    let consumer = consumer_id(&hook.url);
    let mut cursor = source.cursor(tenant, &consumer)?;
    if cursor == Cursor::default() || !cursor.disabled {
        return Ok(false);
    }
    cursor.disabled = false;
    cursor.attempts = 0;
    // Some(..): a cursor never equals the default once seen (endpoint.rs, first sight).
    cursor.next_attempt = Some(Utc::now());
    source.save_cursor(tenant, &consumer, &cursor)?;
    tracing::info!(%tenant, url = %super::shown_url(&hook.url), position = cursor.position,
        "webhook endpoint enabled again: delivery resumes after the last event it acknowledged");
    Ok(true)
}
