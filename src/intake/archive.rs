//! Filing a run's file away: `processed/`, `errors/` or `bak/` in the tenant home, named
//! `NAME.<UTC timestamp>.csv` (NAME cut to 200 bytes and marked `~`, so every name fits the
//! file system's 255), plus the failure report `NAME.<UTC timestamp>.report.csv`; and the
//! daily retention sweep of those folders. The names are planned when the run starts ([`plan`])
//! and committed in its record by the engine; filing then writes exactly those names.
//!
//! Decisions: a `held` file goes to `processed/` (the store keeps the held plan and its bytes for
//! `roster approve`); with `archive = "bak"` the file and its report both go to `bak/`. An
//! archived file's modification time is set to the moment it was archived, because clients often
//! preserve an old timestamp and retention is counted from archiving.
//!
//! Every write, move and deletion goes through an open handle of the archive folder (see
//! `nofollow`): an archive folder that is a symbolic link is refused (the run fails, its file
//! stays claimed and is retried) and never swept, so nothing is written or deleted outside the
//! home.

use super::nofollow;
use crate::config::{Archive, ImportProfile};
use crate::import::ArchivePlan;
use anyhow::Context;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `users.csv` → `users`; names without a `.csv` ending are kept whole.
fn stem(name: &str) -> &str {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".csv") && name.len() > 4 {
        &name[..name.len() - 4]
    } else {
        name
    }
}

/// The longest stem an archive name keeps, in bytes. The rest of the longest name a run
/// writes, `.<stamp>-NNN.report.csv.<token>.roster-tmp` (the temp name before its rename,
/// [`temp_name`]), takes 52 bytes more, and a file name may have at most 255 (review s18
/// clients F2).
const STEM_BYTES: usize = 200;

/// `stem`, cut to [`STEM_BYTES`] on a character boundary and marked `~` when it is cut.
fn short(stem: &str) -> String {
    if stem.len() <= STEM_BYTES {
        return stem.to_string();
    }
    let mut end = STEM_BYTES - 1;
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}~", &stem[..end])
}

/// Chooses the archive names of a run of `name` starting at `at`, before the run, so the
/// engine commits them in its record (see `import::Filing`): one timestamp tag for the file
/// (in its folder for either outcome) and the report, the first tag none of those names has
/// taken (`T`, `T-2`, …).
pub fn plan(home: &Path, profile: &ImportProfile, name: &str, at: DateTime<Utc>) -> ArchivePlan {
    let (kept, failed, reports) = match profile.archive {
        Archive::Bak => ("bak", "bak", "bak"),
        Archive::Processed => ("processed", "errors", "errors"),
    };
    let stamp = at.format("%Y%m%dT%H%M%SZ").to_string();
    let base = short(stem(name));
    let mut n = 1;
    loop {
        let tag = if n == 1 {
            stamp.clone()
        } else {
            format!("{stamp}-{n}")
        };
        let plan = ArchivePlan {
            kept: format!("{kept}/{base}.{tag}.csv"),
            failed: format!("{failed}/{base}.{tag}.csv"),
            report: format!("{reports}/{base}.{tag}.report.csv"),
        };
        let taken = |rel: &str| home.join(rel).symlink_metadata().is_ok();
        if ![&plan.kept, &plan.held(), &plan.failed, &plan.report]
            .into_iter()
            .any(|rel| taken(rel))
        {
            return plan;
        }
        n += 1;
    }
}

/// The archive folder of `rel` (`processed/x.csv` → `processed`) and the file name in it.
fn split(rel: &str) -> anyhow::Result<(&str, &str)> {
    match rel.split_once('/') {
        Some((folder, name)) if !name.contains('/') => Ok((folder, name)),
        _ => anyhow::bail!("{rel} is not an archive name (folder/name)"),
    }
}

