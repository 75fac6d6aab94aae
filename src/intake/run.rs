//! One run, from a file in the tenant root to an archived file, a history record and a queued
//! mail: claim → plan the archive names → (size and date checks) → import, which commits the
//! record and queues its mail in one write → file away. Also approving a held run
//! ([`approve_held`]), which files nothing.
//!
//! A run's record is written once, complete. The archive names (file and report) are planned
//! before the run (`archive::plan`) and passed to the engine in the run options
//! (`import::Filing`); the engine sets them in the record it commits and, before that commit,
//! stages the failure report and the password-free copy in the claim folder. A file refused
//! here (too large, not today's) gets its record from [`record_refused`], also complete, in one
//! write with the claim's stamp. Filing then only moves and writes files where the record says;
//! it never writes the history. Approving keeps the held run's names (see `import::held`).
//!
//! Claiming (see `claim`) moves the file out of the tenant's view into
//! `data/work/<tenant>/<claim id>/NAME`, so a re-upload of the same name during the run is a new
//! file with its own run, and the archive always holds exactly the bytes that were imported.
//! Before the import the claim is registered in the store (`claim_running`); the engine's commit
//! stamps it with the import id. A claim folder that survives a crash is finished on restart by
//! its own id only: if the store has a stamp for *this* claim, that run committed (its mail
//! with it) and only the filing (to the names in its record, with the outputs it staged) is
//! redone (and the mail, for a claim an earlier version left: `Claimed::mails_with_record`);
//! otherwise the import runs again (the store applies a run all
//! or nothing, so it runs exactly once). Runs of other files, even of the same name and bytes,
//! never count.
//!
//! A claim that never committed and that a newer run overtook is not imported at recovery but
//! refused, with a record saying why (`superseded`): an older file never overwrites a newer one.
//!
//! A file over `max_upload_bytes` (grown by any means) is refused here with an `error` record
//! naming its size and the limit, and deleted unread: it cannot be read within the limits to
//! blank its password cells, and no plaintext password is ever archived (design.md §6).

use super::archive;
use super::claim::Claimed;
use super::pattern::{FilePattern, TenantCalendar};
use super::run_mail;
use super::{RunProgress, Shared};
use crate::config::Tenant;
use crate::import::{self, Filing, ImportOutcome, RunOptions};
use crate::model::{Counts, ImportRecord, ImportStatus};
use anyhow::Context;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

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
    run_or_refuse(shared, tenant, claim, None)
}

/// Files a claimed file without importing it, with an `error` record giving `why` (a claim a
/// newer file overtook, `superseded`), as a file that is not today's is. Blocking.
pub fn refuse_claimed(
    shared: &Shared,
    tenant: &Tenant,
    claim: &Claimed,
    why: String,
) -> anyhow::Result<ImportRecord> {
    run_or_refuse(shared, tenant, claim, Some(why))
}

/// [`run_claimed`], or with `refusal` the file is refused for that reason instead of imported.
fn run_or_refuse(
    shared: &Shared,
    tenant: &Tenant,
    claim: &Claimed,
    refusal: Option<String>,
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
    let config = shared.config.current();
    // Where the run will be filed, decided now: the record is committed naming it.
    let filing = Filing {
        plan: archive::plan(
            &config.tenant_home(&tenant.id),
            &tenant.import,
            &name,
            Utc::now(),
        ),
        outputs: claim.dir().to_path_buf(),
    };
    // The `error` record of a file refused before the engine runs.
    let refused = |msg: String| {
        own_record(
            shared,
            &tenant.id,
            &name,
            ImportStatus::Error,
            msg,
            bytes_total,
            received_at,
        )
    };
    let limit = config.server.max_upload_bytes;
    if bytes_total > limit {
        let msg = format!(
            "{name} is {bytes_total} bytes, over the limit of {limit} bytes (max_upload_bytes); it was not imported and was deleted unread (it cannot be read within the limits to blank its passwords, so it is not kept). Upload a smaller file, or ask the operator to raise the limit."
        );
        let record = refused(msg)?;
        tracing::warn!(tenant = %tenant.id, file = %name, bytes = bytes_total, limit, "file over max_upload_bytes refused");
        // Never kept: it was not read, so its password cells could not be blanked (design.md §6).
        return record_refused(shared, tenant, claim, &filing, record, Kept::Nothing);
    }
    // "Today" is the tenant's date when the file was claimed, not when this run happens: a
    // file claimed at 23:58 and recovered after midnight (a crash, the database away) is still
    // that night's file (review s27). A claim whose id carries no time is judged now.
    let claimed_on = super::superseded::claimed_at(&claim.id).unwrap_or_else(Utc::now);
    if let Some(msg) = refusal.or_else(|| not_today(tenant, &name, claimed_on)) {
        let mut record = refused(msg)?;
        // Not imported, but archived: without its passwords, like any archived file.
        let copy = import::password_free_copy(tenant, claimed, &mut record.messages)?;
        return record_refused(shared, tenant, claim, &filing, record, Kept::File(copy));
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
        filing: Some(filing),
        lease: Some(super::lease::lease_name(&tenant.id)),
        mail: claim
            .mails_with_record()
            .then(|| run_mail::for_commit(shared, tenant)),
        ..Default::default()
    };
    let outcome = import::run_file(&shared.store, tenant, claimed, &opts);
    super::set_progress(&shared.progress, &tenant.id, None);
    let outcome = outcome.with_context(|| format!("the import of {name} could not run"))?;
    finish(shared, tenant, claim, outcome)
}

