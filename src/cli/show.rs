//! Human output of the admin commands: tables and summaries built from the API's JSON.
//!
//! Values enter as the typed records (or JSON) the admin API returned; they leave as text, every
//! value that came from a tenant's file or the server [`clean`]ed (or in a table, which cleans
//! its cells), so it cannot drive the terminal.

use super::table::{self, clean, local, local_str, size, Col};
use crate::model::{ImportRecord, ImportStatus, User};
use serde_json::Value;

pub(super) fn status_word(u: &User) -> String {
    serde_json::to_value(u.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub(super) fn counts_line(r: &ImportRecord) -> String {
    format!(
        "rows {}: {} inserted, {} updated, {} unchanged, {} deactivated, {} deleted, {} restored, {} skipped",
        r.counts.rows, r.counts.inserted, r.counts.updated, r.counts.unchanged, r.counts.deactivated, r.counts.deleted, r.counts.restored, r.counts.skipped
    )
}

/// The ids of the held runs in `records` (the API's JSON list of import records) that a newer
/// file set aside: their `awaiting_approval` is false (review s19 docs F1).
pub(super) fn set_aside_ids(records: &Value) -> Vec<String> {
    let all = records.as_array().into_iter().flatten();
    let aside = all.filter(|r| r["awaiting_approval"] == false);
    aside
        .filter_map(|r| r["id"].as_str().map(String::from))
        .collect()
}

/// The history table; `set_aside` names the held runs a newer file set aside, shown as such
/// and without the approve hint.
pub(super) fn history_text(tenant: &str, records: &[ImportRecord], set_aside: &[String]) -> String {
    if records.is_empty() {
        return format!("no imports yet for {tenant}\n");
    }
    let cols = [
        Col("ID", false),
        Col("RECEIVED", false),
        Col("FILE", false),
        Col("STATUS", false),
        Col("ROWS", true),
        Col("INS", true),
        Col("UPD", true),
        Col("SAME", true),
        Col("DEACT", true),
        Col("DEL", true),
        Col("REST", true),
        Col("SKIP", true),
    ];
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let mut row = vec![
                r.id.clone(),
                local(&r.received_at),
                r.file.clone(),
                match set_aside.contains(&r.id) {
                    true => "set aside".to_string(),
                    false => r.status.to_string(),
                },
            ];
            for n in [
                r.counts.rows,
                r.counts.inserted,
                r.counts.updated,
                r.counts.unchanged,
                r.counts.deactivated,
                r.counts.deleted,
                r.counts.restored,
                r.counts.skipped,
            ] {
                row.push(n.to_string());
            }
            row
        })
        .collect();
    let mut out = table::table(&cols, &rows);
    let held = records.iter().filter(|r| r.status == ImportStatus::Held);
    for r in held.filter(|r| !set_aside.contains(&r.id)) {
        out.push_str(&format!(
            "held: {} would deactivate {} and delete {}; check with `roster preview`, apply with `roster approve {tenant} {}`\n",
            clean(&r.id), r.counts.deactivated, r.counts.deleted, clean(&r.id)
        ));
    }
    out
}

pub(super) fn run_now_text(tenant: &str, v: &Value) -> anyhow::Result<String> {
    let records: Vec<ImportRecord> = serde_json::from_value(v["imports"].clone())?;
    if records.is_empty() {
        let pattern = clean(v["file"].as_str().unwrap_or("?"));
        return Ok(format!(
            "{tenant}: no file matching {pattern:?} is waiting in the tenant folder; nothing was run\n"
        ));
    }
    let mut out = String::new();
    for r in &records {
        out.push_str(&format!(
            "{tenant}: {} → {} (import {})\n{}\n",
            clean(&r.file),
            r.status,
            clean(&r.id),
            counts_line(r)
        ));
        for m in &r.messages {
            out.push_str(&format!("  {}\n", clean(m)));
        }
    }
    Ok(out)
}

