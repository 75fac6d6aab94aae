//! One run from start to end, as a sequence of phases: begin (scan, record, tenant state) →
//! duplicate check → header mapping → row pass → survey and hold decision → hold, or main pass
//! with staging → tally (counts, messages, status, failure report) → commit.
//!
//! Data enters as a [`Job`] (store, tenant, file, options) and leaves as a [`Done`]: the
//! outcome (record, report, archive copy) and, for previews, the change details. Each phase
//! from the duplicate check on returns a [`Phase`]: `Continue` with what the next phase needs,
//! or `Break` with the [`Ending`] the run is committed with (the record, written into along
//! the way, goes with it). The record is committed complete: with the intake's filing in the
//! options it names the archived file and report (see `filing`); approving keeps the held
//! run's names.
//!
//! This file holds the driver ([`execute`], `run_phases`) and the phases up to the hold
//! decision; the phases that end a run (hold, tally, fail, nothing imported) and the commit
//! are in `ending`. Reports, and the archive copy of a run that ends early, are built in
//! `report`; a held run keeps its plan for `approve` through `held`.

use super::apply::{run_merge, run_survey, MergeInput};
use super::bounds::{self, SkipBudget, TooManySkips};
use super::ending::{
    commit, fail, hold, nothing_imported, push_msg, tally, write_outputs, Ending, Findings,
    HeldCount, HoldDecision, Outputs,
};
use super::job::{applied_digest, given_passwords, Done, Job};
use super::mapping::{self, Mapping};
use super::merge::{MergeSettings, PasswordRules};
use super::read::{self, Enc, Layout, Scan};
use super::record::{RowFingerprint, RowSeal};
use super::report;
use super::restore::email_holder;
use super::row_pass::{self, FileEmails};
use super::rownum::RowReader;
use super::spill::BucketRows;
use super::survey::{revived_conflicts, settle_releases};
use crate::config::{MatchBy, OnMissing};
use crate::model::bucket::BUCKETS;
use crate::model::{ImportRecord, ImportStatus};
use crate::store::TenantState;
use anyhow::{bail, Context, Result};
use chrono::Utc;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::ops::ControlFlow::{self, Break, Continue};
use std::time::Instant;
/// What a phase returns: go on with `T`, or end the run with an [`Ending`].
type Phase<T> = Result<ControlFlow<Ending, T>>;

/// The value of a phase that goes on; returns its [`Ending`] from the caller otherwise.
macro_rules! go_on {
    ($phase:expr) => {
        match $phase? {
            Continue(value) => value,
            Break(ending) => return Ok(ending),
        }
    };
}

/// Logs each phase's end with the time since the run began.
struct PhaseClock(Instant);

impl PhaseClock {
    fn done(&self, name: &str) {
        tracing::debug!(
            phase = name,
            ms = self.0.elapsed().as_millis() as u64,
            rss_mb = resident_mb(),
            "import phase done"
        )
    }
}

/// Runs a job (see the module doc).
pub fn execute(job: Job<'_>) -> Result<Done> {
    let clock = PhaseClock(Instant::now());
    let (mut rec, state, scan) = begin(&job, &clock)?;
    let ending = run_phases(&job, &state, &mut rec, scan, &clock)?;
    commit(job, &state, rec, ending)
}

