//! Held runs: what a run that is held keeps in the store for `approve`, and approving it.
//!
//! Data enters from the engine's hold phase (`ending::hold`) when the `max_missing_percent`
//! hold stops a run ([`plan_bytes`] from the [`HoldParts`]: the plan to store) and leaves to
//! `import::approve` ([`load`]: the stored plan as a [`HeldRun`], which `approve` runs again
//! through the engine as an [`Approving`] job; that commits the held record completed in place,
//! keeping where the intake filed the held file and report; the intake runs it on the tenant's
//! queue). This module calls no engine code (only the merge, through `apply`, to compute the
//! kept hashes), so the arrows into it are the only ones. A held plan is a JSON [`HeldPlan`]
//! header and the
//! file. No plaintext password waits in the store: with a password column the file is kept
//! with those cells blank (a row that does not line up with the header keeps only its key cell,
//! so it still marks its user present), plus a [`KeptPassword`] per row: its keyed fingerprint
//! and, where applying will store one, the argon2id hash, computed at hold time by planning the
//! run exactly as approving would.

use super::apply::{run_merge, MergeInput};
use super::merge::{MergeSettings, PasswordRules};
use super::read::{Input, Layout};
use super::record::{self, GivenPasswords, RowFingerprint};
use super::report;
use crate::config::Tenant;
use crate::model::ImportRecord;
use crate::store::{Blob, Store};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What `approve` takes from a held plan.
pub struct Approving {
    /// The held record's id (completed in place).
    pub id: String,
    /// `TenantState::version` when the run was held.
    pub version: u64,
    /// sha256 and size of the file as uploaded (the kept copy has its passwords blank).
    pub upload: Option<Upload>,
    /// The passwords the held run kept (fingerprints and hashes, never plaintext).
    pub passwords: GivenPasswords,
    /// Where the intake filed the held run's file and report: the approved record keeps them.
    pub archived_as: Option<String>,
    pub report: Option<String>,
    /// The encoding the held run read the upload in: the approved record keeps it (the kept
    /// copy of a file with a password column is UTF-8). `None` for a plan held by a version
    /// that did not store it: the record then says what the kept copy was read as.
    pub encoding: Option<String>,
}

/// The file as uploaded: its sha256 and size.
#[derive(Clone)]
pub struct Upload {
    pub sha256: String,
    pub bytes: u64,
}

/// Header of a held plan in the store; the file follows it, with its password cells blank when
/// it has a password column (then `passwords` has what approving needs of them).
#[derive(Serialize, Deserialize)]
struct HeldPlan {
    /// The tenant's import profile as JSON, without its secrets; see [`tenant_json`]. (A plan
    /// held by a version before review s30 has the whole tenant here; it still reads.)
    tenant: serde_json::Value,
    file: String,
    received_at: DateTime<Utc>,
    version: u64,
    /// sha256 of the file as uploaded (the kept copy may differ: passwords blank).
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    bytes: Option<u64>,
    #[serde(default)]
    passwords: Vec<KeptPassword>,
    /// The held record's encoding (the upload's; review s29, F6). Absent in a plan held by an
    /// older version.
    #[serde(default)]
    encoding: Option<String>,
}

/// One password of a held run: row, keyed fingerprint, and the argon2id hash when applying the
/// run stores one (a new user, or a changed password).
#[derive(Serialize, Deserialize)]
struct KeptPassword {
    row: u64,
    fp: String,
    hash: Option<String>,
}

impl KeptPassword {
    fn to_given(&self) -> Result<(u64, record::GivenPassword)> {
        let mut fp = [0u8; 16];
        hex::decode_to_slice(&self.fp, &mut fp).context("a password fingerprint is not hex")?;
        let hash = self.hash.clone();
        Ok((self.row, record::GivenPassword { fp, hash }))
    }
}

/// Everything a held run's plan is made from.
pub struct HoldParts<'a> {
    /// What the main pass would read (its settings' hashing is overridden here).
    pub merge: &'a MergeInput<'a>,
    /// Buckets the survey found quiet.
    pub quiet: &'a [bool],
    /// (row, fingerprint) of every password the row pass saw.
    pub fingerprints: &'a [RowFingerprint],
    pub layout: Layout<'a>,
    /// File column of the match key.
    pub key_col: usize,
    /// The held record: file name, `received_at`, and sha256 and size as uploaded.
    pub record: &'a ImportRecord,
}

