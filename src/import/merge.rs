//! Merging one bucket of a tenant's directory: the stored users of the bucket and the file's
//! rows that hash to it, walked together in key order ([`merge_bucket`]), with the run's
//! [`MergeSettings`]. The helpers the survey shares (`missing_action`, `unchanged`, …) live
//! here too.
//!
//! Data enters as the stored bucket blob (or none) and the bucket's arena of packed rows; it
//! leaves as a [`BucketMerge`]: counts, the new bucket blob (only when something changed),
//! optional change details for a preview, and late skip reasons (duplicated keys, email
//! conflicts, charged to the run's skip budget). Nothing is written here: `apply` stages and the
//! engine commits.

use super::bounds::SkipBudget;
use super::mapping::Mapping;
use super::record::{unpack, GivenPassword, GivenPasswords, PackedRow, RowSeal};
use crate::config::{Activate, EmptyCells, OnMissing, Tenant};
use crate::model::changelog::{kind_of, shown_value, status_name, ChangeKind};
use crate::model::packed::{
    bucket_entries, bucket_push, digest_of, flags_of, status_of, UserRec, FLAG_MANAGED,
    FLAG_MISSING, STATUS_ACTIVE, STATUS_DELETED, STATUS_INACTIVE,
};
pub use crate::model::{Change, Counts, FieldChange};
use anyhow::{bail, Result};
use std::collections::HashMap;

/// What merging a bucket needs to know besides the bucket: the run's settings.
pub struct MergeSettings<'a> {
    pub tenant: &'a Tenant,
    pub map: &'a Mapping,
    pub now_ms: i64,
    /// Collect [`Change`]s (preview), at most this many per bucket.
    pub detail: usize,
    /// Rows skipped because their email belongs to someone else (line → reason).
    pub conflicts: &'a HashMap<u64, String>,
    /// Apply `on_missing` (false when the run only previews a hold).
    pub missing: bool,
    pub passwords: PasswordRules<'a>,
    /// The run's budget of skip reasons: late skips are charged to it, and past it the bucket
    /// fails with [`TooManySkips`](super::bounds::TooManySkips).
    pub budget: &'a SkipBudget,
}

/// How a merge treats the rows' passwords.
#[derive(Clone, Copy)]
pub struct PasswordRules<'a> {
    /// The key of password fingerprints.
    pub secret: [u8; 32],
    /// Hash new or changed passwords (false for a preview).
    pub hash: bool,
    /// Approving a held run: the passwords it kept (see [`GivenPasswords`]).
    pub given: Option<&'a GivenPasswords>,
    /// Holding a run: every password hash computed goes here as (row, hash).
    pub collect: Option<&'a std::sync::Mutex<Vec<(u64, String)>>>,
    /// Opens the password cells of packed rows.
    pub seal: &'a RowSeal,
}

/// The result of merging one bucket.
#[derive(Default)]
pub struct BucketMerge {
    pub blob: Option<Vec<u8>>,
    pub counts: Counts,
    /// Rows that switched an active user off (counted `deactivated`, with the users
    /// `on_missing` deactivated): applied rows all the same.
    pub switched_off: u64,
    pub changes: Vec<Change>,
    pub late_skips: Vec<(u64, String)>,
}

/// The tenant says who is active through an `active`/`deactivate` column: its profile maps
/// one, or this file has one.
fn status_by_column(ctx: &MergeSettings<'_>) -> bool {
    let status = |f: &str| matches!(f, "active" | "deactivate");
    ctx.map.cols.iter().any(|c| status(&c.field))
        || ctx.tenant.import.columns.keys().any(|f| status(f))
}

pub(super) fn missing_action(ctx: &MergeSettings<'_>, rec: &[u8]) -> Option<u8> {
    if !ctx.missing || flags_of(rec) & FLAG_MANAGED == 0 {
        return None;
    }
    match (ctx.tenant.import.on_missing, status_of(rec)) {
        (OnMissing::Deactivate, STATUS_ACTIVE) => Some(STATUS_INACTIVE),
        (OnMissing::Delete, s) if s != STATUS_DELETED => Some(STATUS_DELETED),
        _ => None,
    }
}

pub(super) fn unpack_all<'a>(arenas: &[&'a [u8]]) -> Result<Vec<PackedRow<'a>>> {
    let mut rows = Vec::new();
    for a in arenas {
        rows.extend(unpack(a)?);
    }
    Ok(rows)
}

