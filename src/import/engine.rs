//! One run from start to end: scan, duplicate check, header mapping, row pass into the run's
//! bucket rows, survey and hold decision, main pass with staging, failure report, commit.
//!
//! Data enters as a [`Job`] (store, tenant, file, options) and leaves as a [`Done`]: the
//! outcome (record, report, archive copy) and, for previews, the change details. The record is
//! committed complete: with the intake's filing in the options it names the archived file and
//! report (see `filing`); approving keeps the held run's names.
//!
//! Reports, and the archive copy of a run that ends early, are built in `report`.
//!
//! A held run keeps its plan for `approve` through the `held` module.

use super::apply::{run_merge, run_survey};
use super::bounds::{self, MAX_MESSAGES};
use super::held::{self, Approving};
use super::row_pass;
use super::merge::{Change, MergeSettings};
use super::read::{self, Input};
use super::report;
use super::record::{self, GivenPasswords};
use super::spill::BucketRows;
use super::{ImportOutcome, RunOptions};
use crate::config::{MatchBy, OnMissing, Tenant};
use crate::model::bucket::BUCKETS;
use crate::model::{Counts, ImportRecord, ImportStatus};
use crate::store::{Commit, LedgerEntry, LedgerState, Store};
use anyhow::{bail, Context, Result};
use chrono::Utc;
use std::collections::HashMap;

pub struct Job<'a> {
    pub store: &'a Store,
    pub tenant: &'a Tenant,
    pub file: &'a str,
    pub input: Input<'a>,
    pub opts: &'a RunOptions,
    /// Changes to collect (previews).
    pub detail: usize,
    /// Set by `approve`: the held run to complete.
    pub approving: Option<Approving>,
}

/// The passwords kept by the held run being approved, if it kept any.
fn given_passwords<'j>(job: &'j Job<'_>) -> Option<&'j GivenPasswords> {
    job.approving
        .as_ref()
        .map(|a| &a.passwords)
        .filter(|p| !p.is_empty())
}

impl<'a> Job<'a> {
    pub fn new(
        store: &'a Store,
        tenant: &'a Tenant,
        file: &'a str,
        input: Input<'a>,
        opts: &'a RunOptions,
    ) -> Self {
        Job {
            store,
            tenant,
            file,
            input,
            opts,
            detail: 0,
            approving: None,
        }
    }
}

pub struct Done {
    pub outcome: ImportOutcome,
    pub changes: Vec<Change>,
}

fn push_msg(msgs: &mut Vec<String>, dropped: &mut u64, m: String) {
    if msgs.len() < MAX_MESSAGES {
        msgs.push(m);
    } else {
        *dropped += 1;
    }
}

