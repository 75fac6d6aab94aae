//! Which files of a tenant's root are ready to import now: directly in the root, matching the
//! tenant's `file` pattern, not a temp name, and not marked by the SFTP server as an upload
//! still under way.
//!
//! Data enters as the config, a tenant and (for [`qualifies`]) one file name; it leaves as
//! file names, oldest first, or the qualifying file's modification time. Read by the intake's
//! queue before each run and by the admin API's "today" view.
//!
//! A file no upload marker covers (copied in locally, written through `roster sftp-server`, or
//! an upload of a client the SFTP server cannot follow) may still be being written when a
//! schedule tick, run-now or a rescan finds it: a run takes it only once it has gone
//! unmodified for the settle time ([`wait_until_quiet`]). Decision (review s29): only watcher
//! events waited out `settle_ms`; a tick that landed mid-write took the first part of the
//! file, and `on_missing` then deactivated the users of the rest.

use std::time::{Duration, SystemTime};

use super::pattern::FilePattern;
use crate::config::Tenant;
use crate::sftp::{is_temp_name, FileId, InProgress};

/// Files of `tenant` in its root that qualify for import now, oldest first.
pub fn candidates(config: &crate::config::Config, tenant: &Tenant) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(config.tenant_home(&tenant.id)) else {
        return Vec::new();
    };
    let mut found: Vec<(std::time::SystemTime, String)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let modified = qualifies(config, tenant, &name)?;
            Some((modified, name))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, n)| n).collect()
}

/// Whether `name` in the tenant root qualifies for import now (see the module doc); if so,
/// its modification time.
pub(super) fn qualifies(
    config: &crate::config::Config,
    tenant: &Tenant,
    name: &str,
) -> Option<std::time::SystemTime> {
    if is_temp_name(name) || FilePattern::new(&tenant.import).matches(name).is_none() {
        return None;
    }
    let meta = config
        .tenant_home(&tenant.id)
        .join(name)
        .symlink_metadata()
        .ok()?;
    let uploads = InProgress::new(&config.server.data_dir, &tenant.id);
    if !meta.is_file() || uploads.is_unfinished(FileId::of(&meta)) {
        return None;
    }
    Some(meta.modified().unwrap_or(std::time::UNIX_EPOCH))
}

/// How recently a file must have changed to count as an upload under way for
/// [`upload_under_way`] (an upload broken off long ago holds nothing back).
pub const UPLOAD_FRESH: Duration = Duration::from_secs(600);

/// The temporary-name endings of [`crate::sftp::is_temp_name`] that a client renames away
/// when its upload is done (`users.csv.filepart` becomes `users.csv`).
const TEMP_ENDINGS: [&str; 4] = [".filepart", ".part", ".partial", ".tmp"];

/// Whether an upload of a file the tenant imports looks under way in its root: a matching
/// name an SFTP upload is still writing (or broke off), or a temporary name whose final name
/// matches (`users.csv.filepart`), changed within [`UPLOAD_FRESH`]. A schedule tick that finds
/// no file but such an upload waits for it instead of reporting the file missing (review s30:
/// a tick that landed during the nightly upload said "no file was there", and under
/// `trigger = "schedule"` the finished upload then started nothing).
pub fn upload_under_way(config: &crate::config::Config, tenant: &Tenant) -> bool {
    let Ok(entries) = std::fs::read_dir(config.tenant_home(&tenant.id)) else {
        return false;
    };
    let pattern = FilePattern::new(&tenant.import);
    let uploads = InProgress::new(&config.server.data_dir, &tenant.id);
    entries.flatten().any(|e| {
        let (Ok(name), Ok(meta)) = (e.file_name().into_string(), e.metadata()) else {
            return false;
        };
        let fresh = (meta.modified().ok())
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age < UPLOAD_FRESH);
        if !meta.is_file() || !fresh || name.starts_with('.') {
            return false;
        }
        let lower = name.to_ascii_lowercase();
        match TEMP_ENDINGS.iter().find(|t| lower.ends_with(*t)) {
            Some(t) => pattern.matches(&name[..name.len() - t.len()]).is_some(),
            None => pattern.matches(&name).is_some() && uploads.is_unfinished(FileId::of(&meta)),
        }
    })
}

