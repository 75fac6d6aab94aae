//! What one run of the engine is asked to do and what it gives back.
//!
//! Data enters from `import`'s entry points (`run_file`, `run_bytes`, `preview_bytes`,
//! `approve`) as a [`Job`]: store, tenant, file, options, and for `approve` the held run; it
//! leaves `engine::execute` as a [`Done`].

use super::held::Approving;
use super::merge::Change;
use super::read::Input;
use super::record::GivenPasswords;
use super::{ImportOutcome, RunOptions};
use crate::config::Tenant;
use crate::store::Store;

/// One run to do.
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
pub fn given_passwords<'j>(job: &'j Job<'_>) -> Option<&'j GivenPasswords> {
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

/// What a run gives back: the outcome and, for previews, the change details.
pub struct Done {
    pub outcome: ImportOutcome,
    pub changes: Vec<Change>,
}

/// What the tenant state keeps of an applied file to tell a `duplicate` (design §5.7): the
/// file's sha256 and a digest of the settings that decide what its rows become (columns, match
/// key, normalising, `on_missing`, reference lists). The same bytes under changed settings are
/// imported again: an operator who fixed a mapping after a `partial` run needs the same file
/// applied with it (review of 2026-11-30, third round). How the bytes are read (`delimiter`,
/// `encoding`) is left out: approving a held run reads its kept copy with settings of its own.
pub fn applied_digest(job: &Job<'_>, file_sha256: &str) -> String {
    use sha2::{Digest, Sha256};
    let p = &job.tenant.import;
    let settings = serde_json::to_vec(&(
        (
            &p.columns,
            p.match_by,
            p.on_missing,
            p.empty_cells,
            p.activate,
        ),
        (
            &p.languages,
            p.name_case,
            &p.list_separator,
            p.unknown_reference,
        ),
        &job.tenant.reference,
    ))
    // Serialising plain config values cannot fail; were it to, every file counts as new.
    .unwrap_or_default();
    let digest = hex::encode(Sha256::digest(&settings));
    format!("{file_sha256}:{}", &digest[..16])
}
