//! One run, from a file in the tenant root to an archived file, a history record and a queued
//! mail: claim → (date check) → import → file away → mail.
//!
//! Claiming moves the file out of the tenant's view into `data/work/<tenant>/<claim>/NAME`
//! (one atomic rename), so a re-upload of the same name during the run is a new file with its
//! own run, and the archive always holds exactly the bytes that were imported. A claim folder
//! that survives a crash is finished on restart: if the store's ledger shows the same bytes
//! already committed, only the filing and the mail are redone; otherwise the import runs again
//! (the store applies a run all or nothing, so it runs exactly once).

use super::archive;
use super::pattern::FilePattern;
use super::{RunProgress, Shared};
use crate::config::{ReportWhen, Tenant};
use crate::import::{self, ImportOutcome, RunOptions};
use crate::mail::{compose_report, CsvAttachment, RunSummary};
use crate::store::{ImportRecord, ImportStatus, LedgerState};
use anyhow::Context;
use chrono::{DateTime, Utc};
use sha2::Digest;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const REPORT_FILE: &str = ".report.csv";
const ARCHIVE_FILE: &str = ".archive.csv";
const MAILED_MARK: &str = ".mailed";

static CLAIMS: AtomicU64 = AtomicU64::new(0);

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

/// Moves `home/name` into a new claim folder; returns the claimed path.
pub fn claim(shared: &Shared, tenant: &str, home: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let n = CLAIMS.fetch_add(1, Ordering::Relaxed);
    let dir = work_dir(shared, tenant).join(format!(
        "{}-{n:04}",
        Utc::now().format("%Y%m%dT%H%M%S%.6fZ")
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let claimed = dir.join(name);
    std::fs::rename(home.join(name), &claimed).with_context(|| format!("cannot claim {name}"))?;
    Ok(claimed)
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
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
        errors: u64::from(status == ImportStatus::Error),
        messages: vec![message],
        ..ImportRecord::begun(id, tenant, file, status, received_at, now)
    })
}

/// Imports a claimed file and files it away. Blocking: call from a blocking thread.
pub fn run_claimed(
    shared: &Shared,
    tenant: &Tenant,
    claimed: &Path,
) -> anyhow::Result<ImportRecord> {
    let name = claimed
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let received_at = modified_at(claimed);
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
            shared.store.record_import(&record)?;
            let outcome = ImportOutcome {
                record,
                report_csv: None,
                archive_copy,
            };
            return finish(shared, tenant, claimed, outcome);
        }
    }
    let bytes_total = std::fs::metadata(claimed).map(|m| m.len()).unwrap_or(0);
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
    finish(shared, tenant, claimed, outcome)
}

/// Files the claimed file and its report away, records where, queues the mail, drops the claim.
/// Safe to repeat after a failure: the mail is queued once (a `.mailed` mark in the claim).
fn finish(
    shared: &Shared,
    tenant: &Tenant,
    claimed: &Path,
    outcome: ImportOutcome,
) -> anyhow::Result<ImportRecord> {
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
    record.archived_as = Some(plan.file.clone());
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
    archive::file_away(&home, &plan.file, claimed, archive_copy.as_deref())?;
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
    tracing::info!(
        tenant = %record.tenant, file = %record.file, import_id = %record.id,
        status = record.status.as_str(), rows = record.rows, inserted = record.inserted,
        updated = record.updated, skipped = record.skipped, archived_as = %plan.file,
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
        counts: record.into(),
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

/// Finishes a claim folder left by an earlier process. Blocking.
pub fn recover_claim(
    shared: &Shared,
    tenant: &Tenant,
    dir: &Path,
) -> anyhow::Result<Option<ImportRecord>> {
    let claimed = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        });
    let Some(claimed) = claimed else {
        // The file was already filed away; only the empty claim remains.
        let _ = std::fs::remove_dir_all(dir);
        return Ok(None);
    };
    let name = claimed
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let sha = sha256_file(&claimed)?;
    let entry = shared.store.ledger_get(&tenant.id, &name)?;
    let committed = entry
        .filter(|e| e.sha256 == sha && matches!(e.state, LedgerState::Done | LedgerState::Failed));
    if let Some(record) = committed
        .and_then(|e| e.import_id)
        .and_then(|id| shared.store.import(&tenant.id, &id).ok().flatten())
    {
        tracing::info!(tenant = %tenant.id, file = %name, import_id = %record.id, "finishing a run that was committed before a restart");
        let report_csv = std::fs::read(dir.join(REPORT_FILE)).ok();
        let archive_copy = std::fs::read(dir.join(ARCHIVE_FILE)).ok();
        return finish(
            shared,
            tenant,
            &claimed,
            ImportOutcome {
                record,
                report_csv,
                archive_copy,
            },
        )
        .map(Some);
    }
    tracing::info!(tenant = %tenant.id, file = %name, "importing a file claimed before a restart");
    run_claimed(shared, tenant, &claimed).map(Some)
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
