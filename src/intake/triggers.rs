//! Where import requests come from: SFTP upload events, the folder watcher (notify), cron
//! schedules (croner, in each tenant's time zone), the start-up scan, and the daily retention
//! sweep. Each turns into [`Intake::request_file`] or a queue request after the settle time.
//!
//! The watcher watches `data/tenants/` and acts only on files directly in a tenant root, on
//! "closed after writing" and "renamed into place" (a file still being written is not touched);
//! the archive folders and Roster's own moves are ignored. Files uploaded through Roster's SFTP
//! server are seen twice (event and watcher); the queue merges them. The watcher never follows
//! links, and a watcher error is loud and recovered: logged as an error, the watcher is built
//! again and every tenant folder rescanned. The same happens when `data/tenants/` itself is
//! replaced or removed (a watch follows the old folder and would silently see nothing more):
//! its identity is checked every [`ROOT_CHECK`].
//!
//! A config reload that adds a tenant (also one removed earlier) gives it the start-up pick-up:
//! its claims and the finished files waiting in its root.

use super::{candidates, on_upload, Intake, Request, Shared};
use crate::sftp::UploadFinished;
use chrono::{DateTime, Utc};
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::EventKind;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;

pub(super) fn start(intake: Intake, uploads: mpsc::UnboundedReceiver<UploadFinished>) {
    super::cleanup::at_start(&intake.shared);
    // The watcher starts before the start-up scan: a file copied in between the two is then
    // seen by one or both (the queue merges them), never by neither.
    create_homes(&intake);
    watch_folders(&intake);
    startup(&intake);
    intake.spawn(consume_uploads(intake.clone(), uploads));
    intake.spawn(added_tenants(intake.clone()));
    intake.spawn(schedules(intake.clone()));
    intake.spawn(retention(intake.clone()));
}

/// After `settle_ms`, asks for `name` of `tenant` if the tenant imports on upload.
fn settle_then_request(intake: &Intake, tenant: String, name: String) {
    let config = intake.shared.config.current();
    let Some(t) = config.tenant(&tenant) else {
        return;
    };
    if !on_upload(t) || crate::sftp::is_temp_name(&name) {
        return;
    }
    let settle = Duration::from_millis(config.server.settle_ms);
    let later = intake.clone();
    intake.spawn(async move {
        let intake = later;
        tokio::time::sleep(settle).await;
        intake.request_file(&tenant, &name);
    });
}

async fn consume_uploads(intake: Intake, mut uploads: mpsc::UnboundedReceiver<UploadFinished>) {
    while let Some(ev) = uploads.recv().await {
        // Only files directly in `/` are imported.
        let rel = ev.path.trim_start_matches('/');
        if rel.is_empty() || rel.contains('/') {
            continue;
        }
        settle_then_request(&intake, ev.tenant, rel.to_string());
    }
}

/// Creates the homes of configured tenants, so the watcher watches them from its start.
fn create_homes(intake: &Intake) {
    let config = intake.shared.config.current();
    for t in &config.tenants {
        let home = config.tenant_home(&t.id);
        if let Err(e) = std::fs::create_dir_all(&home) {
            tracing::error!(tenant = %t.id, "cannot create the tenant folder {}: {e}", home.display());
        }
    }
}

/// For every configured tenant: queues claims left by an earlier process, then the complete
/// files waiting in its root.
fn startup(intake: &Intake) {
    let config = intake.shared.config.current();
    for t in &config.tenants {
        pick_up(intake, &config, t);
    }
}

/// For one tenant: creates its home, queues its claims left by an earlier process, then the
/// complete files waiting in its root (at start, and for a tenant a reload adds).
fn pick_up(intake: &Intake, config: &crate::config::Config, t: &crate::config::Tenant) {
    let home = config.tenant_home(&t.id);
    if let Err(e) = std::fs::create_dir_all(&home) {
        tracing::error!(tenant = %t.id, "cannot create the tenant folder {}: {e}", home.display());
    }
    // Claims are finished under the tenant's lease, in one request (see `lease`).
    intake.request_recover(&t.id);
    if on_upload(t) {
        for name in candidates(config, t) {
            tracing::info!(tenant = %t.id, file = %name, "found a finished upload waiting since before the start");
            intake.request_file(&t.id, &name);
        }
    }
}

