//! The survey of one bucket before anything changes: how many users `on_missing` could act on
//! and how many of them would go missing (for the hold decision), which rows' emails already belong to another stored
//! user, and which rows change nothing (compacted, so their values leave memory early).
//!
//! Data enters as the stored bucket blob and the bucket's arena of packed rows, with the file's
//! emails from the row pass; it leaves as a [`SurveyPart`]. Nothing is written here: `apply`
//! gives the compacted rows back to the run's bucket rows. Every reason the survey keeps is
//! charged to the run's skip budget (`MergeSettings::budget`).

use super::bounds::SkipBudget;
use super::merge::{
    duplicate_skips, missing_action, row_email, unchanged, unpack_all, MergeSettings,
};
use super::record::{pack_compact, PackedRow};
use super::row_pass::FileEmails;
use crate::config::EmptyCells;
use crate::model::bucket::fnv64;
use crate::model::packed::{bucket_entries, field_of, status_of, STATUS_ACTIVE, STATUS_DELETED};
use anyhow::Result;

/// What the survey learnt of one bucket.
#[derive(Default)]
pub struct SurveyPart {
    /// Users `on_missing` could act on (the hold's base, design §5.5): managed users that are
    /// active, and under `delete` the inactive ones the file leaves out (it deletes them).
    pub current: u64,
    /// Users that would go missing (on_missing acts on them).
    pub missing: u64,
    /// The rows that make an active user inactive (an `active`/`deactivate` column): taken out
    /// like missing users, so they count toward the hold too (review s16 F5), unless skipped.
    pub switched_off: Vec<u64>,
    /// Active users that `current` does not count (unmanaged, or `on_missing = "keep"`): the
    /// base of the hold also holds every active user a row can switch off.
    pub other_active: u64,
    /// Soft-deleted users that a row brings back without an email while they keep their stored
    /// one: the engine checks that no one else owns it now (`revived_conflicts`).
    pub revived: Vec<Revived>,
    /// Rows whose email belongs to another stored user, and rows of a key given on more than
    /// one row: (row, reason).
    pub conflicts: Vec<(u64, String)>,
    /// Stored emails taken as given up by their owner's row while a row of another key claims
    /// them: conflicts after all if the owner's row is skipped (`settle_releases`).
    pub releases: Vec<Release>,
    /// The bucket's rows re-packed with unchanged rows compacted, when any were.
    pub packed: Option<Vec<u8>>,
    /// Nothing in this bucket changes: every row is unchanged, keys are unique and no stored
    /// user goes missing. The main pass then only checks the rows against email conflicts
    /// found elsewhere and does not read the bucket again.
    pub quiet: bool,
}

/// Counts a bucket for the hold decision: (users `on_missing` could act on, those of them that
/// would go missing), and finds rows whose email already belongs to another stored user. Rows
/// found unchanged are compacted to line, key, flags and digest, so their values do not stay
/// in memory.
pub fn survey(
    ctx: &MergeSettings<'_>,
    stored: Option<&[u8]>,
    arenas: &[&[u8]],
    file_emails: &FileEmails,
) -> Result<SurveyPart> {
    let mut rows = unpack_all(arenas)?;
    rows.sort_unstable_by(|a, b| a.key.cmp(b.key));
    let mut conflicts = Vec::new();
    let mut releases = Vec::new();
    for group in rows.chunk_by(|a, b| a.key == b.key).filter(|g| g.len() > 1) {
        duplicate_skips(ctx, group[0].key, group, &mut conflicts)?;
    }
    let Some(stored) = stored else {
        return Ok(SurveyPart {
            conflicts,
            ..SurveyPart::default()
        });
    };
    let mut part = SurveyPart::default();
    let (mut current, mut missing) = (0, 0);
    let check_email = !file_emails.is_empty();
    let mut compact = vec![false; rows.len()];
    // Unique keys so far; every row must also be found unchanged (checked below).
    let mut quiet = rows.windows(2).all(|w| w[0].key != w[1].key);
    let mut j = 0;
    for (k, v) in bucket_entries(stored)? {
        let acts_on = missing_action(ctx, v).is_some();
        // Rows and stored users are both sorted by key: walk them together.
        while j < rows.len() && rows[j].key < k {
            j += 1;
        }
        let found = match rows.get(j) {
            Some(r) if r.key == k => Ok(j),
            _ => Err(j),
        };
        let active = status_of(v) == STATUS_ACTIVE;
        // The hold's base: an inactive user the file still lists (a leaver kept in the export)
        // is no user this run could take out, so it does not dilute the base under `delete`
        // (900 such leavers must not let a file that drops all 100 active users through).
        if acts_on && (active || found.is_err()) {
            current += 1;
        } else if active {
            part.other_active += 1;
        }
        if found.is_err() && acts_on {
            missing += 1;
            quiet = false;
        }
        if let Some(r) = found.ok().and_then(|i| single_row(&rows, i)) {
            look_at_row(ctx, (k, v), r, &mut part)?;
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
        let own = match found {
            Ok(i) => &rows[i..],
            Err(_) => &[],
        };
        // A user whose one row is unchanged and gives its email keeps it, and a row of another
        // key giving it clashed with that row in the row pass: nothing to look up (most users
        // of a re-import; looking up every stored email took 0.7 s per 1,000,000 users). A row
        // that leaves the cell empty under `empty_cells = "keep"` is unchanged too but gave
        // nothing to clash with: the stored email is looked up.
        let settled = match found {
            Ok(i) => compact[i] && single_row(&rows, i).is_some_and(|r| r.has_email()),
            Err(_) => false,
        };
        if settled {
            continue;
        }
        let user = StoredUser { key: k, value: v };
        let check = email_conflict(ctx, file_emails, user, own)?;
        keep_email_check(ctx, check, &mut conflicts, &mut releases)?;
    }
    quiet = quiet && compact.iter().all(|c| *c) && part.switched_off.is_empty();
    Ok(SurveyPart {
        current,
        missing,
        conflicts,
        releases,
        packed: repack(&rows, &compact),
        quiet,
        ..part
    })
}

/// The row at `i` when it is the only one of its key and applies (not a bare presence mark).
fn single_row<'r, 'a>(rows: &'r [PackedRow<'a>], i: usize) -> Option<&'r PackedRow<'a>> {
    let r = rows.get(i)?;
    let alone = rows.get(i + 1).is_none_or(|n| n.key != r.key);
    (alone && !r.present_only()).then_some(r)
}