/// Begin: scans the file (encoding, sha256), starts the record and reads the tenant's state.
/// Approving a held run fails here if the directory changed since it was held.
fn begin(job: &Job<'_>, clock: &PhaseClock) -> Result<(ImportRecord, TenantState, Scan)> {
    let started_at = Utc::now();
    let tenant = job.tenant;
    // Approving: the file was hashed when held (the kept copy may differ), not again.
    let upload = job.approving.as_ref().and_then(|a| a.upload.clone());
    let scan = read::scan(job.input, tenant.import.encoding, upload.is_none())?;
    clock.done("scan");
    let id = match &job.approving {
        Some(a) => a.id.clone(),
        None if job.opts.dry_run => "preview".to_string(),
        None => job.store.new_import_id(started_at)?,
    };
    let (sha256, bytes) = upload.map_or_else(
        || (scan.sha256.clone().unwrap_or_default(), scan.bytes),
        |u| (u.sha256, u.bytes),
    );
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
    let state = job.store.tenant_state(&tenant.id)?;
    if let Some(a) = &job.approving {
        (rec.archived_as, rec.report) = (a.archived_as.clone(), a.report.clone());
        if a.version != state.version {
            // The version only grows, so this plan can never be approved: set it aside, so
            // nothing shows it as waiting any more (review s19 verify, F1 b).
            let set_aside = crate::store::Commit {
                tenant: tenant.id.clone(),
                expected_version: state.version,
                set_aside_plans: vec![a.id.clone()],
                lease: job.opts.lease.clone(),
                ..Default::default()
            };
            // A dry run (the console's preview of the held run) changes nothing.
            if !job.opts.dry_run {
                let committed = job.store.commit(&set_aside);
                if let Err(e) = committed {
                    tracing::warn!(tenant = %tenant.id, import_id = %a.id, "cannot set aside a held plan that can no longer be approved: {e:#}");
                }
            }
            bail!(
                "import {} of tenant {} cannot be approved: the directory changed after it was held, so it is set aside; upload the file again",
                rec.id,
                tenant.id
            );
        }
        super::held::check_not_superseded(job.store, &tenant.id, &a.id)?;
    }
    Ok((rec, state, scan))
}

/// The phases after `begin`, up to the [`Ending`] to commit. Skip reasons past the run's
/// budget ([`RunOptions::skip_memory`](super::RunOptions)), wherever they are found, fail the
/// run: nothing is applied.
fn run_phases(
    job: &Job<'_>,
    state: &TenantState,
    rec: &mut ImportRecord,
    scan: Scan,
    clock: &PhaseClock,
) -> Result<Ending> {
    let enc = go_on!(check_duplicate(job, state, rec, scan));
    let header = go_on!(map_header(job, rec, enc));
    let Layout {
        enc,
        delim,
        password_col,
        ..
    } = header.layout;
    let budget = SkipBudget::new(job.opts.skip_memory);
    match plan_rows(job, state, rec, header, &budget, clock) {
        Err(e) => match e.downcast_ref::<TooManySkips>() {
            Some(too_many) => {
                let msg = too_many.to_string();
                let reached = report::Reached::Header(enc, delim, password_col);
                Ok(fail(job, rec, msg, reached))
            }
            None => Err(e),
        },
        planned => planned,
    }
}

/// The phases from the row pass on: row pass, survey and hold decision, then hold, or main
/// pass and tally. Every skip reason kept is charged to `budget` (an error
/// [`TooManySkips`] past it).
fn plan_rows(
    job: &Job<'_>,
    state: &TenantState,
    rec: &mut ImportRecord,
    mut header: Header<'_>,
    budget: &SkipBudget,
    clock: &PhaseClock,
) -> Result<Ending> {
    let keys = RowKeys {
        secret: *job.store.fingerprint_key(),
        seal: RowSeal::new(),
    };
    let mut read = go_on!(read_rows(job, rec, &mut header, &keys, budget, clock));
    let empty = HashMap::new();
    let mut settings = MergeSettings {
        tenant: job.tenant,
        map: &header.map,
        now_ms: rec.started_at.timestamp_millis(),
        detail: job.detail,
        conflicts: &empty,
        missing: read.misshapen == 0,
        passwords: PasswordRules {
            secret: keys.secret,
            hash: !job.opts.dry_run,
            given: given_passwords(job),
            collect: None,
            seal: &keys.seal,
        },
        budget,
    };
    let decision = survey(job, state, &settings, &mut read, clock)?;
    settings.conflicts = &read.conflicts;
    let merge = MergeInput {
        store: &**job.store,
        settings: &settings,
        state,
        rows: &read.rows,
    };
    let findings = Findings {
        layout: header.layout,
        skips: &mut read.skips,
        fingerprints: &read.fingerprints,
        dropped: read.dropped,
        columns_absent: header.map.absent > 0,
    };
    if decision.held.is_some() && !job.opts.dry_run {
        return hold(job, rec, &merge, findings, &decision);
    }
    let merged = run_merge(&merge, &decision.quiet, !job.opts.dry_run)?;
    clock.done("plan");
    tally(job, rec, findings, merged, decision.held.is_some())
}