/// Opens (creating if missing) the archive folder `folder` of the home. A folder that is a
/// symbolic link (or not a folder) is refused: the run fails, keeps its file and is retried.
fn open_folder(home: &Path, folder: &str) -> anyhow::Result<OwnedFd> {
    let home_fd = nofollow::open_dir(home)
        .with_context(|| format!("cannot open the tenant folder {}", home.display()))?;
    nofollow::open_subdir(home_fd.as_fd(), folder, true).map_err(|e| {
        let why = if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) {
            "it is a symbolic link or not a folder; nothing is written through it. Replace it with a folder"
        } else {
            "it cannot be opened"
        };
        anyhow::anyhow!(
            "refusing the archive folder {folder}/ in {}: {why} ({e}); the file stays claimed and is retried",
            home.display()
        )
    })
}

/// Writes `bytes` to `home/rel`, atomically via a temp name, never through a link.
pub fn write_file(home: &Path, rel: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let (folder, name) = split(rel)?;
    let dir = open_folder(home, folder)?;
    write_in(dir.as_fd(), name, bytes).with_context(|| format!("cannot write {rel}"))
}

fn write_in(dir: BorrowedFd<'_>, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_name(name);
    let _ = nofollow::unlink(dir, &tmp);
    let mut f = nofollow::create_file(dir, &tmp)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|()| nofollow::rename(dir, &tmp, dir, name)) {
        let _ = nofollow::unlink(dir, &tmp);
        return Err(e);
    }
    nofollow::sync_dir(dir, "an archived file");
    Ok(())
}

/// Ending of the temp name an archive write uses until its rename (cleaned at start).
pub const TEMP_SUFFIX: &str = "roster-tmp";

/// The bytes the process's token adds to a temp name (`.` and 8 hex digits).
#[cfg(test)]
const TOKEN_BYTES: usize = 9;

/// This process's token in temp names: 8 hex digits of a per-process random hash of the pid.
static TOKEN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:08x}", h.finish() as u32)
});

/// The temp name an archive write of `name` uses until its rename: `NAME.<token>.roster-tmp`,
/// with a token of this process, so two processes (two nodes finishing one claim, a stalled
/// node that resumed) never create, truncate or rename each other's temp file. Every temp
/// name still ends in `.roster-tmp`, which the start-up cleaning removes.
fn temp_name(name: &str) -> String {
    format!("{name}.{}.{TEMP_SUFFIX}", *TOKEN)
}

/// Moves the claimed file to `home/rel` (or writes `replacement`, the password-blanked copy,
/// and removes the original), and stamps it with the archive time. Never through a link.
pub fn file_away(
    home: &Path,
    rel: &str,
    claimed: &Path,
    replacement: Option<&[u8]>,
) -> anyhow::Result<PathBuf> {
    let (folder, name) = split(rel)?;
    let dir = open_folder(home, folder)?;
    let (claim_dir, claimed_name) = claim_parts(claimed)?;
    match replacement {
        Some(bytes) => {
            write_in(dir.as_fd(), name, bytes).with_context(|| format!("cannot write {rel}"))?;
            nofollow::unlink(claim_dir.as_fd(), &claimed_name)
                .with_context(|| format!("cannot remove {}", claimed.display()))?;
        }
        None => {
            // Stamped before the move: retention goes by this time, and a crash right after
            // the rename must not leave the client's (possibly months old) time on a file just
            // archived, which the sweep at the next start would delete (review of 2026-11-30,
            // config F3).
            nofollow::open_for_times(claim_dir.as_fd(), &claimed_name)
                .and_then(|f| f.set_modified(SystemTime::now()))
                .with_context(|| {
                    format!("cannot stamp {} with the archive time", claimed.display())
                })?;
            if let Err(e) = nofollow::rename(claim_dir.as_fd(), &claimed_name, dir.as_fd(), name) {
                // Another file system: copy, then remove.
                copy_in(claim_dir.as_fd(), &claimed_name, dir.as_fd(), name)
                    .with_context(|| format!("cannot archive to {rel} ({e})"))?;
                nofollow::unlink(claim_dir.as_fd(), &claimed_name)
                    .with_context(|| format!("cannot remove {}", claimed.display()))?;
            }
        }
    }
    // A copy or a written replacement is new, but stamp it as well (a copy may keep times).
    if let Ok(f) = nofollow::open_for_times(dir.as_fd(), name) {
        let _ = f.set_modified(SystemTime::now());
    }
    // Durable before the claim folder is removed and the claim forgotten (review s18 crash F3).
    nofollow::sync_dir(dir.as_fd(), "the archived file");
    nofollow::sync_dir(
        claim_dir.as_fd(),
        "the archived file's move out of its claim folder",
    );
    Ok(home.join(rel))
}

