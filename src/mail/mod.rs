//! Notification mail: composing run reports, delivering them over SMTP (lettre), retrying from
//! the outbox.
//!
//! Data enters as a [`RunSummary`] (counts and messages of one import run, plus the failure
//! report CSV) or as a plain notice, and is turned by [`compose_report`] / [`compose_notice`]
//! into an [`OutgoingMail`]: the finished RFC 5322 bytes plus the SMTP envelope. That value is
//! what the durable outbox stores (the store owns the outbox; this module only sees it through
//! the [`MailQueue`] trait). The delivery worker ([`run_delivery`]) takes due messages from the
//! queue and hands them to the SMTP server named by `[mail] smtp_url` ([`deliver`]), or, without
//! `[mail]`, writes them as `.eml` files into `data/outbox/` ([`write_eml`]). Each outcome goes
//! back to the queue: sent, deferred with exponential backoff ([`next_attempt`]), or given up
//! after a permanent (5xx) refusal of the message or of its recipients (a refusal by the relay
//! itself, such as a wrong password, only defers), or after 300 failed attempts.
//! Nothing here touches sled.
//!
//! Module map: `compose` (text and MIME), `deliver` (per message: recipients, `.eml`), `relay`
//! (`smtp_url` and the SMTP session, step by step), `worker` (queue trait, backoff, the loop).

mod compose;
mod deliver;
mod outbox;
mod relay;
mod worker;

pub use compose::{
    compose_notice, compose_report, report_body, report_subject, ComposeError, Counts,
    CsvAttachment, RunSummary, DEFAULT_FROM, MAX_ATTACHMENT_BYTES, TENANT_HEADER,
};
pub use deliver::{
    deliver, deliver_while_ours, deliver_with_timeout, remove_old_eml, remove_temp_files,
    write_eml, DeliveryError, SMTP_TIMEOUT,
};
pub use relay::{Relay, FINAL_REPLY_WAIT, MAX_REPLY_BYTES};
pub use worker::{next_attempt, run_delivery, Backoff, MailQueue, QueuedMail, StepReport, Worker};

use serde::{Deserialize, Serialize};

/// One message ready to send, exactly as the outbox stores it.
///
/// `bytes` is the complete formatted message (headers and MIME body, CRLF line endings, 7-bit
/// clean). `from` and `to` are the SMTP envelope as bare addresses (`it@acme.example`), which
/// may differ from the display form in the headers. `tenant` is carried for logs and for the
/// `.eml` file name; it is not sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingMail {
    pub tenant: String,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub bytes: Vec<u8>,
}

impl OutgoingMail {
    /// Rebuilds the value from what an outbox that keeps only the recipients and the bytes has
    /// stored: `from`, `subject` and `tenant` are read back from the `From`, `Subject` and
    /// `X-Roster-Tenant` headers that [`compose_report`] / [`compose_notice`] write. A header
    /// that is missing gives an empty field; `subject` is the header as transmitted (a non-ASCII
    /// subject stays RFC 2047-encoded), which is only used for logs.
    pub fn from_stored(to: Vec<String>, bytes: Vec<u8>) -> OutgoingMail {
        let from = header_value(&bytes, "From")
            .map(|v| angle_address(&v))
            .unwrap_or_default();
        OutgoingMail {
            tenant: header_value(&bytes, TENANT_HEADER).unwrap_or_default(),
            from,
            to,
            subject: header_value(&bytes, "Subject").unwrap_or_default(),
            bytes,
        }
    }
}

/// The first header `name` (case-insensitive) of a message, unfolded and trimmed.
fn header_value(message: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let mut found: Option<String> = None;
    for line in text.split("\r\n").flat_map(|l| l.split('\n')) {
        if line.is_empty() {
            break; // end of the header block
        }
        if line.starts_with([' ', '\t']) {
            if let Some(v) = found.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            if n.trim().eq_ignore_ascii_case(name) {
                found = Some(v.trim().to_string());
            }
        }
    }
    found
}

/// `Name <a@b>` → `a@b`; a bare address is returned trimmed.
fn angle_address(v: &str) -> String {
    match (v.rfind('<'), v.rfind('>')) {
        (Some(a), Some(b)) if b > a => v[a + 1..b].trim().to_string(),
        _ => v.trim().to_string(),
    }
}
