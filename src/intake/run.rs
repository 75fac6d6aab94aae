//! One run, from a file in the tenant root to an archived file, a history record and a queued
//! mail: claim → (date check) → import → file away → mail.
//!
//! Claiming (see `claim`) moves the file out of the tenant's view into
//! `data/work/<tenant>/<claim id>/NAME`, so a re-upload of the same name during the run is a new
//! file with its own run, and the archive always holds exactly the bytes that were imported.
//! Before the import the claim is registered in the store (`claim_running`); the engine's commit
//! stamps it with the import id. A claim folder that survives a crash is finished on restart by
//! its own id only: if the store has a stamp for *this* claim, that run committed and only the
//! filing and the mail are redone; otherwise the import runs again (the store applies a run all
//! or nothing, so it runs exactly once). Runs of other files, even of the same name and bytes,
//! never count.
//!
//! A file over `max_upload_bytes` (grown by any means) is refused here with an `error` record
//! naming its size and the limit, and deleted unread: it cannot be read within the limits to
//! blank its password cells, and no plaintext password is ever archived (design.md §6).

use super::archive;
use super::claim::Claimed;
use super::pattern::FilePattern;
use super::{RunProgress, Shared};
use crate::config::{ReportWhen, Tenant};
use crate::import::{self, ImportOutcome, RunOptions};
use crate::mail::{compose_report, CsvAttachment, RunSummary};
use crate::model::{Counts, ImportRecord, ImportStatus};
use anyhow::Context;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

const REPORT_FILE: &str = ".report.csv";
const ARCHIVE_FILE: &str = ".archive.csv";
const MAILED_MARK: &str = ".mailed";

/// The folder of a tenant's claimed files.
pub fn work_dir(shared: &Shared, tenant: &str) -> PathBuf {
    shared
        .config
        .current()
        .server
        .data_dir
        .join("work")
        .join(tenant)
}

fn modified_at(path: &Path) -> DateTime<Utc> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now())
}

/// A record the intake writes itself (`missing`, or an `error` found before the engine runs).
pub fn own_record(
    shared: &Shared,
    tenant: &str,
    file: &str,
    status: ImportStatus,
    message: String,
    bytes: u64,
    received_at: DateTime<Utc>,
) -> anyhow::Result<ImportRecord> {
    let now = Utc::now();
    let id = shared.store.new_import_id(now)?;
    Ok(ImportRecord {
        bytes,
        counts: Counts {
            errors: u64::from(status == ImportStatus::Error),
            ..Counts::default()
        },
        messages: vec![message],
        ..ImportRecord::begun(id, tenant, file, status, received_at, now)
    })
}

/// Imports a claimed file and files it away. Blocking: call from a blocking thread.
pub fn run_claimed(
    shared: &Shared,
    tenant: &Tenant,
    claim: &Claimed,
) -> anyhow::Result<ImportRecord> {
    let claimed = claim.path.as_path();
    let name = claimed
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    shared.store.claim_running(&tenant.id, &name, &claim.id)?;
    let received_at = modified_at(claimed);
    let bytes_total = std::fs::symlink_metadata(claimed)
        .map(|m| m.len())
        .unwrap_or(0);
    let limit = shared.config.current().server.max_upload_bytes;
    if bytes_total > limit {
        let msg = format!(
            "{name} is {bytes_total} bytes, over the limit of {limit} bytes (max_upload_bytes); it was not imported and was deleted unread (it cannot be read within the limits to blank its passwords, so it is not kept). Upload a smaller file, or ask the operator to raise the limit."
        );
        let record = own_record(
            shared,
            &tenant.id,
            &name,
            ImportStatus::Error,
            msg,
            bytes_total,
            received_at,
        )?;
        tracing::warn!(tenant = %tenant.id, file = %name, bytes = bytes_total, limit, "file over max_upload_bytes refused");
        shared.store.record_claimed(&record, &claim.id)?;
        let outcome = ImportOutcome {
            record,
            report_csv: None,
            archive_copy: None,
        };
        return finish(shared, tenant, claim, outcome);
    }
    let profile = &tenant.import;
    let pattern = FilePattern::new(profile);
    if profile.only_today && pattern.has_date() {
        let tz: chrono_tz::Tz = profile.timezone.parse().unwrap_or(chrono_tz::UTC);
        let today = Utc::now().with_timezone(&tz).date_naive();
        let date = pattern.matches(&name).and_then(|m| m.date);
        if date != Some(today) {
            let bytes = std::fs::metadata(claimed).map(|m| m.len()).unwrap_or(0);
            let found = date
                .map(|d| d.to_string())
                .unwrap_or_else(|| "no date".into());
            let msg = format!(
                "{name} carries {found}, but only today's file is imported (only_today = true): expected {} for {today} in {}. Upload today's export.",
                pattern.name_for(today),
                profile.timezone
            );
            let mut record = own_record(
                shared,
                &tenant.id,
                &name,
                ImportStatus::Error,
                msg,
                bytes,
                received_at,
            )?;
            // Not imported, but archived: without its passwords, like any archived file.
            let archive_copy =
                crate::import::password_free_copy(tenant, claimed, &mut record.messages)?;
            shared.store.record_claimed(&record, &claim.id)?;
            let outcome = ImportOutcome {
                record,
                report_csv: None,
                archive_copy,
            };
            return finish(shared, tenant, claim, outcome);
        }
    }
    let progress = shared.progress.clone();
    let tenant_id = tenant.id.clone();
    super::set_progress(
        &progress,
        &tenant.id,
        Some(RunProgress {
            file: name.clone(),
            bytes: bytes_total,
            rows_read: 0,
            started_at: Utc::now(),
        }),
    );
    let opts = RunOptions {
        received_at,
        progress: Some(std::sync::Arc::new(move |rows| {
            if let Ok(mut map) = progress.lock() {
                if let Some(p) = map.get_mut(&tenant_id) {
                    p.rows_read = rows;
                }
            }
        })),
        ..Default::default()
    };
    let outcome = import::run_file(&shared.store, tenant, claimed, &opts);
    super::set_progress(&shared.progress, &tenant.id, None);
    let outcome = outcome.with_context(|| format!("the import of {name} could not run"))?;
    // Keep the outputs beside the claim until filed, so a crash in between loses nothing.
    let dir = claimed.parent().unwrap_or(claimed);
    if let Some(r) = &outcome.report_csv {
        let _ = std::fs::write(dir.join(REPORT_FILE), r);
    }
    if let Some(a) = &outcome.archive_copy {
        let _ = std::fs::write(dir.join(ARCHIVE_FILE), a);
    }
    finish(shared, tenant, claim, outcome)
}

