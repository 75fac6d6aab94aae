//! Delivering one stored message: over SMTP to `[mail] smtp_url`, or as an `.eml` file.
//!
//! Enters: an [`OutgoingMail`] (envelope + finished bytes) and the SMTP URL. Leaves: `Ok` once
//! every recipient accepted the message or refused it for good (5xx) and at least one accepted,
//! or a [`DeliveryError`] saying whether to try again later (server unreachable, timeout, 4xx;
//! [`DeliveryError::Partly`] names the recipients still to try, when others already have it)
//! or to give up (5xx to a recipient or to the message, for every recipient). A failure
//! before the recipients (connect, greeting, EHLO, STARTTLS, AUTH, `MAIL FROM`) is the relay's,
//! never the message's: [`DeliveryError::Unavailable`] whatever its code (review s30; see
//! `relay`). Without `[mail]`, [`write_eml`] writes the bytes to `data/outbox/` atomically, for
//! the owner only.
//!
//! URL forms (read by [`Relay::parse`]): `smtp://host:port` plain, `smtp://host:port?tls=required`
//! STARTTLS, `smtps://host:port` implicit TLS; `user:pass@` in the URL enables AUTH (over TLS,
//! or plain only to a relay on loopback).

use super::relay::{Relay, Session};
use super::OutgoingMail;
use anyhow::Context as _;
use lettre::address::Address;
use lettre::transport::smtp::Error as SmtpError;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default timeout: twice this bounds the session's steps up to `DATA` (connect, greeting,
/// EHLO, STARTTLS, AUTH, MAIL, RCPT) together, measured by Roster, not lettre (whose own
/// timeout covers only connecting); the upload and the final reply have
/// [`FINAL_REPLY_WAIT`](super::FINAL_REPLY_WAIT).
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a message was not delivered, split by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The server could not be reached or did not finish the exchange (connection refused,
    /// DNS, TLS, timeout, a malformed `smtp_url`). Retry later; other messages will fail too.
    #[error("SMTP server unavailable: {0}")]
    Unavailable(String),
    /// The server answered with a 4xx reply. Retry later.
    #[error("SMTP server deferred the message: {0}")]
    Transient(String),
    /// The server answered 5xx for every recipient, or the stored envelope is unusable.
    /// Retrying will not help.
    #[error("SMTP server rejected the message: {0}")]
    Permanent(String),
    /// Some recipients have the message (or refused it for good); `remaining` deferred it
    /// (4xx) or could not be tried. Retry later, to `remaining` only, so nobody gets it twice.
    #[error("SMTP server deferred the message for {}: {why}", remaining.join(", "))]
    Partly { remaining: Vec<String>, why: String },
}

impl DeliveryError {
    /// True for [`Unavailable`](Self::Unavailable) and [`Transient`](Self::Transient).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, DeliveryError::Permanent(_))
    }
}

/// Sends `mail` through the SMTP server at `smtp_url`, bounded by [`SMTP_TIMEOUT`].
pub async fn deliver(smtp_url: &str, mail: &OutgoingMail) -> Result<(), DeliveryError> {
    deliver_with_timeout(smtp_url, mail, SMTP_TIMEOUT).await
}

/// [`deliver`] with an explicit bound per exchange.
///
/// A transaction stops at the first refused `RCPT`, so when a message to several
/// recipients gets a 4xx or 5xx, each recipient is tried on its own: the message then reaches
/// the addresses that accept it, the refused ones are logged, and only if all refuse is the
/// result [`DeliveryError::Permanent`]. Recipients that defer (4xx), or that could not be tried
/// because the server stopped answering, come back as [`DeliveryError::Partly`], so the retry
/// goes to them alone: one deferring mailbox neither holds the report from the others nor makes
/// them receive it again at each retry (review s15, operator F1).
pub async fn deliver_with_timeout(
    smtp_url: &str,
    mail: &OutgoingMail,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    deliver_while_ours(smtp_url, mail, timeout, &|| Box::pin(async { true })).await
}

/// The question [`deliver_while_ours`] asks before each recipient tried on its own: whether
/// the message's claim is still this node's (renewing it). Asynchronous, so a store call behind
/// it runs off the runtime's threads (s29: it blocked one for each recipient).
pub type StillOurs<'a> =
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> + Sync + 'a;

