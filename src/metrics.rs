//! Process-wide counters for `/metrics`: a handful of atomics and one histogram, no registry
//! crate (the set is fixed and small, so a dependency would buy nothing).
//!
//! Data enters through one-line calls from the stages that see the events: the SFTP server
//! (sessions open, logins by result), the SFTP request handler (bytes uploaded), the intake
//! (`import_finished`: imports by status, duration, rows) and the mail worker (sent, failed).
//! It leaves as Prometheus text exposition through [`render`], which the admin API serves; the
//! outbox depth is not counted here but read from the store at scrape time and passed in.
//!
//! Counters are global (statics), so they survive config reloads and are shared by every
//! server started in one process (tests compare before/after values, never absolute ones).

use crate::model::{ImportRecord, ImportStatus};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

static SESSIONS_OPEN: AtomicI64 = AtomicI64::new(0);
static LOGINS_OK: AtomicU64 = AtomicU64::new(0);
static LOGINS_FAILED: AtomicU64 = AtomicU64::new(0);
static LOGINS_BLOCKED: AtomicU64 = AtomicU64::new(0);
static BYTES_UPLOADED: AtomicU64 = AtomicU64::new(0);
static ROWS_PROCESSED: AtomicU64 = AtomicU64::new(0);
static MAILS_SENT: AtomicU64 = AtomicU64::new(0);
static MAILS_RETRY: AtomicU64 = AtomicU64::new(0);
static MAILS_GIVEN_UP: AtomicU64 = AtomicU64::new(0);

/// Import statuses in exposition order (index = position in `IMPORTS`).
const STATUSES: [ImportStatus; 6] = [
    ImportStatus::Success,
    ImportStatus::Partial,
    ImportStatus::Error,
    ImportStatus::Held,
    ImportStatus::Duplicate,
    ImportStatus::Missing,
];
static IMPORTS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

/// Upper bounds (seconds) of the import duration histogram buckets; `+Inf` is implied.
const DURATION_BOUNDS: [f64; 11] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
static DURATION_BUCKETS: [AtomicU64; 11] = [const { AtomicU64::new(0) }; 11];
static DURATION_COUNT: AtomicU64 = AtomicU64::new(0);
static DURATION_SUM_MS: AtomicU64 = AtomicU64::new(0);

/// Marks one SSH connection open until the returned guard is dropped.
pub fn session_open() -> SessionGuard {
    SESSIONS_OPEN.fetch_add(1, Relaxed);
    SessionGuard(())
}

/// Decrements the open-session gauge when dropped.
pub struct SessionGuard(());

impl Drop for SessionGuard {
    fn drop(&mut self) {
        SESSIONS_OPEN.fetch_sub(1, Relaxed);
    }
}

/// A login was accepted.
pub fn login_ok() {
    LOGINS_OK.fetch_add(1, Relaxed);
}

/// A password or key was refused.
pub fn login_failed() {
    LOGINS_FAILED.fetch_add(1, Relaxed);
}

/// A login was refused because its address or tenant is blocked.
pub fn login_blocked() {
    LOGINS_BLOCKED.fetch_add(1, Relaxed);
}

/// Bytes written by an SFTP WRITE.
pub fn bytes_uploaded(n: usize) {
    BYTES_UPLOADED.fetch_add(n as u64, Relaxed);
}

/// A mail was delivered (or written as `.eml`).
pub fn mail_sent() {
    MAILS_SENT.fetch_add(1, Relaxed);
}

/// A delivery attempt failed; `permanent` when the message was given up.
pub fn mail_failed(permanent: bool) {
    if permanent {
        MAILS_GIVEN_UP.fetch_add(1, Relaxed);
    } else {
        MAILS_RETRY.fetch_add(1, Relaxed);
    }
}

/// An import run finished and was recorded.
pub fn import_finished(record: &ImportRecord) {
    if let Some(i) = STATUSES.iter().position(|s| *s == record.status) {
        IMPORTS[i].fetch_add(1, Relaxed);
    }
    ROWS_PROCESSED.fetch_add(record.counts.rows, Relaxed);
    let ms = (record.finished_at - record.started_at)
        .num_milliseconds()
        .max(0) as u64;
    let secs = ms as f64 / 1000.0;
    for (bound, bucket) in DURATION_BOUNDS.iter().zip(&DURATION_BUCKETS) {
        if secs <= *bound {
            bucket.fetch_add(1, Relaxed);
        }
    }
    DURATION_COUNT.fetch_add(1, Relaxed);
    DURATION_SUM_MS.fetch_add(ms, Relaxed);
}