/// Runs a job (see the module doc).
pub fn execute(job: Job<'_>) -> Result<Done> {
    let store = job.store;
    let tenant = job.tenant;
    let profile = &tenant.import;
    let started_at = Utc::now();
    let clock = std::time::Instant::now();
    let phase = |name: &str| {
        tracing::debug!(
            phase = name,
            ms = clock.elapsed().as_millis() as u64,
            rss_mb = resident_mb(),
            "import phase done"
        )
    };
    // Approving: the file was hashed when held (the kept copy may differ), not again.
    let upload = job.approving.as_ref().and_then(|a| a.upload.clone());
    let scan = read::scan(job.input, profile.encoding, upload.is_none())?;
    phase("scan");
    let id = match &job.approving {
        Some(a) => a.id.clone(),
        None if job.opts.dry_run => "preview".to_string(),
        None => store.new_import_id(started_at)?,
    };
    let (sha256, bytes) = upload.unwrap_or_else(|| (scan.sha256.unwrap_or_default(), scan.bytes));
    let mut rec = ImportRecord {
        sha256,
        bytes,
        ..ImportRecord::begun(
            id,
            &tenant.id,
            job.file,
            ImportStatus::Error,
            job.opts.received_at,
            started_at,
        )
    };
    let state = store.tenant_state(&tenant.id)?;
    if let Some(a) = &job.approving {
        (rec.archived_as, rec.report) = (a.archived_as.clone(), a.report.clone());
        if a.version != state.version {
            bail!(
                "import {} of tenant {} cannot be approved: the directory changed after it was held; upload the file again",
                rec.id,
                tenant.id
            );
        }
    } else if state.last_applied_sha256.as_deref() == Some(rec.sha256.as_str()) {
        rec.status = ImportStatus::Duplicate;
        rec.messages.push(
            "the file is identical (same sha256) to the last applied file, so nothing was changed"
                .into(),
        );
        // The file moves to the archive like any other: without its passwords.
        let enc = scan.encoding.clone().unwrap_or(scan.fallback);
        let archive = report::archive_early(
            job.tenant,
            job.input,
            &mut rec.messages,
            report::Reached::Scan(enc),
        );
        return finish(job, rec, &state, Vec::new(), None, archive, Vec::new());
    }
    let enc = match scan.encoding {
        Ok(e) => e,
        Err(msg) => return fail(job, rec, &state, msg, report::Reached::Scan(scan.fallback)),
    };
    rec.encoding = enc.name().to_string();
    let (text, delim) = read::with_delimiter(read::text(job.input, enc)?, profile.delimiter)?;
    rec.delimiter = read::delimiter_name(delim);
    let mut rdr = read::csv_reader(text, delim);
    let mut record = csv::ByteRecord::new();
    let header_ok = rdr
        .read_byte_record(&mut record)
        .context("cannot read the header row");
    match header_ok {
        Ok(true) => {}
        Ok(false) => {
            let msg = "the file is empty".into();
            return fail(job, rec, &state, msg, report::Reached::Text(enc, delim));
        }
        Err(e) => {
            let msg = format!("{e:#}");
            return fail(job, rec, &state, msg, report::Reached::Text(enc, delim));
        }
    }
    let headers: Vec<String> = record.iter().map(bounds::header_text).collect();
    drop(record); // a header line can be as large as the file: keep only the cut names
    let map = match record::map_columns(&headers, tenant) {
        Ok(m) => m,
        Err(msg) => return fail(job, rec, &state, msg, report::Reached::Text(enc, delim)),
    };
    let password_col = map.password.map(|i| map.cols[i].index);
    let mapped = report::Reached::Header(enc, delim, password_col);
    // The second pass over the file: failure report and password-blanked archive copy.
    let input = job.input;
    let report_and_archive = |skips: &HashMap<u64, String>| {
        report::write(
            input,
            enc,
            delim,
            &report::Want {
                skips,
                password_col,
                password_header: None,
                keep_col: None,
            },
        )
    };
    let mut dropped = 0u64;
    for n in &map.notes {
        push_msg(&mut rec.messages, &mut dropped, n.clone());
    }
    // Row pass: validate, pack into the run's bucket rows, remember skip reasons and emails.
    let secret = *store.fingerprint_key();
    let check_emails = profile.match_by != MatchBy::Email && map.email.is_some();
    let seal = record::RowSeal::new();
    let rows = BucketRows::new(BUCKETS, job.opts.row_memory);
    let cx = row_pass::RowContext {
        map: &map,
        tenant,
        secret: &secret,
        check_emails,
        given: given_passwords(&job),
        seal: &seal,
    };
    let pass = match row_pass::row_pass(&mut rdr, &cx, &rows, job.opts.progress.as_deref())? {
        Ok(p) => p,
        Err(msg) => return fail(job, rec, &state, msg, mapped),
    };
    if let Some(p) = &job.opts.progress {
        p(pass.rows);
    }
    phase("rows");
    tracing::debug!(
        spilled_bytes = rows.spilled(),
        "row pass done (rows past the memory budget wait in a temporary file)"
    );
    rec.counts.rows = pass.rows;
    for (_, n) in pass.notes {
        push_msg(&mut rec.messages, &mut dropped, n);
    }
    dropped += pass.notes_dropped;
    let mut skips = pass.skips;
    let file_emails = pass.file_emails;
    let mut conflicts = pass.clashes;
    let pass_fingerprints = pass.fingerprints;
    if rec.counts.rows == 0 {
        return fail(
            job,
            rec,
            &state,
            "the file has a header row but no data rows".into(),
            mapped,
        );
    }
    if pass.valid == 0 {
        let (report_csv, archive) = report_and_archive(&skips)?;
        return nothing_imported(job, rec, &state, &skips, report_csv, archive, Vec::new());
    }
    let empty = HashMap::new();
    let mut ctx = MergeSettings {
        tenant,
        map: &map,
        secret,
        now_ms: started_at.timestamp_millis(),
        detail: job.detail,
        hash_passwords: !job.opts.dry_run,
        conflicts: &empty,
        missing: true,
        given: given_passwords(&job),
        collect: None,
        seal: &seal,
    };
    let has_users = state.gens.iter().any(|g| *g != 0);
    let mut held = None;
    let mut quiet = Vec::new();
    if has_users && (profile.on_missing != OnMissing::Keep || check_emails) {
        let survey = run_survey(&**store, &ctx, &state, &rows, &file_emails)?;
        let limit = profile.max_missing_percent / 100.0 * survey.current as f64;
        if job.approving.is_none() && survey.missing >= 5 && survey.missing as f64 > limit {
            held = Some(survey.missing);
        }
        conflicts.extend(survey.conflicts);
        quiet = survey.quiet;
        phase("survey");
    }
    ctx.conflicts = &conflicts;
    drop(file_emails);
    if let (Some(missing), false) = (held, job.opts.dry_run) {
        // Held: record the run and keep the file and profile for `approve`; change nothing.
        for (l, r) in &conflicts {
            skips.entry(*l).or_insert_with(|| r.clone());
        }
        rec.status = ImportStatus::Held;
        rec.counts.skipped = skips.len() as u64;
        rec.counts.errors = rec.counts.skipped;
        match profile.on_missing {
            OnMissing::Delete => rec.counts.deleted = missing,
            _ => rec.counts.deactivated = missing,
        }
        rec.messages.insert(
            0,
            format!(
                "held: {missing} users are missing from the file, more than max_missing_percent ({}%) of the tenant's users; nothing was changed. Approve with `roster approve {} {}` to apply this run",
                profile.max_missing_percent, tenant.id, rec.id
            ),
        );
        let plan = held::plan_bytes(&held::Keep {
            store: &**store,
            ctx: &ctx,
            state: &state,
            rows: &rows,
            quiet: &quiet,
            fingerprints: &pass_fingerprints,
            input,
            enc,
            delim,
            password_col,
            key_col: map.cols[map.key].index,
            tenant,
            file: job.file,
            received_at: job.opts.received_at,
            upload: (&rec.sha256, rec.bytes),
        })?;
        let (report_csv, archive) = report_and_archive(&skips)?;
        let put = Some((rec.id.clone(), plan));
        return finish_with(
            job,
            rec,
            &state,
            Vec::new(),
            report_csv,
            archive,
            Vec::new(),
            put,
        );
    }
    let stage = !job.opts.dry_run;
    let planned = run_merge(&**store, &ctx, &state, &rows, &quiet, stage)?;
    phase("plan");
    for (l, r) in planned.late_skips {
        skips.entry(l).or_insert(r);
    }
    let c = planned.counts;
    let skipped = skips.len() as u64;
    rec.counts = Counts {
        rows: rec.counts.rows,
        skipped,
        errors: skipped,
        ..c
    };
    let applied = c.inserted + c.updated + c.unchanged + c.restored;
    let mut first: Vec<(&u64, &String)> = skips.iter().collect();
    first.sort();
    let (report_csv, archive) = report_and_archive(&skips)?;
    if applied == 0 {
        store.discard_staged(&tenant.id, &planned.staged)?;
        let changes = planned.changes;
        return nothing_imported(job, rec, &state, &skips, report_csv, archive, changes);
    }
    for (_, r) in first.iter().take(MAX_MESSAGES) {
        push_msg(&mut rec.messages, &mut dropped, (*r).clone());
    }
    dropped += first.len().saturating_sub(MAX_MESSAGES) as u64;
    if dropped > 0 {
        rec.messages.push(format!(
            "… and {dropped} more messages (every skipped row is in the failure report)"
        ));
    }
    rec.status = if held.is_some() {
        ImportStatus::Held
    } else if rec.counts.skipped > 0 {
        ImportStatus::Partial
    } else {
        ImportStatus::Success
    };
    if job.approving.is_some() {
        rec.messages.push(format!(
            "approved and applied at {}",
            Utc::now().to_rfc3339()
        ));
    }
    finish(
        job,
        rec,
        &state,
        planned.staged,
        report_csv,
        archive,
        planned.changes,
    )
}