/// [`deliver_with_timeout`] for a message this node holds a claim of (the outbox's per-node
/// claim, which ends after a few minutes unless renewed): `ours` renews it and says whether it
/// is still this node's. It is asked before each recipient that is tried on its own, since
/// each such send may take up to twice `timeout` plus [`FINAL_REPLY_WAIT`](super::FINAL_REPLY_WAIT)
/// and several of them on a slow relay outlast
/// the claim, after which another node would send the message again (review of 2026-12-02).
/// When it answers false, the rest is not sent: the recipients not tried come back in
/// [`DeliveryError::Partly`] (or the whole as [`DeliveryError::Transient`] when nobody has it).
pub async fn deliver_while_ours(
    smtp_url: &str,
    mail: &OutgoingMail,
    timeout: Duration,
    ours: &StillOurs<'_>,
) -> Result<(), DeliveryError> {
    let from = parse_address(&mail.from)?;
    let to = mail
        .to
        .iter()
        .map(|a| parse_address(a))
        .collect::<Result<Vec<_>, _>>()?;
    if to.is_empty() {
        return Err(DeliveryError::Permanent(
            "the stored message has no recipients".into(),
        ));
    }

    let relay = Relay::parse(smtp_url).map_err(|why| {
        DeliveryError::Unavailable(format!(
            "smtp_url {:?} is not usable: {why}",
            redact(smtp_url)
        ))
    })?;
    let mut session = Session::new(&relay, timeout);
    let all = session.send(&from, &to, &mail.bytes).await;
    let result = match all {
        Err(DeliveryError::Permanent(why) | DeliveryError::Transient(why)) if to.len() > 1 => {
            per_recipient(&mut session, &from, &to, mail, ours, why).await
        }
        other => other,
    };
    // QUIT; bounded, and its outcome does not change the result.
    session.close().await;
    result
}

async fn per_recipient(
    session: &mut Session<'_>,
    from: &Address,
    to: &[Address],
    mail: &OutgoingMail,
    ours: &StillOurs<'_>,
    first_refusal: String,
) -> Result<(), DeliveryError> {
    let mut accepted = 0usize;
    let mut refused = Vec::new();
    let mut remaining: Vec<String> = Vec::new();
    let mut retry: Option<DeliveryError> = None;
    for (i, rcpt) in to.iter().enumerate() {
        if !ours().await {
            // The claim passed to another node (or cannot be renewed): it sends the rest.
            remaining.extend(to[i..].iter().map(|a| a.to_string()));
            retry = Some(DeliveryError::Transient(
                "this node's claim of the message could not be renewed; the recipients not yet tried are left to the node that holds it".into(),
            ));
            break;
        }
        let once = std::slice::from_ref(rcpt);
        match session.send(from, once, &mail.bytes).await {
            Ok(()) => accepted += 1,
            Err(DeliveryError::Permanent(why)) => refused.push(format!("{rcpt}: {why}")),
            Err(e @ DeliveryError::Unavailable(_)) => {
                // The server stopped answering: this one and the rest are tried later.
                remaining.extend(to[i..].iter().map(|a| a.to_string()));
                retry = Some(e);
                break;
            }
            Err(e) => {
                remaining.push(rcpt.to_string());
                retry = Some(e);
            }
        }
    }
    if let Some(e) = retry {
        if accepted == 0 && refused.is_empty() {
            return Err(e);
        }
        log_refused(mail, &refused, accepted, to.len());
        return Err(DeliveryError::Partly {
            remaining,
            why: e.to_string(),
        });
    }
    if accepted == 0 {
        return Err(DeliveryError::Permanent(if refused.is_empty() {
            first_refusal
        } else {
            refused.join("; ")
        }));
    }
    log_refused(mail, &refused, accepted, to.len());
    Ok(())
}

fn log_refused(mail: &OutgoingMail, refused: &[String], accepted: usize, all: usize) {
    if !refused.is_empty() {
        tracing::warn!(
            tenant = %mail.tenant,
            subject = %mail.subject,
            refused = %refused.join("; "),
            "mail delivered to {accepted} of {all} recipients; some were refused permanently",
        );
    }
}