/// Duplicate check: a file identical to the last applied one ends the run as `duplicate`
/// (archived without its passwords). Then the encoding the scan found, or the run fails.
/// True when `last` (the tenant state's `last_applied_sha256`) names the file `sha256` under
/// this run's settings. A store written before 2026-11-30 (v1 among them) keeps the bare
/// sha256 of the last applied file, and the same bytes count as a `duplicate` against it as v1
/// counted them: that re-push applied once more undid an operator's `restore` of a user the
/// file lacks (review s19 upgrade F1).
fn is_last_applied(last: &str, job: &Job<'_>, sha256: &str) -> bool {
    match last.contains(':') {
        true => last == applied_digest(job, sha256),
        false => last == sha256,
    }
}

fn check_duplicate(
    job: &Job<'_>,
    state: &TenantState,
    rec: &mut ImportRecord,
    scan: Scan,
) -> Phase<Enc> {
    let duplicate = job.approving.is_none()
        && state
            .last_applied_sha256
            .as_deref()
            .is_some_and(|last| is_last_applied(last, job, &rec.sha256));
    if duplicate {
        rec.status = ImportStatus::Duplicate;
        rec.messages.push(
            "the file is identical (same sha256) to the last applied file, under the same import settings, so nothing was changed"
                .into(),
        );
        // The file moves to the archive like any other: without its passwords.
        let enc = scan.encoding.clone().unwrap_or(scan.fallback);
        let archive_copy = report::archive_early(
            job.tenant,
            job.input,
            &mut rec.messages,
            report::Reached::Scan(enc),
        );
        return Ok(Break(Ending {
            outputs: Outputs {
                report_csv: None,
                archive_copy,
            },
            ..Ending::default()
        }));
    }
    Ok(match scan.encoding {
        Ok(e) => Continue(e),
        Err(msg) => Break(fail(job, rec, msg, report::Reached::Scan(scan.fallback))),
    })
}

/// The file decoded, its header read and mapped to fields, ready for the row pass.
struct Header<'a> {
    reader: RowReader<Box<dyn Read + 'a>>,
    layout: Layout<'a>,
    map: Mapping,
}

/// Header mapping: decodes the file, finds the delimiter, reads the header row and maps its
/// columns to fields; an empty file, an unreadable header or a mapping problem fails the run.
fn map_header<'a>(job: &Job<'a>, rec: &mut ImportRecord, enc: Enc) -> Phase<Header<'a>> {
    // Approving reads the kept copy (UTF-8 when the file had a password column): the record
    // keeps the encoding the held run read the upload in (review s29, F6).
    rec.encoding = match job.approving.as_ref().and_then(|a| a.encoding.clone()) {
        Some(held) => held,
        None => enc.name().to_string(),
    };
    let (text, delim) =
        read::with_delimiter(read::text(job.input, enc)?, job.tenant.import.delimiter)?;
    rec.delimiter = read::delimiter_name(delim);
    let mut reader = RowReader::new(text, delim);
    let mut first = csv::ByteRecord::new();
    let header_ok = reader
        .read_row(&mut first)
        .context("cannot read the header row");
    let reached = report::Reached::Text(enc, delim);
    match header_ok {
        Ok(Some(_)) => {}
        Ok(None) => return Ok(Break(fail(job, rec, "the file is empty".into(), reached))),
        Err(e) => return Ok(Break(fail(job, rec, format!("{e:#}"), reached))),
    }
    if first.len() > bounds::MAX_COLUMNS {
        let msg = format!(
            "the header row has {} cells, more than the {} columns a user file may have: check \
             the delimiter (now {:?}) or that this is the user file",
            first.len(),
            bounds::MAX_COLUMNS,
            rec.delimiter
        );
        return Ok(Break(fail(job, rec, msg, reached)));
    }
    let headers: Vec<String> = first.iter().map(bounds::header_text).collect();
    drop(first); // a header line can be as large as the file: keep only the cut names
    if headers.iter().all(|h| h.trim().is_empty()) {
        let msg = "the file's first row is blank: it must be the header row that names the columns"
            .into();
        return Ok(Break(fail(job, rec, msg, reached)));
    }
    let map = match mapping::map_columns(&headers, job.tenant, delim) {
        Ok(m) => m,
        Err(msg) => return Ok(Break(fail(job, rec, msg, reached))),
    };
    let layout = Layout {
        input: job.input,
        enc,
        delim,
        password_col: map.password.map(|i| map.cols[i].index),
    };
    Ok(Continue(Header {
        reader,
        layout,
        map,
    }))
}

