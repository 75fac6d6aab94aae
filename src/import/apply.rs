//! Running the bucket passes (survey, then merge with staging) over all cores.
//!
//! Data enters as the run's packed rows by bucket ([`BucketRows`]) and the tenant's state; the
//! survey pass leaves counts for the hold decision, the main pass leaves staged bucket
//! generations (written to the store but invisible) plus counts, change details and late skips.
//! The engine's commit phase then makes the run visible in one transaction; on any failure the
//! staged buckets are discarded.

use super::merge::{merge_bucket, merge_quiet, BucketMerge, Counts, MergeSettings};
use super::spill::BucketRows;
use super::survey::survey;
use crate::model::bucket::BUCKETS;
use crate::model::changelog::bucket_changes;
use crate::store::{Directory, TenantState};
use anyhow::Result;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Calls `f` for every bucket index on `threads` threads (at most 16); returns the results in
/// bucket order.
pub fn par_buckets<T: Send>(
    threads: usize,
    f: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let threads = threads.clamp(1, 16);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<(usize, Result<T>)>> = Mutex::new(Vec::with_capacity(BUCKETS));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut local = Vec::new();
                loop {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    if b >= BUCKETS || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = f(b);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    local.push((b, r));
                }
                if let Ok(mut all) = results.lock() {
                    all.extend(local);
                }
            });
        }
    });
    let mut all = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a planning thread failed"))?;
    all.sort_by_key(|(b, _)| *b);
    all.into_iter().map(|(_, r)| r).collect()
}

/// What the survey and the main pass read: the stored directory, the run's merge settings and
/// its bucket rows.
pub struct MergeInput<'a> {
    pub store: &'a dyn Directory,
    pub settings: &'a MergeSettings<'a>,
    pub state: &'a TenantState,
    pub rows: &'a BucketRows,
}

/// Totals of the survey pass.
#[derive(Default)]
pub struct Survey {
    pub current: u64,
    pub missing: u64,
    /// See `survey::SurveyPart`: active users a row switches off, active users `current`
    /// leaves out, deleted users coming back with their stored email.
    pub switched_off: Vec<u64>,
    pub other_active: u64,
    pub revived: Vec<super::survey::Revived>,
    pub conflicts: Vec<(u64, String)>,
    /// Emails taken as given up by their owners (see `survey::Release`).
    pub releases: Vec<super::survey::Release>,
    /// Per bucket: nothing in it changes (see `survey::SurveyPart::quiet`).
    pub quiet: Vec<bool>,
}

/// Surveys every bucket; a bucket whose rows were found unchanged gets them back compacted
/// (see `survey`), freeing their values before the main pass.
pub fn run_survey(
    input: &MergeInput<'_>,
    file_emails: &super::row_pass::FileEmails,
) -> Result<Survey> {
    let MergeInput {
        store,
        settings: ctx,
        state,
        rows,
    } = *input;
    let tenant = ctx.tenant.id.as_str();
    let parts = par_buckets(store.planning_threads(), |b| {
        let blob = store.bucket(tenant, b as u16, state.gen(b))?;
        let owned = rows.take(b)?;
        let parts: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let mut part = survey(ctx, blob.as_deref(), &parts, file_emails)?;
        drop(parts);
        match part.packed.take() {
            Some(p) => {
                drop(owned);
                rows.add(b, p)?;
            }
            None => {
                for p in owned {
                    rows.add(b, p)?;
                }
            }
        }
        Ok(part)
    })?;
    let mut s = Survey::default();
    for p in parts {
        s.current += p.current;
        s.missing += p.missing;
        s.switched_off.extend(p.switched_off);
        s.other_active += p.other_active;
        s.revived.extend(p.revived);
        s.conflicts.extend(p.conflicts);
        s.releases.extend(p.releases);
        s.quiet.push(p.quiet);
    }
    Ok(s)
}

/// The outcome of the main pass.
#[derive(Default)]
pub struct Merged {
    pub counts: Counts,
    /// Rows that switched an active user off (see `merge::BucketMerge`).
    pub switched_off: u64,
    pub changes: Vec<super::merge::Change>,
    pub late_skips: Vec<(u64, String)>,
    /// (bucket, generation) written to the store but not yet committed.
    pub staged: Vec<(u16, u64)>,
}

/// Merges every bucket; when `stage`, writes each changed bucket under a new generation. Each
/// bucket's rows are freed as soon as that bucket is merged. Buckets that `quiet` (from
/// the survey, empty when there was none) marks are not read from the store.
pub fn run_merge(input: &MergeInput<'_>, quiet: &[bool], stage: bool) -> Result<Merged> {
    let MergeInput {
        store,
        settings: ctx,
        state,
        rows,
    } = *input;
    let tenant = ctx.tenant.id.as_str();
    let staged_so_far: Mutex<Vec<(u16, u64)>> = Mutex::new(Vec::new());
    let parts = par_buckets(store.planning_threads(), |b| {
        let gen = state.gen(b);
        let owned = rows.take(b)?;
        let parts: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        if gen == 0 && parts.is_empty() {
            return Ok((BucketMerge::default(), None));
        }
        if quiet.get(b).copied().unwrap_or(false) {
            if let Some(merged) = merge_quiet(ctx, &parts)? {
                return Ok((merged, None));
            }
        }
        let blob = store.bucket(tenant, b as u16, gen)?;
        let mut merged = merge_bucket(ctx, blob.as_deref(), &parts)?;
        drop(parts);
        drop(owned);
        let mut staged = None;
        if let (true, Some(new)) = (stage, merged.blob.take()) {
            let logged = bucket_changes(blob.as_deref(), &new)?;
            drop(blob);
            let g = store.stage_bucket(tenant, b as u16, &new)?;
            if let Ok(mut s) = staged_so_far.lock() {
                s.push((b as u16, g));
            }
            store.stage_changes(tenant, b as u16, g, &logged)?;
            staged = Some((b as u16, g));
        }
        merged.blob = None;
        Ok((merged, staged))
    });
    let parts = match parts {
        Ok(p) => p,
        Err(e) => {
            let staged = staged_so_far.into_inner().unwrap_or_default();
            let _ = store.discard_staged(tenant, &staged);
            return Err(e);
        }
    };
    let mut out = Merged::default();
    for (p, staged) in parts {
        out.counts.add(&p.counts);
        out.switched_off += p.switched_off;
        out.changes.extend(p.changes);
        out.late_skips.extend(p.late_skips);
        out.staged.extend(staged);
    }
    Ok(out)
}
