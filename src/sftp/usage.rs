//! Each tenant's share of the disk: `[server] max_tenant_bytes` (what the files and folders in
//! its home take on the disk, Roster's archives and reports there included) and
//! `max_tenant_entries` (files and folders in its home, not counting the files in Roster's
//! archive folders, which Roster bounds itself). Together with `min_free_bytes` they
//! keep one tenant, within every per-file limit, from filling the volume the other tenants and
//! the store share.
//!
//! Checks enter from a session: before a name is created (OPEN that creates, MKDIR) and every
//! `SPACE_CHECK_EVERY` bytes a handle writes (`requests::upload`). They leave as `Ok` or as
//! the refusal in words. The tally comes from a walk of the home (never following links, one
//! descriptor at a time), made again once it is older than [`FRESH_FOR`]; between walks each
//! check adds what it lets through, so several handles cannot all pass one stale tally, and a
//! handle gives back at CLOSE what it reserved and did not write. A
//! check that would fail walks again first (at most every [`RECHECK_EVERY`], and never more
//! often than ten times the last walk's duration); after a REMOVE or RMDIR it may walk as soon
//! as ten times the last walk's duration has passed, so a tenant that frees space can upload at
//! once. A removal no longer makes the next check walk whatever it asks: a client that created
//! and removed a file in a loop made the server walk a 60,000-name home each round (review
//! s21). Several sessions of one tenant share
//! one tally ([`UsageRegistry`]); nodes of a cluster each keep their own, and see each other's
//! files at their next walk.

use super::uploads::FileId;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A tally is walked again once it is this old.
const FRESH_FOR: Duration = Duration::from_secs(5);
/// A check that would fail walks again if the last walk is at least this old.
const RECHECK_EVERY: Duration = Duration::from_millis(250);
/// A walk stops after seeing this many times `max_tenant_entries` names (a folder so far over
/// its limit refuses every new name anyway, and the walk's cost stays bounded). The archive
/// folders, whose files are not counted as names, hold at most the limit each.
const WALK_PAST_LIMIT: u64 = 5;

/// A tenant's limits; 0 means none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageLimits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

#[derive(Default)]
struct Tally {
    bytes: u64,
    entries: u64,
    walked_at: Option<Instant>,
    walk_took: Duration,
    walking: bool,
    /// Walks so far.
    walks: u64,
    /// What handles have reserved and not yet given back (by writing it or closing). A walk
    /// sees only what is written, so it keeps these on top of what it counted (review s21:
    /// it replaced the tally, and 45 handles that had each reserved 8 MiB wrote 378 MB into a
    /// 50 MB share).
    held: u64,
    /// Files a handle of this tenant has open (how many handles), and of those, the ones whose
    /// last name was removed, with what they take on the disk: a walk cannot see them, yet
    /// they take their space until the last handle closes (review s21: ten handles wrote 839 MB
    /// into removed files against a 50 MB share).
    open: HashMap<FileId, u32>,
    unlinked: HashMap<FileId, u64>,
    /// Removals so far, and how many the last walk began after: while they differ the tally
    /// may count what is gone, so a check that would fail walks again sooner (after ten times
    /// the last walk's duration, not [`RECHECK_EVERY`]) and sees the freed space.
    removals: u64,
    removals_walked: u64,
    /// The last walk met a folder it could not read because its path is longer than the
    /// system's limit: what is in it is unknown, so nothing more is let in (review s21: such a
    /// folder counted as empty, and a tenant hid 126 MB and 138 names past limits of 50 MB and
    /// 50 names in it).
    too_deep: bool,
}

/// The tallies of every tenant with a session on this server.
#[derive(Default)]
pub struct UsageRegistry {
    tenants: Mutex<HashMap<String, Arc<Mutex<Tally>>>>,
}

impl UsageRegistry {
    /// The usage of `tenant`, whose home is `home`, checked against `limits`.
    pub fn for_tenant(&self, tenant: &str, home: &Path, limits: UsageLimits) -> TenantUsage {
        let tally = lock(&self.tenants)
            .entry(tenant.to_string())
            .or_default()
            .clone();
        let checked = Checked {
            tally,
            home: home.to_path_buf(),
            limits,
        };
        TenantUsage(Some(Arc::new(checked)))
    }
}

