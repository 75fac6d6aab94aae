//! Planning one bucket of a tenant's directory: merging the stored users of the bucket with the
//! file's rows that hash to it, in key order.
//!
//! Data enters as the stored bucket blob (or none) and the bucket's arena of packed rows; it
//! leaves as counts, the new bucket blob (only when something changed), optional change
//! details for a preview, and late skip reasons (duplicated keys, email conflicts). Nothing is
//! written here: `apply` stages and commits.

use super::record::{unpack, GivenPasswords, Mapping, PackedRow, RowSeal};
use crate::config::{Activate, EmptyCells, OnMissing, Tenant};
use crate::model::packed::{
    bucket_entries, bucket_push, digest_of, field_of, flags_of, status_of, UserRec, FLAG_MANAGED,
    FLAG_MISSING, STATUS_ACTIVE, STATUS_DELETED, STATUS_INACTIVE,
};
pub use crate::model::{Change, Counts, FieldChange};
use anyhow::{bail, Result};
use std::collections::HashMap;

/// What the planner needs to know besides the bucket.
pub struct MergeSettings<'a> {
    pub tenant: &'a Tenant,
    pub map: &'a Mapping,
    pub secret: [u8; 32],
    pub now_ms: i64,
    /// Collect [`Change`]s (preview), at most this many per bucket.
    pub detail: usize,
    /// Hash new or changed passwords (false for a preview).
    pub hash_passwords: bool,
    /// Rows skipped because their email belongs to someone else (line → reason).
    pub conflicts: &'a HashMap<u64, String>,
    /// Apply `on_missing` (false when the run only previews a hold).
    pub missing: bool,
    /// Approving a held run: the passwords it kept (see [`GivenPasswords`]).
    pub given: Option<&'a GivenPasswords>,
    /// Holding a run: every password hash computed goes here as (row, hash).
    pub collect: Option<&'a std::sync::Mutex<Vec<(u64, String)>>>,
    /// Opens the password cells of packed rows.
    pub seal: &'a RowSeal,
}

/// The plan of one bucket.
#[derive(Default)]
pub struct BucketMerge {
    pub blob: Option<Vec<u8>>,
    pub counts: Counts,
    pub changes: Vec<Change>,
    pub late_skips: Vec<(u64, String)>,
}

fn missing_action(ctx: &MergeSettings<'_>, rec: &[u8]) -> Option<u8> {
    if !ctx.missing || flags_of(rec) & FLAG_MANAGED == 0 {
        return None;
    }
    match (ctx.tenant.import.on_missing, status_of(rec)) {
        (OnMissing::Deactivate, STATUS_ACTIVE) => Some(STATUS_INACTIVE),
        (OnMissing::Delete, s) if s != STATUS_DELETED => Some(STATUS_DELETED),
        _ => None,
    }
}

fn unpack_all<'a>(arenas: &[&'a [u8]]) -> Result<Vec<PackedRow<'a>>> {
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

/// What the survey learnt of one bucket.
#[derive(Default)]
pub struct SurveyPart {
    /// Users that are not deleted.
    pub current: u64,
    /// Users that would go missing (on_missing acts on them).
    pub missing: u64,
    /// Rows whose email belongs to another stored user: (row, reason).
    pub conflicts: Vec<(u64, String)>,
    /// The bucket's rows re-packed with unchanged rows compacted, when any were.
    pub packed: Option<Vec<u8>>,
    /// Nothing in this bucket changes: every row is unchanged, keys are unique and no stored
    /// user goes missing. The main pass then only checks the rows against email conflicts
    /// found elsewhere and does not read the bucket again.
    pub quiet: bool,
}

/// The stored user has the row's digest and is neither deleted, missing nor unmanaged: the
/// row changes nothing (the test `merge_bucket` uses for `unchanged`).
fn unchanged(stored: &[u8], r: &PackedRow<'_>) -> bool {
    digest_of(stored) == Some(r.digest)
        && status_of(stored) != STATUS_DELETED
        && flags_of(stored) & FLAG_MISSING == 0
        && flags_of(stored) & FLAG_MANAGED != 0
}