/// The bytes of a held plan (see the module doc).
pub fn plan_bytes(k: &HoldParts<'_>) -> Result<Vec<u8>> {
    let tenant = k.merge.settings.tenant;
    let (file, passwords, kept_tenant) = match k.layout.password_col {
        None => match copy_without_password_like(k)? {
            // An unmapped column that looks like a password (`Passwort`) is not kept in clear
            // either (review s30: the report and archive blanked it, the held plan did not).
            Some(copy) => (copy, Vec::new(), tenant_json(&utf8_profile(tenant, k))?),
            None => {
                let bytes = match k.layout.input {
                    Input::Bytes(b) => b.to_vec(),
                    Input::Path(p) => {
                        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?
                    }
                };
                (bytes, Vec::new(), tenant_json(tenant)?)
            }
        },
        Some(col) => {
            let kept = std::sync::Mutex::new(Vec::new());
            let hold_settings = MergeSettings {
                passwords: PasswordRules {
                    hash: true,
                    collect: Some(&kept),
                    ..k.merge.settings.passwords
                },
                detail: 0,
                ..*k.merge.settings
            };
            let hold_input = MergeInput {
                settings: &hold_settings,
                ..*k.merge
            };
            run_merge(&hold_input, k.quiet, false)?;
            let hashes: HashMap<u64, String> = kept
                .into_inner()
                .map_err(|_| anyhow::anyhow!("a planning thread failed"))?
                .into_iter()
                .collect();
            let passwords = k
                .fingerprints
                .iter()
                .map(|f| KeptPassword {
                    row: f.row,
                    fp: hex::encode(f.fp),
                    hash: hashes.get(&f.row).cloned(),
                })
                .collect();
            let empty = HashMap::new();
            let mapped: Vec<usize> = (k.merge.settings.map.cols.iter())
                .map(|c| c.index)
                .filter(|i| *i != col)
                .collect();
            let want = report::Want {
                skips: &empty,
                password_col: Some(col),
                password_header: None,
                keep_col: Some(k.key_col),
                keep_mapped: &mapped,
                password_like: false,
                header_of: None,
            };
            let Layout {
                input, enc, delim, ..
            } = k.layout;
            let (_, copy) = report::write(input, enc, delim, &want)?;
            let copy = copy.context("cannot make the held copy without passwords")?;
            (copy, passwords, tenant_json(&utf8_profile(tenant, k))?)
        }
    };
    let header = HeldPlan {
        tenant: kept_tenant,
        file: k.record.file.clone(),
        received_at: k.record.received_at,
        version: k.merge.state.version,
        sha256: Some(k.record.sha256.clone()),
        bytes: Some(k.record.bytes),
        passwords,
        encoding: Some(k.record.encoding.clone()).filter(|e| !e.is_empty()),
    };
    crate::store::frame(&header, &file)
}

/// The tenant as approving must read a copy the hold wrote: UTF-8, with the file's delimiter.
fn utf8_profile(tenant: &Tenant, k: &HoldParts<'_>) -> Tenant {
    let mut held_profile = tenant.clone();
    held_profile.import.delimiter = crate::config::DelimiterSetting::Fixed(k.layout.delim);
    held_profile.import.encoding = crate::config::EncodingSetting::Auto;
    held_profile
}

/// For a profile that maps no password column: a copy of the file with every unmapped column
/// whose header looks like a password blanked (`report::Want::password_like`), or `None` when
/// the header has no such column (the file is kept as it is).
fn copy_without_password_like(k: &HoldParts<'_>) -> Result<Option<Vec<u8>>> {
    let empty = HashMap::new();
    let mapped: Vec<usize> = (k.merge.settings.map.cols.iter())
        .map(|c| c.index)
        .collect();
    let want = report::Want {
        skips: &empty,
        password_col: None,
        password_header: None,
        keep_col: Some(k.key_col),
        keep_mapped: &mapped,
        password_like: true,
        header_of: None,
    };
    let Layout {
        input, enc, delim, ..
    } = k.layout;
    Ok(report::write(input, enc, delim, &want)?.1)
}

/// What approving needs of the tenant: its id, import profile and reference lists, nothing else.
/// The login hashes, keys, SCIM token hash, webhook secrets and SCIM push token stay out of the
/// store (review s30, F3: the whole tenant was kept, and `migrate-store` copied it on).
fn for_approving(tenant: &Tenant) -> Tenant {
    Tenant {
        import: tenant.import.clone(),
        reference: tenant.reference.clone(),
        ..Tenant::for_import(
            &tenant.id,
            tenant.import.match_by,
            tenant.import.on_missing,
            &[],
        )
    }
}

