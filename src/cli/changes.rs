//! `roster changes TENANT [--after SEQ] [--follow] [--json]`: the tenant's change log from a
//! running server (`GET /api/tenants/{t}/changes`), in `seq` order.
//!
//! Entries enter as pages of the API's `{"changes": [...], "next": SEQ}` (at most 1000 per
//! request, so memory is bounded by a page whatever the log holds) and leave on stdout, one
//! line per entry: `seq  time  kind  key  field: old → new; ...` with the import id, or with
//! `--json` the entry as the API sent it (every field, known to this CLI or not), one line of
//! JSON each (JSON Lines), terminal-unsafe characters as `\uXXXX` ([`json_text`]). Without
//! `--follow` every entry after `--after` is printed, then the command ends; with `--follow`
//! it then asks again every second and prints new entries until interrupted.
//!
//! `--follow` outlives failed polls (the server restarting, a 503 while the store is away, a
//! 404 while a reload briefly lacks the tenant): the first failure of a streak is reported on
//! stderr, the poll waits longer after each failure (1 s doubling to [`MAX_BACKOFF`]) and then
//! goes on from the last `seq` printed, saying so on stderr. It ends only on a signal, a
//! failed write to stdout, a refused token (401, 403), or a page this CLI cannot read (an
//! entry without a `seq`, or without the fields of a line of text): waiting does not fix
//! those, and asking again would read the same page forever (review s30).

use super::client::{seg, ApiStatus, Client};
use super::table::{clean, json_text};
use crate::model::changelog::LoggedChange;
use chrono::Local;
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

/// Entries asked for per request (the API's maximum).
const PAGE: usize = 1000;
/// How long `--follow` waits between polls.
const POLL: Duration = Duration::from_secs(1);
/// The longest wait between polls that fail.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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

/// One page of entries after `after`, as the API sent it.
fn fetch(c: &Client, tenant: &str, after: u64) -> anyhow::Result<Value> {
    c.get(&format!(
        "/api/tenants/{}/changes?after={after}&limit={PAGE}",
        seg(tenant)
    ))
}

/// The entries of a page with their seq; an entry this CLI cannot read is an error that
/// ends the command (asking again would return the same page).
fn entries(page: &Value) -> anyhow::Result<Vec<(u64, &Value)>> {
    let upgrade = "upgrade the roster CLI to the server's version";
    let list = page["changes"].as_array().ok_or_else(|| {
        anyhow::anyhow!("the server sent a page of changes without a list of changes; {upgrade}")
    })?;
    list.iter()
        .map(|entry| {
            let seq = entry["seq"].as_u64().ok_or_else(|| {
                anyhow::anyhow!(
                    "the server sent a change this roster version cannot read (no seq); {upgrade}"
                )
            })?;
            Ok((seq, entry))
        })
        .collect()
}

/// The entry as a line of text, or the error that ends the command.
fn text_line(seq: u64, entry: &Value) -> anyhow::Result<String> {
    let change: LoggedChange = serde_json::from_value(entry.clone()).map_err(|e| {
        anyhow::anyhow!(
            "the server sent a change this roster version cannot read (seq {seq}: {}); \
             upgrade the roster CLI to the server's version, or read it with --json",
            clean(&e.to_string())
        )
    })?;
    Ok(line(&change))
}

/// Whether a failed poll ends `--follow`: a refused token (401, 403) does not fix itself.
fn ends_follow(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiStatus>()
        .is_some_and(|s| matches!(s.status, 401 | 403))
}

/// Prints the tenant's change log after `after`; with `follow`, keeps polling (through failed
/// polls, see the module doc).
pub fn run(c: &Client, tenant: &str, after: u64, follow: bool, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut after = after;
    // The wait after the last failed poll, while polls fail.
    let mut failing: Option<Duration> = None;
    loop {
        let page = match fetch(c, tenant, after) {
            Ok(page) => page,
            Err(e) if !follow || ends_follow(&e) => return Err(e),
            Err(e) => {
                let wait = failing.map_or(POLL, |w| (w * 2).min(MAX_BACKOFF));
                if failing.is_none() {
                    eprintln!(
                        "roster: {e:#}; still following: trying again in 1 s, then less and less often (every {} s at most), from seq {after}",
                        MAX_BACKOFF.as_secs()
                    );
                }
                failing = Some(wait);
                std::thread::sleep(wait);
                continue;
            }
        };
        if failing.take().is_some() {
            eprintln!("roster: the admin API answers again; following from seq {after}");
        }
        let page = entries(&page)?;
        if let Some(warning) = page.first().and_then(|f| gap_warning(after, f.0)) {
            eprintln!("{warning}");
        }
        for &(seq, entry) in &page {
            if json {
                writeln!(out, "{}", json_text(entry, false)?)?;
            } else {
                out.write_all(text_line(seq, entry)?.as_bytes())?;
            }
            after = after.max(seq);
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

/// The warning when the first entry read, `first_seq`, is not the one after `after`: the
/// retention sweep removed entries this reader had not got (reviewer s28: the jump went
/// unmentioned). None from the start of the log (`after` 0), where trimmed history is normal.
fn gap_warning(after: u64, first_seq: u64) -> Option<String> {
    let missing = first_seq.saturating_sub(after.saturating_add(1));
    (after > 0 && missing > 0).then(|| {
        format!("roster: {missing} change-log entries after seq {after} were removed by retention before they were read; going on from seq {first_seq}")
    })
}

#[cfg(test)]
mod gap_tests {
    use super::gap_warning;

    #[test]
    fn a_jump_past_the_next_seq_is_reported_once_reading_has_begun() {
        assert_eq!(gap_warning(5, 6), None);
        assert_eq!(gap_warning(0, 40), None);
        let w = gap_warning(5, 9).unwrap_or_default();
        assert!(
            w.contains("3 change-log entries after seq 5") && w.contains("from seq 9"),
            "{w}"
        );
    }
}
