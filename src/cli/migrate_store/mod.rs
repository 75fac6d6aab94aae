//! `roster migrate-store --to postgres://...`: copies the embedded sled store under
//! `data_dir/store` into an empty PostgreSQL store, then checks the copy.
//!
//! Data enters as the config path (for `data_dir`) and the target URL; it is read from sled
//! through the store traits (plus the two read-only listings `SledStore::tenants` and
//! `SledStore::ledger_entries`) and written to PostgreSQL through the traits where they write
//! (`stage_bucket` + `commit` for each tenant's directory, `record_import` for history) and
//! through `PostgresStore`'s copy helpers for the rest (held plans, ledger, claim stamps, the
//! outbox as it stands, the tenant's version and last applied sha256, the change log, event log,
//! their counters and the delivery cursors, see [`copy_change_log`]). It leaves as lines on
//! stdout: what was copied per tenant, then what [`verify`] (`verify.rs`) read back from both
//! stores per tenant (users per status, records, plans counted; ledger, claim stamps, change
//! log, event log and cursors compared entry by entry) and the outbox; any difference is an
//! error (exit 1).
//!
//! Before the first row is written the copy marks the target as being filled (`roster.meta`
//! row `migration_in_progress`, `store::postgres::COPY_MARKER`) and it removes the mark only
//! once the check passed: a copy that stopped part way (a failed write, a difference, Ctrl-C,
//! a kill) leaves a store that `roster serve` refuses to open, saying to drop its schema and
//! copy again. The lines on stdout are progress only: when stdout is gone (`| head -1`) the
//! copy goes on and finishes rather than stopping half way.
//!
//! The server must be stopped: sled lets one process open its files, so a running `roster
//! serve` makes the copy fail at once. A target that already holds any user, record, plan or
//! mail is refused before anything is written, and so is one where a node is alive (a `roster
//! serve` already running on PostgreSQL). While it copies, the copy heartbeats as node
//! [`NODE_ID`], so that a node started meanwhile does not take its staged rows for a dead
//! node's and sweep them; it leaves `roster.nodes` when it ends. Claims that were running (no
//! stamp) are not copied: the intake runs their files again from their folders.

use crate::config::Config;
use crate::store::postgres::{parse_url, PostgresStore};
use crate::store::{
    ChangeLog, Cluster, Commit, Directory, MailOutbox, NodeBeat, RunLog, SledStore,
};
use anyhow::{bail, Context, Result};

use std::path::Path;

mod verify;
pub use verify::{check_tenant, verify, Kind, KindCheck, TenantCheck};

/// The node id the copy writes as (staged rows carry it; `roster serve` refuses to start while
/// it is alive).
const NODE_ID: &str = crate::store::MIGRATE_STORE_NODE_ID;

/// Buckets staged per commit while copying a directory.
const BUCKETS_PER_COMMIT: usize = 64;

