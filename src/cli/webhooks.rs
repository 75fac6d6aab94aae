//! `roster webhooks TENANT [--json]`: the tenant's webhook endpoints and how delivery to each
//! stands, from `GET /api/tenants/{tenant}/webhooks`.
//!
//! Data enters as that route's JSON; it leaves as a table (url, events, position, backlog, last
//! success, attempts, next attempt, state) plus each endpoint's last error on its own line.

use super::table;
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
        .map(|e| {
            let state = if e.disabled {
                "disabled (410 Gone)"
            } else if e.attempts > 0 {
                "retrying"
            } else {
                "ok"
            };
            vec![
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
            out.push_str(&format!("{}: last error: {err}\n", e.url));
        }
    }
    Ok(out)
}
