//! The store: where Roster keeps, per tenant, the user directory, the run log (import history,
//! held plans, the file ledger and intake claims), the change log and event log with delivery
//! cursors, and the mail outbox; and the state several nodes share. This module is the seam:
//! one small trait per consumer, and the [`Store`] handle that carries one backend behind all
//! of them. Two backends implement every trait: sled ([`sled`](self::sled), embedded, the
//! default, the only code that touches sled) and PostgreSQL ([`postgres`], the only code that
//! speaks SQL; docs/postgres.md).
//!
//! | trait | consumer | what goes through it |
//! |---|---|---|
//! | [`Directory`] | the import engine (`import`), restore | tenant state, buckets of packed users read and staged, the atomic [`Commit`], one user rewritten |
//! | [`Users`] | the admin API and SCIM | users listed, paged, counted, looked up (as [`User`](crate::model::User), never the password hash) |
//! | [`RunLog`] | the intake, the admin API, `approve` | history records, held plans, the file ledger, intake claims |
//! | [`MailOutbox`] | `mail` | queued messages until delivered |
//! | [`Cluster`] | `serve`, the intake, SFTP logins, the admin API | heartbeats, leases, schedule ticks, shared login failures, claims of dead nodes |
//! | [`ChangeLog`] | the admin API, delivery (webhooks, SCIM push) | the change log, the event log, delivery cursors |
//!
//! Data enters and leaves as `model` values and packed bytes (`model::packed`); no backend type
//! crosses these traits. A call is made per bucket, per user or per run, never per row.
//!
//! # Buckets: a partition, not a layout
//!
//! The import engine plans a tenant's directory one bucket at a time: a bucket is the users
//! whose key [`bucket_of`](crate::model::bucket::bucket_of) places in it, exchanged as one packed
//! blob. Which bucket a key belongs to is decided in `model::bucket` only. How a bucket is kept
//! is the backend's business: sled keeps one sealed blob per bucket generation (see `sled`); a
//! SQL backend keeps one ordinary row per user with the bucket number as a column (indexed with
//! the tenant), assembles a bucket with `WHERE tenant = $1 AND bucket = $2 ORDER BY key`, and
//! writes a staged bucket into its rows inside the commit's transaction. A bucket's generation
//! ([`TenantState::gen`]) is an opaque version token to callers: 0 means empty, any other value
//! is whatever the backend handed out from [`Directory::stage_bucket`].
//!
//! # Framing
//!
//! Values that are a JSON header plus raw bytes (an outbox message, a held plan) are framed by
//! [`frame`] and read back by [`unframe`]: `u32 LE header length | JSON header | bytes`.

mod cluster;
mod first_keys;
mod frame;
// Group member counts kept by both backends for /Groups (h-scimspeed).
mod errors;
pub mod group_counts;
pub mod health;
pub use errors::{is_unavailable, LeaseLost, PoolBusy, Unavailable};
pub use health::SchemaNewer;
pub mod postgres;
pub mod sled;

pub use cluster::{
    beat_interval, Cluster, LoginScope, NodeBeat, NodeStatus, OrphanClaim, SharedBlock,
    MIGRATE_STORE_NODE_ID,
};
pub(crate) use first_keys::FirstKeys;
pub use frame::{frame, unframe};
pub use sled::SledStore;

use crate::model::changelog::{Cursor, Event, LoggedChange, PendingChange};
use crate::model::packed::UserRec;
use crate::model::{ImportRecord, User, UserFilter, UserPage, UserStatus};
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// Per-tenant directory state: its version and which generation holds each bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TenantState {
    /// Incremented by every commit that changes users; plans check it to detect races.
    pub version: u64,
    /// What the last applied file was, for `duplicate`: its sha256 and, after a `:`, a digest of
    /// the import settings it was applied under (`import::job::applied_digest`; a plain sha256
    /// before 2026-11-30, which the same bytes still match: see `import::engine`).
    pub last_applied_sha256: Option<String>,
    /// Generation per bucket; 0 = the bucket is empty.
    pub gens: Vec<u64>,
}

impl TenantState {
    pub fn gen(&self, bucket: usize) -> u64 {
        self.gens.get(bucket).copied().unwrap_or(0)
    }
}