/// With `only_today` and a `{date}` pattern: why `name` is not the file of the tenant's date
/// at `at` (when it was claimed), if it is not.
fn not_today(tenant: &Tenant, name: &str, at: DateTime<Utc>) -> Option<String> {
    let profile = &tenant.import;
    let pattern = FilePattern::new(profile);
    if !profile.only_today || !pattern.has_date() {
        return None;
    }
    let today = TenantCalendar::of(profile).date_of(at);
    let date = pattern.matches(name).and_then(|m| m.date);
    if date == Some(today) {
        return None;
    }
    let found = date
        .map(|d| d.to_string())
        .unwrap_or_else(|| "no date".into());
    Some(format!(
        "{name} carries {found}, but only today's file is imported (only_today = true): expected {} for {today} in {}. Upload today's export.",
        pattern.name_for(today),
        profile.timezone
    ))
}

/// What is kept of a file the intake refuses before the engine runs.
enum Kept {
    /// Nothing: the file is deleted.
    Nothing,
    /// The file is archived: this password-free copy, or the original when `None`.
    File(Option<Vec<u8>>),
}

/// Completes a record the intake writes itself (the engine never ran) with its archive names
/// and failure report, stages the outputs, records it with the claim's stamp (its one write),
/// and files the run.
fn record_refused(
    shared: &Shared,
    tenant: &Tenant,
    claim: &Claimed,
    filing: &Filing,
    mut record: ImportRecord,
    kept: Kept,
) -> anyhow::Result<ImportRecord> {
    let report_csv = import::failed_run_report(&record);
    let (keep_file, archive_copy) = match kept {
        Kept::Nothing => (false, None),
        Kept::File(copy) => (true, copy),
    };
    filing.complete(&mut record, report_csv.as_deref(), archive_copy.as_deref())?;
    if !keep_file {
        record.archived_as = None;
    }
    let mail = claim
        .mails_with_record()
        .then(|| run_mail::for_commit(shared, tenant)(&record, report_csv.as_deref()))
        .flatten();
    shared.store.record_claimed(
        &record,
        &claim.id,
        mail.as_ref(),
        Some(&super::lease::lease_name(&tenant.id)),
    )?;
    let outcome = ImportOutcome {
        record,
        report_csv,
        archive_copy,
    };
    finish(shared, tenant, claim, outcome)
}

/// Files the claimed file and its report where the committed record says, drops the claim.
/// Writes nothing to the history: the record was committed complete, with its mail. Safe to
/// repeat after a failure. A claim an earlier version left ([`Claimed::mails_with_record`]
/// false) has its mail queued here, once (a `.mailed` mark in the claim).
fn finish(
    shared: &Shared,
    tenant: &Tenant,
    claim: &Claimed,
    outcome: ImportOutcome,
) -> anyhow::Result<ImportRecord> {
    let claimed = claim.path.as_path();
    let ImportOutcome {
        record,
        report_csv,
        archive_copy,
    } = outcome;
    // From here on every log line of the run carries its import id (see the `run` span).
    tracing::Span::current().record("import_id", record.id.as_str());
    let home = shared.config.current().tenant_home(&tenant.id);
    let claim_dir = claim.dir().to_path_buf();
    let mailed = claim_dir.join(MAILED_MARK);
    if claim.mails_with_record() {
        // Queued with the record. The mark still tells an older binary that finishes this
        // claim (a rolling upgrade's orphan, a downgrade) that the mail is queued.
        if !mailed.exists() {
            let _ = std::fs::write(&mailed, b"");
        }
        shared.mail_wake.notify_one();
    } else if !mailed.exists() {
        run_mail::queue_now(shared, tenant, &record, report_csv.as_deref());
        let _ = std::fs::write(&mailed, b"");
    }
    if let (Some(rel), Some(bytes)) = (&record.report, &report_csv) {
        archive::write_file(&home, rel, bytes)?;
    }
    match &record.archived_as {
        Some(rel) => {
            archive::file_away(&home, rel, claimed, archive_copy.as_deref())?;
        }
        None => {
            if let Err(e) = std::fs::remove_file(claimed) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(anyhow::anyhow!("cannot delete {}: {e}", claimed.display()));
                }
            }
        }
    }
    cap_archives(shared, &home, &record);
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