/// Files the claimed file and its report away, records where, queues the mail, drops the claim.
/// Safe to repeat after a failure: the mail is queued once (a `.mailed` mark in the claim).
fn finish(
    shared: &Shared,
    tenant: &Tenant,
    claim: &Claimed,
    outcome: ImportOutcome,
) -> anyhow::Result<ImportRecord> {
    let claimed = claim.path.as_path();
    let ImportOutcome {
        mut record,
        report_csv,
        archive_copy,
    } = outcome;
    let report_csv = report_csv.or_else(|| file_level_report(&record));
    // From here on every log line of the run carries its import id (see the `run` span).
    tracing::Span::current().record("import_id", record.id.as_str());
    let config = shared.config.current();
    let home = config.tenant_home(&tenant.id);
    let claim_dir = claimed.parent().unwrap_or(claimed).to_path_buf();
    let plan = archive::plan(
        &home,
        &tenant.import,
        &record.file,
        record.status,
        report_csv.is_some(),
        Utc::now(),
    );
    // A file over the limit is never kept: it was not read, so its password cells could not be
    // blanked (design.md §6: no plaintext password is archived).
    let keep_file = record.bytes <= config.server.max_upload_bytes;
    record.archived_as = keep_file.then(|| plan.file.clone());
    record.report = plan.report.clone();
    let mailed = claim_dir.join(MAILED_MARK);
    if !mailed.exists() {
        queue_mail(
            shared,
            tenant,
            &record,
            report_csv.as_deref(),
            plan.report.as_deref(),
        );
        let _ = std::fs::write(&mailed, b"");
    }
    if let (Some(rel), Some(bytes)) = (&plan.report, &report_csv) {
        archive::write_file(&home, rel, bytes)?;
    }
    if keep_file {
        archive::file_away(&home, &plan.file, claimed, archive_copy.as_deref())?;
    } else if let Err(e) = std::fs::remove_file(claimed) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(anyhow::anyhow!("cannot delete {}: {e}", claimed.display()));
        }
    }
    // Set only where the file went on the stored record: it may have moved on since the run
    // (a held run approved in the meantime) and must keep its newer status and counts.
    let mut stored = shared
        .store
        .import(&tenant.id, &record.id)?
        .unwrap_or_else(|| record.clone());
    stored.archived_as = record.archived_as.clone();
    stored.report = record.report.clone();
    shared.store.record_import(&stored)?;
    crate::metrics::import_finished(&record);
    let _ = std::fs::remove_dir_all(&claim_dir);
    if let Err(e) = shared.store.claim_done(&tenant.id, &claim.id) {
        tracing::warn!(tenant = %tenant.id, claim = %claim.id, "cannot drop the claim stamp (dropped at the next start): {e:#}");
    }
    tracing::info!(
        tenant = %record.tenant, file = %record.file, import_id = %record.id,
        status = record.status.as_str(), rows = record.counts.rows, inserted = record.counts.inserted,
        updated = record.counts.updated, skipped = record.counts.skipped, archived_as = record.archived_as.as_deref().unwrap_or("(deleted)"),
        "run finished"
    );
    Ok(record)
}

