//! Where import requests come from: SFTP upload events, the folder watcher (notify) and the
//! start-up scan; [`start`] also spawns the time-driven ones (`schedules`: cron schedules and
//! the daily retention sweep). Each turns into [`Intake::request_file`] or a queue request
//! after the settle time.
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

use super::{candidates, lock, on_upload, Intake};
use crate::sftp::UploadFinished;
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::EventKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
    intake.spawn(super::schedules::schedules(intake.clone()));
    intake.spawn(super::schedules::retention(intake.clone()));
}

/// `settle_ms` after an event of `name` of `tenant`, asks for it if the tenant imports on upload.
/// A file has one waiting task however many events it gets: events that come while it waits
/// are answered by one more request `settle_ms` after that one, so every event is followed by a
/// request at least `settle_ms` later, and a file with events in a loop is asked for once per
/// `settle_ms` (review s21: a client that set a file's time in a loop made a task per event,
/// and the server's memory grew by 12 MB a second).
fn settle_then_request(intake: &Intake, tenant: String, name: String) {
    let config = intake.shared.config.current();
    let Some(t) = config.tenant(&tenant) else {
        return;
    };
    if !on_upload(t) || crate::sftp::is_temp_name(&name) {
        return;
    }
    let settle = Duration::from_millis(config.server.settle_ms);
    let key = (tenant, name);
    {
        let mut settling = lock(&intake.shared.settling);
        if let Some(again) = settling.get_mut(&key) {
            *again = true;
            return;
        }
        settling.insert(key.clone(), false);
    }
    let later = intake.clone();
    intake.spawn(async move {
        let intake = later;
        loop {
            tokio::time::sleep(settle).await;
            intake.request_file(&key.0, &key.1);
            let mut settling = lock(&intake.shared.settling);
            match settling.get_mut(&key) {
                Some(again) if *again => *again = false,
                _ => {
                    settling.remove(&key);
                    break;
                }
            }
        }
    });
}

async fn consume_uploads(intake: Intake, mut uploads: mpsc::UnboundedReceiver<UploadFinished>) {
    let mut not_imported: std::collections::HashMap<String, crate::logs::EverySecond> =
        std::collections::HashMap::new();
    while let Some(ev) = uploads.recv().await {
        // Only files directly in `/` whose names match the tenant's `file` are imported; the
        // others are logged with the reason, so a near miss is not dropped without a word.
        let rel = ev.path.trim_start_matches('/');
        if rel.is_empty() {
            continue;
        }
        let config = intake.shared.config.current();
        let tenant = config.tenants.iter().find(|t| t.id == ev.tenant);
        if let Some(why) = tenant.and_then(|t| super::pattern::why_not_imported(&t.import, rel)) {
            // At most a line a second per tenant, with the count since: a client may upload
            // other names in a loop (review s21: 39,000 lines in 30 s).
            if let Some(skipped) = not_imported.entry(ev.tenant.clone()).or_default().hit() {
                tracing::info!(tenant = %ev.tenant, path = %ev.path, skipped, "upload not imported: {why}");
            }
            continue;
        }
        settle_then_request(&intake, ev.tenant, rel.to_string());
    }
}

/// Creates the homes of configured tenants, so the watcher watches them from its start.
fn create_homes(intake: &Intake) {
    let config = intake.shared.config.current();
    for t in &config.tenants {
        create_home(&config, t);
    }
}