/// Follows config reloads: a tenant that a reload adds (new, or configured again after being
/// removed) gets the same pick-up as at start, so files left while it was not configured are
/// imported.
async fn added_tenants(intake: Intake) {
    let mut changes = intake.shared.config.subscribe();
    let ids = |c: &crate::config::Config| -> std::collections::HashSet<String> {
        c.tenants.iter().map(|t| t.id.clone()).collect()
    };
    let mut known = ids(&intake.shared.config.current());
    while changes.changed().await.is_ok() {
        if intake.stopping() {
            return;
        }
        let config = intake.shared.config.current();
        for t in config.tenants.iter().filter(|t| !known.contains(&t.id)) {
            tracing::info!(tenant = %t.id, "tenant added by a config reload; picking up its waiting files");
            pick_up(&intake, &config, t);
        }
        known = ids(&config);
    }
}

/// (tenant, file name) when `path` is a file directly in a tenant root under `tenants`.
fn tenant_file(tenants: &Path, path: &Path) -> Option<(String, String)> {
    let rel = path.strip_prefix(tenants).ok()?;
    let mut parts = rel.components();
    let tenant = parts.next()?.as_os_str().to_str()?.to_string();
    let name = parts.next()?.as_os_str().to_str()?.to_string();
    parts.next().is_none().then_some((tenant, name))
}

/// Pause before watching again after the watcher failed or could not start.
const REWATCH_AFTER: Duration = Duration::from_secs(2);

/// A running folder watcher and its events.
struct Watching {
    tenants: PathBuf,
    watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
}

/// Starts watching `data/tenants` (created if missing), or says why not.
fn watch(intake: &Intake) -> Result<Watching, String> {
    let tenants = intake
        .shared
        .config
        .current()
        .server
        .data_dir
        .join("tenants");
    if let Err(e) = std::fs::create_dir_all(&tenants) {
        return Err(format!("cannot create {}: {e}", tenants.display()));
    }
    let tenants = tenants.canonicalize().unwrap_or(tenants);
    let (tx, events) = mpsc::unbounded_channel();
    match start_watcher(&tenants, tx) {
        Ok(watcher) => Ok(Watching {
            tenants,
            watcher,
            events,
        }),
        Err(e) => Err(format!("cannot watch {} ({e})", tenants.display())),
    }
}

/// Watches the tenant folders for as long as the intake runs. The first watcher is started
/// before this returns (so files copied in right after the start are seen). Links are not
/// followed (a link planted in a home is an entry, not a folder to descend into). A watcher
/// error is logged as an error, the watcher is built again and every tenant folder is
/// rescanned, so file pickup never stops silently.
fn watch_folders(intake: &Intake) {
    let mut current = watch(intake);
    let task = intake.clone();
    intake.spawn(async move {
        let intake = task;
        loop {
            match current {
                Ok(mut w) => {
                    let failure = follow_events(&intake, &w.tenants, &mut w.watcher, w.events).await;
                    drop(w.watcher);
                    tracing::error!("folder watcher failed ({failure}); watching again and rescanning every tenant folder");
                }
                Err(why) => tracing::error!(
                    "{why}; trying again (files copied in meanwhile are found by a rescan then)"
                ),
            }
            tokio::time::sleep(REWATCH_AFTER).await;
            if intake.stopping() {
                return;
            }
            current = watch(&intake);
            if current.is_ok() {
                tracing::warn!("folder watcher running again; rescanning every tenant folder");
                rescan(&intake);
            }
        }
    });
}

fn start_watcher(
    tenants: &Path,
    tx: mpsc::UnboundedSender<notify::Result<notify::Event>>,
) -> notify::Result<notify::RecommendedWatcher> {
    let handler = move |ev: notify::Result<notify::Event>| {
        let _ = tx.send(ev);
    };
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut watcher: notify::RecommendedWatcher = notify::Watcher::new(handler, config)?;
    notify::Watcher::watch(&mut watcher, tenants, notify::RecursiveMode::NonRecursive)?;
    for entry in std::fs::read_dir(tenants).map_err(notify::Error::io)? {
        let entry = entry.map_err(notify::Error::io)?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            watch_tenant(&mut watcher, &entry.path());
        }
    }
    Ok(watcher)
}

/// Watches one tenant folder, not the folders in it: only files directly in a tenant's folder
/// are imported, and a watch per sub-folder would let a tenant use up the server's inotify
/// watches with MKDIR (review of 2026-11-30, third round: about 190,000 folders stopped every
/// tenant's pickup). A folder gone meanwhile is not an error; one that cannot be watched is
/// logged, and its files are still found by the rescans.
fn watch_tenant(watcher: &mut notify::RecommendedWatcher, dir: &Path) {
    if let Err(e) = notify::Watcher::watch(watcher, dir, notify::RecursiveMode::NonRecursive) {
        if dir.is_dir() {
            tracing::warn!(folder = %dir.display(), "cannot watch a tenant folder ({e}); its files are found by rescans");
        }
    }
}