/// Counts a bucket for the hold decision: (current users, users that would go missing), and
/// finds rows whose email already belongs to another stored user. Rows found unchanged are
/// compacted to line, key, flags and digest, so their values do not stay in memory.
pub fn survey(
    ctx: &MergeSettings<'_>,
    stored: Option<&[u8]>,
    arenas: &[&[u8]],
    file_emails: &super::row_pass::FileEmails,
) -> Result<SurveyPart> {
    let Some(stored) = stored else {
        return Ok(SurveyPart::default());
    };
    let mut rows = unpack_all(arenas)?;
    rows.sort_unstable_by(|a, b| a.key.cmp(b.key));
    let (mut current, mut missing, mut conflicts) = (0, 0, Vec::new());
    let check_email = !file_emails.is_empty();
    let mut compact = vec![false; rows.len()];
    // Unique keys so far; every row must also be found unchanged (checked below).
    let mut quiet = rows.windows(2).all(|w| w[0].key != w[1].key);
    let mut j = 0;
    for (k, v) in bucket_entries(stored)? {
        if status_of(v) != STATUS_DELETED {
            current += 1;
        }
        // Rows and stored users are both sorted by key: walk them together.
        while j < rows.len() && rows[j].key < k {
            j += 1;
        }
        let found = match rows.get(j) {
            Some(r) if r.key == k => Ok(j),
            _ => Err(j),
        };
        if found.is_err() && missing_action(ctx, v).is_some() {
            missing += 1;
            quiet = false;
        }
        if let Ok(i) = found {
            for (n, r) in rows
                .iter()
                .enumerate()
                .skip(i)
                .take_while(|(_, r)| r.key == k)
            {
                if !r.present_only() && unchanged(v, r) {
                    compact[n] = true;
                }
            }
        }
        if !check_email {
            continue;
        }
        // A user whose own valid row gives an email either keeps it (then the file agrees) or
        // gives it up: no conflict can come from its stored email.
        if let Ok(i) = found {
            if rows[i..]
                .iter()
                .take_while(|r| r.key == k)
                .any(|r| !r.present_only() && r.has_email())
            {
                continue;
            }
        }
        let Some(email) = field_of(v, "email")? else {
            continue;
        };
        let Some((owner, line)) = file_emails.get(crate::model::bucket::fnv64(email.as_bytes()))
        else {
            continue;
        };
        if owner == crate::model::bucket::fnv64(k) {
            continue;
        }
        // The stored user keeps this email unless its own row gives it another one.
        let moves_away = match found {
            Ok(i) => {
                let r = &rows[i];
                !r.present_only() && row_email(ctx, r)?.is_some_and(|e| e != email)
            }
            Err(_) => false,
        };
        if !moves_away {
            let header = ctx
                .map
                .email
                .and_then(|i| ctx.map.cols.get(i))
                .map(|c| c.header.as_str())
                .unwrap_or("email");
            conflicts.push((
                line,
                format!(
                    "row {line}: {header} {email:?} already belongs to user {:?}",
                    String::from_utf8_lossy(k)
                ),
            ));
        }
    }
    quiet = quiet && compact.iter().all(|c| *c);
    let packed = if compact.iter().any(|c| *c) {
        let mut out = Vec::with_capacity(
            rows.iter()
                .zip(&compact)
                .map(|(r, c)| if *c { r.key.len() + 24 } else { r.raw.len() })
                .sum(),
        );
        for (r, c) in rows.iter().zip(&compact) {
            if *c {
                super::record::pack_compact(&mut out, r);
            } else {
                out.extend_from_slice(r.raw);
            }
        }
        Some(out)
    } else {
        None
    };
    Ok(SurveyPart {
        current,
        missing,
        conflicts,
        packed,
        quiet,
    })
}

/// The plan of a bucket the survey found quiet: `None` when one of its rows was found to
/// clash with another user's email after all (then the bucket is planned in full).
pub fn merge_quiet(ctx: &MergeSettings<'_>, arenas: &[&[u8]]) -> Result<Option<BucketMerge>> {
    let rows = unpack_all(arenas)?;
    if rows.iter().any(|r| ctx.conflicts.contains_key(&r.line)) {
        return Ok(None);
    }
    let mut plan = BucketMerge::default();
    plan.counts.unchanged = rows.len() as u64;
    Ok(Some(plan))
}