/// Runs `migrate-store` for the config at `config_path` into the store at `to`.
pub fn run(config_path: &Path, to: &str) -> Result<()> {
    let config = Config::load(config_path)?;
    let dir = config.server.data_dir.join("store");
    if !dir.is_dir() {
        bail!("there is no embedded store in {} to copy", dir.display());
    }
    let target = parse_url(to)
        .map_err(|e| anyhow::anyhow!(e.replace("[store] url (or ROSTER_STORE_URL)", "--to")))?;
    say(format_args!(
        "migrate-store: copying the embedded store in {} (roster serve must be stopped) to \
         PostgreSQL at {}",
        dir.display(),
        target.describe()
    ));
    let from = SledStore::open(&dir).map_err(|e| {
        // Only sled's lock means another process has the store open (review s30: every
        // failure, a damaged store included, said to stop roster serve).
        let locked = e
            .chain()
            .any(|c| c.to_string().contains("could not acquire lock"));
        let why = match locked {
            true => ": stop roster serve first (only one process may open it)",
            false => "",
        };
        e.context(format!(
            "cannot open the embedded store in {}{why}",
            dir.display()
        ))
    })?;
    let mut to =
        PostgresStore::open_for_copy(&target, NODE_ID)?.with_lease_secs(config.cluster.lease_secs);
    let beat = NodeBeat {
        sftp: "-".to_string(),
        admin: "-".to_string(),
        version: format!("{} (migrate-store)", env!("CARGO_PKG_VERSION")),
        started_at: chrono::Utc::now(),
    };
    // The copy's heartbeat first, then the checks: a `roster serve` starting from now on sees
    // the copy and refuses to start (review s27: it beat only after the checks, and a node
    // starting in between could import into the target). A second copy fails here (a live
    // process under the same id).
    to.heartbeat(&beat)?;
    let prepared = prepare_target(&from, &mut to, &target, config.cluster.lease_secs);
    if prepared.is_err() {
        if let Err(e) = to.leave() {
            tracing::warn!("cannot remove the copy's row from roster.nodes: {e:#}");
        }
    }
    prepared?;
    let note = format!(
        "copying {} since {}",
        dir.display(),
        chrono::Utc::now().to_rfc3339()
    );
    if let Err(e) = to.mark_copy_begun(&note) {
        if let Err(e) = to.leave() {
            tracing::warn!("cannot remove the copy's row from roster.nodes: {e:#}");
        }
        return Err(e);
    }
    let every = crate::store::beat_interval(config.cluster.lease_secs);
    let copied = std::thread::scope(|scope| {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        scope.spawn(|| beat_until(&to, &beat, every, stopped));
        let copied = copy_all(&from, &to, &beat);
        drop(stop);
        copied
    });
    if let Err(e) = to.leave() {
        tracing::warn!("cannot remove the copy's row from roster.nodes: {e:#}");
    }
    copied
        .and_then(|()| to.mark_copy_finished())
        .with_context(|| {
            format!(
                "the copy did not finish: the PostgreSQL store at {} is partly filled and \
                 roster serve refuses to open it; drop its schema (DROP SCHEMA roster CASCADE) \
                 and run roster migrate-store again",
                target.describe()
            )
        })?;
    say(format_args!(
        "migrate-store: done; set [store] url (or ROSTER_STORE_URL) to serve from PostgreSQL"
    ));
    Ok(())
}

/// Prints one line of progress on stdout. A failed write (the reader went away, as with
/// `| head -1`) is ignored: the copy goes on to its end, so the target is either complete and
/// verified or marked as unfinished, never left half way because of the output (review s30).
pub(super) fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Refuses a target a node serves or that holds data, drops what an earlier copy staged, and
/// gives the target the embedded store's fingerprint key (the copied records' password
/// fingerprints were made with it).
fn prepare_target(
    from: &SledStore,
    to: &mut PostgresStore,
    target: &crate::store::postgres::PostgresTarget,
    lease_secs: u64,
) -> Result<()> {
    refuse_live_nodes(to, lease_secs)?;
    to.forget_own_staging()?;
    if let Some(note) = to.unfinished_copy()? {
        bail!(
            "an earlier migrate-store did not finish ({}): the PostgreSQL store at {} is \
             partly filled; drop its schema (DROP SCHEMA roster CASCADE) and run migrate-store \
             again",
            crate::logs::escape(&note),
            target.describe()
        );
    }
    if to.holds_data()? {
        bail!(
            "the target already holds data; migrate-store only fills an empty store \
             (PostgreSQL at {})",
            target.describe()
        );
    }
    to.adopt_fingerprint_key(from.fingerprint_key())
}

/// Heartbeats every `every` until `stop` is dropped, beside the explicit beats between
/// commits: one statement of the copy (a large tenant's history, say) may outlast the lease,
/// and a node taking the copy for dead would sweep its staged rows.
fn beat_until(
    to: &PostgresStore,
    beat: &NodeBeat,
    every: std::time::Duration,
    stop: std::sync::mpsc::Receiver<()>,
) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        if let Err(e) = to.heartbeat(beat) {
            tracing::warn!("migrate-store: heartbeat not recorded: {e:#}");
        }
    }
}

