//! The CLI's admin commands (`history`, `run-now`, `today`, `preview`, `approve`, `users`,
//! `restore`): the client side of the admin API of a running `roster serve`.
//!
//! Arguments enter as an [`AdminCommand`] (parsed by clap in `main.rs`) plus the config path
//! (for the admin address and token) and an optional `--admin-url`. Each command makes one or
//! two HTTP calls through [`client::Client`] and leaves as text on stdout: an aligned table
//! with local times, or with `--json` the API's records unchanged (the stable forms of
//! design.md §5: `history --json` is an array of import records, `users --json` an array of
//! users), or with `users --csv` a CSV export. Progress (run-now, preview) goes to stderr: an
//! indicatif bar when stdout is a terminal, plain lines otherwise, nothing with `--json`.
//! Errors leave as one sentence (see `client`).

pub mod client;
mod table;

use crate::store::{ImportRecord, User};
use client::{seg, Client};
use serde_json::Value;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use table::{local, local_str, size, Col};

/// The admin commands of design.md §2.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Import history of a tenant, newest first.
    History {
        tenant: String,
        /// How many runs to show (at most 1000).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the import records as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Import the tenant's current file now.
    RunNow {
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Whether today's file is there: name, size, modified time.
    Today {
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Dry run: what importing FILE would change. Nothing is changed.
    Preview {
        tenant: String,
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Apply an import that the mass-change safeguard held.
    Approve {
        tenant: String,
        import_id: String,
        #[arg(long)]
        json: bool,
    },
    /// List the tenant's directory.
    Users {
        tenant: String,
        /// active, inactive, deleted or all.
        #[arg(long, default_value = "all")]
        status: String,
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Export as CSV.
        #[arg(long)]
        csv: bool,
    },
    /// Restore a soft-deleted (or import-deactivated) user.
    Restore {
        tenant: String,
        user_key: String,
        #[arg(long)]
        json: bool,
    },
}

/// Runs one admin command against the server configured in `config_path`.
pub fn run(cmd: &AdminCommand, config_path: &Path, admin_url: Option<&str>) -> anyhow::Result<()> {
    let c = Client::from_config(config_path, admin_url)?;
    let mut out = std::io::stdout().lock();
    let text = match cmd {
        AdminCommand::History {
            tenant,
            limit,
            json,
        } => {
            let v = c.get(&format!(
                "/api/tenants/{}/imports?limit={limit}",
                seg(tenant)
            ))?;
            let records: Vec<ImportRecord> = serde_json::from_value(v)?;
            if *json {
                // Through the typed record, so fields keep their documented order.
                serde_json::to_string_pretty(&records)? + "\n"
            } else {
                history_text(tenant, &records)
            }
        }
        AdminCommand::RunNow { tenant, json } => {
            let path = format!("/api/tenants/{}/run-now", seg(tenant));
            let v = with_run_progress(&c, tenant, !json, || c.post(&path, None))?;
            if *json {
                pretty(&v)?
            } else {
                run_now_text(tenant, &v)?
            }
        }
        AdminCommand::Today { tenant, json } => {
            let v = c.get(&format!("/api/tenants/{}/today", seg(tenant)))?;
            if *json {
                pretty(&v)?
            } else {
                today_text(&v)?
            }
        }
        AdminCommand::Preview { tenant, file, json } => {
            let v = preview_upload(&c, tenant, file, !json)?;
            if *json {
                pretty(&v)?
            } else {
                preview_text(&v)?
            }
        }
        AdminCommand::Approve {
            tenant,
            import_id,
            json,
        } => {
            let path = format!(
                "/api/tenants/{}/imports/{}/approve",
                seg(tenant),
                seg(import_id)
            );
            let v = c.post(&path, None)?;
            if *json {
                pretty(&v)?
            } else {
                let r: ImportRecord = serde_json::from_value(v)?;
                format!(
                    "approved import {} of {tenant} ({}): {}\n{}\n",
                    r.id,
                    r.file,
                    r.status,
                    counts_line(&r)
                )
            }
        }
        AdminCommand::Users {
            tenant,
            status,
            json,
            csv,
        } => {
            let v = c.get(&format!(
                "/api/tenants/{}/users?status={}",
                seg(tenant),
                seg(status)
            ))?;
            let users: Vec<User> = serde_json::from_value(v)?;
            if *json {
                serde_json::to_string_pretty(&users)? + "\n"
            } else {
                if *csv {
                    users_csv(&users)?
                } else {
                    users_text(tenant, &users)
                }
            }
        }
        AdminCommand::Restore {
            tenant,
            user_key,
            json,
        } => {
            let path = format!(
                "/api/tenants/{}/users/{}/restore",
                seg(tenant),
                seg(user_key)
            );
            let v = c.post(&path, None)?;
            if *json {
                pretty(&v)?
            } else {
                let u: User = serde_json::from_value(v)?;
                format!("restored {} of {tenant}: now {}\n", u.key, status_word(&u))
            }
        }
    };
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn pretty(v: &Value) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(v)? + "\n")
}

fn status_word(u: &User) -> String {
    serde_json::to_value(u.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn counts_line(r: &ImportRecord) -> String {
    format!(
        "rows {}: {} inserted, {} updated, {} unchanged, {} deactivated, {} deleted, {} restored, {} skipped",
        r.rows, r.inserted, r.updated, r.unchanged, r.deactivated, r.deleted, r.restored, r.skipped
    )
}

fn history_text(tenant: &str, records: &[ImportRecord]) -> String {
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
                r.status.to_string(),
            ];
            for n in [
                r.rows,
                r.inserted,
                r.updated,
                r.unchanged,
                r.deactivated,
                r.deleted,
                r.restored,
                r.skipped,
            ] {
                row.push(n.to_string());
            }
            row
        })
        .collect();
    let mut out = table::table(&cols, &rows);
    for r in records
        .iter()
        .filter(|r| r.status == crate::store::ImportStatus::Held)
    {
        out.push_str(&format!(
            "held: {} would deactivate {} and delete {}; check with `roster preview`, apply with `roster approve {tenant} {}`\n",
            r.id, r.deactivated, r.deleted, r.id
        ));
    }
    out
}

fn run_now_text(tenant: &str, v: &Value) -> anyhow::Result<String> {
    let records: Vec<ImportRecord> = serde_json::from_value(v["imports"].clone())?;
    if records.is_empty() {
        let pattern = v["file"].as_str().unwrap_or("?");
        return Ok(format!(
            "{tenant}: no file matching {pattern:?} is waiting in the tenant folder; nothing was run\n"
        ));
    }
    let mut out = String::new();
    for r in &records {
        out.push_str(&format!(
            "{tenant}: {} → {} (import {})\n{}\n",
            r.file,
            r.status,
            r.id,
            counts_line(r)
        ));
        for m in &r.messages {
            out.push_str(&format!("  {m}\n"));
        }
    }
    Ok(out)
}

fn today_text(v: &Value) -> anyhow::Result<String> {
    let tenant = v["tenant"].as_str().unwrap_or("?");
    let date = v["date"].as_str().unwrap_or("?");
    let tz = v["timezone"].as_str().unwrap_or("?");
    let mut out = format!("{tenant}, {date} ({tz}): ");
    let present = v["present"].as_bool().unwrap_or(false);
    if present {
        out.push_str("today's file is there\n");
    } else {
        let expected = v["expected"]
            .as_str()
            .or(v["pattern"].as_str())
            .unwrap_or("?");
        out.push_str(&format!("no file for today yet (expected {expected})\n"));
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
    for r in &imported {
        rows.push(vec![
            "imported".into(),
            r.file.clone(),
            size(r.bytes),
            local(&r.received_at),
            r.status.to_string(),
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
    Ok(out)
}

/// Shows the tenant's running import while `call` runs: a bar on a terminal, lines otherwise.
fn with_run_progress<T>(
    c: &Client,
    tenant: &str,
    show: bool,
    call: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if !show {
        return call();
    }
    let done = Arc::new(AtomicBool::new(false));
    let tty = std::io::stdout().is_terminal();
    let path = format!("/api/tenants/{}/progress", seg(tenant));
    let result = std::thread::scope(|s| {
        let done2 = done.clone();
        s.spawn(move || {
            let bar = tty.then(|| {
                let b = indicatif::ProgressBar::new_spinner();
                b.enable_steady_tick(Duration::from_millis(120));
                b.set_message(format!("{tenant}: waiting for the import to start"));
                b
            });
            let mut last_line = Instant::now() - Duration::from_secs(60);
            while !done2.load(Ordering::SeqCst) {
                if let Ok(v) = c.get(&path) {
                    let running = &v["running"];
                    if let Some(file) = running["file"].as_str() {
                        let msg = format!(
                            "{tenant}: importing {file} ({}): {} rows read",
                            size(running["bytes"].as_u64().unwrap_or(0)),
                            running["rows_read"].as_u64().unwrap_or(0)
                        );
                        match &bar {
                            Some(b) => b.set_message(msg),
                            None if last_line.elapsed() >= Duration::from_secs(2) => {
                                eprintln!("{msg}");
                                last_line = Instant::now();
                            }
                            None => {}
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        });
        let r = call();
        done.store(true, Ordering::SeqCst);
        r
    });
    result
}

/// Uploads FILE for a dry run, with a progress bar on a terminal.
fn preview_upload(c: &Client, tenant: &str, file: &Path, show: bool) -> anyhow::Result<Value> {
    let f = std::fs::File::open(file)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > c.max_upload_bytes {
        anyhow::bail!(
            "{} is {}, larger than the server's max_upload_bytes ({}), so it could not be imported either",
            file.display(),
            size(len),
            size(c.max_upload_bytes)
        );
    }
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "preview.csv".into());
    let path = format!("/api/tenants/{}/preview?file={}", seg(tenant), seg(&name));
    let tty = std::io::stdout().is_terminal();
    if show && !tty {
        eprintln!("uploading {name} ({}) for a dry run", size(len));
    }
    let bar = (show && tty).then(|| {
        let b = indicatif::ProgressBar::new(len);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_message(format!("uploading {name}"));
        b
    });
    let result = match &bar {
        Some(b) => {
            let mut reader = Planning {
                inner: b.wrap_read(f),
                bar: b.clone(),
            };
            c.post(&path, Some(&mut reader))
        }
        None => {
            let mut reader = f;
            c.post(&path, Some(&mut reader))
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    result
}

/// Switches the bar to a spinner message once the whole file is sent.
struct Planning<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for Planning<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.bar.set_message("planning (nothing is changed)");
        }
        Ok(n)
    }
}

fn preview_text(v: &Value) -> anyhow::Result<String> {
    let r: ImportRecord = serde_json::from_value(v["record"].clone())?;
    let mut out = format!(
        "Dry run of {} for {}: nothing was changed.\nAn import now would be: {}\n{}\n",
        v["file"].as_str().unwrap_or("?"),
        v["tenant"].as_str().unwrap_or("?"),
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
        let key = ch["key"].as_str().unwrap_or("?");
        match ch["action"].as_str().unwrap_or("") {
            "insert" => {
                let fields: Vec<String> = ch["fields"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
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
                        fc["field"].as_str().unwrap_or("?"),
                        fc["old"].as_str().unwrap_or("(empty)"),
                        fc["new"].as_str().unwrap_or("(empty)")
                    ));
                }
            }
            "deactivate" => out.push_str(&format!("- deactivate  {key}\n")),
            "delete" => out.push_str(&format!("- delete      {key}\n")),
            other => out.push_str(&format!("? {other:<10}  {key}\n")),
        }
    }
    if v["truncated"].as_bool().unwrap_or(false) {
        out.push_str("(more changes than listed; the counts above are complete)\n");
    }
    if !r.messages.is_empty() {
        out.push_str("\nmessages:\n");
        for m in &r.messages {
            out.push_str(&format!("  {m}\n"));
        }
    }
    Ok(out)
}

fn users_text(tenant: &str, users: &[User]) -> String {
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
fn users_csv(users: &[User]) -> anyhow::Result<String> {
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
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&header)?;
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
        w.write_record(row.iter().map(|c| table::csv_safe(c)))?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write the CSV: {e}"))?;
    Ok(String::from_utf8(bytes)?)
}
