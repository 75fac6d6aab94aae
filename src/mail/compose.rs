//! Composing mail: the text of a run report and its MIME form.
//!
//! Enters: a [`RunSummary`] (what the import recorded) or a free-form notice, the sender from
//! `[mail] from` and the tenant's `notify` list. Leaves: an [`OutgoingMail`] whose bytes are a
//! complete RFC 5322 message (`Date`, `Message-ID`, UTF-8 `text/plain` body, and the failure
//! report as a base64 `text/csv` attachment so its bytes survive exactly, BOM and CRLF included).
//! Pure apart from the clock and host name lettre puts into `Date` and `Message-ID`.
//!
//! A mail stays small whatever the file was: a report larger than [`MAX_ATTACHMENT_BYTES`] is
//! not attached; the body says how large it is and that it waits in the tenant's folder, in
//! `errors/` (or `bak/`), where the intake always files reports. Each message line
//! is cut to [`MAX_BODY_LINE_CHARS`] characters.

use super::OutgoingMail;
pub use crate::model::Counts;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::Message;
use std::fmt::Write as _;

/// Sender used when the config has no `[mail]` section (messages then only become `.eml` files).
pub const DEFAULT_FROM: &str = "Roster <roster@localhost>";

/// Names the tenant in every message, for mail filters and for [`OutgoingMail::from_stored`].
pub const TENANT_HEADER: &str = "X-Roster-Tenant";

const CSV_CONTENT_TYPE: &str = "text/csv; charset=utf-8";

/// Largest failure report sent as an attachment (about 5.3 MiB once base64-encoded, below the
/// 10 MiB that common mail servers accept).
pub const MAX_ATTACHMENT_BYTES: usize = 4 << 20;

/// Characters of one message line in the body.
pub const MAX_BODY_LINE_CHARS: usize = 1000;

/// The attachment to send, or None when it is over [`MAX_ATTACHMENT_BYTES`].
fn mailable(run: &RunSummary) -> Option<&CsvAttachment> {
    run.attachment
        .as_ref()
        .filter(|a| a.size() <= MAX_ATTACHMENT_BYTES)
}

/// A file to attach: the failure report CSV, sent byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvAttachment {
    pub file_name: String,
    /// The report's bytes; empty when [`CsvAttachment::new`] left out a report too large to
    /// attach.
    pub bytes: Vec<u8>,
    /// The report's size when its bytes were left out (0: `bytes` is the whole report).
    pub left_out: usize,
}

impl CsvAttachment {
    /// The attachment of `report`, copying its bytes only when they will be attached (at most
    /// [`MAX_ATTACHMENT_BYTES`]): a report of a large file may be hundreds of MB, and the mail
    /// only says where it is (review s30).
    pub fn new(file_name: String, report: &[u8]) -> CsvAttachment {
        if report.len() <= MAX_ATTACHMENT_BYTES {
            CsvAttachment {
                file_name,
                bytes: report.to_vec(),
                left_out: 0,
            }
        } else {
            CsvAttachment {
                file_name,
                bytes: Vec::new(),
                left_out: report.len(),
            }
        }
    }

    /// The report's size in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len().max(self.left_out)
    }
}

/// What a run report says. `status` is one of the statuses of design §5.8 (`success`,
/// `partial`, `error`, `held`, `duplicate`, `missing`); an unknown one is reported as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub tenant: String,
    /// The file name, or for `missing` the expected name or pattern.
    pub file: String,
    pub status: String,
    /// The import id; needed for the `roster approve` line of a `held` report.
    pub import_id: Option<String>,
    pub counts: Counts,
    /// Plain sentences from the run (file-level problems, row reasons, the expected date, ...).
    pub messages: Vec<String>,
    pub attachment: Option<CsvAttachment>,
    /// Where the file was archived in the tenant's folder (`processed/users.….csv`): a held
    /// run's file is previewed from there.
    pub archived_as: Option<String>,
}

/// Why a message could not be composed. These are configuration or caller mistakes; retrying
/// does not help.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("sender {0:?} is not a mail address")]
    BadSender(String),
    #[error("recipient {0:?} is not a mail address")]
    BadRecipient(String),
    #[error("tenant {0:?} has no notify addresses to mail")]
    NoRecipients(String),
    #[error("content type {CSV_CONTENT_TYPE:?} rejected by lettre: {0}")]
    ContentType(String),
    #[error("building the message for tenant {tenant:?}: {source}")]
    Build {
        tenant: String,
        #[source]
        source: lettre::error::Error,
    },
}