/// The archived file and report of each run of `tenant` still held for approval, as
/// `folder/name`: retention and the archive cap never delete them (`archive::sweep`).
pub(super) fn held_files(
    store: &crate::store::Store,
    tenant: &str,
) -> anyhow::Result<std::collections::HashSet<String>> {
    let mut out = std::collections::HashSet::new();
    for id in store.held_plans(tenant)? {
        if let Some(r) = store.import_record(tenant, &id)? {
            out.extend(r.archived_as.into_iter().chain(r.report));
        }
    }
    Ok(out)
}

/// Keeps each archive folder this run wrote into within `max_tenant_entries` files, deleting
/// the oldest (see `archive::keep_newest`), and says so at WARN.
fn cap_archives(shared: &Shared, home: &Path, record: &ImportRecord) {
    let max = shared.config.current().server.max_tenant_entries;
    let written = [&record.archived_as, &record.report];
    let mut folders: Vec<&str> = written
        .into_iter()
        .flatten()
        .filter_map(|rel| rel.split_once('/').map(|(folder, _)| folder))
        .collect();
    folders.dedup();
    let held = || held_files(&shared.store, &record.tenant);
    for folder in folders {
        let removed = archive::keep_newest(home, folder, max, &held);
        if removed > 0 {
            tracing::warn!(
                tenant = %record.tenant, folder, removed, max_tenant_entries = max,
                "archive cap: {folder}/ held more than max_tenant_entries files; its {removed} oldest were deleted before retention_days (raise max_tenant_entries or lower retention_days to keep them)"
            );
        }
    }
}

/// Applies a held run (the admin API's `approve`, through the tenant's queue). Its file was
/// filed when it was held, so nothing is filed here. The tenant's contacts were mailed that it
/// was held, so they are mailed that it is now applied, like the held mail whatever `report`
/// says (review s15: the last mail they had said "nothing was changed yet"). Blocking.
pub fn approve_held(
    shared: &Shared,
    tenant: &Tenant,
    import_id: &str,
) -> anyhow::Result<ImportRecord> {
    let span = tracing::info_span!("approve", tenant = %tenant.id, import_id = %import_id);
    let _enter = span.enter();
    // The mail is composed from the applied record and queued by the approve's own commit,
    // so a crash right after it cannot lose the mail (review s18 crash F1).
    let (from, contacts) = (run_mail::sender(shared), tenant.clone());
    let mail: import::MailFor = std::sync::Arc::new(move |record: &ImportRecord, _report| {
        let mut mailed = record.clone();
        mailed.messages.insert(
            0,
            format!(
                "An operator approved this held run at {}: its changes are applied now.",
                Utc::now().format("%Y-%m-%d %H:%M UTC")
            ),
        );
        run_mail::compose(&from, &contacts, &mailed, None, None)
    });
    let record = import::approve_mailed(&shared.store, tenant, import_id, Some(mail))?.record;
    shared.mail_wake.notify_one();
    crate::metrics::import_finished(&record);
    tracing::info!(status = %record.status, deactivated = record.counts.deactivated, deleted = record.counts.deleted, "held import approved");
    Ok(record)
}

