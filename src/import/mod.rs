//! The import engine: CSV bytes → a validated, planned and atomically applied sync of a
//! tenant's user directory (design.md §3–§6).
//!
//! Data enters as a file path or bytes plus the tenant's [`Tenant`] profile; it leaves as an
//! [`ImportOutcome`]: the history record (already committed to the store together with every
//! user change, and flushed), the failure report CSV, and a password-blanked copy for the
//! archive. The intake decides names and folders before the run and moves files; the engine
//! writes those names into the record it commits, so the record is written once, complete
//! (`filing`).
//!
//! The files, in the order an upload goes through them:
//! - `job`: what a run is asked to do (a `Job`) and what it gives back (a `Done`).
//! - `engine`: the run as phases, from the scan to the hold decision; which phase ends it.
//! - `read`: scan (sha256, size, encoding), decoding, delimiter guess, the csv reader.
//! - `rownum`: the csv reader that numbers rows, the one rule for every pass over a file.
//! - `mapping`: the header row → which column is which field.
//! - `row_pass`: the parallel pass over the rows: check, pack into the run's bucket rows.
//! - `record`: one CSV record → a validated row, packed; packed rows read back.
//! - `fields`: the field table every cell is normalised and validated through.
//! - `bounds`: limits that keep messages, report cells and headers proportional to the file.
//! - `spill`: the run's packed rows by bucket, in memory up to a budget, then a temporary file.
//! - `apply`: the bucket passes over all cores (survey, then merge with staging).
//! - `survey`: one bucket before any change: missing users, email conflicts, quiet rows.
//! - `merge`: one bucket merged: stored users and the file's rows, in key order.
//! - `held`: the plan a held run keeps for `approve`, and loading it again.
//! - `report`: the failure report and the password-blanked archive copy.
//! - `filing`: the archive names planned by the intake; outputs staged before the commit.
//! - `ending`: how a run ends: hold, tally, failure, nothing imported, and the commit.
//!
//! Besides runs: `restore` brings back one soft-deleted or deactivated user; `sample` reads the
//! head of a file as a run would, for the console's column mapping helper.
//!
//! Decisions where the contract is silent:
//! - Rows are numbered as a spreadsheet shows them (`rownum`): the header is row 1 when it is
//!   the first line, so the first data row is row 2; a blank line is a row; a record whose
//!   quoted cell spans several lines is one row; LF, CRLF and CR alone each end a line. Blank
//!   lines and lines whose cells are all empty keep their numbers but are not data rows (not
//!   imported, counted or reported).
//! - A file in which no row can be imported (every row skipped) is an `error`: nothing is
//!   applied, not even `on_missing`.
//! - Two rows with different keys and the same email: both are skipped. A row whose email
//!   belongs to another stored user (who keeps it) is skipped.
//! - With an empty `columns` map each header that is a field name (`email`, `custom.x`, …) is
//!   taken as that field; other headers are ignored and named in a message.
//! - `activate = "with_password"` also activates an existing inactive user when a row gives a
//!   password. A user who returns after being deleted or deactivated by an import is restored
//!   to active unless the row's active/deactivate column says otherwise.
//! - The archive copy is UTF-8 (with a BOM unless the original was BOM-less UTF-8).
//! - A held run stores the file and the profile; `approve` re-plans exactly that file with
//!   that profile against the directory as it was when held, and refuses if the directory
//!   changed since.

mod apply;
mod bounds;
mod encoding;
mod ending;
mod engine;
pub mod fields;
mod filing;
mod held;
mod job;
mod mapping;
mod merge;
mod read;
mod record;
mod report;
mod restore;
mod row_pass;
mod rownum;
// The console's column mapping helper (h-console-users).
pub mod sample;
mod spill;
mod survey;

pub use crate::model::{Change, Counts, FieldChange, ImportRecord, ImportStatus};
pub use filing::{staged, ArchivePlan, Filing};
pub use report::safe_cell;
pub use restore::{named_user, restore};

