//! How a run ends: the late phases (hold, tally), the two early endings every phase can reach
//! (`fail`: the file as a whole; `nothing_imported`: no row could be applied), and the commit.
//!
//! Data enters as the record the phases wrote into and an [`Ending`] (staged buckets, failure
//! report and archive copy, preview details, a held run's plan); it leaves as the record
//! committed to the store (unless a dry run) together with the staged buckets, the ledger
//! entry and the held plan, in one commit, and as a [`Done`] for the caller.

use super::apply::{MergeInput, Merged};
use super::bounds::{self, MAX_MESSAGES};
use super::held::{self, HoldParts};
use super::job::{applied_digest, Done, Job};
use super::merge::Change;
use super::read::Layout;
use super::record::RowFingerprint;
use super::report;
use super::ImportOutcome;
use crate::config::OnMissing;
use crate::model::{Counts, ImportRecord, ImportStatus};
use crate::store::{Commit, LedgerEntry, LedgerState, TenantState};
use anyhow::{bail, Result};
use chrono::Utc;
use std::collections::{hash_map::Entry, HashMap};

/// How a run ends: what the commit writes besides the record.
#[derive(Default)]
pub(super) struct Ending {
    /// (bucket, generation) staged by the main pass.
    pub(super) staged: Vec<(u16, u64)>,
    pub(super) outputs: Outputs,
    /// A preview's change details.
    pub(super) changes: Vec<Change>,
    /// A held run: the plan kept for `approve` (see `held`).
    pub(super) held_plan: Option<Vec<u8>>,
}

/// The failure report and the password-blanked archive copy of a run.
#[derive(Default)]
pub(super) struct Outputs {
    pub(super) report_csv: Option<Vec<u8>>,
    pub(super) archive_copy: Option<Vec<u8>>,
}

pub(super) fn push_msg(msgs: &mut Vec<String>, dropped: &mut u64, m: String) {
    if msgs.len() < MAX_MESSAGES {
        msgs.push(m);
    } else {
        *dropped += 1;
    }
}

/// What the survey decided.
pub(super) struct HoldDecision {
    /// Users the run would take out, when that is too many (`max_missing_percent`): the run is
    /// held, unless it is approving or a dry run.
    pub(super) held: Option<HeldCount>,
    /// Per bucket: nothing in it changes (empty without a survey).
    pub(super) quiet: Vec<bool>,
}

/// The users a held run would take out: missing from the file (`on_missing` acts on them), and
/// active users its `active`/`deactivate` column switches off.
#[derive(Clone, Copy, Debug)]
pub(super) struct HeldCount {
    pub(super) missing: u64,
    pub(super) switched_off: u64,
    /// Held because the file ends without a line break (it may have been cut short), whatever
    /// the share of users it takes out.
    pub(super) cut_short: bool,
}

/// What the file gave besides its rows: how to read it again, the skipped rows, the password
/// fingerprints and the count of messages left out so far.
pub(super) struct Findings<'r> {
    pub(super) layout: Layout<'r>,
    pub(super) skips: &'r mut HashMap<u64, String>,
    pub(super) fingerprints: &'r [RowFingerprint],
    pub(super) dropped: u64,
    /// The profile maps columns the file does not have (`Mapping::absent`): `partial`.
    pub(super) columns_absent: bool,
}

/// The failure report and the password-blanked archive copy: a second pass over the file.
pub(super) fn write_outputs(layout: Layout<'_>, skips: &HashMap<u64, String>) -> Result<Outputs> {
    let (report_csv, archive_copy) = report::write(
        layout.input,
        layout.enc,
        layout.delim,
        &report::Want {
            skips,
            password_col: layout.password_col,
            password_header: None,
            keep_col: None,
            keep_mapped: &[],
            // No mapped password column: a column headed like one is blank all the same.
            password_like: layout.password_col.is_none(),
            header_of: None,
        },
    )?;
    Ok(Outputs {
        report_csv,
        archive_copy,
    })
}