/// Everything one import (or restore) commits at once, in one transaction.
#[derive(Debug, Default)]
pub struct Commit {
    pub tenant: String,
    /// The `TenantState::version` the plan was computed against.
    pub expected_version: u64,
    /// (bucket, staged generation; 0 = bucket now empty) for every changed bucket.
    pub buckets: Vec<(u16, u64)>,
    pub last_applied_sha256: Option<String>,
    pub record: Option<ImportRecord>,
    pub ledger: Option<LedgerEntry>,
    /// (import id, framed plan bytes) of a plan to hold.
    pub put_plan: Option<(String, Vec<u8>)>,
    /// Import id of the held plan this run completes.
    pub remove_plan: Option<String>,
    /// Held plans this run sets aside: a run that read a newer file of the tenant (applied,
    /// a duplicate of the applied file, or held itself) makes every older held plan stale, and
    /// approving one would undo what the newer file says (design.md §5, held runs).
    pub set_aside_plans: Vec<String>,
    /// The store lease the run holds (`tenant:<id>` for the intake's runs). A store several
    /// nodes share refuses the commit unless this node still holds that lease, unexpired: a
    /// node that lost it (a database outage longer than `lease_secs`, a stalled process) while
    /// another node took over its claim must not commit the same file a second time. The
    /// one-node sled store grants every lease and ignores it.
    pub lease: Option<String>,
    /// A mail queued in the outbox by this same commit (an approved run's mail), so a crash
    /// right after the commit cannot lose it (review s18 crash F1).
    pub mail: Option<OutboxMail>,
}

