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
//! after a permanent (5xx) rejection. Nothing here touches sled.
//!
//! Module map: `compose` (text and MIME), `deliver` (SMTP and `.eml`), `worker` (queue trait,
//! backoff, the loop).

mod compose;
mod deliver;
mod worker;

pub use compose::{
    compose_notice, compose_report, report_body, report_subject, ComposeError, Counts,
    CsvAttachment, RunSummary, DEFAULT_FROM,
};
pub use deliver::{deliver, deliver_with_timeout, write_eml, DeliveryError, SMTP_TIMEOUT};
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