/// Refuses a target where a node is alive: a `roster serve` is running on it (migrate-store
/// fills a store no server uses yet), or another copy is.
fn refuse_live_nodes(to: &PostgresStore, lease_secs: u64) -> Result<()> {
    let live: Vec<String> = to
        .nodes()?
        .into_iter()
        .filter(|n| n.alive && n.node_id != NODE_ID)
        .map(|n| {
            format!(
                "{} (last heartbeat {})",
                n.node_id,
                n.heartbeat_at.to_rfc3339()
            )
        })
        .collect();
    if !live.is_empty() {
        bail!(
            "roster serve is running on the target: node(s) {} alive; stop every node first \
             (a node counts as stopped {lease_secs} s after its last heartbeat)",
            live.join(", ")
        );
    }
    Ok(())
}

/// Copies every tenant and the outbox, heartbeating as [`NODE_ID`] between tenants and
/// between commits, then verifies the copy ([`verify`]).
fn copy_all(from: &SledStore, to: &PostgresStore, beat: &NodeBeat) -> Result<()> {
    to.heartbeat(beat)?;
    let tenants = from.tenants()?;
    for tenant in &tenants {
        let buckets = copy_directory(from, to, tenant, beat)?;
        to.heartbeat(beat)?;
        let log = copy_run_log(from, to, tenant)?;
        let (changes, events, cursors) = copy_change_log(from, to, tenant)?;
        say(format_args!(
            "  {tenant}: {buckets} bucket(s), {} record(s), {} held plan(s), {} ledger \
             entr(ies), {} claim stamp(s), {changes} change(s), {events} event(s), {cursors} \
             cursor(s)",
            log.records, log.plans, log.ledger, log.stamps
        ));
    }
    to.heartbeat(beat)?;
    let mail = copy_outbox(from, to)?;
    say(format_args!("  outbox: {mail} message(s)"));
    verify(from, to, &tenants)?;
    let from_mail = from.outbox_len()?;
    if mail != from_mail {
        bail!(
            "the copy does not match: the embedded outbox holds {from_mail} message(s) and \
             {mail} were copied; do not serve from this PostgreSQL store (drop its roster \
             schema, or the database, and run migrate-store again)"
        );
    }
    Ok(())
}

/// Copies one tenant's directory bucket by bucket ([`BUCKETS_PER_COMMIT`] per commit,
/// heartbeating with `beat` before each), then its version and last applied sha256; returns
/// the number of buckets copied.
pub fn copy_directory(
    from: &SledStore,
    to: &PostgresStore,
    tenant: &str,
    beat: &NodeBeat,
) -> Result<usize> {
    let state = from.tenant_state(tenant)?;
    let used: Vec<(u16, u64)> = state
        .gens
        .iter()
        .enumerate()
        .filter(|(_, gen)| **gen != 0)
        .filter_map(|(b, gen)| u16::try_from(b).ok().map(|b| (b, *gen)))
        .collect();
    // (A tenant without users never asks the target's directory.)
    let mut version = if used.is_empty() {
        0
    } else {
        to.tenant_state(tenant)?.version
    };
    for chunk in used.chunks(BUCKETS_PER_COMMIT) {
        to.heartbeat(beat)?;
        let mut staged = Vec::with_capacity(chunk.len());
        for &(bucket, gen) in chunk {
            let Some(packed) = from.bucket(tenant, bucket, gen)? else {
                continue;
            };
            match to.stage_bucket(tenant, bucket, &packed) {
                Ok(new_gen) => staged.push((bucket, new_gen)),
                Err(e) => {
                    discard(to, tenant, &staged);
                    return Err(
                        e.context(format!("cannot copy bucket {bucket} of tenant {tenant}"))
                    );
                }
            }
        }
        let commit = Commit {
            tenant: tenant.to_string(),
            expected_version: version,
            buckets: staged.clone(),
            ..Default::default()
        };
        match to.commit(&commit) {
            Ok(st) => version = st.version,
            Err(e) => {
                discard(to, tenant, &staged);
                return Err(e.context(format!("cannot copy the directory of tenant {tenant}")));
            }
        }
    }
    if state.version != 0 || state.last_applied_sha256.is_some() {
        to.restore_tenant_state(tenant, state.version, state.last_applied_sha256.as_deref())?;
    }
    Ok(used.len())
}

