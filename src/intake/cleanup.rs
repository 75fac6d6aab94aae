//! Start-up cleaning of what a killed process leaves behind, run once by the intake's start-up
//! before claims are recovered.
//!
//! Removed: outbox temp files (`data/outbox/.….eml.tmp`, see `mail::remove_temp_files`); archive
//! temp files (`….roster-tmp`) in each tenant's archive folders (through folder handles, never
//! through a link); stray files directly in `data/work/<tenant>/` (claims are folders; a file
//! there is no pending claim); the store's claim stamps whose claim folder is gone; and row
//! spill files (`roster-rows-<pid>-…` in the system temp folder) of processes that no longer
//! run; the markers of unfinished uploads whose file is gone (`sftp::uploads`). Pending claim
//! folders are left for recovery. Each removal is counted in one log line.
//!
//! With a store several nodes share, the data folder is shared too and another node may be
//! writing an archive or outbox temp file right now: outbox temp files are then left alone, and
//! a tenant's archive temp files are removed by [`under_lease`], while its lease is held.

use super::{archive, nofollow, run, Shared};
use crate::sftp::InProgress;
use std::os::fd::AsFd;
use std::path::Path;

/// Entries of a tenant folder looked at for the markers of unfinished uploads whose file is
/// gone (`InProgress::sweep`).
const SWEEP_LIMIT: usize = 10_000;

/// Cleans everything listed in the module doc; logs what it removed.
pub fn at_start(shared: &Shared) {
    let config = shared.config.current();
    let shared_folder = shared.store.shared_by_nodes();
    let outbox = match shared_folder {
        true => 0,
        false => crate::mail::remove_temp_files(&config.server.data_dir.join("outbox")),
    };
    let spill = spill_files(&std::env::temp_dir());
    let (mut archive_tmp, mut work_files, mut stamps) = (0, 0, 0);
    for t in &config.tenants {
        if !shared_folder {
            archive_tmp += archive_temp_files(&config.tenant_home(&t.id));
        }
        let home = config.tenant_home(&t.id);
        InProgress::new(&config.server.data_dir, &t.id).sweep(&home, SWEEP_LIMIT);
        let work = run::work_dir(shared, &t.id);
        work_files += stray_work_files(&work);
        stamps += stale_stamps(shared, &t.id, &work);
    }
    if outbox + spill + archive_tmp + work_files + stamps > 0 {
        tracing::info!(
            outbox,
            spill,
            archive_tmp,
            work_files,
            stamps,
            "removed temporary files left by an earlier process"
        );
    }
}

/// With a store several nodes share: removes the tenant's archive temp files. The caller holds
/// the tenant's lease, so no other node is filing for it.
pub fn under_lease(shared: &Shared, tenant: &str) {
    if !shared.store.shared_by_nodes() {
        return;
    }
    let removed = archive_temp_files(&shared.config.current().tenant_home(tenant));
    if removed > 0 {
        tracing::info!(%tenant, archive_tmp = removed, "removed archive temp files left by a stopped node");
    }
}

fn archive_temp_files(home: &Path) -> usize {
    let Ok(home_fd) = nofollow::open_dir(home) else {
        return 0;
    };
    let ending = format!(".{}", archive::TEMP_SUFFIX);
    let mut removed = 0;
    for folder in crate::sftp::jail::ARCHIVE_DIRS {
        let Ok(dir) = nofollow::open_subdir(home_fd.as_fd(), folder, false) else {
            continue;
        };
        for name in nofollow::names(dir.as_fd()).unwrap_or_default() {
            let regular =
                nofollow::lstat(dir.as_fd(), &name).is_ok_and(|st| nofollow::is_regular(&st));
            if regular && name.ends_with(&ending) && nofollow::unlink(dir.as_fd(), &name).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

fn stray_work_files(work: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(work) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

fn stale_stamps(shared: &Shared, tenant: &str, work: &Path) -> usize {
    let Ok(ids) = shared.store.claims_stamped(tenant) else {
        return 0;
    };
    ids.into_iter()
        .filter(|id| !id.is_empty() && !id.contains('/') && !work.join(id).exists())
        .filter(|id| shared.store.claim_done(tenant, id).is_ok())
        .count()
}

/// Spill files are created and unlinked at once; one survives only a kill in between.
fn spill_files(tmp: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("roster-rows-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        if is_file && !process_runs(pid) && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn process_runs(pid: libc::pid_t) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