/// A message for the durable outbox: its envelope recipients and its RFC 5322 bytes.
#[derive(Debug, Clone, Default)]
pub struct OutboxMail {
    pub recipients: Vec<String>,
    pub message: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerState {
    /// The run committed (any status but `error`).
    Done,
    /// The run ended with a file-level `error`.
    Failed,
}

/// The last run of one file name of a tenant (keyed by tenant and file name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub tenant: String,
    pub file: String,
    pub sha256: String,
    pub state: LedgerState,
    /// The import that finished the file (done/failed).
    pub import_id: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// One queued message of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: u64,
    pub recipients: Vec<String>,
    /// The complete RFC 5322 message.
    pub message: Vec<u8>,
    /// Delivery attempts so far.
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// Bytes read from the store (a held plan) without copying them. Dereferences to `[u8]`.
pub struct Blob(Box<dyn AsRef<[u8]> + Send + Sync>);

impl Blob {
    pub fn new(bytes: impl AsRef<[u8]> + Send + Sync + 'static) -> Blob {
        Blob(Box::new(bytes))
    }
}

impl std::ops::Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

/// What the import engine reads and commits. Buckets hold packed users (`model::packed`).
pub trait Directory: Send + Sync {
    /// The tenant's directory state (empty for a new tenant; `gens` has one entry per bucket).
    fn tenant_state(&self, tenant: &str) -> Result<TenantState>;
    /// The per-store key of password fingerprints (HMAC-SHA256).
    fn fingerprint_key(&self) -> &[u8; 32];
    /// One bucket (packed) of the given generation; None for generation 0 (empty).
    fn bucket(&self, tenant: &str, bucket: u16, gen: u64) -> Result<Option<Vec<u8>>>;
    /// Writes a bucket under a new generation, invisible until a [`Commit`] names it; returns
    /// the generation (never 0).
    fn stage_bucket(&self, tenant: &str, bucket: u16, packed: &[u8]) -> Result<u64>;
    /// Stages the change-log entries of the bucket generation `gen` that
    /// [`stage_bucket`](Self::stage_bucket) returned (`model::changelog::bucket_changes` of the
    /// old and new bucket): invisible until a [`Commit`] names that (bucket, generation) in
    /// `buckets`, which numbers and publishes them; removed with it by
    /// [`discard_staged`](Self::discard_staged). Nothing is staged for an empty list.
    fn stage_changes(
        &self,
        tenant: &str,
        bucket: u16,
        gen: u64,
        changes: &[PendingChange],
    ) -> Result<()>;
    /// Removes staged buckets (and their staged changes) of an abandoned plan.
    fn discard_staged(&self, tenant: &str, staged: &[(u16, u64)]) -> Result<()>;
    /// Applies one run atomically (buckets, state, record, ledger, claim stamp, plans), durable
    /// on return. In the same transaction it numbers and publishes the changes staged for the
    /// named buckets (in `buckets` order) and the events of `model::changelog::events_for`
    /// (the record and those changes). Fails without changing anything if another commit changed the tenant since
    /// `expected_version`.
    fn commit(&self, c: &Commit) -> Result<TenantState>;
    /// Rewrites one user with `change` in its own commit, logging the change (no import id)
    /// and its `directory.changed` event; None (nothing written) when the
    /// tenant has no user with exactly this key. An error from `change` writes nothing.
    fn update_user(
        &self,
        tenant: &str,
        key: &str,
        change: &mut dyn FnMut(&mut UserRec) -> Result<()>,
    ) -> Result<Option<UserRec>>;
    /// How many threads an import's bucket passes should run with this store: one per core
    /// (the work is the engine's own), unless calls mostly wait on a server.
    fn planning_threads(&self) -> usize {
        cores()
    }
}

/// The cores this process may use (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `f(0)`, …, `f(n - 1)` at once, each but the first on a thread of its own, and returns
/// their results in that order (none for `n` 0); a thread that panicked gives an error. For a pass that a
/// backend splits into `n` parts (`cores()` or fewer) with a result to join per part.
pub(crate) fn on_threads<T: Send>(
    n: usize,
    f: impl Fn(usize) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    if n == 0 {
        return Vec::new();
    }
    std::thread::scope(|s| {
        let f = &f;
        let running: Vec<_> = (1..n).map(|i| s.spawn(move || f(i))).collect();
        let mut results = vec![f(0)];
        for r in running {
            results.push(
                r.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a thread of a store pass failed"))),
            );
        }
        results
    })
}

/// The directory as readers see it: users, never password hashes.
pub trait Users: Send + Sync {
    /// Every user of the tenant with the given status (all when None), sorted by key.
    fn users(&self, tenant: &str, status: Option<UserStatus>) -> Result<Vec<User>>;
    /// The users for which `keep` is true, in key order: the `take` after the first `skip`,
    /// and the number of all matches. A commit in between can leave a user out of the page.
    fn users_page(
        &self,
        tenant: &str,
        keep: &(dyn Fn(&User) -> bool + Sync),
        skip: usize,
        take: usize,
    ) -> Result<UserPage>;
    // --- SCIM reads done by the store (h-scimread) ---
    /// The users that are not deleted and match `filter`, in byte order of the key: the
    /// `take` after the first `skip`, and the number of all matches. PostgreSQL translates the
    /// filter to SQL over the typed columns (`postgres::users_query`); sled evaluates it bucket
    /// by bucket ([`Users::users_page`]).
    fn users_matching(
        &self,
        tenant: &str,
        filter: &UserFilter,
        skip: usize,
        take: usize,
    ) -> Result<UserPage>;
    /// The groups named in the `groups` field of users that are not deleted, in byte order of
    /// the name (only `name` when given): the `take` after the first `skip`, each with its
    /// number of members, and the number of all such groups.
    fn groups_page(
        &self,
        tenant: &str,
        name: Option<&str>,
        skip: usize,
        take: usize,
    ) -> Result<GroupPage>;
    /// The users that are not deleted and list exactly `group` in their `groups` field, paged
    /// as [`Users::users_matching`].
    fn group_members(
        &self,
        tenant: &str,
        group: &str,
        skip: usize,
        take: usize,
    ) -> Result<UserPage>;
    /// The members of each of `groups` (one page of `/Groups`), as [`Users::group_members`]
    /// from the first, at most `budget` users over all of them: each group is read with what
    /// the ones before it left, so the bound holds even when a commit added members since
    /// they were counted (the caller compares the pages' totals with the budget). A backend
    /// overrides it when it can share work between the groups (sled).
    fn groups_members(
        &self,
        tenant: &str,
        groups: &[&str],
        budget: usize,
    ) -> Result<Vec<UserPage>> {
        within_budget(groups, budget, |group, left| {
            self.group_members(tenant, group, 0, left)
        })
    }
    // --- end SCIM reads ---
    // --- the console's user search (h-console-users) ---
    /// As [`Users::users_matching`], over the users whose status is `status` (every user, the
    /// soft-deleted too, when None): the console filters by status, deleted included. `total`
    /// is exact up to [`SEARCH_COUNT_CAP`] and `SEARCH_COUNT_CAP + 1` means "more" (PostgreSQL
    /// finds at most that many candidates through its indexes before it decides how to page:
    /// `postgres::users_query`; and counts no further than that when listing everyone, so a
    /// page of a 1,000,000-user tenant does not count the tenant).
    fn users_matching_status(
        &self,
        tenant: &str,
        filter: &UserFilter,
        status: Option<UserStatus>,
        skip: usize,
        take: usize,
    ) -> Result<UserPage>;
    // --- end console user search ---
    /// Number of users per status: (active, inactive, deleted).
    fn user_counts(&self, tenant: &str) -> Result<(u64, u64, u64)>;
    /// One user by key (tried as given, then lower-cased, as email and username keys are).
    fn user(&self, tenant: &str, key: &str) -> Result<Option<User>>;
    /// Whether `password` is the user's imported password (false when the user or the hash is
    /// missing). The hash itself never leaves the store.
    /// No caller in the server today: the tests check stored hashes with it.
    fn verify_user_password(&self, tenant: &str, key: &str, password: &str) -> Result<bool>;
}

/// Matches a filtered [`Users::users_matching_status`] counts exactly; one more means "more".
pub const SEARCH_COUNT_CAP: u64 = 10_000;

/// One group of a [`GroupPage`]: its name (from users' `groups` field) and member count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub name: String,
    /// Users that are not deleted and list the group.
    pub members: u64,
}