/// What the one row of a stored user means for the hold and for emails: an active user it
/// switches off, a soft-deleted user it brings back with the stored email.
fn look_at_row(
    ctx: &MergeSettings<'_>,
    (k, v): (&[u8], &[u8]),
    r: &PackedRow<'_>,
    part: &mut SurveyPart,
) -> Result<()> {
    if status_of(v) == STATUS_ACTIVE && r.active() == Some(false) {
        part.switched_off.push(r.line);
    }
    let keeps_email = ctx.map.email.is_none() || ctx.tenant.import.empty_cells == EmptyCells::Keep;
    if status_of(v) == STATUS_DELETED && !r.has_email() && keeps_email {
        if let Some(email) = field_of(v, "email")? {
            part.revived.push(Revived {
                line: r.line,
                key: String::from_utf8_lossy(k).into_owned(),
                email: email.to_string(),
            });
        }
    }
    Ok(())
}

/// A stored user of the bucket: key and encoded record.
#[derive(Clone, Copy)]
struct StoredUser<'a> {
    key: &'a [u8],
    value: &'a [u8],
}

/// A stored user's email that a row of another key claims, taken as given up because the
/// user's own row gives another email. That row may still be skipped (its key given twice, its
/// new email taken, a value it cannot hold): the user then keeps the email, and the claim is a
/// conflict after all. The engine settles that once every bucket is surveyed
/// ([`settle_releases`]), since the owner's row and the claim may be in different buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    /// The lines of the owner's rows.
    pub owner_rows: Vec<u64>,
    /// The claiming row and the reason it is skipped if the owner keeps the email.
    pub claim: (u64, String),
}

/// A soft-deleted user that a row brings back while it keeps its stored email (the row gives
/// none). A soft-deleted user owns no email, so someone else may have it now: then the row is
/// skipped, as `roster restore` refuses (review s16 F2).
#[derive(Debug, Clone, PartialEq)]
pub struct Revived {
    pub line: u64,
    pub key: String,
    pub email: String,
}

/// The rows of [`Revived`] users whose email a row of another key gives, or another stored
/// user that is not deleted has: (row, reason), each charged to the run's skip `budget`.
/// `holder` finds such a stored user's key.
pub fn revived_conflicts(
    revived: &[Revived],
    file_emails: &FileEmails,
    budget: &SkipBudget,
    mut holder: impl FnMut(&Revived) -> Result<Option<String>>,
) -> Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    let mut by_email: std::collections::HashMap<&str, Vec<&Revived>> =
        std::collections::HashMap::new();
    for r in revived {
        by_email.entry(r.email.as_str()).or_default().push(r);
    }
    for r in revived {
        let claimed = file_emails
            .get(fnv64(r.email.as_bytes()))
            .filter(|(owner, _)| *owner != fnv64(r.key.as_bytes()))
            .map(|(_, line)| format!("row {line}"));
        // Two deleted users that kept one address, both brought back in this file.
        let twin = by_email
            .get(r.email.as_str())
            .and_then(|same| same.iter().find(|o| o.key != r.key))
            .map(|o| format!("row {} (user {:?}, coming back too)", o.line, o.key));
        let other = match claimed.or(twin) {
            Some(row) => Some(row),
            None => holder(r)?.map(|k| format!("user {k:?}")),
        };
        if let Some(other) = other {
            let reason = format!(
                "row {}: user {:?} was deleted and comes back with its email {:?}, which {other} has now; give this row an email",
                r.line, r.key, r.email
            );
            budget.charge(&reason)?;
            out.push((r.line, reason));
        }
    }
    Ok(out)
}

/// What a stored user's email means for the file's rows.
enum EmailCheck {
    /// No row of another key gives it (or the user owns none).
    Free,
    /// A row of another key gives it while the user keeps it: (row, reason).
    Conflict((u64, String)),
    /// A row of another key gives it, and the user's own row gives another email.
    Released(Release),
}