fn row_email<'a>(ctx: &MergeSettings<'_>, r: &PackedRow<'a>) -> Result<Option<&'a str>> {
    let Some(ei) = ctx.map.email else {
        return Ok(None);
    };
    Ok(r.values()?
        .into_iter()
        .find(|(c, _)| *c == ei)
        .and_then(|(_, v)| v))
}

/// Plans one bucket (see the module doc).
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
    let key_header = ctx.map.cols[ctx.map.key].header.as_str();
    let mut plan = BucketMerge::default();
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
        // Choose the applicable row of the key, if any.
        let mut row = None;
        if let Some((key, g)) = group_here {
            if g.len() > 1 {
                let lines: Vec<String> = g.iter().map(|r| r.line.to_string()).collect();
                for r in g.iter().filter(|r| !r.present_only()) {
                    plan.late_skips.push((
                        r.line,
                        format!(
                            "row {}: {key_header} {:?} appears on more than one row (rows {}), so none of them is imported",
                            r.line,
                            String::from_utf8_lossy(key),
                            lines.join(", ")
                        ),
                    ));
                }
            } else if let Some(r) = g.first().filter(|r| !r.present_only()) {
                match ctx.conflicts.get(&r.line) {
                    Some(reason) => plan.late_skips.push((r.line, reason.clone())),
                    None => row = Some(*r),
                }
            }
        }
        match (stored_here, group_here, row) {
            (Some((k, v)), None, _) => match missing_action(ctx, v) {
                Some(status) => {
                    let mut rec = UserRec::decode(v)?;
                    rec.status = status;
                    rec.flags |= FLAG_MISSING;
                    rec.updated_at = ctx.now_ms;
                    let key = String::from_utf8_lossy(k).to_string();
                    if status == STATUS_DELETED {
                        rec.deleted_at = ctx.now_ms;
                        plan.counts.deleted += 1;
                        detail(ctx, &mut plan.changes, || Change::Delete { key });
                    } else {
                        plan.counts.deactivated += 1;
                        detail(ctx, &mut plan.changes, || Change::Deactivate { key });
                    }
                    let mut enc = Vec::new();
                    rec.encode_into(&mut enc);
                    bucket_push(&mut out, k, &enc);
                    changed = true;
                }
                None => bucket_push(&mut out, k, v),
            },
            (Some((k, v)), Some(_), None) => bucket_push(&mut out, k, v),
            (Some((k, v)), Some(_), Some(r)) => {
                if unchanged(v, &r) {
                    plan.counts.unchanged += 1;
                    bucket_push(&mut out, k, v);
                    continue;
                }
                if r.compact() {
                    bail!("a compacted row of bucket planning no longer matches its stored user");
                }
                let mut rec = UserRec::decode(v)?;
                let (restored, fchanges) = update(ctx, &mut rec, &r)?;
                let mut enc = Vec::new();
                rec.encode_into(&mut enc);
                bucket_push(&mut out, k, &enc);
                changed = true;
                let key = || String::from_utf8_lossy(k).to_string();
                if restored {
                    plan.counts.restored += 1;
                    detail(ctx, &mut plan.changes, || Change::Restore {
                        key: key(),
                        changes: fchanges,
                    });
                } else if fchanges.is_empty() {
                    plan.counts.unchanged += 1;
                } else {
                    plan.counts.updated += 1;
                    detail(ctx, &mut plan.changes, || Change::Update {
                        key: key(),
                        changes: fchanges,
                    });
                }
            }
            (None, Some(_), Some(r)) if r.compact() => {
                bail!("a compacted row of bucket planning has no stored user");
            }
            (None, Some((k, _)), Some(r)) if ctx.detail == 0 && r.password.is_none() => {
                let mut enc = Vec::with_capacity(256);
                insert_fast(ctx, &r, &mut enc)?;
                bucket_push(&mut out, k, &enc);
                changed = true;
                plan.counts.inserted += 1;
            }
            (None, Some((k, _)), Some(r)) => {
                let rec = insert(ctx, &r)?;
                let mut enc = Vec::new();
                rec.encode_into(&mut enc);
                bucket_push(&mut out, k, &enc);
                changed = true;
                plan.counts.inserted += 1;
                detail(ctx, &mut plan.changes, || Change::Insert {
                    key: String::from_utf8_lossy(k).to_string(),
                    fields: rec
                        .fields
                        .iter()
                        .cloned()
                        .chain(
                            (!rec.pw_hash.is_empty() || r.password.is_some())
                                .then(|| ("password".to_string(), "(set)".to_string())),
                        )
                        .chain(std::iter::once((
                            "status".to_string(),
                            status_name(rec.status).to_string(),
                        )))
                        .collect(),
                });
            }
            (None, Some(_), None) | (None, None, _) => {}
        }
    }
    if changed {
        plan.blob = Some(out);
    }
    Ok(plan)
}