/// One page of the groups of a tenant ([`Users::groups_page`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupPage {
    /// Groups in the whole directory (matching the name, when one was given).
    pub total: u64,
    /// The page, sorted by name.
    pub groups: Vec<GroupSummary>,
}

/// The run log: what happened to each upload, and what waits.
pub trait RunLog: Send + Sync {
    /// A fresh, time-sortable import id such as `20261121T073000Z-0000000042`.
    fn new_import_id(&self, now: DateTime<Utc>) -> Result<String>;
    /// Stores (inserts or replaces) a record made outside a [`Commit`]. Durable on return. A
    /// record new to the store gets its event (`model::changelog::events_for`) in the same
    /// write; replacing a record (filled-in `archived_as`) announces nothing again.
    fn record_import(&self, record: &ImportRecord) -> Result<()>;
    /// [`RunLog::record_import`] with `mail` (if any) queued in the outbox in the same write (a
    /// `missing` run's mail: review s18 crash F2), refused ([`LeaseLost`]) unless this node's
    /// process still holds the store lease `lease`: a node that stalled past the tenant's
    /// lease must not record a file missing that another node imported meanwhile (review
    /// s27). The one-node sled store holds every lease.
    fn record_leased(
        &self,
        record: &ImportRecord,
        mail: Option<&OutboxMail>,
        lease: &str,
    ) -> Result<()>;
    /// The tenant's import history, newest first, at most `limit` records.
    fn history(&self, tenant: &str, limit: usize) -> Result<Vec<ImportRecord>> {
        self.history_from(tenant, 0, limit)
    }
    /// The tenant's import history, newest first, from the `skip`-th record on, at most
    /// `limit` records: a page costs its own records, not the ones before it.
    fn history_from(&self, tenant: &str, skip: usize, limit: usize) -> Result<Vec<ImportRecord>>;
    /// One history record by import id.
    fn import_record(&self, tenant: &str, id: &str) -> Result<Option<ImportRecord>>;
    /// A held plan's framed bytes (see `import::held`).
    fn held_plan(&self, tenant: &str, id: &str) -> Result<Option<Blob>>;
    /// Import ids of the tenant's held plans.
    fn held_plans(&self, tenant: &str) -> Result<Vec<String>>;
    /// The last run of a file name. History, not a recovery path (the intake recovers through
    /// claim stamps); no caller in the server today, the tests check the ledger with it.
    fn ledger_get(&self, tenant: &str, file: &str) -> Result<Option<LedgerEntry>>;
    /// The tenant's ledger entries whose file name sorts after `after` (byte order; "" for the
    /// first page), in that order, at most `limit`: what `migrate-store` reads back to check
    /// its copy, a page at a time.
    fn ledger_page(&self, tenant: &str, after: &str, limit: usize) -> Result<Vec<LedgerEntry>>;
    /// Says that claim `claim` is about to import `file`: the next engine commit of that file
    /// name (not an `approve`) stamps this claim. Durable on return.
    fn claim_running(&self, tenant: &str, file: &str, claim: &str) -> Result<()>;
    /// The import id that claim `claim` committed, if its run committed.
    fn claim_committed(&self, tenant: &str, claim: &str) -> Result<Option<String>>;
    /// Forgets claim `claim` (its folder is gone). Durable on return.
    fn claim_done(&self, tenant: &str, claim: &str) -> Result<()>;
    /// Ids of the tenant's stamped claims.
    fn claims_stamped(&self, tenant: &str) -> Result<Vec<String>>;
    /// Stores a record the intake made for claim `claim` together with the claim's stamp and
    /// the run's `mail` (if any), at once, so a restart finishes this record instead of making
    /// another, and its mail is queued exactly once. With `lease` (the store lease the caller
    /// holds, as [`Commit::lease`]) the write is refused with [`LeaseLost`] unless this node
    /// still holds it: a node that lost it while paused must not write a second record and
    /// mail beside the one that took its claim over.
    fn record_claimed(
        &self,
        record: &ImportRecord,
        claim: &str,
        mail: Option<&OutboxMail>,
        lease: Option<&str>,
    ) -> Result<()>;
    /// Retention (design §6): removes the tenant's import records that finished before
    /// `before`, and its file-ledger entries last written before it; never the tenant's newest
    /// record, one whose held plan still waits for approval, or one a claim stamp names (a
    /// restart finishes that run). Returns how many records went. Durable on return.
    fn trim_history(&self, tenant: &str, before: DateTime<Utc>) -> Result<u64>;
}