/// Keeps what [`email_conflict`] found, its reason charged to the run's skip budget.
fn keep_email_check(
    ctx: &MergeSettings<'_>,
    check: EmailCheck,
    conflicts: &mut Vec<(u64, String)>,
    releases: &mut Vec<Release>,
) -> Result<()> {
    match check {
        EmailCheck::Free => {}
        EmailCheck::Conflict(c) => {
            ctx.budget.charge(&c.1)?;
            conflicts.push(c);
        }
        EmailCheck::Released(r) => {
            ctx.budget.charge(&r.claim.1)?;
            releases.push(r);
        }
    }
    Ok(())
}

/// Whether a stored user's email is claimed by a row of another key ([`EmailCheck`]). `own`
/// are the file's rows from the user's key on (sorted by key), empty when the file has none of
/// its key.
fn email_conflict(
    ctx: &MergeSettings<'_>,
    file_emails: &FileEmails,
    user: StoredUser<'_>,
    own: &[PackedRow<'_>],
) -> Result<EmailCheck> {
    let StoredUser { key: k, value: v } = user;
    // A soft-deleted user owns no email: a rehire under a new key may bring it back.
    if status_of(v) == STATUS_DELETED {
        return Ok(EmailCheck::Free);
    }
    let Some(email) = field_of(v, "email")? else {
        return Ok(EmailCheck::Free);
    };
    let Some((owner, line)) = file_emails.get(fnv64(email.as_bytes())) else {
        return Ok(EmailCheck::Free);
    };
    if owner == fnv64(k) {
        return Ok(EmailCheck::Free);
    }
    let own_rows = || own.iter().take_while(|r| r.key == k);
    let absent = own_rows().next().is_none();
    // An owner this very run deletes (missing, `on_missing = "delete"`) owns no email once it
    // commits: a person re-keyed in one file keeps the address (review s16 F8).
    if absent && missing_action(ctx, v) == Some(STATUS_DELETED) {
        return Ok(EmailCheck::Free);
    }
    let header = ctx
        .map
        .email
        .and_then(|i| ctx.map.cols.get(i))
        .map(|c| c.header.as_str())
        .unwrap_or("email");
    let owner_name = String::from_utf8_lossy(k);
    let reason = if absent {
        format!(
            "row {line}: {header} {email:?} already belongs to user {owner_name:?}, who is not in this file and keeps it while not deleted; clear that user's email (or restore and re-key it) or give this row another"
        )
    } else {
        format!("row {line}: {header} {email:?} already belongs to user {owner_name:?}")
    };
    let claim = (line, reason);
    // The user gives the email up when its own valid row gives another one (a row giving the
    // same email would have clashed with the claim in the row pass), or leaves the cell empty
    // under `empty_cells = "clear"`, which clears it (s29: only `keep` keeps it, design §5.2;
    // such a claim was refused as if the owner kept the address).
    let clears = ctx.map.email.is_some() && ctx.tenant.import.empty_cells == EmptyCells::Clear;
    let moves_away = match own_rows().next() {
        Some(r) if !r.present_only() => match row_email(ctx, r)? {
            Some(e) => e != email,
            None => clears,
        },
        _ => false,
    };
    if moves_away || own_rows().any(|r| !r.present_only() && r.has_email()) {
        let owner_rows = own_rows().map(|r| r.line).collect();
        return Ok(EmailCheck::Released(Release { owner_rows, claim }));
    }
    Ok(EmailCheck::Conflict(claim))
}

/// Turns into conflicts the claims of [`Release`]s whose owner's row is skipped after all
/// (`skipped`: every row skipped so far, which grows with them), until none is left: a chain
/// (user 1 moves to an email user 3 keeps, user 2 takes user 1's) is followed to its end. Each
/// copied claim is charged to the run's skip `budget`.
pub fn settle_releases(
    releases: &[Release],
    skipped: &mut std::collections::HashSet<u64>,
    budget: &SkipBudget,
) -> Result<Vec<(u64, String)>> {
    let mut found = Vec::new();
    loop {
        let before = found.len();
        for r in releases {
            let owner_kept = r.owner_rows.iter().any(|l| skipped.contains(l));
            if owner_kept && skipped.insert(r.claim.0) {
                budget.charge_copy(&r.claim.1)?;
                found.push(r.claim.clone());
            }
        }
        if found.len() == before {
            return Ok(found);
        }
    }
}

/// The bucket's rows re-packed with the `compact` ones compacted, when any are.
fn repack(rows: &[PackedRow<'_>], compact: &[bool]) -> Option<Vec<u8>> {
    if !compact.iter().any(|c| *c) {
        return None;
    }
    let mut out = Vec::with_capacity(
        rows.iter()
            .zip(compact)
            .map(|(r, c)| if *c { r.key.len() + 24 } else { r.raw.len() })
            .sum(),
    );
    for (r, c) in rows.iter().zip(compact) {
        if *c {
            pack_compact(&mut out, r);
        } else {
            out.extend_from_slice(r.raw);
        }
    }
    Some(out)
}
