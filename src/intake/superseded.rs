//! A claim that never committed and whose file a newer one has overtaken: it is not imported.
//!
//! The tenant's newest file is its latest word (design.md §5, rule 5). A claim left behind (a
//! node died in its run, its retries gave up until the next start) is finished later, and by
//! then newer files of the tenant may have been applied: importing the old file then would
//! overwrite them, and deactivate everyone a later file added. So before an uncommitted claim
//! is imported, recovery asks whether a run that read a file (applied, `duplicate` or `held`:
//! the runs that set held plans aside, `import::held`) *started after the claim was made*.
//! If one did, the claim is refused with an `error` record naming it (`run::refuse_claimed`).
//! A held plan approved after the claim does not count: it read its file before the claim.
//!
//! Why the claim's time and the newer run's `started_at`: the claim time is in the claim's name,
//! written by Roster's own clock when the file was moved out of the tenant's view. The file's
//! modification time (the record's `received_at`) is not: a client sets it (SETSTAT, "preserve
//! timestamps"), so it can put an old file after a new one. Under the tenant's lease a run
//! starts right after its own claim, one at a time, so a run that started after this claim
//! read a file claimed after it, which arrived after it. It is the order that sets held plans
//! aside too (`import::held::check_not_superseded` compares `started_at`). Between nodes it
//! assumes their clocks agree to better than the time between the claim and the newer run's
//! start, which on a cluster includes the dead holder's `lease_secs`.

use super::Shared;
use crate::model::ImportRecord;
use chrono::{DateTime, Utc};

/// Runs of the history looked at for a newer one.
const RUNS_LOOKED_AT: usize = 1000;

/// When the claim `id` was made, from its name (`20261201T020006.584924Z-…`); None for a name
/// without that time.
pub(super) fn claimed_at(id: &str) -> Option<DateTime<Utc>> {
    let (stamp, _) = id.split_once('-')?;
    let at = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.6fZ").ok()?;
    Some(at.and_utc())
}

/// The newest run of the tenant that read a file and started after the claim `claim_id` was
/// made, if there is one: the claim's file must then not be imported.
pub(super) fn newer_run(
    shared: &Shared,
    tenant: &str,
    claim_id: &str,
) -> anyhow::Result<Option<ImportRecord>> {
    let Some(at) = claimed_at(claim_id) else {
        return Ok(None);
    };
    let recent = shared.store.history(tenant, RUNS_LOOKED_AT)?;
    Ok(recent
        .into_iter()
        .filter(|r| overtakes(r, at))
        .max_by_key(|r| r.started_at))
}

/// True when the run `r` read a file claimed after `claimed_at`: it read a file and started
/// after the claim. An approved held run keeps its id but starts again at the approval, so its
/// first start is read from its id (`<UTC time to the second>-<n>`, both stores): a plan held
/// before the claim and approved after it read an older file.
fn overtakes(r: &ImportRecord, claimed_at: DateTime<Utc>) -> bool {
    let first_start =
        r.id.split_once('-')
            .and_then(|(t, _)| chrono::NaiveDateTime::parse_from_str(t, "%Y%m%dT%H%M%SZ").ok())
            .map(|t| t.and_utc());
    let began_after = first_start.is_none_or(|t| t + chrono::Duration::seconds(1) > claimed_at);
    r.started_at > claimed_at && began_after && r.status.read_a_file()
}

/// The reason the record of a superseded claim gives.
pub(super) fn reason(name: &str, claim_id: &str, newer: &ImportRecord) -> String {
    let at = claimed_at(claim_id)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default();
    format!(
        "{name} was taken for import at {at} but its run did not finish; a newer file was applied since (import {}, {}, {}), so this older file was not imported: it would have overwritten the newer one. Upload it again if it is still meant.",
        newer.id, newer.file, newer.status
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ImportStatus;

    #[test]
    fn a_claim_time_is_read_from_every_claim_name() {
        let want = "2026-12-01T02:00:06.584924+00:00";
        for id in [
            "20261201T020006.584924Z-0003",
            "20261201T020006.584924Z-41234-0003",
            "20261201T020006.584924Z-41234-0003-m",
        ] {
            assert_eq!(
                claimed_at(id).map(|t| t.to_rfc3339()).as_deref(),
                Some(want)
            );
        }
        assert!(claimed_at("garbage-0003").is_none());
        assert!(claimed_at("garbage").is_none());
    }

    #[test]
    fn only_runs_of_files_read_after_the_claim_overtake_it() {
        let claim = claimed_at("20261201T020006.584924Z-41234-0003-m").unwrap();
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let run = |id: &str, started: &str, status| {
            let started = at(started);
            ImportRecord::begun(id.into(), "acme", "users.csv", status, started, started)
        };
        let later = "2026-12-01T02:00:06.9Z";
        assert!(overtakes(
            &run("20261201T020006Z-7", later, ImportStatus::Success),
            claim
        ));
        assert!(overtakes(
            &run(
                "20261201T030000Z-8",
                "2026-12-01T03:00:00Z",
                ImportStatus::Held
            ),
            claim
        ));
        // Started before the claim, or read no file.
        assert!(!overtakes(
            &run(
                "20261201T020005Z-6",
                "2026-12-01T02:00:05Z",
                ImportStatus::Success
            ),
            claim
        ));
        assert!(!overtakes(
            &run("20261201T020006Z-7", later, ImportStatus::Error),
            claim
        ));
        assert!(!overtakes(
            &run("20261201T020006Z-7", later, ImportStatus::Missing),
            claim
        ));
        // Held before the claim, approved after it: an older file.
        assert!(!overtakes(
            &run(
                "20261201T010000Z-5",
                "2026-12-01T04:00:00Z",
                ImportStatus::Success
            ),
            claim
        ));
    }
}
