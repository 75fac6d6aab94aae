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

/// The longest quiet time asked of a file, whatever `settle_ms` says (a settle time of
/// minutes is for the watcher's events; a run waits at most this for a file to be quiet).
pub const QUIET_AT_MOST: Duration = Duration::from_secs(10);

/// The longest a run waits for a file that keeps changing before it leaves it (to the next
/// event, rescan or tick).
pub const WAIT_AT_MOST: Duration = Duration::from_secs(120);

/// Waits until `path` has gone unmodified for `settle` (at most [`QUIET_AT_MOST`]): true then,
/// false when it is gone or still changing after [`WAIT_AT_MOST`]. A modification time in the
/// future (a client may set any) counts as quiet: no writer leaves one behind.
pub fn wait_until_quiet(path: &std::path::Path, settle: Duration) -> bool {
    let quiet = settle.min(QUIET_AT_MOST);
    let started = std::time::Instant::now();
    loop {
        let Ok(modified) = path.symlink_metadata().and_then(|m| m.modified()) else {
            return false;
        };
        let age = SystemTime::now()
            .duration_since(modified)
            .unwrap_or(Duration::MAX);
        if age >= quiet {
            return true;
        }
        if started.elapsed() >= WAIT_AT_MOST {
            return false;
        }
        std::thread::sleep(quiet - age);
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
}