/// Current resident set size in MB (Linux; 0 elsewhere), for the phase log.
fn resident_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

/// Every row was skipped: an error, nothing applied (not even `on_missing`). `changes` are a
/// preview's details.
fn nothing_imported(
    job: Job<'_>,
    mut rec: ImportRecord,
    state: &crate::store::TenantState,
    skips: &HashMap<u64, String>,
    report_csv: Option<Vec<u8>>,
    archive: Option<Vec<u8>>,
    changes: Vec<Change>,
) -> Result<Done> {
    let first = skips
        .iter()
        .min_by_key(|(l, _)| **l)
        .map(|(_, r)| r.as_str())
        .unwrap_or("");
    rec.status = ImportStatus::Error;
    let skipped = skips.len() as u64;
    rec.counts = Counts {
        rows: rec.counts.rows,
        skipped,
        errors: skipped + 1,
        ..Counts::default()
    };
    rec.messages.insert(
        0,
        format!(
            "none of the {} rows could be imported, so nothing was changed; the first problem: {first}",
            rec.counts.rows
        ),
    );
    finish(job, rec, state, Vec::new(), report_csv, archive, changes)
}

fn fail(
    job: Job<'_>,
    mut rec: ImportRecord,
    state: &crate::store::TenantState,
    msg: String,
    reached: report::Reached,
) -> Result<Done> {
    rec.status = ImportStatus::Error;
    rec.counts.errors = 1;
    rec.messages.insert(0, msg);
    let archive = report::archive_early(job.tenant, job.input, &mut rec.messages, reached);
    finish(job, rec, state, Vec::new(), None, archive, Vec::new())
}