pub(super) fn today_text(v: &Value) -> anyhow::Result<String> {
    let tenant = clean(v["tenant"].as_str().unwrap_or("?"));
    let date = clean(v["date"].as_str().unwrap_or("?"));
    let tz = clean(v["timezone"].as_str().unwrap_or("?"));
    let mut out = format!("{tenant}, {date} ({tz}): ");
    let present = v["present"].as_bool().unwrap_or(false);
    if present {
        out.push_str("today's file is there\n");
    } else {
        let expected = clean(
            v["expected"]
                .as_str()
                .or(v["pattern"].as_str())
                .unwrap_or("?"),
        );
        out.push_str(&format!("no file for today yet (expected {expected})\n"));
        out.push_str(&not_imported_text(v));
        return Ok(out);
    }
    let mut rows = Vec::new();
    for f in v["waiting"].as_array().into_iter().flatten() {
        rows.push(vec![
            "waiting".into(),
            f["name"].as_str().unwrap_or("?").into(),
            size(f["bytes"].as_u64().unwrap_or(0)),
            local_str(f["modified_at"].as_str().unwrap_or("")),
            String::new(),
        ]);
    }
    let imported: Vec<ImportRecord> = serde_json::from_value(v["imported"].clone())?;
    let set_aside = set_aside_ids(&v["imported"]);
    for r in &imported {
        let is_set_aside = set_aside.contains(&r.id);
        rows.push(vec![
            "imported".into(),
            r.file.clone(),
            size(r.bytes),
            local(&r.received_at),
            match is_set_aside {
                true => "set aside".into(),
                false => r.status.to_string(),
            },
        ]);
    }
    let cols = [
        Col("STATE", false),
        Col("FILE", false),
        Col("SIZE", true),
        Col("MODIFIED / RECEIVED", false),
        Col("STATUS", false),
    ];
    out.push_str(&table::table(&cols, &rows));
    out.push_str(&not_imported_text(v));
    Ok(out)
}

/// The files and folders of the tenant's root that no import takes, with the reason.
fn not_imported_text(v: &Value) -> String {
    let listed = v["not_imported"].as_array().cloned().unwrap_or_default();
    if listed.is_empty() {
        return String::new();
    }
    let mut out = String::from("In the tenant folder but not imported:\n");
    for f in &listed {
        out.push_str(&format!(
            "  {} ({}, {}): {}\n",
            clean(f["name"].as_str().unwrap_or("?")),
            size(f["bytes"].as_u64().unwrap_or(0)),
            local_str(f["modified_at"].as_str().unwrap_or("")),
            clean(f["reason"].as_str().unwrap_or("?"))
        ));
    }
    let total = v["not_imported_total"].as_u64().unwrap_or(0);
    if total > listed.len() as u64 {
        out.push_str(&format!("  and {} more\n", total - listed.len() as u64));
    }
    out
}