/// Requests every qualifying file of every tenant that imports on upload.
fn rescan(intake: &Intake) {
    let config = intake.shared.config.current();
    for t in config.tenants.iter().filter(|t| on_upload(t)) {
        for name in candidates(&config, t) {
            intake.request_file(&t.id, &name);
        }
    }
}

/// How often the watcher checks that `data/tenants/` is still the folder it watches.
const ROOT_CHECK: Duration = Duration::from_secs(2);

/// The identity (device, inode) of a folder, without following a link.
fn folder_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = path.symlink_metadata().ok()?;
    meta.is_dir().then(|| (meta.dev(), meta.ino()))
}

/// Turns watcher events into requests until the watcher reports an error, or the watched
/// folder is replaced or removed (the reason is returned).
async fn follow_events(
    intake: &Intake,
    tenants: &Path,
    watcher: &mut notify::RecommendedWatcher,
    mut rx: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
) -> String {
    let watched = folder_identity(tenants);
    let mut check = tokio::time::interval(ROOT_CHECK);
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = check.tick() => {
                if folder_identity(tenants) != watched {
                    return format!("{} was replaced or removed", tenants.display());
                }
                continue;
            }
        };
        let Some(ev) = ev else { break };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => return e.to_string(),
        };
        if ev.need_rescan() {
            tracing::warn!("folder watcher overflowed; rescanning every tenant folder");
            rescan(intake);
            continue;
        }
        // A tenant folder that appeared (a tenant added, a folder moved in) is watched from
        // now on, and what was copied into it before that is found by a rescan.
        let new_tenant = ev
            .paths
            .iter()
            .filter(|p| p.parent() == Some(tenants))
            .any(|p| {
                let appeared = matches!(
                    ev.kind,
                    EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
                );
                appeared && p.symlink_metadata().is_ok_and(|m| m.is_dir())
            });
        if new_tenant {
            for p in ev.paths.iter().filter(|p| p.parent() == Some(tenants)) {
                watch_tenant(watcher, p);
            }
            rescan(intake);
            continue;
        }
        let finished_writing = matches!(
            ev.kind,
            EventKind::Access(AccessKind::Close(AccessMode::Write))
                | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
        );
        if !finished_writing {
            continue;
        }
        // For a rename with both names, the destination is last.
        if let Some((tenant, name)) = ev.paths.last().and_then(|p| tenant_file(tenants, p)) {
            settle_then_request(intake, tenant, name);
        }
    }
    "its event channel closed".to_string()
}

/// Fires each tenant's cron schedule in its time zone; checks twice a second and follows
/// config reloads (a changed schedule takes effect from its next occurrence). At start, a tick
/// missed while no node ran (see [`missed_tick`]) is fired once.
async fn schedules(intake: Intake) {
    let mut next: HashMap<String, (String, DateTime<Utc>)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut at_start = true;
    loop {
        tick.tick().await;
        let first_pass = std::mem::take(&mut at_start);
        if intake.stopping() {
            return;
        }
        let config = intake.shared.config.current();
        let now = Utc::now();
        next.retain(|id, _| config.tenant(id).is_some());
        for t in &config.tenants {
            let p = &t.import;
            let Some(expr) = p
                .schedule
                .as_ref()
                .filter(|_| p.trigger != crate::config::Trigger::Upload)
            else {
                next.remove(&t.id);
                continue;
            };
            let key = format!("{expr}|{}", p.timezone);
            let due = match next.get(&t.id) {
                Some((k, at)) if *k == key => *at,
                _ => {
                    if let Some(at) = next_fire(expr, &p.timezone, now) {
                        tracing::info!(tenant = %t.id, schedule = %expr, timezone = %p.timezone, next = %at, "schedule set");
                        next.insert(t.id.clone(), (key, at));
                    }
                    if let Some(missed) = missed_tick(&intake, t, first_pass, now).await {
                        tracing::warn!(tenant = %t.id, schedule = %expr, tick = %missed, "running the schedule tick missed while Roster was stopped");
                        intake.request(&t.id, Request::Scheduled(missed));
                    }
                    continue;
                }
            };
            if now >= due {
                if fires_here(&intake, &t.id, due).await {
                    tracing::info!(tenant = %t.id, schedule = %expr, "schedule fired");
                    intake.request(&t.id, Request::Scheduled(due));
                }
                match next_fire(expr, &p.timezone, now) {
                    Some(at) => {
                        next.insert(t.id.clone(), (key, at));
                    }
                    None => {
                        next.remove(&t.id);
                    }
                }
            }
        }
    }
}

