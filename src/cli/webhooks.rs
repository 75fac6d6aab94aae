//! `roster webhooks TENANT [--enable N] [--json]`: the tenant's webhook endpoints and how
//! delivery to each stands, from `GET /api/tenants/{tenant}/webhooks`; `--enable N` re-enables
//! endpoint N after 410 Gone (`POST /api/tenants/{tenant}/webhooks/{N}/enable`).
//!
//! Data enters as those routes' JSON; it leaves as a table (number, url, events, position,
//! backlog, last success, attempts, next attempt, state) plus each endpoint's last error on its
//! own line, or as one sentence saying what `--enable` did. The receiver's error text and the
//! url are [`table::clean`]ed: a receiver is a third party and must not drive the terminal.

use super::table::{self, clean};
use serde_json::Value;

/// The endpoints as a table, then the last errors.
pub(super) fn webhooks_text(tenant: &str, v: &Value) -> anyhow::Result<String> {
    let list: Vec<crate::deliver::webhook::EndpointStatus> =
        serde_json::from_value(v["webhooks"].clone())?;
    if list.is_empty() {
        return Ok(format!(
            "{tenant} has no webhook endpoints ([[tenants.webhooks]])\n"
        ));
    }
    let when = |t: &Option<chrono::DateTime<chrono::Utc>>| {
        t.as_ref().map(table::local).unwrap_or_else(|| "-".into())
    };
    let rows: Vec<Vec<String>> = list
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let state = if e.disabled {
                "disabled (410 Gone; --enable N resumes)"
            } else if e.attempts > 0 {
                "retrying"
            } else {
                "ok"
            };
            vec![
                i.to_string(),
                e.url.clone(),
                e.events.len().to_string(),
                e.position.map_or("-".into(), |p| p.to_string()),
                e.backlog.to_string(),
                when(&e.last_success),
                e.attempts.to_string(),
                when(&e.next_attempt),
                state.to_string(),
            ]
        })
        .collect();
    let cols = [
        table::Col("N", true),
        table::Col("URL", false),
        table::Col("TYPES", true),
        table::Col("POSITION", true),
        table::Col("BACKLOG", true),
        table::Col("LAST SUCCESS", false),
        table::Col("ATTEMPTS", true),
        table::Col("NEXT ATTEMPT", false),
        table::Col("STATE", false),
    ];
    let mut out = table::table(&cols, &rows);
    for e in &list {
        if let Some(err) = &e.last_error {
            out.push_str(&format!("{}: last error: {}\n", clean(&e.url), clean(err)));
        }
        if let Some(note) = e.lost_note.as_deref().filter(|_| e.lost_events > 0) {
            out.push_str(&format!(
                "{}: {} events lost to retention; last: {}\n",
                clean(&e.url),
                e.lost_events,
                clean(note)
            ));
        }
    }
    Ok(out)
}

/// What `--enable n` did, from `{"enabled", "webhook"}`.
pub(super) fn enabled_text(n: usize, v: &Value) -> anyhow::Result<String> {
    let e: crate::deliver::webhook::EndpointStatus = serde_json::from_value(v["webhook"].clone())?;
    let position = e.position.map_or("-".into(), |p| p.to_string());
    Ok(if v["enabled"].as_bool() == Some(true) {
        format!(
            "endpoint {n} ({}) enabled again: delivery resumes after event {position} ({} waiting)\n",
            clean(&e.url), e.backlog
        )
    } else {
        format!(
            "endpoint {n} ({}) was not disabled: nothing changed\n",
            clean(&e.url)
        )
    })
}