/// Hold: records the run and keeps the file and profile for `approve`; changes nothing.
pub(super) fn hold(
    job: &Job<'_>,
    rec: &mut ImportRecord,
    merge: &MergeInput<'_>,
    findings: Findings<'_>,
    decision: &HoldDecision,
) -> Result<Ending> {
    let Some(HeldCount {
        missing,
        switched_off,
        cut_short,
    }) = decision.held
    else {
        bail!("a run was held without users missing");
    };
    let profile = &job.tenant.import;
    for (l, r) in merge.settings.conflicts {
        if let Entry::Vacant(e) = findings.skips.entry(*l) {
            merge.settings.budget.charge_copy(r)?;
            e.insert(r.clone());
        }
    }
    // The plan first: it may fail (its merge charges the skip budget too), and the record is
    // then failed as the engine found it.
    let map = merge.settings.map;
    let plan = held::plan_bytes(&HoldParts {
        merge,
        quiet: &decision.quiet,
        fingerprints: findings.fingerprints,
        layout: findings.layout,
        key_col: map.cols[map.key].index,
        record: rec,
    })?;
    rec.status = ImportStatus::Held;
    rec.counts.skipped = findings.skips.len() as u64;
    rec.counts.errors = rec.counts.skipped;
    let mut dropped = findings.dropped;
    skip_messages(rec, findings.skips, &mut dropped);
    match profile.on_missing {
        OnMissing::Delete => rec.counts.deleted = missing,
        _ => rec.counts.deactivated = missing,
    }
    rec.counts.deactivated += switched_off;
    let what = match (missing, switched_off) {
        (m, 0) => format!("{m} users are missing from the file"),
        (0, s) => format!("{s} active users are made inactive by the file"),
        (m, s) => format!(
            "{m} users are missing from the file and {s} active users are made inactive by it"
        ),
    };
    let why = if cut_short {
        "and the file does not end with a line break, so it may have been cut short (an upload stopped early); nothing was changed. If the file is whole, approve".to_string()
    } else {
        format!(
            "more than max_missing_percent ({}%) of the users it could act on; nothing was changed. Approve",
            profile.max_missing_percent
        )
    };
    rec.messages.insert(
        0,
        format!(
            "held: {what}, {why} with `roster approve {} {}` to apply this run",
            job.tenant.id, rec.id
        ),
    );
    let outputs = write_outputs(findings.layout, findings.skips)?;
    Ok(Ending {
        outputs,
        held_plan: Some(plan),
        ..Ending::default()
    })
}

/// The first [`MAX_MESSAGES`] skip reasons, by row, into the record's messages, and how many
/// were left out.
fn skip_messages(rec: &mut ImportRecord, skips: &HashMap<u64, String>, dropped: &mut u64) {
    let mut first: Vec<(&u64, &String)> = skips.iter().collect();
    first.sort();
    for (_, r) in first.iter().take(MAX_MESSAGES) {
        push_msg(&mut rec.messages, dropped, (*r).clone());
    }
    *dropped += first.len().saturating_sub(MAX_MESSAGES) as u64;
    if *dropped > 0 {
        rec.messages.push(format!(
            "… and {dropped} more messages (every skipped row is in the failure report)"
        ));
    }
}