/// Whether this node fires the tenant's tick `due`: the store says yes to one node per tick
/// across the cluster (always, with sled), and yes again to that node if it asks twice. A
/// failed ask is tried again a few times (its answer may have been lost after the store
/// recorded this node's tick: skipping then ran the tick on no node; review of 2026-11-30,
/// PostgreSQL F4); when the store still cannot be asked, the tick is skipped and logged:
/// firing anyway could run it on every node.
async fn fires_here(intake: &Intake, tenant: &str, due: DateTime<Utc>) -> bool {
    let store = intake.shared.store.clone();
    let id = tenant.to_string();
    let asked = tokio::task::spawn_blocking(move || {
        let mut answer = store.fire_tick(&id, due);
        for _ in 0..TICK_ASKS {
            if answer.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_secs(2));
            answer = store.fire_tick(&id, due);
        }
        answer
    });
    match asked.await {
        Ok(Ok(true)) => true,
        Ok(Ok(false)) => {
            tracing::info!(%tenant, tick = %due, "schedule fired on another node");
            false
        }
        Ok(Err(e)) => {
            tracing::error!(%tenant, tick = %due, "the schedule tick is skipped: cannot record it in the store: {e:#}");
            false
        }
        Err(e) => {
            tracing::error!(%tenant, tick = %due, "the schedule tick is skipped: {e}");
            false
        }
    }
}

/// How far back a tick missed while Roster was stopped is still run at start.
const CATCH_UP: Duration = Duration::from_secs(6 * 3600);
/// Runs of the history looked at for a run since a tick.
const RECENT_RUNS: usize = 50;

/// At start (`first_pass`), the tenant's last tick before `now` if no node ran it: it is at
/// most [`CATCH_UP`] old, the history has a record before it (the schedule was in use; a fresh
/// install does not fire) and none since it (a tick that fired records an import or
/// `missing`), and no node fired it (`fire_tick`). Decision (review s15): a deploy or a
/// restart across 07:30 silently skipped the day's scheduled import, and with `only_today` a
/// `{date}` file never qualified again; only the last tick is run, once, and only within six
/// hours, so a schedule added with a restart does not fire for a tick long past.
async fn missed_tick(
    intake: &Intake,
    t: &crate::config::Tenant,
    first_pass: bool,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if !first_pass {
        return None;
    }
    let expr = t.import.schedule.as_deref()?;
    let missed = previous_fire(expr, &t.import.timezone, now)?;
    if (now - missed).to_std().ok()? > CATCH_UP {
        return None;
    }
    // A tick of another day would look for today's file (`{date}`, `only_today`) and report
    // it missing: such a tick is left (re-read of s15).
    let calendar = super::pattern::TenantCalendar::of(&t.import);
    if calendar.date_of(missed) != calendar.today() {
        return None;
    }
    let store = intake.shared.store.clone();
    let id = t.id.clone();
    let ran = tokio::task::spawn_blocking(move || {
        let recent = store.history(&id, RECENT_RUNS)?;
        let before = recent.iter().any(|r| r.started_at < missed);
        let since = recent.iter().any(|r| r.started_at >= missed);
        anyhow::Ok(since || !before)
    })
    .await;
    match ran {
        Ok(Ok(false)) => {}
        Ok(Ok(true)) => return None,
        Ok(Err(e)) => {
            tracing::warn!(tenant = %t.id, "cannot read the history to find a missed schedule tick: {e:#}");
            return None;
        }
        Err(_) => return None,
    }
    fires_here(intake, &t.id, missed).await.then_some(missed)
}

/// True when the tenant's history has a run (not a `missing`) of a file that arrived after
/// `since` (`received_at`, the file's modification time). The file a tick itself ran arrived
/// before that tick, so it does not count for the next one: a day without a file after a day
/// with one is reported (the re-read of s15 found the first version, by `started_at`, silent
/// then).
fn file_came_since(
    store: &crate::store::Store,
    tenant: &str,
    since: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let recent = store.history(tenant, RECENT_RUNS)?;
    Ok(recent
        .iter()
        .any(|r| r.received_at > since && r.status != crate::model::ImportStatus::Missing))
}