use crate::config::Tenant;
use crate::store::Store;
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::path::Path;
use std::sync::Arc;

/// Options of one run.
#[derive(Clone)]
pub struct RunOptions {
    /// When the file finished uploading (recorded as `received_at`).
    pub received_at: DateTime<Utc>,
    /// Plan only: compute everything, change nothing, record nothing.
    pub dry_run: bool,
    /// Called with the number of rows read so far, every few thousand rows.
    pub progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    /// Bytes of packed rows kept in memory; the rest wait in a temporary file (64 MiB by
    /// default; see `spill`).
    pub row_memory: usize,
    /// Bytes the skip reasons of the row pass may hold; a file with more skipped rows fails
    /// (256 MiB by default: `bounds::MAX_SKIP_BYTES`).
    pub skip_memory: usize,
    /// Set by the intake: where the run will be filed. The committed record then names its
    /// archived file and report, and the outputs are staged in the claim folder before the
    /// commit (see `filing`). `None`: the record names no archive.
    pub filing: Option<Filing>,
    /// Set by the intake: the store lease the run holds; its commit is refused once this node
    /// no longer holds it ([`Commit::lease`](crate::store::Commit)).
    pub lease: Option<String>,
    /// Set by the intake and for an approve: composes the run's mail from its final record
    /// and failure report, queued by the commit itself, so a crash right after the commit
    /// cannot lose it (review s18 crash F1) nor a restart queue it twice.
    pub mail: Option<MailFor>,
}

/// Composes a run's mail from its record and failure report CSV (None: no mail).
pub type MailFor =
    Arc<dyn Fn(&ImportRecord, Option<&[u8]>) -> Option<crate::store::OutboxMail> + Send + Sync>;

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            received_at: Utc::now(),
            dry_run: false,
            progress: None,
            row_memory: spill::DEFAULT_BUDGET,
            skip_memory: bounds::MAX_SKIP_BYTES,
            filing: None,
            lease: None,
            mail: None,
        }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("received_at", &self.received_at)
            .field("dry_run", &self.dry_run)
            .field("filing", &self.filing)
            .finish()
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    /// The history record (committed unless `dry_run`).
    pub record: ImportRecord,
    /// The failure report (design.md §6), when rows were skipped.
    pub report_csv: Option<Vec<u8>>,
    /// The file with password cells blanked, when it has a password column; otherwise the
    /// intake archives the original.
    pub archive_copy: Option<Vec<u8>>,
}

/// A dry run's plan with details.
#[derive(Debug, Clone)]
pub struct Preview {
    /// The record the run would produce (status `held` if it would be held).
    pub record: ImportRecord,
    /// Inserts, updates (field: old → new), restores, deactivations, deletions.
    pub changes: Vec<Change>,
    /// True when there were more changes than [`PREVIEW_LIMIT`].
    pub truncated: bool,
    pub report_csv: Option<Vec<u8>>,
}

/// Most changes a preview lists (the counts are always complete).
pub const PREVIEW_LIMIT: usize = 10_000;

/// Imports a file of `tenant` and commits the result (see the module doc).
pub fn run_file(
    store: &Store,
    tenant: &Tenant,
    path: &Path,
    opts: &RunOptions,
) -> Result<ImportOutcome> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| path.display().to_string());
    let job = job::Job::new(store, tenant, &name, read::Input::Path(path), opts);
    Ok(engine::execute(job)?.outcome)
}

/// The copy to archive of a file that is not imported at all (the intake's `only_today`
/// rejection): password cells blanked, as in every archived file. `None` means the file may be
/// archived as it is (the profile maps no password column, the file has none, or it cannot be
/// read; then a sentence saying so is pushed to `messages`).
pub fn password_free_copy(
    tenant: &Tenant,
    path: &Path,
    messages: &mut Vec<String>,
) -> Result<Option<Vec<u8>>> {
    report::unread_copy(tenant, read::Input::Path(path), messages)
}