/// The open claim folder of a claimed file, and the file's name.
fn claim_parts(claimed: &Path) -> anyhow::Result<(OwnedFd, String)> {
    let name = claimed
        .file_name()
        .and_then(|n| n.to_str())
        .context("a claimed file has no name")?
        .to_string();
    let parent = claimed.parent().context("a claimed file has no folder")?;
    let dir = nofollow::open_dir(parent)
        .with_context(|| format!("cannot open the claim folder {}", parent.display()))?;
    Ok((dir, name))
}

/// Copies `from` into `to_dir` as `to` (a temporary name first, synced, then renamed).
pub(super) fn copy_in(
    from_dir: BorrowedFd<'_>,
    from: &str,
    to_dir: BorrowedFd<'_>,
    to: &str,
) -> std::io::Result<()> {
    let mut src = nofollow::open_file(from_dir, from)?;
    let tmp = temp_name(to);
    let _ = nofollow::unlink(to_dir, &tmp);
    let mut dst = nofollow::create_file(to_dir, &tmp)?;
    let copied = std::io::copy(&mut src, &mut dst).and_then(|_| dst.sync_all());
    drop(dst);
    if let Err(e) = copied.and_then(|()| nofollow::rename(to_dir, &tmp, to_dir, to)) {
        let _ = nofollow::unlink(to_dir, &tmp);
        return Err(e);
    }
    Ok(())
}

/// Deletes archived files and reports older than `days` in a tenant home. Returns how many.
/// An archive folder that is a symbolic link is not swept (and logged); only regular files
/// directly in a real archive folder are removed, through the folder's handle. The files of
/// `held` (`folder/name`: the file and report of each run still waiting for approval) stay,
/// whatever their age (design §6; review s29: a run held on Friday lost both by Sunday under
/// `retention_days = 1`, and its mail pointed at the file for `roster preview`).
pub fn sweep(home: &Path, days: u32, held: &HashSet<String>) -> usize {
    let max_age = Duration::from_secs(u64::from(days) * 86_400);
    let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return 0;
    };
    let Ok(home_fd) = nofollow::open_dir(home) else {
        return 0;
    };
    let mut removed = 0;
    for folder in crate::sftp::jail::ARCHIVE_DIRS {
        let dir = match nofollow::open_subdir(home_fd.as_fd(), folder, false) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(home = %home.display(), folder, "retention: not sweeping {folder}/, it is a symbolic link or cannot be opened ({e})");
                continue;
            }
        };
        for name in nofollow::names(dir.as_fd()).unwrap_or_default() {
            let Ok(st) = nofollow::lstat(dir.as_fd(), &name) else {
                continue;
            };
            let age = now
                .as_secs()
                .saturating_sub(u64::try_from(st.st_mtime).unwrap_or(0));
            let old = Duration::from_secs(age) > max_age;
            let kept = held.contains(&format!("{folder}/{name}"));
            if nofollow::is_regular(&st)
                && old
                && !kept
                && nofollow::unlink(dir.as_fd(), &name).is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}

