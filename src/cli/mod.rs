//! The CLI's admin commands (`history`, `run-now`, `today`, `preview`, `approve`, `users`,
//! `restore`, `nodes`, `changes`, `webhooks`, `scim-push`, `login-blocks`): the client side of the admin API of a running
//! `roster serve`.
//!
//! Arguments enter as an [`AdminCommand`] (parsed by clap in `main.rs`) plus the config path
//! (for the admin address and token) and an optional `--admin-url`. Each command makes one or
//! two HTTP calls through [`client::Client`] and leaves as text on stdout: an aligned table
//! with local times, or with `--json` the API's records unchanged (the stable forms of
//! design.md §5: `history --json` is an array of import records, `users --json` an array of
//! users; terminal-unsafe characters written as `\uXXXX`, see [`table::json_text`]), or with
//! `users --csv` a CSV export (cells cleaned as table cells are). Progress (run-now, preview)
//! goes to stderr: an indicatif bar when stdout is a terminal, plain lines otherwise, nothing
//! with `--json`.
//! Errors leave as one sentence (see `client`).

mod changes;
pub mod client;
mod login_blocks;
pub mod migrate_store;
mod scim_push;
mod show;
mod table;
mod webhooks;

use crate::model::{ImportRecord, ImportStatus, User};
use client::{seg, Client};
use serde_json::Value;
use show::*;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use table::size;

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
    /// The tenant's change log (issue 12), in seq order.
    Changes {
        tenant: String,
        /// Print only entries after this seq.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Keep asking every second and print new entries until interrupted.
        #[arg(long)]
        follow: bool,
        /// One JSON object per entry and line.
        #[arg(long)]
        json: bool,
    },
    /// The nodes sharing the store, with their addresses and last heartbeat.
    Nodes {
        /// Print `{"nodes": [...]}` as the API returns it.
        #[arg(long)]
        json: bool,
    },
    /// Login blocks in force (repeated failed logins), or `--lift` one.
    LoginBlocks {
        /// Lift the block on SCOPE (address or tenant) SUBJECT (an IP address or tenant id)
        /// and forget its failed logins, on every node.
        #[arg(long, num_args = 2, value_names = ["SCOPE", "SUBJECT"])]
        lift: Option<Vec<String>>,
        /// Print the API's answer as it is.
        #[arg(long)]
        json: bool,
    },
    /// The tenant's webhook endpoints: position, backlog, last success and error, state.
    Webhooks {
        tenant: String,
        /// Enable endpoint N again (0-based, config order) after 410 Gone disabled it;
        /// delivery resumes with the event it refused.
        #[arg(long, value_name = "N")]
        enable: Option<usize>,
        /// Print `{"webhooks": [...]}` as the API returns it.
        #[arg(long)]
        json: bool,
    },
    /// SCIM push to the tenant's application: status, or `--reconcile` the drift.
    ScimPush {
        tenant: String,
        /// Compare the application's users with the directory and fix the drift.
        #[arg(long)]
        reconcile: bool,
        /// With --reconcile: only print the drift.
        #[arg(long, requires = "reconcile")]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Runs one admin command against the server configured in `config_path`.
pub fn run(cmd: &AdminCommand, config_path: &Path, admin_url: Option<&str>) -> anyhow::Result<()> {
    let c = Client::from_config(config_path, admin_url)?;
    let text = match cmd {
        AdminCommand::Changes {
            tenant,
            after,
            follow,
            json,
        } => return changes::run(&c, tenant, *after, *follow, *json),
        AdminCommand::History {
            tenant,
            limit,
            json,
        } => history_answer(&c, tenant, *limit, *json)?,
        AdminCommand::RunNow { tenant, json } => {
            let path = format!("/api/tenants/{}/run-now", seg(tenant));
            let v = with_run_progress(&c, tenant, !json, || c.post(&path, None))?;
            json_or(&v, *json, |v| run_now_text(tenant, v))?
        }
        AdminCommand::Today { tenant, json } => {
            let v = c.get(&format!("/api/tenants/{}/today", seg(tenant)))?;
            json_or(&v, *json, today_text)?
        }
        AdminCommand::Preview { tenant, file, json } => {
            let v = preview_upload(&c, tenant, file, !json)?;
            json_or(&v, *json, preview_text)?
        }
        AdminCommand::Approve {
            tenant,
            import_id,
            json,
        } => approve_answer(&c, tenant, import_id, *json)?,
        AdminCommand::Users {
            tenant,
            status,
            json,
            csv,
        } => users_answer(&c, tenant, status, *json, *csv)?,
        AdminCommand::Restore {
            tenant,
            user_key,
            json,
        } => restore_answer(&c, tenant, user_key, *json)?,
        AdminCommand::ScimPush {
            tenant,
            reconcile,
            dry_run,
            json,
        } => scim_push::run(&c, tenant, *reconcile, *dry_run, *json)?,
        AdminCommand::Nodes { json } => {
            let v = c.get("/api/nodes")?;
            json_or(&v, *json, nodes_text)?
        }
        AdminCommand::LoginBlocks { lift, json } => {
            let v = login_blocks::run(&c, lift.as_deref())?;
            match lift {
                Some(_) => json_or(&v, *json, login_blocks::lifted_text)?,
                None => json_or(&v, *json, login_blocks::blocks_text)?,
            }
        }
        AdminCommand::Webhooks {
            tenant,
            enable: Some(n),
            json,
        } => {
            let path = format!("/api/tenants/{}/webhooks/{n}/enable", seg(tenant));
            let v = c.post(&path, None)?;
            json_or(&v, *json, |v| webhooks::enabled_text(*n, v))?
        }
        AdminCommand::Webhooks {
            tenant,
            enable: None,
            json,
        } => {
            let v = c.get(&format!("/api/tenants/{}/webhooks", seg(tenant)))?;
            json_or(&v, *json, |v| webhooks::webhooks_text(tenant, v))?
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The answer as the server sent it (`--json`), or as `text` renders it for a person.
fn json_or(
    v: &Value,
    json: bool,
    text: impl FnOnce(&Value) -> anyhow::Result<String>,
) -> anyhow::Result<String> {
    if json {
        pretty(v)
    } else {
        text(v)
    }
}

/// `roster history`: the newest records first, as a table or as JSON.
fn history_answer(c: &Client, tenant: &str, limit: usize, json: bool) -> anyhow::Result<String> {
    let v = c.get(&format!(
        "/api/tenants/{}/imports?limit={limit}",
        seg(tenant)
    ))?;
    let set_aside = set_aside_ids(&v);
    let records: Vec<ImportRecord> = serde_json::from_value(v)?;
    if json {
        // Through the typed record, so fields keep their documented order.
        let mut out = Vec::with_capacity(records.len());
        for r in &records {
            let mut value = serde_json::to_value(r)?;
            if let (true, Some(fields)) = (r.status == ImportStatus::Held, value.as_object_mut()) {
                let waiting = !set_aside.contains(&r.id);
                fields.insert("awaiting_approval".into(), waiting.into());
            }
            out.push(value);
        }
        pretty(&out)
    } else {
        Ok(history_text(tenant, &records, &set_aside))
    }
}

/// `roster approve`: runs a held import and says what it did.
fn approve_answer(c: &Client, tenant: &str, import_id: &str, json: bool) -> anyhow::Result<String> {
    let path = format!(
        "/api/tenants/{}/imports/{}/approve",
        seg(tenant),
        seg(import_id)
    );
    let v = c.post(&path, None)?;
    json_or(&v, json, |v| {
        let r: ImportRecord = serde_json::from_value(v.clone())?;
        Ok(format!(
            "approved import {} of {tenant} ({}): {}\n{}\n",
            table::clean(&r.id),
            table::clean(&r.file),
            r.status,
            counts_line(&r)
        ))
    })
}

/// `roster users`: the tenant's users with one status, as a table, CSV or JSON.
fn users_answer(
    c: &Client,
    tenant: &str,
    status: &str,
    json: bool,
    csv: bool,
) -> anyhow::Result<String> {
    let v = c.get(&format!(
        "/api/tenants/{}/users?status={}",
        seg(tenant),
        seg(status)
    ))?;
    let users: Vec<User> = serde_json::from_value(v)?;
    if json {
        pretty(&users)
    } else if csv {
        users_csv(&users)
    } else {
        Ok(users_text(tenant, &users))
    }
}

/// `roster restore`: brings a deleted or inactive user back and says their status.
fn restore_answer(c: &Client, tenant: &str, user_key: &str, json: bool) -> anyhow::Result<String> {
    let path = format!(
        "/api/tenants/{}/users/{}/restore",
        seg(tenant),
        seg(user_key)
    );
    let v = c.post(&path, None)?;
    json_or(&v, json, |v| {
        let u: User = serde_json::from_value(v.clone())?;
        Ok(format!(
            "restored {} of {tenant}: now {}\n",
            table::clean(&u.key),
            status_word(&u)
        ))
    })
}

/// The nodes as a table: id, addresses, version, start, last heartbeat, alive or dead.
fn nodes_text(v: &Value) -> anyhow::Result<String> {
    let nodes: Vec<crate::store::NodeStatus> = serde_json::from_value(v["nodes"].clone())?;
    if nodes.is_empty() {
        return Ok("no nodes have a heartbeat\n".to_string());
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.node_id.clone(),
                n.sftp.clone(),
                n.admin.clone(),
                n.version.clone(),
                table::local(&n.started_at),
                table::local(&n.heartbeat_at),
                if n.alive { "alive" } else { "dead" }.to_string(),
            ]
        })
        .collect();
    let cols = [
        table::Col("NODE", false),
        table::Col("SFTP", false),
        table::Col("ADMIN", false),
        table::Col("VERSION", false),
        table::Col("STARTED", false),
        table::Col("HEARTBEAT", false),
        table::Col("STATE", false),
    ];
    Ok(table::table(&cols, &rows))
}

/// `v` as indented JSON, terminal-unsafe characters escaped ([`table::json_text`]).
fn pretty(v: &impl serde::Serialize) -> anyhow::Result<String> {
    Ok(table::json_text(v, true)? + "\n")
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
                // A short wait per poll: the command waits for this thread when the import
                // is done, and a server that stopped answering polls must not hold it.
                if let Ok(v) = c.get_within(&path, Duration::from_secs(5)) {
                    let running = &v["running"];
                    if let Some(file) = running["file"].as_str() {
                        let msg = format!(
                            "{tenant}: importing {} ({}): {} rows read",
                            table::clean(file),
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