/// Groups sorted rows by key: (key, the single applicable row if any, all lines).
fn groups<'a>(rows: &[PackedRow<'a>]) -> Vec<(&'a [u8], Vec<PackedRow<'a>>)> {
    let mut out: Vec<(&'a [u8], Vec<PackedRow<'a>>)> = Vec::new();
    for r in rows {
        match out.last_mut() {
            Some((k, g)) if *k == r.key => g.push(*r),
            _ => out.push((r.key, vec![*r])),
        }
    }
    out
}

/// The stored user has the row's digest and is neither deleted, missing nor unmanaged: the
/// row changes nothing (the test `merge_bucket` uses for `unchanged`).
pub(super) fn unchanged(stored: &[u8], r: &PackedRow<'_>) -> bool {
    digest_of(stored) == Some(r.digest)
        && status_of(stored) != STATUS_DELETED
        && flags_of(stored) & FLAG_MISSING == 0
        && flags_of(stored) & FLAG_MANAGED != 0
}

/// The merge of a bucket the survey found quiet: `None` when one of its rows was found to
/// clash with another user's email after all (then the bucket is merged in full).
pub fn merge_quiet(ctx: &MergeSettings<'_>, arenas: &[&[u8]]) -> Result<Option<BucketMerge>> {
    let rows = unpack_all(arenas)?;
    if rows.iter().any(|r| ctx.conflicts.contains_key(&r.line)) {
        return Ok(None);
    }
    let mut merged = BucketMerge::default();
    merged.counts.unchanged = rows.len() as u64;
    Ok(Some(merged))
}

pub(super) fn row_email<'a>(ctx: &MergeSettings<'_>, r: &PackedRow<'a>) -> Result<Option<&'a str>> {
    let Some(ei) = ctx.map.email else {
        return Ok(None);
    };
    Ok(r.values()?
        .into_iter()
        .find(|(c, _)| *c == ei)
        .and_then(|(_, v)| v))
}