/// Deletes the oldest files of the archive folder `folder` of a tenant home once it holds more
/// than `max` names, down to nine tenths of `max` (so a folder at its cap is not listed and
/// trimmed by every run). Returns how many were deleted; 0 when `max` is 0. The files `held`
/// gives (as in [`sweep`]; read only for a folder past its cap, since every run calls this)
/// count towards the cap but are never deleted: the oldest others go. When `held` fails, the
/// folder is not trimmed this time (logged).
///
/// Decision (review s18 longrun F2): `max_tenant_entries` no longer counts the files in the
/// archive folders (the tenant could not remove them, and at 24 runs an hour its own uploads
/// were refused after about 87 days), so this cap bounds them instead: a tenant folder holds at
/// most its own `max_tenant_entries` names plus that many per archive folder. Keeping the
/// nightly upload working is worth more than the oldest archives; each trim is logged at WARN.
pub fn keep_newest(
    home: &Path,
    folder: &str,
    max: u64,
    held: &dyn Fn() -> anyhow::Result<HashSet<String>>,
) -> usize {
    let Ok(max) = usize::try_from(max) else {
        return 0;
    };
    if max == 0 {
        return 0;
    }
    let Ok(home_fd) = nofollow::open_dir(home) else {
        return 0;
    };
    let Ok(dir) = nofollow::open_subdir(home_fd.as_fd(), folder, false) else {
        return 0;
    };
    let names = nofollow::names(dir.as_fd()).unwrap_or_default();
    if names.len() <= max {
        return 0;
    }
    let held = match held() {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(home = %home.display(), folder, "archive cap not applied this time: cannot read the held runs: {e:#}");
            return 0;
        }
    };
    // Oldest first by the archive time stamped on each (to the nanosecond: several runs may
    // file within one second, and their names do not sort in time order).
    let mut files: Vec<(i64, i64, String)> = names
        .into_iter()
        .filter_map(|name| {
            let st = nofollow::lstat(dir.as_fd(), &name).ok()?;
            nofollow::is_regular(&st).then_some((st.st_mtime, st.st_mtime_nsec, name))
        })
        .collect();
    files.sort();
    let keep = max - max / 10;
    let excess = files.len().saturating_sub(keep);
    let removed = files
        .iter()
        .filter(|(_, _, name)| !held.contains(&format!("{folder}/{name}")))
        .take(excess)
        .filter(|(_, _, name)| nofollow::unlink(dir.as_fd(), name).is_ok())
        .count();
    if removed > 0 {
        nofollow::sync_dir(dir.as_fd(), "the archive folder after its cap");
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_write_leaves_another_process_temp_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let processed = dir.path().join("processed");
        std::fs::create_dir_all(&processed).unwrap();
        // Another process (another node finishing the same claim) is writing its copy.
        let theirs = processed.join(format!("users.csv.{TEMP_SUFFIX}"));
        std::fs::write(&theirs, b"theirs, half written").unwrap();
        write_file(dir.path(), "processed/users.csv", b"mine").unwrap();
        assert_eq!(std::fs::read(&theirs).unwrap(), b"theirs, half written");
        assert_eq!(std::fs::read(processed.join("users.csv")).unwrap(), b"mine");
        let ours = temp_name("users.csv");
        assert!(ours.ends_with(".roster-tmp") && ours.len() == "users.csv".len() + 20);
    }

    #[test]
    fn a_name_as_long_as_the_file_system_allows_is_cut_to_fit_its_archive_names() {
        use crate::import::ImportStatus;
        let dir = tempfile::tempdir().unwrap();
        let at = Utc::now();
        // 255 bytes in all, with two-byte letters where the cut falls.
        let name = format!("userdata_{}{}.csv", "b".repeat(150), "č".repeat(46));
        assert_eq!(name.len(), 255);
        let p = ImportProfile::default();
        for _ in 0..3 {
            let plan = plan(dir.path(), &p, &name, at);
            let (file, report) = plan.names(ImportStatus::Partial, true);
            let report = report.unwrap();
            for rel in [&file, &report, &plan.failed] {
                let (_, leaf) = split(rel).unwrap();
                assert!(temp_name(leaf).len() <= 255, "{rel}");
                assert_eq!(temp_name(leaf).len(), leaf.len() + TOKEN_BYTES + 11);
                assert!(
                    leaf.starts_with("userdata_bbb") && leaf.contains("č~."),
                    "{rel}"
                );
            }
            // Writing them works (the temp name fits too); the next plan takes the next tag.
            write_file(dir.path(), &file, b"x").unwrap();
            write_file(dir.path(), &report, b"r").unwrap();
        }
        assert_eq!(short("users"), "users");
    }

    #[test]
    fn an_archive_folder_past_its_cap_loses_its_oldest_files() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("processed");
        std::fs::create_dir(&folder).unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        for i in 0..12u64 {
            let f = folder.join(format!("u{i:02}.csv"));
            std::fs::write(&f, b"x").unwrap();
            let at = old + Duration::from_secs(i * 60);
            std::fs::File::options()
                .write(true)
                .open(&f)
                .unwrap()
                .set_modified(at)
                .unwrap();
        }
        std::fs::create_dir(folder.join("a-folder")).unwrap();
        assert_eq!(
            keep_newest(dir.path(), "processed", 20, &|| Ok(HashSet::new())),
            0,
            "under the cap"
        );
        assert_eq!(
            keep_newest(dir.path(), "processed", 0, &|| Ok(HashSet::new())),
            0,
            "no cap"
        );
        // 13 names over a cap of 10: down to 9 files, the newest, and the folder stays.
        assert_eq!(
            keep_newest(dir.path(), "processed", 10, &|| Ok(HashSet::new())),
            3
        );
        let mut left: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want: Vec<String> = (3..12).map(|i| format!("u{i:02}.csv")).collect();
        want.insert(0, "a-folder".into());
        assert_eq!(left, want);
        assert_eq!(
            keep_newest(dir.path(), "processed", 10, &|| Ok(HashSet::new())),
            0,
            "9 files and a folder"
        );
        assert_eq!(
            keep_newest(dir.path(), "missing", 10, &|| Ok(HashSet::new())),
            0
        );
    }

    #[test]
    fn names_by_status_and_setting() {
        use crate::import::ImportStatus;
        let dir = tempfile::tempdir().unwrap();
        let at = DateTime::parse_from_rfc3339("2026-11-21T07:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut p = ImportProfile::default();
        let a = plan(dir.path(), &p, "users.csv", at).names(ImportStatus::Partial, true);
        assert_eq!(a.0, "processed/users.20261121T073000Z.csv");
        assert_eq!(
            a.1.as_deref(),
            Some("errors/users.20261121T073000Z.report.csv")
        );
        let h = plan(dir.path(), &p, "users.csv", at).names(ImportStatus::Held, true);
        assert_eq!(h.0, "processed/users.20261121T073000Z.held.csv");
        write_file(dir.path(), &h.0, b"x").unwrap();
        let next = plan(dir.path(), &p, "users.csv", at).names(ImportStatus::Success, false);
        assert_eq!(
            next.0, "processed/users.20261121T073000Z-2.csv",
            "a held name is taken"
        );
        std::fs::remove_file(dir.path().join(&h.0)).unwrap();
        let e = plan(dir.path(), &p, "users.csv", at).names(ImportStatus::Error, false);
        assert_eq!(e.0, "errors/users.20261121T073000Z.csv");
        assert_eq!(e.1, None);
        write_file(dir.path(), &e.0, b"x").unwrap();
        let again = plan(dir.path(), &p, "users.csv", at).names(ImportStatus::Error, false);
        assert_eq!(again.0, "errors/users.20261121T073000Z-2.csv");
        p.archive = Archive::Bak;
        let b = plan(dir.path(), &p, "export.txt", at).names(ImportStatus::Success, true);
        assert_eq!(b.0, "bak/export.txt.20261121T073000Z.csv");
        assert_eq!(
            b.1.as_deref(),
            Some("bak/export.txt.20261121T073000Z.report.csv")
        );
    }

    /// The file and report of a run still held for approval stay, however old (review s29).
    #[test]
    fn sweep_and_cap_keep_the_files_of_a_held_run() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(10 * 86_400);
        for rel in [
            "processed/held.csv",
            "errors/held.report.csv",
            "processed/old.csv",
        ] {
            write_file(dir.path(), rel, b"x").unwrap();
            let file = std::fs::File::options()
                .write(true)
                .open(dir.path().join(rel));
            file.unwrap().set_modified(old).unwrap();
        }
        let held: HashSet<String> = ["processed/held.csv", "errors/held.report.csv"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(
            keep_newest(dir.path(), "processed", 1, &|| Ok(held.clone())),
            1
        );
        assert!(!dir.path().join("processed/old.csv").exists());
        write_file(dir.path(), "processed/old.csv", b"x").unwrap();
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join("processed/old.csv"));
        file.unwrap().set_modified(old).unwrap();
        assert_eq!(sweep(dir.path(), 1, &held), 1);
        assert!(!dir.path().join("processed/old.csv").exists());
        assert!(dir.path().join("processed/held.csv").exists());
        assert!(dir.path().join("errors/held.report.csv").exists());
    }

    #[test]
    fn sweep_removes_only_old_archives() {
        let dir = tempfile::tempdir().unwrap();
        write_file(dir.path(), "processed/old.csv", b"x").unwrap();
        write_file(dir.path(), "processed/new.csv", b"x").unwrap();
        std::fs::write(dir.path().join("users.csv"), b"x").unwrap();
        let old = SystemTime::now() - Duration::from_secs(10 * 86_400);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("processed/old.csv"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(sweep(dir.path(), 7, &HashSet::new()), 1);
        assert!(!dir.path().join("processed/old.csv").exists());
        assert!(dir.path().join("processed/new.csv").exists());
        assert!(dir.path().join("users.csv").exists());
    }

    #[test]
    fn archive_folder_that_is_a_link_is_refused_and_not_swept() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep.csv"), b"x").unwrap();
        let old = SystemTime::now() - Duration::from_secs(400 * 86_400);
        std::fs::File::options()
            .write(true)
            .open(outside.path().join("keep.csv"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("processed")).unwrap();
        let err = write_file(dir.path(), "processed/a.csv", b"y").unwrap_err();
        assert!(format!("{err:#}").contains("symbolic link"), "{err:#}");
        assert_eq!(sweep(dir.path(), 1, &HashSet::new()), 0);
        assert!(outside.path().join("keep.csv").exists());
        assert!(!outside.path().join("a.csv").exists());
    }

    #[test]
    fn a_file_is_stamped_with_the_archive_time_before_it_is_moved() {
        let home = tempfile::tempdir().unwrap();
        let claims = tempfile::tempdir().unwrap();
        let claimed = claims.path().join("users.csv");
        std::fs::write(&claimed, b"x").unwrap();
        // A client that keeps the file's time (`put -p`): months old.
        let months = SystemTime::now() - Duration::from_secs(200 * 86_400);
        std::fs::File::options()
            .write(true)
            .open(&claimed)
            .unwrap()
            .set_modified(months)
            .unwrap();
        // What cannot be stamped is not filed, and stays where it was: the stamp comes before
        // the move, so no archived file ever keeps the client's time (a folder in the claim's
        // place cannot be opened for writing, even by root).
        let unstampable = claims.path().join("folder.csv");
        std::fs::create_dir(&unstampable).unwrap();
        let err = file_away(home.path(), "processed/folder.csv", &unstampable, None).unwrap_err();
        assert!(format!("{err:#}").contains("archive time"), "{err:#}");
        assert!(unstampable.is_dir());
        assert!(!home.path().join("processed/folder.csv").exists());
        let filed = file_away(home.path(), "processed/users.1.csv", &claimed, None).unwrap();
        let age = std::fs::metadata(&filed)
            .unwrap()
            .modified()
            .unwrap()
            .elapsed()
            .unwrap_or_default();
        assert!(age < Duration::from_secs(60), "{age:?}");
        assert_eq!(
            sweep(home.path(), 90, &HashSet::new()),
            0,
            "the file just archived is kept"
        );
    }
}