/// The failure report of a run that failed as a whole (one line per message of an `error`
/// record; see `report`), for the records the intake writes itself.
pub fn failed_run_report(record: &ImportRecord) -> Option<Vec<u8>> {
    report::for_failed_run(record)
}

/// Imports bytes named `file_name`.
pub fn run_bytes(
    store: &Store,
    tenant: &Tenant,
    file_name: &str,
    bytes: &[u8],
    opts: &RunOptions,
) -> Result<ImportOutcome> {
    let job = job::Job::new(store, tenant, file_name, read::Input::Bytes(bytes), opts);
    Ok(engine::execute(job)?.outcome)
}

/// What importing `path` would do; nothing is changed or recorded.
pub fn preview(store: &Store, tenant: &Tenant, path: &Path) -> Result<Preview> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    preview_bytes(store, tenant, &name, &bytes)
}

/// [`preview`] of bytes.
pub fn preview_bytes(
    store: &Store,
    tenant: &Tenant,
    file_name: &str,
    bytes: &[u8],
) -> Result<Preview> {
    let opts = RunOptions {
        dry_run: true,
        ..Default::default()
    };
    let mut job = job::Job::new(store, tenant, file_name, read::Input::Bytes(bytes), &opts);
    job.detail = PREVIEW_LIMIT;
    let done = engine::execute(job)?;
    Ok(Preview {
        record: done.outcome.record,
        truncated: done.changes.len() >= PREVIEW_LIMIT,
        changes: done.changes,
        report_csv: done.outcome.report_csv,
    })
}

/// Applies a held run exactly as planned; the held record becomes `success` or `partial`.
pub fn approve(store: &Store, tenant: &Tenant, import_id: &str) -> Result<ImportOutcome> {
    approve_mailed(store, tenant, import_id, None)
}

/// [`approve`], queueing the mail `mail` composes from the applied record in the same commit.
pub fn approve_mailed(
    store: &Store,
    tenant: &Tenant,
    import_id: &str,
    mail: Option<MailFor>,
) -> Result<ImportOutcome> {
    let held = held::load(store, tenant, import_id)?;
    let opts = RunOptions {
        received_at: held.received_at,
        mail,
        ..Default::default()
    };
    Ok(run_held(store, held, &opts, 0)?.outcome)
}

/// Runs the held run `held` as approving does, under `opts` (a dry run for the preview),
/// collecting up to `detail` changes.
fn run_held(
    store: &Store,
    held: held::HeldRun,
    opts: &RunOptions,
    detail: usize,
) -> Result<job::Done> {
    let input = read::Input::Bytes(&held.plan[held.file_at..]);
    let mut job = job::Job::new(store, &held.tenant, &held.file, input, opts);
    job.detail = detail;
    job.approving = Some(held.approving);
    engine::execute(job)
}

// --- the web console's held page (h-console-runs) ---

/// What approving the held run `import_id` would do now: a dry run of approving its stored
/// plan (the file and profile it was held with, and the passwords it kept) against the
/// directory as it is. Nothing is changed. Review s26: it was a preview of the kept copy alone,
/// whose password cells are blank, so under `with_password` new users showed inactive and
/// every row with a password showed as changed.
pub fn preview_held(store: &Store, tenant: &Tenant, import_id: &str) -> Result<Preview> {
    let held = held::load(store, tenant, import_id)?;
    // A plan the directory moved past can no longer be approved (approving sets it aside):
    // its file is shown as a new upload of it would run.
    if store.tenant_state(&held.tenant.id)?.version != held.approving.version {
        return preview_bytes(store, &held.tenant, &held.file, &held.plan[held.file_at..]);
    }
    let opts = RunOptions {
        dry_run: true,
        received_at: held.received_at,
        ..Default::default()
    };
    let done = run_held(store, held, &opts, PREVIEW_LIMIT)?;
    Ok(Preview {
        record: done.outcome.record,
        truncated: done.changes.len() >= PREVIEW_LIMIT,
        changes: done.changes,
        report_csv: done.outcome.report_csv,
    })
}