/// Merges one bucket (see the module doc).
pub fn merge_bucket(
    ctx: &MergeSettings<'_>,
    stored: Option<&[u8]>,
    arenas: &[&[u8]],
) -> Result<BucketMerge> {
    let stored = match stored {
        Some(s) => bucket_entries(s)?,
        None => Vec::new(),
    };
    let mut rows = unpack_all(arenas)?;
    rows.sort_unstable_by(|a, b| a.key.cmp(b.key).then(a.line.cmp(&b.line)));
    let groups = groups(&rows);
    let mut merged = BucketMerge::default();
    let mut out = Vec::with_capacity(
        stored
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>()
            + arenas.iter().map(|a| a.len()).sum::<usize>(),
    );
    let mut changed = false;
    let (mut i, mut j) = (0, 0);
    while i < stored.len() || j < groups.len() {
        let order = match (stored.get(i), groups.get(j)) {
            (Some((sk, _)), Some((gk, _))) => sk.cmp(gk),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let stored_here = (order != std::cmp::Ordering::Greater).then(|| stored[i]);
        let group_here = (order != std::cmp::Ordering::Less).then(|| &groups[j]);
        if stored_here.is_some() {
            i += 1;
        }
        if group_here.is_some() {
            j += 1;
        }
        let row = match group_here {
            Some((key, g)) => applicable_row(ctx, key, g, &mut merged.late_skips)?,
            None => None,
        };
        match (stored_here, group_here, row) {
            (Some((k, v)), None, _) => match missing_action(ctx, v) {
                Some(status) => {
                    let enc = mark_missing(ctx, &mut merged, k, v, status)?;
                    bucket_push(&mut out, k, &enc);
                    changed = true;
                }
                None => bucket_push(&mut out, k, v),
            },
            (Some((k, v)), Some(_), None) => bucket_push(&mut out, k, v),
            (Some((k, v)), Some(_), Some(r)) => {
                if unchanged(v, &r) {
                    merged.counts.unchanged += 1;
                    bucket_push(&mut out, k, v);
                    continue;
                }
                let enc = update_stored(ctx, &mut merged, (k, v), &r)?;
                bucket_push(&mut out, k, &enc);
                changed = true;
            }
            (None, Some(_), Some(r)) if r.compact() => {
                bail!("a compacted row of bucket planning has no stored user");
            }
            (None, Some((k, _)), Some(r)) if ctx.detail == 0 && r.password.is_none() => {
                let mut enc = Vec::with_capacity(256);
                insert_fast(ctx, &r, &mut enc)?;
                bucket_push(&mut out, k, &enc);
                changed = true;
                merged.counts.inserted += 1;
            }
            (None, Some((k, _)), Some(r)) => {
                let rec = insert(ctx, &r)?;
                let mut enc = Vec::new();
                rec.encode_into(&mut enc);
                bucket_push(&mut out, k, &enc);
                changed = true;
                merged.counts.inserted += 1;
                detail(ctx, &mut merged.changes, || insert_change(k, &rec, &r));
            }
            (None, Some(_), None) | (None, None, _) => {}
        }
    }
    if changed {
        merged.blob = Some(out);
    }
    Ok(merged)
}

/// The skips of the rows of a key given on more than one row (`group`, sorted by key): none of
/// them is imported (design §5.2). The survey finds them too, so a held run reports them. Each
/// reason is charged to the run's skip budget (as a copy when the survey charged it already:
/// it is in `ctx.conflicts`).
pub(super) fn duplicate_skips(
    ctx: &MergeSettings<'_>,
    key: &[u8],
    group: &[PackedRow<'_>],
    out: &mut Vec<(u64, String)>,
) -> Result<()> {
    let key_header = ctx.map.cols[ctx.map.key].header.as_str();
    let lines = super::bounds::listed(group.iter().map(|r| r.line));
    let key = String::from_utf8_lossy(key);
    for r in group.iter().filter(|r| !r.present_only()) {
        let reason = format!(
            "row {}: {key_header} {key:?} appears on more than one row (rows {lines}), so none of them is imported",
            r.line,
        );
        match ctx.conflicts.contains_key(&r.line) {
            true => ctx.budget.charge_copy(&reason)?,
            false => ctx.budget.charge(&reason)?,
        }
        out.push((r.line, reason));
    }
    Ok(())
}

/// The row of a key group that applies, if any: a key on more than one row applies none of
/// them, and a row whose email belongs to someone else does not apply (both become late
/// skips, charged to the run's skip budget).
fn applicable_row<'a>(
    ctx: &MergeSettings<'_>,
    key: &[u8],
    group: &[PackedRow<'a>],
    late_skips: &mut Vec<(u64, String)>,
) -> Result<Option<PackedRow<'a>>> {
    if group.len() > 1 {
        duplicate_skips(ctx, key, group, late_skips)?;
        return Ok(None);
    }
    let Some(r) = group.first().filter(|r| !r.present_only()) else {
        return Ok(None);
    };
    match ctx.conflicts.get(&r.line) {
        Some(reason) => {
            ctx.budget.charge_copy(reason)?;
            late_skips.push((r.line, reason.clone()));
            Ok(None)
        }
        None => Ok(Some(*r)),
    }
}

/// A stored user whose row changes it (`(key, encoded record)`): its new encoding, counted as
/// restored, updated or (only its bookkeeping changed) unchanged.
fn update_stored(
    ctx: &MergeSettings<'_>,
    merged: &mut BucketMerge,
    (k, v): (&[u8], &[u8]),
    r: &PackedRow<'_>,
) -> Result<Vec<u8>> {
    if r.compact() {
        bail!("a compacted row of bucket planning no longer matches its stored user");
    }
    let mut rec = UserRec::decode(v)?;
    let before = rec.status;
    let fchanges = update(ctx, &mut rec, r)?;
    let mut enc = Vec::new();
    rec.encode_into(&mut enc);
    let key = || String::from_utf8_lossy(k).to_string();
    // Counted as the change log names the change (`changelog::kind_of`), so the record's
    // counts and the log agree.
    let fields_changed = fchanges.iter().any(|c| c.field != "status");
    match kind_of(before, rec.status, fields_changed) {
        None => merged.counts.unchanged += 1,
        Some(ChangeKind::Restored) => {
            merged.counts.restored += 1;
            detail(ctx, &mut merged.changes, || Change::Restore {
                key: key(),
                changes: fchanges,
            });
        }
        Some(kind) => {
            match kind {
                ChangeKind::Deactivated => {
                    merged.counts.deactivated += 1;
                    merged.switched_off += 1;
                }
                ChangeKind::Deleted => merged.counts.deleted += 1,
                _ => merged.counts.updated += 1,
            }
            detail(ctx, &mut merged.changes, || Change::Update {
                key: key(),
                changes: fchanges,
            });
        }
    }
    Ok(enc)
}

/// A stored user missing from the file, given `status` by `on_missing`: its new encoding.
fn mark_missing(
    ctx: &MergeSettings<'_>,
    merged: &mut BucketMerge,
    k: &[u8],
    v: &[u8],
    status: u8,
) -> Result<Vec<u8>> {
    let mut rec = UserRec::decode(v)?;
    rec.status = status;
    rec.flags |= FLAG_MISSING;
    rec.updated_at = ctx.now_ms;
    let key = String::from_utf8_lossy(k).to_string();
    if status == STATUS_DELETED {
        rec.deleted_at = ctx.now_ms;
        merged.counts.deleted += 1;
        detail(ctx, &mut merged.changes, || Change::Delete { key });
    } else {
        merged.counts.deactivated += 1;
        detail(ctx, &mut merged.changes, || Change::Deactivate { key });
    }
    let mut enc = Vec::new();
    rec.encode_into(&mut enc);
    Ok(enc)
}

/// The preview's detail of an inserted user.
fn insert_change(k: &[u8], rec: &UserRec, r: &PackedRow<'_>) -> Change {
    Change::Insert {
        key: String::from_utf8_lossy(k).to_string(),
        fields: rec
            .fields
            .iter()
            .map(|(n, v)| (n.clone(), shown_value(v)))
            .chain(
                (!rec.pw_hash.is_empty() || r.password.is_some())
                    .then(|| ("password".to_string(), "(set)".to_string())),
            )
            .chain(std::iter::once((
                "status".to_string(),
                status_name(rec.status).to_string(),
            )))
            .collect(),
    }
}

fn detail(ctx: &MergeSettings<'_>, changes: &mut Vec<Change>, f: impl FnOnce() -> Change) {
    if changes.len() < ctx.detail {
        changes.push(f());
    }
}

/// The argon2id hash to store for row `line`'s password: taken from the held run being approved,
/// or computed (and handed to `ctx.passwords.collect` when a held run is keeping its hashes).
fn hash_password(ctx: &MergeSettings<'_>, line: u64, pw: &[u8]) -> Result<String> {
    if let Some(given) = ctx.passwords.given {
        return match given.get(&line) {
            Some(GivenPassword { hash: Some(h), .. }) => Ok(h.clone()),
            _ => bail!(
                "row {line}: the held run kept no password hash for this row; upload the file again"
            ),
        };
    }
    if !ctx.passwords.hash {
        return Ok(String::new());
    }
    let hash = crate::model::argon::hash(&ctx.passwords.seal.open(line, pw))?;
    if let Some(kept) = ctx.passwords.collect {
        if let Ok(mut k) = kept.lock() {
            k.push((line, hash.clone()));
        }
    }
    Ok(hash)
}

fn fingerprint(ctx: &MergeSettings<'_>, line: u64, pw: &[u8]) -> [u8; 16] {
    match ctx.passwords.given.and_then(|g| g.get(&line)) {
        Some(given) => given.fp,
        None => super::record::password_fp(
            &ctx.passwords.secret,
            &String::from_utf8_lossy(&ctx.passwords.seal.open(line, pw)),
        ),
    }
}

/// Status of a new user.
fn new_status(ctx: &MergeSettings<'_>, r: &PackedRow<'_>) -> u8 {
    let active = match r.active() {
        Some(a) => a,
        None => match ctx.tenant.import.activate {
            Activate::Always => true,
            Activate::WithPassword => r.password.is_some(),
        },
    };
    if active {
        STATUS_ACTIVE
    } else {
        STATUS_INACTIVE
    }
}

/// Encodes a new user without a password straight from the packed row (no field strings).
fn insert_fast(ctx: &MergeSettings<'_>, r: &PackedRow<'_>, out: &mut Vec<u8>) -> Result<()> {
    let mut head = UserRec {
        status: new_status(ctx, r),
        flags: FLAG_MANAGED,
        created_at: ctx.now_ms,
        updated_at: ctx.now_ms,
        ..Default::default()
    };
    head.row_digest.copy_from_slice(r.digest);
    head.encode_head(out);
    let mut by_col: Vec<Option<&str>> = vec![None; ctx.map.cols.len()];
    for (ci, v) in r.values()? {
        if let Some(slot) = by_col.get_mut(ci) {
            *slot = v;
        }
    }
    crate::model::packed::put_varint(out, by_col.iter().filter(|v| v.is_some()).count() as u64);
    for (ci, name) in &ctx.map.by_name {
        if let Some(Some(v)) = by_col.get(*ci) {
            out.extend_from_slice(name);
            crate::model::packed::put_bytes(out, v.as_bytes());
        }
    }
    Ok(())
}

fn insert(ctx: &MergeSettings<'_>, r: &PackedRow<'_>) -> Result<UserRec> {
    let mut rec = UserRec {
        flags: FLAG_MANAGED,
        created_at: ctx.now_ms,
        updated_at: ctx.now_ms,
        ..Default::default()
    };
    rec.row_digest.copy_from_slice(r.digest);
    for (ci, v) in r.values()? {
        if let (Some(col), Some(v)) = (ctx.map.cols.get(ci), v) {
            rec.set(&col.field, Some(v));
        }
    }
    if let Some(pw) = r.password {
        rec.pw_fp = fingerprint(ctx, r.line, pw);
        rec.pw_hash = hash_password(ctx, r.line, pw)?;
    }
    let active = match r.active() {
        Some(a) => a,
        None => match ctx.tenant.import.activate {
            Activate::Always => true,
            Activate::WithPassword => r.password.is_some(),
        },
    };
    rec.status = if active {
        STATUS_ACTIVE
    } else {
        STATUS_INACTIVE
    };
    Ok(rec)
}

/// Applies a row to a stored user; returns the field changes (`status` among them).
fn update(
    ctx: &MergeSettings<'_>,
    rec: &mut UserRec,
    r: &PackedRow<'_>,
) -> Result<Vec<FieldChange>> {
    let mut changes = Vec::new();
    let clear = ctx.tenant.import.empty_cells == EmptyCells::Clear;
    for (ci, v) in r.values()? {
        let Some(col) = ctx.map.cols.get(ci) else {
            continue;
        };
        // An empty cell keeps the stored value under `keep`; under `clear` it clears it. The
        // password is not a field: an empty password cell never removes a stored one.
        if v.is_none() && !clear {
            continue;
        }
        let old = rec.get(&col.field).map(shown_value);
        if rec.set(&col.field, v) {
            changes.push(FieldChange {
                field: col.field.clone(),
                old,
                new: v.map(shown_value),
            });
        }
    }
    if let Some(pw) = r.password {
        let fp = fingerprint(ctx, r.line, pw);
        if fp != rec.pw_fp || rec.pw_hash.is_empty() && ctx.passwords.hash {
            rec.pw_fp = fp;
            rec.pw_hash = hash_password(ctx, r.line, pw)?;
            changes.push(FieldChange {
                field: "password".into(),
                old: None,
                new: Some("(changed)".into()),
            });
        }
    }
    let returning = rec.status == STATUS_DELETED
        || rec.status == STATUS_INACTIVE && rec.flags & FLAG_MISSING != 0;
    let with_password = ctx.tenant.import.activate == Activate::WithPassword;
    let has_password = r.password.is_some() || !rec.pw_fp.iter().all(|b| *b == 0);
    let target = match r.active() {
        Some(true) => STATUS_ACTIVE,
        Some(false) => STATUS_INACTIVE,
        // A returning user is active again; one back from deleted is judged as a new user
        // would be: under `with_password`, without a password it is inactive. (One
        // deactivated as missing was active when it left, and is again.)
        None if rec.status == STATUS_DELETED && with_password && !has_password => STATUS_INACTIVE,
        None if returning => STATUS_ACTIVE,
        // A password activates a user kept inactive for want of one; a tenant whose status
        // comes from a column (mapped, even if this file lacks it or leaves the cell blank)
        // may have switched that user off, and a password does not overrule it (review s26).
        None if with_password
            && r.password.is_some()
            && rec.status == STATUS_INACTIVE
            && !status_by_column(ctx) =>
        {
            STATUS_ACTIVE
        }
        None => rec.status,
    };
    if target != rec.status {
        changes.push(FieldChange {
            field: "status".into(),
            old: Some(status_name(rec.status).into()),
            new: Some(status_name(target).into()),
        });
        rec.status = target;
    }
    if returning {
        rec.deleted_at = 0;
    }
    rec.flags = (rec.flags | FLAG_MANAGED) & !FLAG_MISSING;
    rec.row_digest.copy_from_slice(r.digest);
    if !changes.is_empty() {
        rec.updated_at = ctx.now_ms;
    }
    Ok(changes)
}
