//! `roster changes TENANT [--after SEQ] [--follow] [--json]`: the tenant's change log from a
//! running server (`GET /api/tenants/{t}/changes`), in `seq` order.
//!
//! Entries enter as pages of the API's `{"changes": [...], "next": SEQ}` (at most 1000 per
//! request, so memory is bounded by a page whatever the log holds) and leave on stdout, one
//! line per entry: `seq  time  kind  key  field: old → new; ...` with the import id, or with
//! `--json` the entry as one line of JSON (JSON Lines). Without `--follow` every entry after
//! `--after` is printed, then the command ends; with `--follow` it then asks again every second
//! and prints new entries until interrupted.

use super::client::{seg, Client};
use super::table::clean;
use crate::model::changelog::LoggedChange;
use chrono::Local;
use std::io::Write;
use std::time::Duration;

/// Entries asked for per request (the API's maximum).
const PAGE: usize = 1000;
/// How long `--follow` waits between polls.
const POLL: Duration = Duration::from_secs(1);

/// One entry as a line of text.
fn line(c: &LoggedChange) -> String {
    let fields: Vec<String> = c
        .fields
        .iter()
        .map(|f| {
            format!(
                "{}: {} → {}",
                f.field,
                f.old.as_deref().unwrap_or("(none)"),
                f.new.as_deref().unwrap_or("(none)")
            )
        })
        .collect();
    let kind = serde_json::to_value(c.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut s = format!(
        "{:>8}  {}  {:<11}  {}",
        c.seq,
        c.at.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S"),
        kind,
        clean(&c.key)
    );
    if !fields.is_empty() {
        s.push_str("  ");
        s.push_str(&clean(&fields.join("; ")));
    }
    match &c.import_id {
        Some(id) => s.push_str(&format!("  [import {}]", clean(id))),
        None => s.push_str("  [operator]"),
    }
    s.push('\n');
    s
}

/// Prints the tenant's change log after `after`; with `follow`, keeps polling.
pub fn run(c: &Client, tenant: &str, after: u64, follow: bool, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut after = after;
    loop {
        let v = c.get(&format!(
            "/api/tenants/{}/changes?after={after}&limit={PAGE}",
            seg(tenant)
        ))?;
        let page: Vec<LoggedChange> = serde_json::from_value(v["changes"].clone())?;
        for entry in &page {
            if json {
                writeln!(out, "{}", serde_json::to_string(entry)?)?;
            } else {
                out.write_all(line(entry).as_bytes())?;
            }
            after = after.max(entry.seq);
        }
        out.flush()?;
        if page.len() < PAGE {
            if !follow {
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
    }
}