/// One tenant's usage, as a session checks it (cloned on every WRITE: one reference count).
#[derive(Clone)]
pub struct TenantUsage(Option<Arc<Checked>>);

struct Checked {
    tally: Arc<Mutex<Tally>>,
    home: PathBuf,
    limits: UsageLimits,
}

impl TenantUsage {
    /// No limits (`roster sftp-server`, tests).
    pub fn unlimited() -> TenantUsage {
        TenantUsage(None)
    }

    /// Lets `bytes` more bytes and `entries` more names into the home, or says why not. The
    /// answer is what of `bytes` is held for the caller until [`TenantUsage::release`] (0
    /// without a byte limit).
    pub fn reserve(&self, bytes: u64, entries: u64) -> Result<u64, String> {
        match &self.0 {
            Some(checked) => checked.reserve(bytes, entries),
            None => Ok(0),
        }
    }

    /// A handle gives back what it held (`held`, from [`TenantUsage::reserve`]), of which it
    /// did not write `unwritten`: the tally keeps what was written (until a walk counts it on
    /// the disk) and drops the rest.
    pub fn release(&self, held: u64, unwritten: u64) {
        if let Some(checked) = &self.0 {
            let mut t = lock(&checked.tally);
            t.held = t.held.saturating_sub(held);
            t.bytes = t.bytes.saturating_sub(unwritten.min(held));
        }
    }

    /// True when new names are counted (`max_tenant_entries` is set).
    pub fn counts_names(&self) -> bool {
        self.0.as_ref().is_some_and(|c| c.limits.max_entries > 0)
    }

    /// A name was removed: the tally counts one name less at once, and the next check that
    /// would fail walks again first as soon as ten times the last walk's duration has passed (a
    /// walk under way may still count the name).
    pub fn forget(&self) {
        if let Some(checked) = &self.0 {
            let mut t = lock(&checked.tally);
            t.entries = t.entries.saturating_sub(1);
            t.removals += 1;
        }
    }

    /// The last name of file `id`, which takes `bytes` on the disk, is gone (removed, or
    /// replaced by a rename): the space is free at once when no handle has the file open;
    /// else it stays counted until the last one closes.
    pub fn unlinked(&self, id: FileId, bytes: u64) {
        if let Some(checked) = &self.0 {
            let mut t = lock(&checked.tally);
            if t.open.contains_key(&id) {
                let before = t.unlinked.insert(id, bytes).unwrap_or(0);
                t.bytes = t.bytes.saturating_sub(before).saturating_add(bytes);
            } else {
                t.bytes = t.bytes.saturating_sub(bytes);
            }
        }
    }

    /// A handle opened file `id`.
    pub fn opened(&self, id: FileId) {
        if let Some(checked) = &self.0 {
            *lock(&checked.tally).open.entry(id).or_insert(0) += 1;
        }
    }

    /// A handle of file `id` closed: the last one frees the space of a file with no name.
    pub fn closed(&self, id: FileId) {
        if let Some(checked) = &self.0 {
            let mut t = lock(&checked.tally);
            let Some(n) = t.open.get_mut(&id) else {
                return;
            };
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.open.remove(&id);
                let freed = t.unlinked.remove(&id).unwrap_or(0);
                t.bytes = t.bytes.saturating_sub(freed);
            }
        }
    }
}

impl Checked {
    fn reserve(&self, bytes: u64, entries: u64) -> Result<u64, String> {
        let tally = &self.tally;
        let limits = self.limits;
        let bytes = if limits.max_bytes > 0 { bytes } else { 0 };
        let entries = if limits.max_entries > 0 { entries } else { 0 };
        if bytes == 0 && entries == 0 {
            return Ok(0);
        }
        if lock(tally)
            .walked_at
            .is_none_or(|at| at.elapsed() >= FRESH_FOR)
        {
            self.walk_into(tally, false);
        }
        if let Ok(walk) = self.take(tally, bytes, entries) {
            return Ok(walk);
        }
        let may_walk = {
            let t = lock(tally);
            let wait = match t.removals == t.removals_walked {
                true => RECHECK_EVERY.max(t.walk_took * 10),
                false => t.walk_took * 10,
            };
            t.walked_at.is_none_or(|at| at.elapsed() >= wait)
        };
        if may_walk {
            // Before a refusal, a walk of its own even while another session walks (that walk
            // may have begun before the space was freed).
            self.walk_into(tally, true);
        }
        self.take(tally, bytes, entries)
    }