/// The run's keys for packed rows: the password fingerprint key and the seal of password
/// cells.
struct RowKeys {
    secret: [u8; 32],
    seal: RowSeal,
}

/// What the row pass leaves for the survey and the main pass.
struct RowsRead {
    rows: BucketRows,
    /// Skipped rows (row → reason).
    skips: HashMap<u64, String>,
    file_emails: FileEmails,
    /// Rows skipped because their email belongs to another key (row → reason).
    conflicts: HashMap<u64, String>,
    fingerprints: Vec<RowFingerprint>,
    /// Rows that passed the row pass (some may still be skipped: `conflicts`).
    valid: u64,
    /// Rows whose cell count is not the header's: while there are any, `on_missing` is not
    /// applied (they may be users the file lists).
    misshapen: u64,
    /// The file ends without a line break: a run that would take anyone out as missing is
    /// held (the file may have been cut short).
    unterminated: bool,
    /// Messages left out of the record so far.
    dropped: u64,
}

/// Row pass: validates every row and packs it into the run's bucket rows, remembering skip
/// reasons and emails. A file-level problem or a file without data rows fails the run; a file
/// in which no row is valid ends it as nothing imported.
fn read_rows(
    job: &Job<'_>,
    rec: &mut ImportRecord,
    header: &mut Header<'_>,
    keys: &RowKeys,
    budget: &SkipBudget,
    clock: &PhaseClock,
) -> Phase<RowsRead> {
    let map = &header.map;
    let mut dropped = 0u64;
    for n in &map.notes {
        push_msg(&mut rec.messages, &mut dropped, n.clone());
    }
    let check_emails = job.tenant.import.match_by != MatchBy::Email && map.email.is_some();
    let rows = BucketRows::new(BUCKETS, job.opts.row_memory);
    let cx = row_pass::RowContext {
        map,
        tenant: job.tenant,
        secret: &keys.secret,
        check_emails,
        given: given_passwords(job),
        seal: &keys.seal,
        budget,
    };
    let progress = job.opts.progress.as_deref();
    let mapped = report::Reached::Header(
        header.layout.enc,
        header.layout.delim,
        header.layout.password_col,
    );
    let pass = match row_pass::row_pass(&mut header.reader, &cx, &rows, progress)? {
        Ok(p) => p,
        Err(msg) => return Ok(Break(fail(job, rec, msg, mapped))),
    };
    if let Some(p) = progress {
        p(pass.rows);
    }
    clock.done("rows");
    tracing::debug!(
        spilled_bytes = rows.spilled(),
        "row pass done (rows past the memory budget wait in a temporary file)"
    );
    rec.counts.rows = pass.rows;
    for (_, n) in pass.notes {
        push_msg(&mut rec.messages, &mut dropped, n);
    }
    dropped += pass.notes_dropped;
    if rec.counts.rows == 0 {
        let msg = "the file has a header row but no data rows".into();
        return Ok(Break(fail(job, rec, msg, mapped)));
    }
    if pass.valid == 0 {
        let outputs = write_outputs(header.layout, &pass.skips)?;
        return Ok(Break(nothing_imported(
            rec,
            &pass.skips,
            outputs,
            Vec::new(),
        )));
    }
    if pass.misshapen > 0 && job.tenant.import.on_missing != OnMissing::Keep {
        push_msg(
            &mut rec.messages,
            &mut dropped,
            not_applied(job.tenant.import.on_missing, pass.misshapen),
        );
    }
    Ok(Continue(RowsRead {
        rows,
        skips: pass.skips,
        file_emails: pass.file_emails,
        conflicts: pass.clashes,
        fingerprints: pass.fingerprints,
        valid: pass.valid,
        misshapen: pass.misshapen,
        unterminated: pass.unterminated,
        dropped,
    }))
}

