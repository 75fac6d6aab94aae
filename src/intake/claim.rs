//! Claiming a file: taking exactly one regular file out of the tenant's view into a claim folder
//! `data/work/<tenant>/<claim id>/NAME`, where nothing but Roster can change it.
//!
//! The file is opened relative to a handle of the tenant home without following links and
//! checked to be a regular file (`fstat`); the entry is then moved with `renameat` into the new
//! claim folder, and the moved entry must be the very file that was opened (same device and
//! inode). A link planted or swapped in at any moment is therefore never claimed through: a
//! link found before the move is left alone, one caught by the move is removed, and both are
//! logged. The claim id (the folder name) is unique per claim and identifies the run in the
//! store's claim stamps (`store::RunLog::claim_running`), so a restart finishes exactly this run.
//!
//! A file that is gone when it is opened or moved (`ENOENT`: another node on the shared data
//! folder, or the client, took it first) is not an error: [`claim`] answers `None`.

use super::nofollow;
use crate::sftp::{FileId, InProgress};
use anyhow::{bail, Context};
use chrono::Utc;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static CLAIMS: AtomicU64 = AtomicU64::new(0);

/// A claimed file.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// `data/work/<tenant>/<claim id>/NAME`
    pub path: PathBuf,
    /// The claim folder's name: unique per claim (time, process id, counter, and
    /// [`MAIL_WITH_RECORD`]).
    pub id: String,
}

/// The end of every claim id this version makes: the run's mail is queued with its record, in
/// one write, so it is queued exactly once. A claim without it was left by an earlier version,
/// which queued the mail after the record when filing; a restart finishes such a claim as that
/// version would have.
pub const MAIL_WITH_RECORD: &str = "-m";

impl Claimed {
    /// True when the run's mail is queued with its record ([`MAIL_WITH_RECORD`]).
    pub fn mails_with_record(&self) -> bool {
        self.id.ends_with(MAIL_WITH_RECORD)
    }

    /// The claim in folder `dir` holding the file `path` (a claim found at start).
    pub fn found(dir: &Path, path: PathBuf) -> Claimed {
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        Claimed { path, id }
    }

    /// The claim folder.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(&self.path)
    }
}

fn is_gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

/// Moves `home/name` into a new claim folder under `work` (see the module doc); `None` when
/// the file is no longer there, or an upload is writing it (`uploads` decides, with its
/// writers held off during the move).
pub fn claim(
    work: &Path,
    home: &Path,
    name: &str,
    uploads: &InProgress,
) -> anyhow::Result<Option<Claimed>> {
    let home_fd = nofollow::open_dir(home)
        .with_context(|| format!("cannot open the tenant folder {}", home.display()))?;
    let file = match nofollow::open_file(home_fd.as_fd(), name) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            bail!("{name} in the tenant folder is a symbolic link; it is not imported")
        }
        Err(e) if is_gone(&e) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot open {name}")),
    };
    let opened = file
        .metadata()
        .with_context(|| format!("cannot stat {name}"))?;
    if !opened.is_file() {
        bail!("{name} in the tenant folder is not a regular file; it is not imported");
    }
    let n = CLAIMS.fetch_add(1, Ordering::Relaxed);
    let id = format!(
        "{}-{}-{n:04}{MAIL_WITH_RECORD}",
        Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
        std::process::id()
    );
    // 0700: a claim folder holds the upload and its report (review s30, F2).
    let mut private = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut private, 0o700);
    private
        .recursive(true)
        .create(work)
        .with_context(|| format!("cannot create {}", work.display()))?;
    let dir = work.join(&id);
    private
        .recursive(false)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let dir_fd = nofollow::open_dir(&dir)
        .with_context(|| format!("cannot open the claim folder {}", dir.display()))?;
    // With the uploads' writers held off, the name must still be the file that was found
    // finished: another file renamed onto it meanwhile (one still being written, say) is not
    // moved; its own finished upload or rename asks for it again (review of 2026-11-30,
    // third round, F9).
    let moved = uploads.take_if_finished(FileId::of(&opened), || {
        if !still_the_file(home_fd.as_fd(), name, &opened)? {
            return Ok(false);
        }
        nofollow::rename(home_fd.as_fd(), name, dir_fd.as_fd(), name).map(|()| true)
    });
    let moved = match moved {
        Some(Ok(false)) | None => {
            let _ = std::fs::remove_dir(&dir);
            tracing::info!(file = %name, "an upload opened or replaced the file meanwhile; it is imported when that upload finishes");
            return Ok(None);
        }
        Some(Ok(true)) => Ok(()),
        Some(Err(e)) => Err(e),
    };
    if let Err(e) = moved {
        let _ = std::fs::remove_dir(&dir);
        if is_gone(&e) {
            return Ok(None);
        }
        return Err(e).with_context(|| format!("cannot claim {name}"));
    }
    let moved = nofollow::lstat(dir_fd.as_fd(), name)
        .with_context(|| format!("cannot stat the claimed {name}"))?;
    let same = moved.st_dev == opened.dev() && moved.st_ino == opened.ino();
    if !same && !nofollow::is_regular(&moved) {
        let _ = nofollow::unlink(dir_fd.as_fd(), name);
        let _ = std::fs::remove_dir(&dir);
        bail!(
            "{name} was replaced by a symbolic link or another kind of entry while it was claimed; that entry was removed and nothing was imported"
        );
    }
    // A file with another hard link (`hardlink@openssh.com` under `roster sftp-server`) is
    // still reachable from the tenant's side: the run reads a private copy, so writes through
    // the other name change neither the bytes imported nor the archived file (review s29: the
    // recorded sha256 and a held plan could differ from the rows planned). Should the copy
    // fail, the file is imported as it is, as before, and that is logged.
    if moved.st_nlink > 1 {
        if let Err(e) = super::archive::copy_in(dir_fd.as_fd(), name, dir_fd.as_fd(), name) {
            tracing::warn!(file = %name, "the claimed file has another link and could not be copied apart from it ({e}); importing it as it is");
        }
    }
    // The file's bytes must be durable too, not only the names: after a power loss a run not
    // yet committed is imported again from the claimed file, and a file whose last blocks the
    // system had not written out comes back shorter, a cut file (review s30, F4: only the
    // folders were flushed). One flush per run; a failure is logged, as the folders' are.
    if let Err(e) = nofollow::open_file(dir_fd.as_fd(), name).and_then(|f| f.sync_all()) {
        tracing::warn!(file = %name, "cannot flush the claimed file to disk: {e}");
    }
    // The claim folder, the file in it and the file gone from the home must be durable before
    // the run commits: after a power loss a commit whose file reappeared in the home would
    // import it again as a duplicate (review s18 crash F3).
    if let Ok(work_fd) = nofollow::open_dir(work) {
        nofollow::sync_dir(work_fd.as_fd(), "the new claim folder");
    }
    nofollow::sync_dir(dir_fd.as_fd(), "the claimed file");
    nofollow::sync_dir(
        home_fd.as_fd(),
        "the claimed file's move out of the tenant folder",
    );
    if !same {
        // A newer regular file took the name in between (a re-upload): it is claimed now,
        // a regular file in Roster's own folder, and its bytes are what is imported.
        tracing::info!(file = %name, "the file was replaced by a newer upload while claimed; importing the newer one");
    }
    Ok(Some(Claimed {
        path: dir.join(name),
        id,
    }))
}