    fn take(&self, tally: &Mutex<Tally>, bytes: u64, entries: u64) -> Result<u64, String> {
        let mut t = lock(tally);
        let max = self.limits;
        if t.too_deep {
            return Err(format!(
                "the tenant's folder holds folders nested too deep for the server to count \
                 what they take (a path longer than {} bytes), so nothing more is let in \
                 (max_tenant_bytes, max_tenant_entries); move them up or remove them",
                libc::PATH_MAX
            ));
        }
        if bytes > 0 && t.bytes.saturating_add(bytes) > max.max_bytes {
            return Err(format!(
                "the tenant's folder is full: its files take {} of the {} it may use \
                 (max_tenant_bytes); remove files it no longer needs, or ask the server's \
                 operator to raise the limit",
                megabytes(t.bytes),
                megabytes(max.max_bytes)
            ));
        }
        if entries > 0 && t.entries.saturating_add(entries) > max.max_entries {
            return Err(format!(
                "the tenant's folder already holds {} files and folders, its limit \
                 (max_tenant_entries); remove some first",
                t.entries.min(max.max_entries)
            ));
        }
        t.bytes = t.bytes.saturating_add(bytes);
        t.held = t.held.saturating_add(bytes);
        t.entries = t.entries.saturating_add(entries);
        Ok(bytes)
    }

    /// Walks the home and stores the tally, unless another session is walking it now (and
    /// `always` is false).
    fn walk_into(&self, tally: &Mutex<Tally>, always: bool) {
        let removals = {
            let mut t = lock(tally);
            if t.walking && !always {
                return;
            }
            t.walking = true;
            t.removals
        };
        let cap = self.limits.max_entries.saturating_mul(WALK_PAST_LIMIT);
        let started = Instant::now();
        let (bytes, entries, too_deep) = super::wire::off_the_workers(|| walk(&self.home, cap));
        let mut t = lock(tally);
        let unseen = t
            .unlinked
            .values()
            .fold(t.held, |sum, b| sum.saturating_add(*b));
        (t.bytes, t.entries, t.too_deep) = (bytes.saturating_add(unseen), entries, too_deep);
        // A removal during the walk may not be in it: the next check walks again.
        // A removal during the walk may not be in it: it stays counted as not walked.
        t.removals_walked = removals;
        t.walked_at = Some(Instant::now());
        t.walk_took = started.elapsed();
        t.walking = false;
        t.walks += 1;
    }
}