/// The message of a run that leaves `on_missing` out because `rows` rows are misshapen.
fn not_applied(on_missing: OnMissing, rows: u64) -> String {
    let (what, verb) = match on_missing {
        OnMissing::Delete => ("deleted", "delete"),
        _ => ("deactivated", "deactivate"),
    };
    let these = if rows == 1 {
        "1 row has".to_string()
    } else {
        format!("{rows} rows have")
    };
    format!(
        "nobody was {what} this run (on_missing = \"{verb}\"): {these} a different number of cells than the header, so the file may list users that could not be read; fix {} and upload the file again",
        if rows == 1 { "it" } else { "them" }
    )
}

/// Survey and hold decision: with stored users, and `on_missing` to apply or emails to check,
/// counts the missing users and finds email conflicts and quiet buckets before anything is
/// changed. The file's emails are freed here.
fn survey(
    job: &Job<'_>,
    state: &TenantState,
    settings: &MergeSettings<'_>,
    read: &mut RowsRead,
    clock: &PhaseClock,
) -> Result<HoldDecision> {
    let file_emails = std::mem::take(&mut read.file_emails);
    let profile = &job.tenant.import;
    let has_users = state.gens.iter().any(|g| *g != 0);
    let mut decision = HoldDecision {
        held: None,
        quiet: Vec::new(),
    };
    let sets_status = settings
        .map
        .cols
        .iter()
        .any(|c| matches!(c.field.as_str(), "active" | "deactivate"));
    // Matched by anything but the email, a row may bring back a soft-deleted user keeping its
    // stored email, which another user may hold now: only the survey finds that, so it runs
    // whatever `on_missing` (review s21: with `keep`, no email column and no status column it
    // did not, and two active users ended with one address).
    let may_revive = profile.match_by != MatchBy::Email;
    if has_users && (profile.on_missing != OnMissing::Keep || may_revive || sets_status) {
        let input = MergeInput {
            store: &**job.store,
            settings,
            state,
            rows: &read.rows,
        };
        let survey = run_survey(&input, &file_emails)?;
        read.conflicts.extend(survey.conflicts);
        let tenant = job.tenant.id.as_str();
        let revived = revived_conflicts(&survey.revived, &file_emails, settings.budget, |r| {
            email_holder(&**job.store, tenant, &r.email, &r.key)
        })?;
        read.conflicts.extend(revived);
        if !survey.releases.is_empty() {
            let mut skipped: HashSet<u64> = read.skips.keys().copied().collect();
            skipped.extend(read.conflicts.keys().copied());
            read.conflicts.extend(settle_releases(
                &survey.releases,
                &mut skipped,
                settings.budget,
            )?);
        }
        // Users the run takes out, missing or switched off by a status column (a row that is
        // skipped switches nobody off), of the users it could take out. More than the
        // percentage, compared without a division: 29 of 100 at 29 % is not held (0.29 * 100
        // is 28.999… in floating point).
        let switched_off = survey
            .switched_off
            .iter()
            .filter(|l| !read.conflicts.contains_key(l) && !read.skips.contains_key(l))
            .count() as u64;
        let out = survey.missing + switched_off;
        let base = survey.current + survey.other_active;
        let over = out as f64 * 100.0 > profile.max_missing_percent * base as f64;
        // A file none of whose valid rows survives (a key twice, an email another user
        // holds) applies nothing: it ends as nothing imported, never held (review s21).
        let late = (read.conflicts.keys())
            .filter(|l| !read.skips.contains_key(l))
            .count() as u64;
        let applies_some = late < read.valid;
        // A file that ends without a line break may have been cut short: a client that
        // stopped mid-upload still closed it (OpenSSH's sftp does on Ctrl-C), and the users
        // after the cut look missing. Such a run is held when it would take out anyone missing
        // (review s30); approving applies it as it is.
        let cut_short = read.unterminated && survey.missing > 0;
        if job.approving.is_none() && (out >= 5 && over || cut_short) && applies_some {
            decision.held = Some(HeldCount {
                missing: survey.missing,
                switched_off,
                cut_short,
            });
        }
        decision.quiet = survey.quiet;
        clock.done("survey");
    }
    Ok(decision)
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