/// The most bytes of message bodies one `outbox_due` hands out (the first message always goes,
/// whatever its size): a pass of the mail worker holds about this much, not up to a hundred
/// reports of several MB each (reviewer s28).
pub const OUTBOX_DUE_BYTES: usize = 32 << 20;

/// The durable mail outbox: messages wait here until delivered, across restarts.
pub trait MailOutbox: Send + Sync {
    /// Queues a message for delivery now; returns its id. Durable on return.
    fn outbox_push(&self, recipients: &[String], message: &[u8]) -> Result<u64>;
    /// Messages whose next attempt is at or before `now`, oldest first (a bounded batch; a
    /// damaged entry is logged and left out, so it cannot stop the others).
    fn outbox_due(&self, now: DateTime<Utc>) -> Result<Vec<OutboxItem>>;
    /// Just before a message of the batch is sent: true when this node may still send it
    /// (with several nodes: it still holds the claim, renewed now; a node that took longer
    /// than its claim lets the message go instead of sending it twice), false when another
    /// node took it or it is gone.
    fn outbox_renew_claim(&self, id: u64) -> Result<bool>;
    /// How many messages are queued. An error when the store cannot tell (s29: PostgreSQL's
    /// answered 0 while it was down, and `/metrics` showed an empty outbox exactly when mail
    /// piled up).
    fn outbox_len(&self) -> Result<usize>;
    /// Removes a delivered message.
    fn outbox_mark_sent(&self, id: u64) -> Result<()>;
    /// Some recipients have the message: it goes on to `recipients` only.
    fn outbox_narrow(&self, id: u64, recipients: &[String]) -> Result<()>;
    /// Records a failed attempt: the message waits until `next_attempt`.
    fn outbox_defer(
        &self,
        id: u64,
        next_attempt: DateTime<Utc>,
        attempts: u32,
        error: &str,
    ) -> Result<()>;
}