/// The tenant as JSON that deserialises again, only what approving needs ([`for_approving`]).
/// (`DelimiterSetting`'s derived `Serialize` writes `"Auto"`/`{"Fixed":59}`, which its own
/// `Deserialize` does not accept, so the delimiter is written in its config form here.)
fn tenant_json(tenant: &Tenant) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(for_approving(tenant))?;
    let d = match tenant.import.delimiter {
        crate::config::DelimiterSetting::Auto => "auto".to_string(),
        crate::config::DelimiterSetting::Fixed(d) => (d as char).to_string(),
    };
    if let Some(import) = v.get_mut("import").and_then(|i| i.as_object_mut()) {
        import.insert("delimiter".into(), serde_json::Value::String(d));
    }
    Ok(v)
}

/// A held run loaded for approval: the profile and file it was held with, and what the
/// engine needs to complete it (see `import::approve`, which runs it).
pub struct HeldRun {
    /// The tenant's profile as it was when the run was held.
    pub tenant: Tenant,
    pub file: String,
    pub received_at: DateTime<Utc>,
    /// The stored plan; the kept file is `plan[file_at..]`.
    pub plan: Blob,
    pub file_at: usize,
    pub approving: Approving,
}

/// Loads the held plan `import_id` of the tenant for approval.
pub fn load(store: &Store, tenant: &Tenant, import_id: &str) -> Result<HeldRun> {
    let Some(blob) = store.held_plan(&tenant.id, import_id)? else {
        bail!("tenant {} has no held import {import_id}", tenant.id);
    };
    let (held, bytes): (HeldPlan, &[u8]) = crate::store::unframe(&blob).with_context(|| {
        format!(
            "the held plan {import_id} of tenant {} is damaged",
            tenant.id
        )
    })?;
    // The kept file is the tail of the stored plan, after the framed header.
    let file_at = blob.len() - bytes.len();
    let held_tenant: Tenant = serde_json::from_value(held.tenant)
        .with_context(|| format!("the profile in held plan {import_id} is damaged"))?;
    // The held run's file was already filed away by the intake: the record keeps where.
    let (archived_as, report) = store
        .import_record(&tenant.id, import_id)?
        .map(|r| (r.archived_as, r.report))
        .unwrap_or_default();
    let approving = Approving {
        id: import_id.to_string(),
        version: held.version,
        upload: held
            .sha256
            .zip(held.bytes)
            .map(|(sha256, bytes)| Upload { sha256, bytes }),
        passwords: held
            .passwords
            .iter()
            .map(|p| p.to_given())
            .collect::<Result<_>>()
            .with_context(|| format!("the passwords of held plan {import_id} are damaged"))?,
        archived_as,
        report,
        encoding: held.encoding,
    };
    Ok(HeldRun {
        tenant: held_tenant,
        file: held.file,
        received_at: held.received_at,
        plan: blob,
        file_at,
        approving,
    })
}

/// Runs of the history looked at for a newer file; a held run older than this many runs is
/// taken as superseded.
const NEWER_RUNS_LOOKED_AT: usize = 1000;

/// Refuses to approve the held run `held_id` of `tenant` when a later run read a newer file
/// (`read_a_newer_file`): the tenant's newest file must win over a stale removal, also when it
/// changed nothing (the whole list sent again, or byte for byte a duplicate), which leaves the
/// directory's version as it was.
pub(super) fn check_not_superseded(store: &Store, tenant: &str, held_id: &str) -> Result<()> {
    let Some(held) = store.import_record(tenant, held_id)? else {
        bail!("import {held_id} of tenant {tenant} is not in the history");
    };
    let recent = store.history(tenant, NEWER_RUNS_LOOKED_AT)?;
    let newer = recent
        .iter()
        .find(|r| r.id != held.id && r.started_at > held.started_at && r.status.read_a_file());
    if let Some(r) = newer {
        bail!(
            "import {held_id} of tenant {tenant} cannot be approved: a newer file was read after it was held (import {}, {}, {}); upload the file again if it is still meant",
            r.id,
            r.file,
            r.status
        );
    }
    if recent.len() == NEWER_RUNS_LOOKED_AT && recent.iter().all(|r| r.id != held.id) {
        bail!(
            "import {held_id} of tenant {tenant} cannot be approved: more than {NEWER_RUNS_LOOKED_AT} runs followed it; upload the file again if it is still meant"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan held by a version that stored no encoding (review s29, F6) still loads.
    #[test]
    fn a_plan_without_an_encoding_still_reads() {
        let old = serde_json::json!({
            "tenant": {},
            "file": "users.csv",
            "received_at": "2026-11-30T08:00:00Z",
            "version": 3,
            "sha256": "ab",
            "bytes": 2,
            "passwords": [],
        });
        let plan: HeldPlan = serde_json::from_value(old).unwrap();
        assert_eq!((plan.version, plan.encoding), (3, None));
    }
}