/// True when `name` in `dir` is still the file `opened` describes (device and inode).
fn still_the_file(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &str,
    opened: &std::fs::Metadata,
) -> std::io::Result<bool> {
    let now = nofollow::lstat(dir, name)?;
    Ok(now.st_dev == opened.dev() && now.st_ino == opened.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_renamed_onto_the_name_is_not_the_file_found() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        std::fs::write(home.join("users.csv"), b"a").unwrap();
        let opened = std::fs::metadata(home.join("users.csv")).unwrap();
        let fd = nofollow::open_dir(home).unwrap();
        assert!(still_the_file(fd.as_fd(), "users.csv", &opened).unwrap());
        std::fs::write(home.join("other.csv"), b"b").unwrap();
        std::fs::rename(home.join("other.csv"), home.join("users.csv")).unwrap();
        assert!(!still_the_file(fd.as_fd(), "users.csv", &opened).unwrap());
    }

    #[test]
    fn a_file_with_another_link_is_claimed_as_a_copy_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (home, work) = (dir.path().join("home"), dir.path().join("work"));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("users.csv"), b"email\na@x.example\n").unwrap();
        std::fs::hard_link(home.join("users.csv"), home.join("keep.csv")).unwrap();
        let c = claim(&work, &home, "users.csv", &InProgress::none())
            .unwrap()
            .expect("claimed");
        std::fs::write(home.join("keep.csv"), b"email\nevil@x.example\n").unwrap();
        assert_eq!(std::fs::read(&c.path).unwrap(), b"email\na@x.example\n");
    }

    #[test]
    fn a_file_that_is_gone_is_no_claim_and_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let (home, work) = (dir.path().join("home"), dir.path().join("work"));
        std::fs::create_dir_all(&home).unwrap();
        assert!(claim(&work, &home, "users.csv", &InProgress::none())
            .unwrap()
            .is_none());
        assert_eq!(std::fs::read_dir(&work).map(|d| d.count()).unwrap_or(0), 0);

        std::fs::write(home.join("users.csv"), b"email\n").unwrap();
        let c = claim(&work, &home, "users.csv", &InProgress::none())
            .unwrap()
            .expect("a present file is claimed");
        assert_eq!(std::fs::read(&c.path).unwrap(), b"email\n");
        assert!(!home.join("users.csv").exists());
        // The second node's claim of the same upload finds it gone.
        assert!(claim(&work, &home, "users.csv", &InProgress::none())
            .unwrap()
            .is_none());
        assert_eq!(std::fs::read_dir(&work).unwrap().count(), 1);
    }
}