/// Tally after the main pass: counts, skip messages, status and the failure report; a run in
/// which nothing could be applied ends as nothing imported, its staged buckets discarded.
pub(super) fn tally(
    job: &Job<'_>,
    rec: &mut ImportRecord,
    findings: Findings<'_>,
    merged: Merged,
    held: bool,
) -> Result<Ending> {
    let Findings {
        layout,
        skips,
        mut dropped,
        columns_absent,
        ..
    } = findings;
    for (l, r) in merged.late_skips {
        skips.entry(l).or_insert(r);
    }
    let c = merged.counts;
    let skipped = skips.len() as u64;
    rec.counts = Counts {
        rows: rec.counts.rows,
        skipped,
        errors: skipped,
        ..c
    };
    let applied = c.inserted + c.updated + c.unchanged + c.restored + merged.switched_off;
    let outputs = write_outputs(layout, skips)?;
    if applied == 0 {
        job.store.discard_staged(&job.tenant.id, &merged.staged)?;
        // Nothing is applied, so a preview lists no change either (review s21: it listed
        // the deletions of a run it said would change nothing).
        return Ok(nothing_imported(rec, skips, outputs, Vec::new()));
    }
    skip_messages(rec, skips, &mut dropped);
    rec.status = if held {
        ImportStatus::Held
    } else if rec.counts.skipped > 0 || columns_absent {
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
    Ok(Ending {
        staged: merged.staged,
        outputs,
        changes: merged.changes,
        held_plan: None,
    })
}

/// Every row was skipped: an error, nothing applied (not even `on_missing`). `changes` are a
/// preview's details.
pub(super) fn nothing_imported(
    rec: &mut ImportRecord,
    skips: &HashMap<u64, String>,
    outputs: Outputs,
    changes: Vec<Change>,
) -> Ending {
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
    Ending {
        outputs,
        changes,
        ..Ending::default()
    }
}

/// The run fails as a whole with `msg`; the file is archived without its passwords as far as
/// the run `reached` (see `report::archive_early`).
pub(super) fn fail(
    job: &Job<'_>,
    rec: &mut ImportRecord,
    msg: String,
    reached: report::Reached,
) -> Ending {
    rec.status = ImportStatus::Error;
    rec.counts.errors = 1;
    rec.messages.insert(0, msg);
    let archive_copy = report::archive_early(job.tenant, job.input, &mut rec.messages, reached);
    Ending {
        outputs: Outputs {
            report_csv: None,
            archive_copy,
        },
        ..Ending::default()
    }
}

/// Commit: writes the record, complete (see `filing`), with the staged buckets and a held
/// run's plan in one store commit, unless this is a dry run.
pub(super) fn commit(
    job: Job<'_>,
    state: &TenantState,
    mut rec: ImportRecord,
    ending: Ending,
) -> Result<Done> {
    let Ending {
        staged,
        outputs,
        changes,
        held_plan,
    } = ending;
    let Outputs {
        report_csv,
        archive_copy,
    } = outputs;
    rec.finished_at = Utc::now();
    bounds::bound_messages(&mut rec.messages);
    let report_csv = report_csv.or_else(|| report::for_failed_run(&rec));
    if !job.opts.dry_run {
        if let Some(f) = &job.opts.filing {
            f.complete(&mut rec, report_csv.as_deref(), archive_copy.as_deref())?;
        }
        let applied = matches!(rec.status, ImportStatus::Success | ImportStatus::Partial);
        let set_aside_plans = set_aside(&job, &mut rec)?;
        let commit = Commit {
            tenant: job.tenant.id.clone(),
            expected_version: state.version,
            buckets: staged.clone(),
            last_applied_sha256: applied.then(|| applied_digest(&job, &rec.sha256)),
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
            put_plan: held_plan.map(|plan| (rec.id.clone(), plan)),
            remove_plan: job.approving.as_ref().map(|a| a.id.clone()),
            set_aside_plans,
            lease: job.opts.lease.clone(),
            mail: job
                .opts
                .mail
                .as_ref()
                .and_then(|compose| compose(&rec, report_csv.as_deref())),
        };
        if let Err(e) = job.store.commit(&commit) {
            // The commit's error is the run's; a discard that fails too (the database is
            // gone) is logged, and the store sweeps those generations later.
            if let Err(d) = job.store.discard_staged(&job.tenant.id, &staged) {
                tracing::warn!(tenant = %job.tenant.id, error = %format!("{d:#}"),
                    "cannot discard the staged buckets of a run whose commit failed; they are swept later");
            }
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

/// The tenant's older held plans this run sets aside, when it read a newer file
/// (`held::read_a_newer_file`); the record says which.
fn set_aside(job: &Job<'_>, rec: &mut ImportRecord) -> Result<Vec<String>> {
    if !rec.status.read_a_file() {
        return Ok(Vec::new());
    }
    let approving = job.approving.as_ref().map(|a| a.id.as_str());
    let older: Vec<String> = (job.store.held_plans(&job.tenant.id)?)
        .into_iter()
        .filter(|id| *id != rec.id && Some(id.as_str()) != approving)
        .collect();
    if !older.is_empty() {
        rec.messages.push(format!(
            "this newer file set aside the held run(s) {}: they can no longer be approved",
            older.join(", ")
        ));
    }
    Ok(older)
}