/// A run that failed as a whole (not CSV, empty, undecodable, wrong date) has no rows to
/// report; its report is one line per message, so the tenant gets a file that says what to fix.
fn file_level_report(record: &ImportRecord) -> Option<Vec<u8>> {
    if record.status != ImportStatus::Error || record.messages.is_empty() {
        return None;
    }
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(b"\xEF\xBB\xBF".to_vec());
    let mut rows = vec![["row".to_string(), "reason".to_string()]];
    rows.extend(record.messages.iter().map(|m| [String::new(), m.clone()]));
    for r in rows {
        w.write_record(r).ok()?;
    }
    w.into_inner().ok()
}

fn wants_mail(when: ReportWhen, status: ImportStatus) -> bool {
    match status {
        ImportStatus::Held | ImportStatus::Missing => true,
        ImportStatus::Partial | ImportStatus::Error => when != ReportWhen::Never,
        ImportStatus::Success | ImportStatus::Duplicate => when == ReportWhen::Always,
    }
}

/// Composes the run's report mail and puts it in the durable outbox.
pub fn queue_mail(
    shared: &Shared,
    tenant: &Tenant,
    record: &ImportRecord,
    report: Option<&[u8]>,
    report_name: Option<&str>,
) {
    if !wants_mail(tenant.import.report, record.status) {
        return;
    }
    if tenant.notify.is_empty() {
        tracing::warn!(tenant = %tenant.id, import_id = %record.id, "no notify addresses: the report mail is not sent");
        return;
    }
    let config = shared.config.current();
    let from = config
        .mail
        .as_ref()
        .map(|m| m.from.clone())
        .unwrap_or_else(|| crate::mail::DEFAULT_FROM.to_string());
    let summary = RunSummary {
        tenant: tenant.id.clone(),
        file: record.file.clone(),
        status: record.status.as_str().to_string(),
        import_id: Some(record.id.clone()),
        counts: record.counts,
        messages: record.messages.clone(),
        attachment: report.map(|bytes| CsvAttachment {
            file_name: report_name
                .and_then(|r| r.rsplit('/').next())
                .unwrap_or("report.csv")
                .to_string(),
            bytes: bytes.to_vec(),
        }),
    };
    let queued = compose_report(&from, &tenant.notify, &summary)
        .map_err(anyhow::Error::from)
        .and_then(|mail| crate::mail::enqueue(&shared.store, &mail));
    match queued {
        Ok(_) => shared.mail_wake.notify_one(),
        Err(e) => {
            tracing::error!(tenant = %tenant.id, import_id = %record.id, "cannot queue the report mail: {e:#}")
        }
    }
}

/// Finishes a claim folder left by an earlier process (or by a failed attempt): exactly the
/// run of this claim, found by the claim id. Blocking.
pub fn recover_claim(
    shared: &Shared,
    tenant: &Tenant,
    dir: &Path,
) -> anyhow::Result<Option<ImportRecord>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        // Finished meanwhile (a claim queued again when its tenant was configured again).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let claimed = entries.flatten().map(|e| e.path()).find(|p| {
        p.file_name()
            .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
    });
    let Some(claimed) = claimed else {
        // The file was already filed away; only the empty claim remains.
        let _ = std::fs::remove_dir_all(dir);
        let id = Claimed::found(dir, dir.to_path_buf()).id;
        let _ = shared.store.claim_done(&tenant.id, &id);
        return Ok(None);
    };
    let claim = Claimed::found(dir, claimed);
    let name = claim
        .path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let committed = shared.store.claim_committed(&tenant.id, &claim.id)?;
    if let Some(id) = committed {
        let record = shared.store.import(&tenant.id, &id)?.with_context(|| {
            format!(
                "claim {} committed import {id}, which is not in the history",
                claim.id
            )
        })?;
        tracing::info!(tenant = %tenant.id, file = %name, claim = %claim.id, import_id = %record.id, "finishing a run that was committed before a restart");
        let report_csv = std::fs::read(dir.join(REPORT_FILE)).ok();
        let archive_copy = std::fs::read(dir.join(ARCHIVE_FILE)).ok();
        return finish(
            shared,
            tenant,
            &claim,
            ImportOutcome {
                record,
                report_csv,
                archive_copy,
            },
        )
        .map(Some);
    }
    tracing::info!(tenant = %tenant.id, file = %name, claim = %claim.id, "importing a file claimed before a restart (its run never committed)");
    run_claimed(shared, tenant, &claim).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_policy() {
        use ImportStatus::*;
        assert!(wants_mail(ReportWhen::Never, Held));
        assert!(wants_mail(ReportWhen::Never, Missing));
        assert!(!wants_mail(ReportWhen::Never, Error));
        assert!(wants_mail(ReportWhen::Failures, Partial));
        assert!(!wants_mail(ReportWhen::Failures, Success));
        assert!(!wants_mail(ReportWhen::Failures, Duplicate));
        assert!(wants_mail(ReportWhen::Always, Success));
    }
}