#[allow(clippy::too_many_arguments)]
fn finish(
    job: Job<'_>,
    rec: ImportRecord,
    state: &crate::store::TenantState,
    staged: Vec<(u16, u64)>,
    report_csv: Option<Vec<u8>>,
    archive_copy: Option<Vec<u8>>,
    changes: Vec<Change>,
) -> Result<Done> {
    finish_with(
        job,
        rec,
        state,
        staged,
        report_csv,
        archive_copy,
        changes,
        None,
    )
}

/// Commits the record, complete (see `filing`), and the staged buckets unless this is a dry run.
#[allow(clippy::too_many_arguments)]
fn finish_with(
    job: Job<'_>,
    mut rec: ImportRecord,
    state: &crate::store::TenantState,
    staged: Vec<(u16, u64)>,
    report_csv: Option<Vec<u8>>,
    archive_copy: Option<Vec<u8>>,
    changes: Vec<Change>,
    put_plan: Option<(String, Vec<u8>)>,
) -> Result<Done> {
    rec.finished_at = Utc::now();
    bounds::bound_messages(&mut rec.messages);
    let report_csv = report_csv.or_else(|| report::for_failed_run(&rec));
    if !job.opts.dry_run {
        if let Some(f) = &job.opts.filing {
            f.complete(&mut rec, report_csv.as_deref(), archive_copy.as_deref())?;
        }
        let applied = matches!(rec.status, ImportStatus::Success | ImportStatus::Partial);
        let commit = Commit {
            tenant: job.tenant.id.clone(),
            expected_version: state.version,
            buckets: staged.clone(),
            last_applied_sha256: applied.then(|| rec.sha256.clone()),
            ledger: Some(LedgerEntry {
                tenant: job.tenant.id.clone(),
                file: rec.file.clone(),
                sha256: rec.sha256.clone(),
                state: if rec.status == ImportStatus::Error {
                    LedgerState::Failed
                } else {
                    LedgerState::Done
                },
                import_id: Some(rec.id.clone()),
                updated_at: rec.finished_at,
            }),
            record: Some(rec.clone()),
            put_plan,
            remove_plan: job.approving.as_ref().map(|a| a.id.clone()),
        };
        if let Err(e) = job.store.commit(&commit) {
            job.store.discard_staged(&job.tenant.id, &staged)?;
            return Err(e);
        }
        tracing::info!(tenant = %rec.tenant, file = %rec.file, id = %rec.id, status = %rec.status,
            rows = rec.counts.rows, inserted = rec.counts.inserted, updated = rec.counts.updated, skipped = rec.counts.skipped,
            "import finished");
    }
    Ok(Done {
        outcome: ImportOutcome {
            record: rec,
            report_csv,
            archive_copy,
        },
        changes,
    })
}