/// The longest quiet time asked of a file, whatever `settle_ms` says (a settle time of
/// minutes is for the watcher's events; a run waits at most this for a file to be quiet).
pub const QUIET_AT_MOST: Duration = Duration::from_secs(10);

/// The longest a run waits for a file that keeps changing before it leaves it (to the next
/// event, rescan or tick).
pub const WAIT_AT_MOST: Duration = Duration::from_secs(120);

/// The shortest look at a file whose modification time says it is already quiet: a writer
/// still under way changes its size or times within it.
const LOOK: Duration = Duration::from_millis(250);

/// What a look at a file sees; a writer changes at least one of these.
#[derive(PartialEq)]
struct Seen {
    dev: u64,
    ino: u64,
    len: u64,
    modified: SystemTime,
    changed: (i64, i64),
}

impl Seen {
    fn of(path: &std::path::Path) -> Option<Seen> {
        use std::os::unix::fs::MetadataExt;
        let m = path.symlink_metadata().ok()?;
        Some(Seen {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            changed: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Waits until `path` has gone unmodified for `settle` (at most [`QUIET_AT_MOST`]): true then,
/// false when it is gone or still changing after [`WAIT_AT_MOST`].
///
/// Quiet is judged by watching the file on this machine's own steady clock, never by its
/// modification time alone: on a shared file system (NFS, CephFS) the file server stamps that
/// time by its clock, and a client may set any time (review s30, F6: a server clock behind
/// this node's made a file being copied in look quiet at once; one ahead, for ever). Each look
/// compares size, inode and both times with the previous look: unchanged after the settle time
/// less the file's age (at least [`LOOK`], or all of it when the time is in the future), the
/// file is quiet. `settle_ms = 0` waits for nothing, as documented.
pub fn wait_until_quiet(path: &std::path::Path, settle: Duration) -> bool {
    let quiet = settle.min(QUIET_AT_MOST);
    let look = quiet.min(LOOK);
    let started = std::time::Instant::now();
    let Some(mut seen) = Seen::of(path) else {
        return false;
    };
    loop {
        let wait = match SystemTime::now().duration_since(seen.modified) {
            Ok(age) if age >= quiet => look,
            Ok(age) => (quiet - age).max(look),
            Err(_) => quiet,
        };
        std::thread::sleep(wait);
        let Some(now) = Seen::of(path) else {
            return false;
        };
        if now == seen {
            return true;
        }
        if started.elapsed() >= WAIT_AT_MOST {
            return false;
        }
        seen = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file still being written when a run looks is taken only after its writer stopped.
    #[test]
    fn a_file_being_written_is_waited_for_until_it_is_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.csv");
        let mut file = std::fs::File::create(&path).unwrap();
        let writer = std::thread::spawn(move || {
            for i in 0..10 {
                writeln!(file, "row {i}").unwrap();
                file.flush().unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(wait_until_quiet(&path, Duration::from_millis(300)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 10, "taken mid-write: {text:?}");
        writer.join().unwrap();
        // Gone: false at once.
        std::fs::remove_file(&path).unwrap();
        assert!(!wait_until_quiet(&path, Duration::from_millis(300)));
    }

    /// A writer whose file carries an old modification time (a file server whose clock is
    /// behind this node's, or a client that sets the time as it writes) is still waited for:
    /// the file is watched, not judged by its time.
    #[test]
    fn a_file_being_written_with_an_old_time_is_still_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.csv");
        let mut file = std::fs::File::create(&path).unwrap();
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let writer = std::thread::spawn(move || {
            for i in 0..10 {
                writeln!(file, "row {i}").unwrap();
                file.set_modified(an_hour_ago).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(wait_until_quiet(&path, Duration::from_secs(1)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 10, "taken mid-write: {text:?}");
        writer.join().unwrap();
    }

    /// `settle_ms = 0` waits for nothing.
    #[test]
    fn no_settle_time_is_no_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.csv");
        std::fs::write(&path, b"email\n").unwrap();
        let started = std::time::Instant::now();
        assert!(wait_until_quiet(&path, Duration::ZERO));
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