/// What was committed, as applications are told it (docs/delivery.md): the change log, the
/// event log, and each delivery consumer's cursor. Entries are written only by commits (the
/// import engine's [`Commit`], a restore through [`Directory::update_user`]), in the same
/// transaction as the directory change.
pub trait ChangeLog: Send + Sync {
    /// The tenant's change-log entries with `seq > after`, in `seq` order, at most `limit`.
    fn changes(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<LoggedChange>>;
    /// One user's change-log entries, newest first, at most `limit`.
    fn user_changes(&self, tenant: &str, key: &str, limit: usize) -> Result<Vec<LoggedChange>>;
    /// The tenant's events with `seq > after`, in `seq` order, at most `limit`.
    fn events(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<Event>>;
    /// The cursor of `consumer` (a webhook endpoint, SCIM push) on the tenant's logs; the
    /// default (position 0) for a new consumer.
    fn cursor(&self, tenant: &str, consumer: &str) -> Result<Cursor>;
    /// Every stored cursor of the tenant, by consumer in byte order (what `migrate-store`
    /// copies and then reads back to check its copy).
    fn cursors(&self, tenant: &str) -> Result<Vec<(String, Cursor)>>;
    /// Stores the cursor of `consumer`. Durable on return.
    fn save_cursor(&self, tenant: &str, consumer: &str, cursor: &Cursor) -> Result<()>;
    /// Stores the cursor of `consumer` only while this process holds `lease` under the
    /// fencing number `fencing` (as [`Cluster::take_lease`] gave it), checked in the same
    /// transaction as the write, with the lease row locked until it ends: false, and nothing
    /// written, when the lease passed (even if it came back since, under a higher number).
    /// Durable on return. Decision (s29): a check followed by a plain write left one write
    /// to a node that lost the lease between the two.
    fn save_cursor_leased(
        &self,
        tenant: &str,
        consumer: &str,
        cursor: &Cursor,
        lease: (&str, u64),
    ) -> Result<bool>;
    /// Removes change-log and event entries older than `before`; returns how many.
    fn trim_changes(&self, tenant: &str, before: DateTime<Utc>) -> Result<u64>;
}

/// The pages `read` gives for each of `groups` in turn, each asked for at most what the ones
/// before it left of `budget` users ([`Users::groups_members`] and the backends' own).
pub fn within_budget(
    groups: &[&str],
    budget: usize,
    mut read: impl FnMut(&str, usize) -> Result<UserPage>,
) -> Result<Vec<UserPage>> {
    let mut left = budget;
    let mut out = Vec::with_capacity(groups.len());
    for group in groups {
        let page = read(group, left)?;
        left = left.saturating_sub(page.users.len());
        out.push(page);
    }
    Ok(out)
}

/// One backend behind every seam.
pub trait Backend: Directory + Users + RunLog + MailOutbox + ChangeLog + Cluster {
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<()>;

    /// Waits for work a commit left running on its own (the sled store's rebuild of its user
    /// lists after a large import); returns at once when there is none.
    fn settle(&self) {}
}

/// Handle to the store; cheap to clone, shareable across threads. Dereferences to the backend,
/// so `store.history(..)` is a [`RunLog`] call and `&*store` is a `&dyn Directory`.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    /// Whether writes succeed lately (`health`).
    health: Arc<health::WriteHealth>,
    /// The embedded store (sled): one process, and no recovery from an I/O error but a restart.
    embedded: bool,
}

impl Store {
    /// Opens (or creates) the sled store in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        let mut store = Store::new(SledStore::open(dir)?);
        store.embedded = true;
        Ok(store)
    }

    /// Whether the store's writes succeed lately (recorded by `serve`'s heartbeats).
    pub fn health(&self) -> &health::WriteHealth {
        &self.health
    }

    /// True for the embedded sled store.
    pub fn is_embedded(&self) -> bool {
        self.embedded
    }

    /// Connects to (and migrates) the PostgreSQL store at `target`, as node `node_id`.
    pub fn open_postgres(target: &postgres::PostgresTarget, node_id: &str) -> Result<Store> {
        Ok(Store::new(postgres::PostgresStore::open(target, node_id)?))
    }

    /// A handle on any backend.
    pub fn new(backend: impl Backend + 'static) -> Store {
        Store {
            backend: Arc::new(backend),
            health: Arc::default(),
            embedded: false,
        }
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;
    fn deref(&self) -> &(dyn Backend + 'static) {
        &*self.backend
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_is_found_under_further_context() {
        let e = anyhow::anyhow!("connection refused").context(Unavailable);
        let e = e.context("cannot read the history").context("admin API");
        assert!(is_unavailable(&e));
        assert!(!is_unavailable(&anyhow::anyhow!("a damaged record")));
    }
}