/// The bytes on disk (allocated blocks, so a sparse file counts what it holds) and the number
/// of names under `home`, not following links; stops after `cap` names seen (0: no cap); and
/// whether a folder's path was too long to read it (its content is not counted). A folder
/// that cannot be read otherwise (removed meanwhile) counts as empty.
///
/// The files in the home's archive folders (`processed/`, `errors/`, `bak/`) count their bytes
/// but not as names: Roster writes them, the tenant cannot remove them, and retention and the
/// archive cap (`intake::archive::keep_newest`) bound them. Counted as names, a busy tenant's
/// own archives filled `max_tenant_entries` and its uploads were refused (review s18 longrun
/// F2).
fn walk(home: &Path, cap: u64) -> (u64, u64, bool) {
    let (mut bytes, mut entries, mut seen) = (0u64, 0u64, 0u64);
    let mut too_deep = false;
    let mut folders = vec![(home.to_path_buf(), false)];
    while let Some((folder, archive)) = folders.pop() {
        let list = match std::fs::read_dir(&folder) {
            Ok(list) => list,
            Err(e) => {
                too_deep |= e.raw_os_error() == Some(libc::ENAMETOOLONG);
                continue;
            }
        };
        let top = folder == home;
        for entry in list.flatten() {
            seen += 1;
            // `DirEntry::metadata` does not follow a link.
            let meta = entry.metadata().ok();
            let is_dir = meta.as_ref().is_some_and(|m| m.file_type().is_dir());
            if !archive || is_dir {
                entries += 1;
            }
            if let Some(m) = meta {
                bytes = bytes.saturating_add(m.blocks().saturating_mul(512));
                if is_dir {
                    let name = entry.file_name();
                    let is_archive = top
                        && super::jail::ARCHIVE_DIRS
                            .iter()
                            .any(|a| name.as_encoded_bytes() == a.as_bytes());
                    folders.push((entry.path(), is_archive));
                }
            }
            if cap > 0 && seen >= cap {
                return (bytes, entries, too_deep);
            }
        }
    }
    (bytes, entries, too_deep)
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(home: &Path, max_bytes: u64, max_entries: u64) -> TenantUsage {
        let limits = UsageLimits {
            max_bytes,
            max_entries,
        };
        UsageRegistry::default().for_tenant("acme", home, limits)
    }

    #[test]
    fn bytes_and_names_are_counted_and_refused_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.csv"), vec![b'x'; 300_000]).unwrap();
        std::os::unix::fs::symlink("/usr", dir.path().join("link")).unwrap();
        let (bytes, entries, _) = walk(dir.path(), 0);
        assert_eq!(
            entries, 3,
            "sub, sub/a.csv and the link, which is not followed"
        );
        assert!((300_000..400_000).contains(&bytes), "{bytes}");

        let u = usage(dir.path(), 1_000_000, 4);
        let walk = u.reserve(500_000, 0).unwrap();
        let err = u.reserve(500_000, 0).unwrap_err();
        assert!(err.contains("max_tenant_bytes"), "{err}");
        // What a closed handle did not write is given back at once.
        u.release(walk, 400_000);
        u.reserve(500_000, 0).unwrap();
        u.reserve(0, 1).unwrap();
        let err = u.reserve(0, 1).unwrap_err();
        assert!(err.contains("holds 4 files and folders"), "{err}");
    }

    #[test]
    fn roster_archives_count_as_bytes_but_not_as_names() {
        let dir = tempfile::tempdir().unwrap();
        for folder in ["processed", "errors", "bak", "mine"] {
            std::fs::create_dir(dir.path().join(folder)).unwrap();
            for i in 0..3 {
                let file = dir.path().join(format!("{folder}/f{i}.csv"));
                std::fs::write(file, vec![b'x'; 10_000]).unwrap();
            }
        }
        // A folder of the tenant's own named like an archive folder, deeper down, counts.
        std::fs::create_dir(dir.path().join("mine/processed")).unwrap();
        std::fs::write(dir.path().join("mine/processed/x.csv"), b"x").unwrap();
        let (bytes, entries, _) = walk(dir.path(), 0);
        assert_eq!(
            entries,
            4 + 3 + 2,
            "four folders, mine/'s files and folder, its file"
        );
        assert!(bytes >= 12 * 10_000, "{bytes}");
        // Twelve archived files do not keep a tenant with a limit of ten names from uploading.
        let u = usage(dir.path(), 0, 10);
        u.reserve(0, 1).unwrap();
        assert!(u.reserve(0, 1).is_err());
    }

    #[test]
    fn a_removal_is_seen_by_the_next_check() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big.csv");
        std::fs::write(&file, vec![b'x'; 900_000]).unwrap();
        let u = usage(dir.path(), 1_000_000, 0);
        assert!(u.reserve(200_000, 0).is_err());
        std::fs::remove_file(&file).unwrap();
        u.forget();
        u.unlinked(FileId { dev: 1, ino: 1 }, 900_000);
        u.reserve(200_000, 0).unwrap();
    }

    #[test]
    fn freed_space_is_seen_while_another_session_walks() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big.csv");
        std::fs::write(&file, vec![b'x'; 900_000]).unwrap();
        let u = usage(dir.path(), 1_000_000, 0);
        assert!(u.reserve(200_000, 0).is_err());
        let Some(checked) = &u.0 else {
            panic!("limited")
        };
        // Another session's walk, begun before the removal, is under way.
        lock(&checked.tally).walking = true;
        std::fs::remove_file(&file).unwrap();
        u.forget();
        u.unlinked(FileId { dev: 1, ino: 1 }, 900_000);
        u.reserve(200_000, 0).unwrap();
    }

    /// Review s21 (F2): a folder whose path is longer than the system's limit cannot be read
    /// by path; the tenant reaches it through a shorter path relative to its home. It counted
    /// as empty; now nothing more is let in until it is moved up or removed.
    #[test]
    fn a_folder_nested_past_the_path_limit_stops_the_tenant_instead_of_counting_as_empty() {
        use std::os::fd::{AsFd, AsRawFd};
        let dir = tempfile::tempdir().unwrap();
        let name = "d".repeat(250);
        let c = std::ffi::CString::new(name.clone()).unwrap();
        let mut folder = std::fs::File::open(dir.path()).unwrap();
        for _ in 0..18 {
            crate::sftp::fs::mkdir_at(folder.as_fd(), &c).unwrap();
            let inner = format!("/proc/self/fd/{}/{name}", folder.as_raw_fd());
            folder = std::fs::File::open(inner).unwrap();
        }
        let hidden = format!("/proc/self/fd/{}/big.bin", folder.as_raw_fd());
        std::fs::write(hidden, vec![b'x'; 300_000]).unwrap();
        let (bytes, _, too_deep) = walk(dir.path(), 0);
        assert!(too_deep, "{bytes}");
        let u = usage(dir.path(), 1_000_000_000, 1_000);
        let err = u.reserve(1, 0).unwrap_err();
        assert!(err.contains("nested too deep"), "{err}");
        // Moved up, it is counted, and the tenant may go on.
        let deep = format!("/proc/self/fd/{}", folder.as_raw_fd());
        std::fs::rename(deep + "/big.bin", dir.path().join("big.bin")).unwrap();
        std::fs::remove_dir_all(dir.path().join(&name)).unwrap();
        u.forget();
        // The next check that would fail walks again once ten times the last walk has passed.
        std::thread::sleep(Duration::from_millis(300));
        u.reserve(1, 0).unwrap();
    }

    /// Review s21 (F4): a client that creates and removes a name in a loop made every check
    /// after a removal walk the whole home; now a removal is taken off the tally, and a check
    /// that passes does not walk.
    #[test]
    fn creating_and_removing_in_a_loop_does_not_walk_each_round() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..2_000 {
            std::fs::write(dir.path().join(format!("f{i}")), b"").unwrap();
        }
        let u = usage(dir.path(), 0, 100_000);
        for _ in 0..500 {
            u.reserve(0, 1).unwrap();
            u.forget();
        }
        let Some(checked) = &u.0 else {
            panic!("limited")
        };
        let walks = lock(&checked.tally).walks;
        assert!(walks <= 2, "{walks} walks for 500 rounds");
    }

    /// Review s21 (F1b): a walk counts what is on the disk; what handles reserved and have
    /// not written stays counted on top of it.
    #[test]
    fn a_walk_keeps_what_open_handles_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let u = usage(dir.path(), 20_000_000, 0);
        let held = u.reserve(8_000_000, 0).unwrap();
        u.reserve(8_000_000, 0).unwrap();
        let Some(checked) = &u.0 else {
            panic!("limited")
        };
        lock(&checked.tally).walked_at = None;
        let err = u.reserve(8_000_000, 0).unwrap_err();
        assert!(err.contains("max_tenant_bytes"), "{err}");
        // One handle closes without writing: its share is free again.
        u.release(held, held);
        u.reserve(8_000_000, 0).unwrap();
    }

    /// Review s21 (F1c): a file whose last name is removed while a handle has it open takes
    /// its space until that handle closes, though no walk sees it.
    #[test]
    fn a_removed_file_still_open_is_counted_until_closed() {
        let dir = tempfile::tempdir().unwrap();
        let u = usage(dir.path(), 1_000_000, 0);
        let id = FileId { dev: 1, ino: 7 };
        u.opened(id);
        u.unlinked(id, 900_000);
        let Some(checked) = &u.0 else {
            panic!("limited")
        };
        lock(&checked.tally).walked_at = None;
        assert!(u.reserve(200_000, 0).is_err(), "counted after a walk");
        u.closed(id);
        u.reserve(200_000, 0).unwrap();
        // Not open: freed at once.
        u.unlinked(FileId { dev: 1, ino: 8 }, 700_000);
        u.reserve(100_000, 0).unwrap();
    }

    #[test]
    fn no_limits_means_no_walk() {
        let u = usage(Path::new("/nonexistent"), 0, 0);
        u.reserve(u64::MAX, u64::MAX).unwrap();
        TenantUsage::unlimited().reserve(1, 1).unwrap();
    }
}