/// Creates one tenant's home if missing (a failure is logged: its files wait for a rescan).
fn create_home(config: &crate::config::Config, t: &crate::config::Tenant) {
    let home = config.tenant_home(&t.id);
    if let Err(e) = std::fs::create_dir_all(&home) {
        tracing::error!(tenant = %t.id, "cannot create the tenant folder {}: {e}", home.display());
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
    create_home(config, t);
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
    events: WatchEvents,
}

/// The watcher's events, at most [`EVENT_BACKLOG`] waiting; past that they are dropped and
/// `overflowed` is set, and the folders are rescanned instead (as on the kernel's own overflow),
/// so what a client does to its files cannot make the backlog grow without bound.
struct WatchEvents {
    rx: mpsc::Receiver<notify::Result<notify::Event>>,
    overflowed: Arc<AtomicBool>,
}

/// Watcher events that may wait to be looked at.
const EVENT_BACKLOG: usize = 4096;

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
    let (tx, rx) = mpsc::channel(EVENT_BACKLOG);
    let overflowed = Arc::new(AtomicBool::new(false));
    match start_watcher(&tenants, tx, overflowed.clone()) {
        Ok(watcher) => Ok(Watching {
            tenants,
            watcher,
            events: WatchEvents { rx, overflowed },
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
    tx: mpsc::Sender<notify::Result<notify::Event>>,
    overflowed: Arc<AtomicBool>,
) -> notify::Result<notify::RecommendedWatcher> {
    let handler = move |ev: notify::Result<notify::Event>| {
        if tx.try_send(ev).is_err() {
            overflowed.store(true, Ordering::Relaxed);
        }
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
    events: WatchEvents,
) -> String {
    let WatchEvents { mut rx, overflowed } = events;
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
        if overflowed.swap(false, Ordering::Relaxed) {
            tracing::warn!("folder watcher events came faster than they were read; rescanning every tenant folder");
            rescan(intake);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Review s21 (F3): a client that sets a root file's time in a loop makes an event per
    /// request. They wait in one task per file, not one each, and the file is still asked for
    /// once the events stop.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_events_for_one_file_wait_in_one_task() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[server]\ndata_dir = \"{d}/data\"\nhost_keys = \"{d}/hk\"\nsettle_ms = 300\n\
             [[tenants]]\nid = \"acme\"\nauthorized_keys = [\"ssh-ed25519 \
             AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\"]\n",
            d = dir.path().display()
        );
        let config = crate::config::Config::parse(&text).unwrap();
        let handle = crate::config::ConfigHandle::new(&dir.path().join("roster.toml"), config);
        let store = crate::store::Store::open(&dir.path().join("store")).unwrap();
        let (_tx, rx) = mpsc::unbounded_channel();
        let intake = Intake::start(handle, store, rx, Arc::new(tokio::sync::Notify::new()));
        let tasks_before = lock(&intake.shared.tasks).len();
        for _ in 0..20_000 {
            settle_then_request(&intake, "acme".into(), "users.csv".into());
        }
        assert_eq!(lock(&intake.shared.settling).len(), 1);
        let tasks = lock(&intake.shared.tasks).len();
        assert!(
            tasks <= tasks_before + 1,
            "{tasks_before} tasks, then {tasks}"
        );
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert!(
            lock(&intake.shared.settling).is_empty(),
            "asked for after the events"
        );
    }

    /// An intake of one tenant, acme, on sled under `dir`; its store and folder. The watcher's
    /// own request for a new file waits ten minutes: only a look at the folder finds one.
    fn acme_intake(dir: &Path) -> (Intake, crate::store::Store, std::path::PathBuf) {
        let text = format!(
            "[server]\ndata_dir = \"{d}/data\"\nhost_keys = \"{d}/hk\"\nsettle_ms = 600000\n\
             [[tenants]]\nid = \"acme\"\nauthorized_keys = [\"ssh-ed25519 \
             AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\"]\n",
            d = dir.display()
        );
        let config = crate::config::Config::parse(&text).unwrap();
        let home = config.tenant_home("acme");
        let handle = crate::config::ConfigHandle::new(&dir.join("roster.toml"), config);
        let store = crate::store::Store::open(&dir.join("store")).unwrap();
        let (_tx, rx) = mpsc::unbounded_channel();
        let notify = Arc::new(tokio::sync::Notify::new());
        let intake = Intake::start(handle, store.clone(), rx, notify);
        (intake, store, home)
    }

    /// Waits up to a minute for Ann (of users.csv) in acme's directory.
    async fn ann_is_imported(store: &crate::store::Store, what: &str) {
        let imported = async {
            loop {
                if store.user("acme", "ann@x.example").ok().flatten().is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), imported)
            .await
            .expect(what);
    }

    /// Review s25: while a tenant's worker is busy, a client creating thousands of names made
    /// the queue keep every one. It keeps `MAX_WAITING_FILES`, then one look at the folder,
    /// which still finds a file whose name was not kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_tenant_keeps_a_bounded_queue_and_still_finds_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let (intake, store, home) = acme_intake(dir.path());
        // Every import permit taken: the worker waits with its first request.
        let permits = intake.shared.permits.clone();
        let all = u32::try_from(permits.available_permits()).unwrap();
        let held = permits.acquire_many_owned(all).await.unwrap();
        for i in 0..5_000 {
            intake.request_file("acme", &format!("gone-{i}.csv"));
        }
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(
            home.join("users.csv"),
            "email,first_name,last_name\nann@x.example,Ann,Lee\n",
        )
        .unwrap();
        intake.request_file("acme", "users.csv");
        let waiting = intake.queue("acme").waiting.clone();
        let kept = lock(&waiting).len();
        assert!(
            kept <= super::super::MAX_WAITING_FILES + 1,
            "{kept} waiting"
        );
        assert!(lock(&waiting).contains(super::super::LOOK_KEY));
        assert!(!lock(&waiting).contains("users.csv"), "past the limit");
        drop(held);
        ann_is_imported(&store, "the look at the folder imports users.csv").await;
    }

    /// Review s26: a tenant's worker that ended (a panic) left its queue closed, and every
    /// later request for the tenant went nowhere. The next request starts a new worker, which
    /// looks at the folder: a file whose request the dead queue swallowed is imported too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tenant_whose_worker_ended_gets_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let (intake, store, home) = acme_intake(dir.path());
        let first = intake.queue("acme");
        // The worker dies, as a panic would end it.
        for task in lock(&intake.shared.tasks).iter() {
            task.abort();
        }
        let closed = async {
            while !first.tx.is_closed() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .expect("the worker ended");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(
            home.join("users.csv"),
            "email,first_name,last_name\nann@x.example,Ann,Lee\n",
        )
        .unwrap();
        // A request for another name: only the new worker's look finds users.csv.
        intake.request_file("acme", "other.csv");
        ann_is_imported(&store, "the new worker imports users.csv").await;
    }
}
