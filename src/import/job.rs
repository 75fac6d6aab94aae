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