/// The subject of a run report: exactly `Roster: <tenant> <file> <status>` (control characters
/// in a file name become spaces so a name cannot add header lines).
pub fn report_subject(tenant: &str, file: &str, status: &str) -> String {
    clean_line(&format!("Roster: {tenant} {file} {status}"))
}

/// The plain-text body of a run report: what happened, the counts, the messages, and what the
/// reader should do next.
pub fn report_body(run: &RunSummary) -> String {
    let mut out = String::new();
    let file = clean_line(&run.file);
    let tenant = clean_line(&run.tenant);
    let status = run.status.as_str();

    // `write!` into a String cannot fail; the results are ignored on purpose.
    if status == "missing" {
        let _ = writeln!(
            out,
            "Roster expected the file {file} for tenant {tenant}, but it was not there when the \
             scheduled import ran. Status: missing."
        );
    } else {
        let _ = writeln!(
            out,
            "Roster processed the file {file} for tenant {tenant}. Status: {status}."
        );
    }
    out.push('\n');
    out.push_str(status_explanation(run));
    out.push_str("\n\n");

    if status != "missing" {
        count_lines(&mut out, run);
    }

    if !run.messages.is_empty() {
        out.push_str("Messages:\n");
        for m in &run.messages {
            let m = m.trim();
            match m.char_indices().nth(MAX_BODY_LINE_CHARS) {
                Some((at, _)) => _ = writeln!(out, "- {}…", &m[..at]),
                None => _ = writeln!(out, "- {m}"),
            }
        }
        out.push('\n');
    }

    match (&run.attachment, mailable(run)) {
        (Some(att), Some(_)) => {
            _ = writeln!(
                out,
                "The attached file {} lists every row that was not imported, with the reason.\n",
                clean_line(&att.file_name)
            )
        }
        (Some(att), None) => {
            _ = writeln!(
                out,
                "The failure report {} lists every row that was not imported, with the reason. At \
             {:.1} MB it is too large to attach (the limit is {} MB): find it in your folder on \
             the server, in errors/ (or in bak/ if your files are archived there).\n",
                clean_line(&att.file_name),
                att.size() as f64 / 1e6,
                MAX_ATTACHMENT_BYTES / 1_000_000,
            )
        }
        _ => {}
    }

    if let Some(next) = next_step(run, &tenant, &file) {
        out.push_str("What to do next:\n");
        out.push_str(&next);
        out.push_str("\n\n");
    }

    out.push_str("-- \nThis message was sent by Roster. Replies are not read.\n");
    out
}

/// The counts of a run; a held run's users to deactivate or delete are those it would act on
/// once approved (its record counts them, nothing was applied).
fn count_lines(out: &mut String, run: &RunSummary) {
    let c = &run.counts;
    let held = run.status == "held";
    let (deactivated, deleted) = if held {
        (
            (
                "user would be deactivated once approved",
                "users would be deactivated once approved",
            ),
            (
                "user would be deleted once approved",
                "users would be deleted once approved",
            ),
        )
    } else {
        (
            ("user was deactivated", "users were deactivated"),
            ("user was deleted", "users were deleted"),
        )
    };
    out.push_str("Counts:\n");
    for line in [
        count_line(
            c.rows,
            "row was read from the file",
            "rows were read from the file",
        ),
        count_line(c.inserted, "user was added", "users were added"),
        count_line(c.updated, "user was updated", "users were updated"),
        count_line(c.unchanged, "user was unchanged", "users were unchanged"),
        count_line(c.deactivated, deactivated.0, deactivated.1),
        count_line(c.deleted, deleted.0, deleted.1),
        count_line(c.restored, "user was restored", "users were restored"),
        count_line(c.skipped, "row was skipped", "rows were skipped"),
        count_line(c.errors, "error was found", "errors were found"),
    ] {
        let _ = writeln!(out, "- {line}");
    }
    out.push('\n');
}

fn status_explanation(run: &RunSummary) -> &'static str {
    match run.status.as_str() {
        "success" => "Every row was imported.",
        // A run is partial for skipped rows, or for a column of the profile the file lacks.
        "partial" if run.counts.skipped == 0 => {
            "The file lacks a column the tenant's profile maps (the messages below name it); \
             every row was applied without it."
        }
        "partial" => "Some rows were skipped; every other row was applied.",
        "error" => "The file could not be imported. Nothing was changed.",
        "held" => {
            "The run was held because it would deactivate or delete more users than the \
             safeguard allows. Nothing was changed yet."
        }
        "duplicate" => {
            "The file is identical to the last imported file of this tenant. Nothing was changed."
        }
        "missing" => "Nothing was imported.",
        _ => "See the counts and messages below.",
    }
}