/// The outcome of a committed run found at recovery: its record as stored, and the outputs it
/// staged in its claim folder before the commit.
fn committed_outcome(
    shared: &Shared,
    tenant: &Tenant,
    claim: &Claimed,
    mut record: ImportRecord,
) -> ImportOutcome {
    let (staged_report, archive_copy) = import::staged(claim.dir());
    let report_csv = match &record.report {
        Some(_) => staged_report.or_else(|| import::failed_run_report(&record)),
        None => None,
    };
    let config = shared.config.current();
    // Every claim of this version (`-m`, since 2026-12-02) commits its archive names (planned
    // before the run since 2026-11-29): a record without one was deliberately not archived (a
    // file over `max_upload_bytes`, deleted unread, so its passwords were never blanked). Its
    // bytes may be within the limit by now (the operator raised it): that must not archive
    // the unread original (review of 2026-12-02).
    let named_before_commit = claim.mails_with_record();
    if record.archived_as.is_none()
        && !named_before_commit
        && record.bytes <= config.server.max_upload_bytes
    {
        // Committed by a version that named the archive after the commit: file it under a
        // name planned now (the stored record keeps no name, as that version left it).
        let home = config.tenant_home(&tenant.id);
        let plan = archive::plan(&home, &tenant.import, &record.file, Utc::now());
        record.archived_as = Some(plan.names(record.status, false).0);
        tracing::warn!(import_id = %record.id, archived_as = ?record.archived_as, "a run committed without archive names is filed under a new name");
    }
    ImportOutcome {
        record,
        report_csv,
        archive_copy,
    }
}

/// The import a claim of a version without claim stamps committed, if it did. The first
/// version named its claim folders `<UTC time>-NNNN` and proved a commit only by the file
/// ledger: an entry of this file name, finished (`done` or `failed`) with these very bytes,
/// written after the claim was made. Read as "never committed", such a claim was imported
/// again after an upgrade: a second record and mail, and the file's `on_missing` applied once
/// more (review s19 upgrade F2). Later claims (`<time>-<pid>-NNNN`, since session 24 ending in
/// `-m`) have stamps and are not looked up here.
fn committed_before_stamps(
    shared: &Shared,
    tenant: &Tenant,
    claim: &Claimed,
    name: &str,
) -> anyhow::Result<Option<String>> {
    let Some(claimed_at) = unstamped_claim_time(&claim.id) else {
        return Ok(None);
    };
    let Some(entry) = shared.store.ledger_get(&tenant.id, name)? else {
        return Ok(None);
    };
    if entry.updated_at < claimed_at || entry.import_id.is_none() {
        return Ok(None);
    }
    let sha = file_sha256(&claim.path)?;
    Ok(entry.import_id.filter(|_| entry.sha256 == sha))
}

/// When a claim named by the first version (`20261201T020006.584924Z-0003`) was made; None for
/// any other name.
fn unstamped_claim_time(id: &str) -> Option<DateTime<Utc>> {
    let (stamp, n) = id.split_once('-')?;
    if n.len() != 4 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let at = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.6fZ").ok()?;
    Some(at.and_utc())
}

/// The sha256 of a file, in hex, read in pieces.
fn file_sha256(path: &Path) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hash = Sha256::new();
    std::io::copy(&mut file, &mut hash)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(hash.finalize()))
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
    let committed = match shared.store.claim_committed(&tenant.id, &claim.id)? {
        Some(id) => Some(id),
        None => committed_before_stamps(shared, tenant, &claim, &name)?,
    };
    if let Some(id) = committed {
        let record = shared
            .store
            .import_record(&tenant.id, &id)?
            .with_context(|| {
                format!(
                    "claim {} committed import {id}, which is not in the history",
                    claim.id
                )
            })?;
        tracing::info!(tenant = %tenant.id, file = %name, claim = %claim.id, import_id = %record.id, "finishing a claimed run that already committed (left by a restart, a failed attempt or a node that died)");
        let outcome = committed_outcome(shared, tenant, &claim, record);
        return finish(shared, tenant, &claim, outcome).map(Some);
    }
    if let Some(newer) = super::superseded::newer_run(shared, &tenant.id, &claim.id)? {
        tracing::warn!(tenant = %tenant.id, file = %name, claim = %claim.id, newer = %newer.id, "a claimed file whose run never committed is older than a run applied since; it is filed without being imported");
        let why = super::superseded::reason(&name, &claim.id, &newer);
        return refuse_claimed(shared, tenant, &claim, why).map(Some);
    }
    tracing::info!(tenant = %tenant.id, file = %name, claim = %claim.id, "importing a claimed file whose run never committed (left by a restart, a failed attempt or a node that died)");
    run_claimed(shared, tenant, &claim).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_first_version_claim_names_are_looked_up_in_the_ledger() {
        let at = unstamped_claim_time("20261201T020006.584924Z-0003").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-12-01T02:00:06.584924+00:00");
        assert!(unstamped_claim_time("20261201T020006.584924Z-41234-0003").is_none());
        assert!(unstamped_claim_time("20261201T020006.584924Z-03").is_none());
        assert!(unstamped_claim_time("garbage-0003").is_none());
    }
}