/// The Prometheus text exposition (format 0.0.4). `outbox_depth` is read by the caller.
pub fn render(outbox_depth: Option<usize>) -> String {
    let mut out = String::with_capacity(4096);
    render_sftp(&mut out);
    render_imports(&mut out);
    render_mail(&mut out);
    if let Some(depth) = outbox_depth {
        header(
            &mut out,
            "roster_mail_outbox_depth",
            "gauge",
            "Messages waiting in the durable mail outbox.",
        );
        let _ = writeln!(out, "roster_mail_outbox_depth {depth}");
    }
    out
}

/// Sessions, logins and uploaded bytes.
fn render_sftp(out: &mut String) {
    header(
        out,
        "roster_sftp_sessions_open",
        "gauge",
        "SSH connections open now.",
    );
    let _ = writeln!(
        out,
        "roster_sftp_sessions_open {}",
        SESSIONS_OPEN.load(Relaxed).max(0)
    );
    header(
        out,
        "roster_sftp_logins_total",
        "counter",
        "SFTP logins by result (ok, failed, blocked).",
    );
    for (result, c) in [
        ("ok", &LOGINS_OK),
        ("failed", &LOGINS_FAILED),
        ("blocked", &LOGINS_BLOCKED),
    ] {
        let _ = writeln!(
            out,
            "roster_sftp_logins_total{{result=\"{result}\"}} {}",
            c.load(Relaxed)
        );
    }
    header(
        out,
        "roster_sftp_uploaded_bytes_total",
        "counter",
        "Bytes written by SFTP clients.",
    );
    let _ = writeln!(
        out,
        "roster_sftp_uploaded_bytes_total {}",
        BYTES_UPLOADED.load(Relaxed)
    );
}

/// Import runs by status, their durations and rows.
fn render_imports(out: &mut String) {
    header(
        out,
        "roster_imports_total",
        "counter",
        "Finished import runs by status.",
    );
    for (s, c) in STATUSES.iter().zip(&IMPORTS) {
        let _ = writeln!(
            out,
            "roster_imports_total{{status=\"{}\"}} {}",
            s.as_str(),
            c.load(Relaxed)
        );
    }
    header(
        out,
        "roster_import_duration_seconds",
        "histogram",
        "Duration of import runs (started_at to finished_at).",
    );
    for (bound, c) in DURATION_BOUNDS.iter().zip(&DURATION_BUCKETS) {
        let _ = writeln!(
            out,
            "roster_import_duration_seconds_bucket{{le=\"{bound}\"}} {}",
            c.load(Relaxed)
        );
    }
    let count = DURATION_COUNT.load(Relaxed);
    let _ = writeln!(
        out,
        "roster_import_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "roster_import_duration_seconds_sum {}",
        DURATION_SUM_MS.load(Relaxed) as f64 / 1000.0
    );
    let _ = writeln!(out, "roster_import_duration_seconds_count {count}");
    header(
        out,
        "roster_import_rows_total",
        "counter",
        "Data rows read by finished import runs.",
    );
    let _ = writeln!(
        out,
        "roster_import_rows_total {}",
        ROWS_PROCESSED.load(Relaxed)
    );
}

/// Mail delivered and failed.
fn render_mail(out: &mut String) {
    header(
        out,
        "roster_mail_sent_total",
        "counter",
        "Report mails delivered (or written as .eml without [mail]).",
    );
    let _ = writeln!(out, "roster_mail_sent_total {}", MAILS_SENT.load(Relaxed));
    header(
        out,
        "roster_mail_failed_total",
        "counter",
        "Failed delivery attempts: retry (kept in the outbox) or permanent (given up).",
    );
    let _ = writeln!(
        out,
        "roster_mail_failed_total{{kind=\"retry\"}} {}",
        MAILS_RETRY.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "roster_mail_failed_total{{kind=\"permanent\"}} {}",
        MAILS_GIVEN_UP.load(Relaxed)
    );
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_once() {
        let text = render(Some(3));
        for name in [
            "roster_sftp_sessions_open",
            "roster_sftp_logins_total",
            "roster_sftp_uploaded_bytes_total",
            "roster_imports_total",
            "roster_import_duration_seconds",
            "roster_import_rows_total",
            "roster_mail_sent_total",
            "roster_mail_failed_total",
            "roster_mail_outbox_depth",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
        }
        assert!(text.contains("roster_mail_outbox_depth 3\n"));
        assert!(text.contains("roster_import_duration_seconds_bucket{le=\"+Inf\"}"));
    }
}