fn next_step(run: &RunSummary, tenant: &str, file: &str) -> Option<String> {
    match run.status.as_str() {
        "held" => {
            let id = run
                .import_id
                .as_deref()
                .map(clean_line)
                .unwrap_or_else(|| "IMPORT_ID".to_string());
            // The held file was moved out of the upload folder: preview the archived copy.
            let kept = run
                .archived_as
                .as_deref()
                .map_or_else(|| file.to_string(), clean_line);
            let mut s = format!(
                "Check what the import would change with `roster preview {tenant} FILE`, FILE \
                 being {kept} in the tenant's folder. If that is what you intended, apply it \
                 with `roster approve {tenant} {id}`. If it is not, upload a corrected file."
            );
            if run.import_id.is_none() {
                let _ = write!(s, " The import id is shown by `roster history {tenant}`.");
            }
            Some(s)
        }
        "missing" => Some(format!(
            "The expected file did not arrive before the schedule ran. Check that the export \
             from your HR system ran and uploaded {file}; once the file is there, the next \
             scheduled run imports it, or run `roster run-now {tenant}`."
        )),
        "error" => {
            Some("Fix the file as the messages above describe and upload it again.".to_string())
        }
        "partial" if run.counts.skipped == 0 => Some(
            "Add the missing column to the export, or take it out of the tenant's profile \
             (`columns` in the config); the next upload then imports it."
                .to_string(),
        ),
        "partial" => Some(
            "Correct the skipped rows in your source system; they are imported with the next \
             upload."
                .to_string(),
        ),
        _ => None,
    }
}

fn count_line(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}.")
    } else {
        format!("{n} {many}.")
    }
}

/// Replaces control characters (CR, LF, TAB, ...) with spaces.
fn clean_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A run report: subject per [`report_subject`], body per [`report_body`], the CSV attached.
pub fn compose_report(
    from: &str,
    to: &[String],
    run: &RunSummary,
) -> Result<OutgoingMail, ComposeError> {
    let subject = report_subject(&run.tenant, &run.file, &run.status);
    let body = report_body(run);
    build(from, to, &run.tenant, subject, body, mailable(run))
}

/// A plain message without counts (e.g. an operator notice to a tenant's contacts).
pub fn compose_notice(
    from: &str,
    to: &[String],
    tenant: &str,
    subject: &str,
    body: &str,
) -> Result<OutgoingMail, ComposeError> {
    build(
        from,
        to,
        tenant,
        clean_line(subject),
        body.to_string(),
        None,
    )
}

fn build(
    from: &str,
    to: &[String],
    tenant: &str,
    subject: String,
    body: String,
    attachment: Option<&CsvAttachment>,
) -> Result<OutgoingMail, ComposeError> {
    let sender: Mailbox = from
        .trim()
        .parse()
        .map_err(|_| ComposeError::BadSender(from.to_string()))?;
    if to.is_empty() {
        return Err(ComposeError::NoRecipients(tenant.to_string()));
    }
    // Date is added by lettre; Message-ID only on request (`<random@hostname>`).
    let mut builder = Message::builder()
        .from(sender)
        .subject(subject.clone())
        .message_id(None)
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str(TENANT_HEADER),
            clean_line(tenant),
        ));
    for addr in to {
        let mbox: Mailbox = addr
            .trim()
            .parse()
            .map_err(|_| ComposeError::BadRecipient(addr.clone()))?;
        builder = builder.to(mbox);
    }

    let text = SinglePart::plain(body);
    let message = match attachment {
        Some(att) => {
            // Vec<u8> bodies are always base64: the report's bytes arrive unchanged.
            let csv = ContentType::parse(CSV_CONTENT_TYPE)
                .map_err(|e| ComposeError::ContentType(e.to_string()))?;
            let part = Attachment::new(clean_line(&att.file_name)).body(att.bytes.clone(), csv);
            builder.multipart(MultiPart::mixed().singlepart(text).singlepart(part))
        }
        None => builder.singlepart(text),
    }
    .map_err(|source| ComposeError::Build {
        tenant: tenant.to_string(),
        source,
    })?;

    let envelope = message.envelope();
    Ok(OutgoingMail {
        tenant: tenant.to_string(),
        from: envelope.from().map(|a| a.to_string()).unwrap_or_default(),
        to: envelope.to().iter().map(|a| a.to_string()).collect(),
        subject,
        bytes: message.formatted(),
    })
}