/// Drops what a failed commit had staged; a failure to drop it is logged, not returned, so
/// the error the copy reports is the one that stopped it (the heartbeats' sweep removes the
/// rows once this node has left).
fn discard(to: &PostgresStore, tenant: &str, staged: &[(u16, u64)]) {
    if let Err(e) = to.discard_staged(tenant, staged) {
        tracing::warn!(
            tenant,
            "cannot drop the rows staged for the failed copy: {e:#}"
        );
    }
}

/// What [`copy_run_log`] copied of one tenant.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunLogCopied {
    pub records: usize,
    pub plans: usize,
    pub ledger: usize,
    pub stamps: usize,
}

/// Copies one tenant's history, held plans, ledger entries and claim stamps.
pub fn copy_run_log(from: &SledStore, to: &PostgresStore, tenant: &str) -> Result<RunLogCopied> {
    let mut copied = RunLogCopied::default();
    for record in from.history(tenant, usize::MAX)? {
        to.record_import(&record)?;
        copied.records += 1;
    }
    for id in from.held_plans(tenant)? {
        if let Some(plan) = from.held_plan(tenant, &id)? {
            to.put_held_plan(tenant, &id, &plan)?;
            copied.plans += 1;
        }
    }
    for entry in from.ledger_entries(tenant)? {
        to.put_ledger_entry(&entry)?;
        copied.ledger += 1;
    }
    for claim in from.claims_stamped(tenant)? {
        if let Some(import_id) = from.claim_committed(tenant, &claim)? {
            to.put_claim_stamp(tenant, &claim, &import_id)?;
            copied.stamps += 1;
        }
    }
    Ok(copied)
}

/// Entries of the logs copied per write.
const LOG_PAGE: usize = 1000;

/// Copies one tenant's change log, event log (replacing the events `record_import` made while
/// the history was copied), log counters and delivery cursors, a page at a time; returns the
/// numbers of changes, events and cursors copied. Run after [`copy_run_log`].
pub fn copy_change_log(
    from: &SledStore,
    to: &PostgresStore,
    tenant: &str,
) -> Result<(usize, usize, usize)> {
    to.clear_logs(tenant)?;
    let (mut changes, mut events) = (0, 0);
    let mut after = 0;
    loop {
        let page = from.changes(tenant, after, LOG_PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        to.put_logs(tenant, &page, &[])?;
        changes += page.len();
    }
    after = 0;
    loop {
        let page = from.events(tenant, after, LOG_PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        to.put_logs(tenant, &[], &page)?;
        events += page.len();
    }
    let (change_seq, event_seq) = from.log_counters(tenant)?;
    to.set_log_counters(tenant, change_seq, event_seq)?;
    let cursors = from.cursors(tenant)?;
    for (consumer, cursor) in &cursors {
        to.save_cursor(tenant, consumer, cursor)?;
    }
    Ok((changes, events, cursors.len()))
}

/// Copies every queued message, oldest first, with its attempts, next attempt and last error;
/// fails on a damaged one. (It read the delivery pass, which hands out at most 100 messages
/// and skips damaged ones: the rest were lost, and the check below compared the copy with
/// itself. Review of 2026-11-30, PostgreSQL F1.)
pub fn copy_outbox(from: &SledStore, to: &PostgresStore) -> Result<usize> {
    let mut copied = 0;
    from.outbox_each(|item| {
        copied += 1;
        to.put_outbox_item(&item).map(drop)
    })?;
    Ok(copied)
}