/// A reply to RCPT, DATA or the end of the data, by its code: 5xx permanent, 4xx transient,
/// anything else (no reply, a broken connection) the relay's.
pub(super) fn classify(e: &SmtpError) -> DeliveryError {
    let text = error_chain(e);
    if e.is_permanent() {
        DeliveryError::Permanent(text)
    } else if e.is_transient() {
        DeliveryError::Transient(text)
    } else {
        DeliveryError::Unavailable(text)
    }
}

/// The error and its sources in one line (lettre's Display alone often omits the io cause).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

fn parse_address(s: &str) -> Result<Address, DeliveryError> {
    s.trim()
        .parse()
        .map_err(|e| DeliveryError::Permanent(format!("stored address {s:?} is invalid: {e}")))
}

/// The URL without a password, for messages and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Writes `mail`, the outbox's message `queued`, as `<dir>/<UTC timestamp>-<tenant>-m<queued>.eml`
/// and returns its path; when a file of that message is already there (written by an attempt
/// whose "sent" mark was lost to a kill: same id and same bytes), returns that one instead of
/// writing a second copy.
///
/// The bytes go to a hidden temporary file `.<name>.<process id>.tmp` in `dir` first, are
/// synced, and are then renamed, so a reader never sees a half-written `.eml`. `dir` is created
/// if needed. A temporary file left by a killed process is removed by [`remove_temp_files`].
pub fn write_eml(dir: &Path, mail: &OutgoingMail, queued: u64) -> anyhow::Result<PathBuf> {
    private_folder(dir)?;
    let mine = format!("-m{queued}.eml");
    let rd = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    // Only a file with this very message counts: after migrate-store or a store restored from
    // a backup, outbox ids repeat, and an older mail's file under the same id is not this one
    // (reviewer s28: the new mail was marked sent and never written).
    let same_mail = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.len() == mail.bytes.len() as u64)
            && std::fs::read(path).is_ok_and(|b| b == mail.bytes)
    };
    if let Some(done) = rd
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(&mine))
        .map(|e| e.path())
        .find(|p| same_mail(p))
    {
        return Ok(done);
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let tenant: String = mail
        .tenant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let tenant = if tenant.is_empty() {
        "roster".into()
    } else {
        tenant
    };

    let mut name = format!("{stamp}-{tenant}-m{queued}.eml");
    // Another mail of the same id may have a file of the same millisecond: never replace it.
    for n in 2..100 {
        if !dir.join(&name).exists() {
            break;
        }
        name = format!("{stamp}-{n}-{tenant}-m{queued}.eml");
    }
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // Owner only: a report names people and their addresses (review s30).
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let written = file
        .write_all(&mail.bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()));
    drop(file);
    if let Err(e) = written.and_then(|()| {
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    }) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable; a failure here is not worth failing the write for.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

/// Creates `dir` (and its parents) for the owner only, and narrows an existing one to 0700
/// (an older version made it readable by everyone).
fn private_folder(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the outbox folder {}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("reading the outbox folder {}", dir.display()))?;
    if meta.is_dir() && meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (0700)", dir.display()))?;
    }
    Ok(())
}

/// Removes the `.eml` files in the outbox folder `dir` written more than `days` days ago.
/// Returns how many. Without `[mail]` these files are the only copy of each message, and nothing
/// else removes them (review s18 longrun F3): the daily retention sweep calls this with the
/// longest `retention_days` of any tenant, so a message lives at least as long as its run's
/// archive. Links and folders are left alone.
pub fn remove_old_eml(dir: &Path, days: u32) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let max_age = std::time::Duration::from_secs(u64::from(days) * 86_400);
    let mut removed = 0;
    for e in entries.flatten() {
        let is_eml = e.file_name().to_string_lossy().ends_with(".eml");
        // `DirEntry::metadata` does not follow a link.
        let Ok(meta) = e.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age > max_age);
        if is_eml && meta.is_file() && old && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Removes the temporary files a killed process left in the outbox folder `dir`: hidden
/// `.….eml.tmp` and `.….eml.<process id>.tmp` files not written by this process. Returns how
/// many were removed. Links and folders are left alone.
pub fn remove_temp_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let own = format!(".{}.tmp", std::process::id());
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let is_temp = name.starts_with('.') && name.ends_with(".tmp") && name.contains(".eml.");
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        if is_temp && is_file && !name.ends_with(&own) && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}