fn detail(ctx: &MergeSettings<'_>, changes: &mut Vec<Change>, f: impl FnOnce() -> Change) {
    if changes.len() < ctx.detail {
        changes.push(f());
    }
}

fn status_name(s: u8) -> &'static str {
    match s {
        STATUS_ACTIVE => "active",
        STATUS_DELETED => "deleted",
        _ => "inactive",
    }
}

/// The argon2id hash to store for row `line`'s password: taken from the held run being approved,
/// or computed (and handed to `ctx.collect` when a held run is keeping its hashes).
fn hash_password(ctx: &MergeSettings<'_>, line: u64, pw: &[u8]) -> Result<String> {
    use argon2::password_hash::PasswordHasher;
    if let Some(given) = ctx.given {
        return match given.get(&line) {
            Some((_, Some(h))) => Ok(h.clone()),
            _ => bail!(
                "row {line}: the held run kept no password hash for this row; upload the file again"
            ),
        };
    }
    if !ctx.hash_passwords {
        return Ok(String::new());
    }
    let salt: [u8; 16] = rand::random();
    let hash = argon2::Argon2::default()
        .hash_password_with_salt(&ctx.seal.open(line, pw), &salt)
        .map_err(|e| anyhow::anyhow!("cannot hash a password: {e}"))?
        .to_string();
    if let Some(kept) = ctx.collect {
        if let Ok(mut k) = kept.lock() {
            k.push((line, hash.clone()));
        }
    }
    Ok(hash)
}

fn fingerprint(ctx: &MergeSettings<'_>, line: u64, pw: &[u8]) -> [u8; 16] {
    match ctx.given.and_then(|g| g.get(&line)) {
        Some((fp, _)) => *fp,
        None => super::record::password_fp(
            &ctx.secret,
            &String::from_utf8_lossy(&ctx.seal.open(line, pw)),
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

/// Applies a row to a stored user; returns (restored, field changes).
fn update(
    ctx: &MergeSettings<'_>,
    rec: &mut UserRec,
    r: &PackedRow<'_>,
) -> Result<(bool, Vec<FieldChange>)> {
    let mut changes = Vec::new();
    let clear = ctx.tenant.import.empty_cells == EmptyCells::Clear;
    for (ci, v) in r.values()? {
        let Some(col) = ctx.map.cols.get(ci) else {
            continue;
        };
        if v.is_none() && !clear {
            continue;
        }
        let old = rec.get(&col.field).map(str::to_string);
        if rec.set(&col.field, v) {
            changes.push(FieldChange {
                field: col.field.clone(),
                old,
                new: v.map(str::to_string),
            });
        }
    }
    if let Some(pw) = r.password {
        let fp = fingerprint(ctx, r.line, pw);
        if fp != rec.pw_fp || rec.pw_hash.is_empty() && ctx.hash_passwords {
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
    let target = match r.active() {
        Some(true) => STATUS_ACTIVE,
        Some(false) => STATUS_INACTIVE,
        None if returning => STATUS_ACTIVE,
        None if ctx.tenant.import.activate == Activate::WithPassword
            && r.password.is_some()
            && rec.status == STATUS_INACTIVE =>
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
    Ok((returning, changes))
}