/// True when a file of the tenant came after the tick before `tick` and was run (uploaded and
/// imported between two ticks with `trigger = "both"`, or by `run-now`): the tick then finds
/// nothing and must not report the file missing (review s15: a false "missing" mail every day).
/// A client that keeps the source's modification time (`sftp -p`), older than that tick, is
/// still reported missing, as before.
pub(super) fn ran_since_last_tick(
    shared: &Shared,
    tenant: &crate::config::Tenant,
    tick: DateTime<Utc>,
) -> bool {
    let p = &tenant.import;
    let since = (p.schedule.as_deref())
        .and_then(|expr| previous_fire(expr, &p.timezone, tick))
        .unwrap_or(tick - chrono::Duration::days(1));
    match file_came_since(&shared.store, &tenant.id, since) {
        Ok(ran) => {
            if ran {
                tracing::info!(tenant = %tenant.id, %tick, "schedule tick found no file: one came and was run since the tick before");
            }
            ran
        }
        Err(e) => {
            tracing::warn!(tenant = %tenant.id, "cannot read the history; the tick is reported as missing: {e:#}");
            false
        }
    }
}

/// How many more times a failed tick is asked for (2 s apart).
const TICK_ASKS: usize = 3;

/// The next time `expr` fires after `after`, in time zone `tz`.
pub fn next_fire(expr: &str, tz: &str, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = croner::Cron::from_str(expr).ok()?;
    let tz: chrono_tz::Tz = tz.parse().ok()?;
    cron.find_next_occurrence(&after.with_timezone(&tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The last time `expr` fired before `before`, in time zone `tz`.
pub fn previous_fire(expr: &str, tz: &str, before: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = croner::Cron::from_str(expr).ok()?;
    let tz: chrono_tz::Tz = tz.parse().ok()?;
    cron.find_previous_occurrence(&before.with_timezone(&tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Deletes old archived files and reports, and change-log entries older than the tenant's
/// `retention_days`, at start and then daily.
async fn retention(intake: Intake) {
    let mut tick = tokio::time::interval(Duration::from_secs(86_400));
    loop {
        tick.tick().await;
        let config = intake.shared.config.current();
        for t in &config.tenants {
            let home = config.tenant_home(&t.id);
            let days = t.import.retention_days;
            let removed = tokio::task::spawn_blocking(move || super::archive::sweep(&home, days))
                .await
                .unwrap_or(0);
            if removed > 0 {
                tracing::info!(tenant = %t.id, removed, days, "retention: old archived files deleted");
            }
            // issue 12: change-log and event entries older than retention_days go too.
            let store = intake.shared.store.clone();
            // Never panics: validation bounds `days`, and a date before the calendar trims nothing.
            let before = chrono::Duration::try_days(i64::from(days))
                .and_then(|d| Utc::now().checked_sub_signed(d))
                .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
            let id = t.id.clone();
            match tokio::task::spawn_blocking(move || store.trim_changes(&id, before)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(trimmed)) => {
                    tracing::info!(tenant = %t.id, trimmed, days, "retention: old change-log entries removed")
                }
                Ok(Err(e)) => {
                    tracing::warn!(tenant = %t.id, "retention: cannot trim the change log: {e:#}")
                }
                Err(e) => tracing::warn!(tenant = %t.id, "retention: the trim task failed: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_in_a_time_zone() {
        let after = DateTime::parse_from_rfc3339("2026-11-21T05:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        // 07:30 in Zagreb (UTC+1 in November) is 06:30 UTC.
        let at = next_fire("30 7 * * *", "Europe/Zagreb", after).unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-21T06:30:00+00:00");
        let every5 = next_fire("*/5 * * * *", "UTC", after).unwrap();
        assert_eq!(every5.to_rfc3339(), "2026-11-21T05:05:00+00:00");
    }

    #[test]
    fn only_root_files_of_a_tenant() {
        let t = Path::new("/d/tenants");
        assert_eq!(
            tenant_file(t, Path::new("/d/tenants/acme/users.csv")),
            Some(("acme".into(), "users.csv".into()))
        );
        assert_eq!(
            tenant_file(t, Path::new("/d/tenants/acme/processed/users.csv")),
            None
        );
        assert_eq!(tenant_file(t, Path::new("/d/tenants/acme")), None);
    }
}