pub(super) fn preview_text(v: &Value) -> anyhow::Result<String> {
    let r: ImportRecord = serde_json::from_value(v["record"].clone())?;
    let mut out = format!(
        "Dry run of {} for {}: nothing was changed.\nAn import now would be: {}\n{}\n",
        clean(v["file"].as_str().unwrap_or("?")),
        clean(v["tenant"].as_str().unwrap_or("?")),
        r.status,
        counts_line(&r)
    );
    let mut changes = v["changes"].as_array().cloned().unwrap_or_default();
    let rank = |c: &Value| match c["action"].as_str() {
        Some("insert") => 0,
        Some("update") => 1,
        Some("restore") => 2,
        Some("deactivate") => 3,
        Some("delete") => 4,
        _ => 5,
    };
    changes.sort_by(|a, b| (rank(a), a["key"].as_str()).cmp(&(rank(b), b["key"].as_str())));
    if !changes.is_empty() {
        out.push('\n');
    }
    for ch in &changes {
        let key = clean(ch["key"].as_str().unwrap_or("?"));
        match ch["action"].as_str().unwrap_or("") {
            "insert" => {
                let fields: Vec<String> = ch["fields"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| clean(&format!("{k}={}", v.as_str().unwrap_or(""))))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push_str(&format!("+ insert      {key}  {}\n", fields.join(", ")));
            }
            action @ ("update" | "restore") => {
                out.push_str(&format!("~ {action:<10}  {key}\n"));
                for fc in ch["changes"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "      {}: {} → {}\n",
                        clean(fc["field"].as_str().unwrap_or("?")),
                        clean(fc["old"].as_str().unwrap_or("(empty)")),
                        clean(fc["new"].as_str().unwrap_or("(empty)"))
                    ));
                }
            }
            "deactivate" => out.push_str(&format!("- deactivate  {key}\n")),
            "delete" => out.push_str(&format!("- delete      {key}\n")),
            other => out.push_str(&format!("? {:<10}  {key}\n", clean(other))),
        }
    }
    if v["truncated"].as_bool().unwrap_or(false) {
        out.push_str("(more changes than listed; the counts above are complete)\n");
    }
    if !r.messages.is_empty() {
        out.push_str("\nmessages:\n");
        for m in &r.messages {
            out.push_str(&format!("  {}\n", clean(m)));
        }
    }
    Ok(out)
}

pub(super) fn users_text(tenant: &str, users: &[User]) -> String {
    if users.is_empty() {
        return format!("{tenant} has no users with that status\n");
    }
    let cols = [
        Col("KEY", false),
        Col("STATUS", false),
        Col("EMAIL", false),
        Col("NAME", false),
        Col("UPDATED", false),
    ];
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            let name = format!(
                "{} {}",
                u.first_name.as_deref().unwrap_or(""),
                u.last_name.as_deref().unwrap_or("")
            );
            vec![
                u.key.clone(),
                status_word(u),
                u.email.clone().unwrap_or_default(),
                name.trim().to_string(),
                local(&u.updated_at),
            ]
        })
        .collect();
    let mut out = table::table(&cols, &rows);
    out.push_str(&format!("{} user(s)\n", users.len()));
    out
}

/// The directory as CSV: fixed columns, then every other field and `custom.NAME` in name order.
pub(super) fn users_csv(users: &[User]) -> anyhow::Result<String> {
    let mut extra: std::collections::BTreeSet<String> = Default::default();
    let mut custom: std::collections::BTreeSet<String> = Default::default();
    for u in users {
        extra.extend(u.fields.keys().cloned());
        custom.extend(u.attributes.keys().cloned());
    }
    let mut header: Vec<String> = [
        "key",
        "status",
        "email",
        "username",
        "mapping_code",
        "first_name",
        "last_name",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(extra.iter().cloned());
    header.extend(custom.iter().map(|c| format!("custom.{c}")));
    header.extend(["created_at", "updated_at", "deleted_at"].map(String::from));
    // Every cell and header is cleaned as a table cell is (review s30: ESC reached the
    // terminal of an operator reading the export), then kept from running as a formula.
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header.iter().map(|c| table::csv_safe(&table::clean(c))))?;
    for u in users {
        let opt = |o: &Option<String>| o.clone().unwrap_or_default();
        let mut row = vec![
            u.key.clone(),
            status_word(u),
            opt(&u.email),
            opt(&u.username),
            opt(&u.mapping_code),
            opt(&u.first_name),
            opt(&u.last_name),
        ];
        for f in &extra {
            row.push(match u.fields.get(f) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(";"),
                Some(other) => other.to_string(),
                None => String::new(),
            });
        }
        for c in &custom {
            row.push(u.attributes.get(c).cloned().unwrap_or_default());
        }
        row.push(u.created_at.to_rfc3339());
        row.push(u.updated_at.to_rfc3339());
        row.push(u.deleted_at.map(|t| t.to_rfc3339()).unwrap_or_default());
        w.write_record(row.iter().map(|c| table::csv_safe(&table::clean(c))))?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write the CSV: {e}"))?;
    Ok(String::from_utf8(bytes)?)
}
