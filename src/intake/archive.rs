//! Filing a run's file away: `processed/`, `errors/` or `bak/` in the tenant home, named
//! `NAME.<UTC timestamp>.csv`, plus the failure report `NAME.<UTC timestamp>.report.csv`; and the
//! daily retention sweep of those folders.
//!
//! Decisions: a `held` file goes to `processed/` (the store keeps the held plan and its bytes for
//! `roster approve`); with `archive = "bak"` the file and its report both go to `bak/`. An
//! archived file's modification time is set to the moment it was archived, because clients often
//! preserve an old timestamp and retention is counted from archiving.

use crate::config::{Archive, ImportProfile};
use crate::store::ImportStatus;
use anyhow::Context;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where a run's file and report go, relative to the tenant home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePlan {
    /// e.g. `processed/users.20261121T073000Z.csv`
    pub file: String,
    /// e.g. `errors/users.20261121T073000Z.report.csv`
    pub report: Option<String>,
}

/// `users.csv` → `users`; names without a `.csv` ending are kept whole.
fn stem(name: &str) -> &str {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".csv") && name.len() > 4 {
        &name[..name.len() - 4]
    } else {
        name
    }
}

/// Chooses archive names for a run that finished at `at`, avoiding names already taken.
pub fn plan(
    home: &Path,
    profile: &ImportProfile,
    name: &str,
    status: ImportStatus,
    has_report: bool,
    at: DateTime<Utc>,
) -> ArchivePlan {
    let (folder, report_folder) = match (profile.archive, status) {
        (Archive::Bak, _) => ("bak", "bak"),
        (Archive::Processed, ImportStatus::Error | ImportStatus::Missing) => ("errors", "errors"),
        (Archive::Processed, _) => ("processed", "errors"),
    };
    let stamp = at.format("%Y%m%dT%H%M%SZ").to_string();
    let base = stem(name);
    let mut n = 1;
    loop {
        let tag = if n == 1 {
            stamp.clone()
        } else {
            format!("{stamp}-{n}")
        };
        let file = format!("{folder}/{base}.{tag}.csv");
        let report = format!("{report_folder}/{base}.{tag}.report.csv");
        if !home.join(&file).exists() && !home.join(&report).exists() {
            return ArchivePlan {
                file,
                report: has_report.then_some(report),
            };
        }
        n += 1;
    }
}

/// Writes `bytes` to `home/rel` (creating its folder), atomically via a temp name.
pub fn write_file(home: &Path, rel: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let dest = home.join(rel);
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = dest.with_extension("roster-tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("cannot move into {}", dest.display()))?;
    Ok(())
}

/// Moves the claimed file to `home/rel` (or writes `replacement`, the password-blanked copy,
/// and removes the original), and stamps it with the archive time.
pub fn file_away(
    home: &Path,
    rel: &str,
    claimed: &Path,
    replacement: Option<&[u8]>,
) -> anyhow::Result<PathBuf> {
    let dest = home.join(rel);
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match replacement {
        Some(bytes) => {
            write_file(home, rel, bytes)?;
            std::fs::remove_file(claimed)
                .with_context(|| format!("cannot remove {}", claimed.display()))?;
        }
        None => {
            if let Err(e) = std::fs::rename(claimed, &dest) {
                // Another file system: copy, then remove.
                std::fs::copy(claimed, &dest)
                    .with_context(|| format!("cannot archive to {} ({e})", dest.display()))?;
                std::fs::remove_file(claimed)
                    .with_context(|| format!("cannot remove {}", claimed.display()))?;
            }
        }
    }
    if let Ok(f) = std::fs::File::options().write(true).open(&dest) {
        let _ = f.set_modified(SystemTime::now());
    }
    Ok(dest)
}

/// Deletes archived files and reports older than `days` in a tenant home. Returns how many.
pub fn sweep(home: &Path, days: u32) -> usize {
    let max_age = Duration::from_secs(u64::from(days) * 86_400);
    let now = SystemTime::now();
    let mut removed = 0;
    for folder in crate::sftp::jail::ARCHIVE_DIRS {
        let Ok(entries) = std::fs::read_dir(home.join(folder)) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            let old = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > max_age);
            if meta.is_file() && old && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_by_status_and_setting() {
        let dir = tempfile::tempdir().unwrap();
        let at = DateTime::parse_from_rfc3339("2026-11-21T07:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut p = ImportProfile::default();
        let a = plan(dir.path(), &p, "users.csv", ImportStatus::Partial, true, at);
        assert_eq!(a.file, "processed/users.20261121T073000Z.csv");
        assert_eq!(
            a.report.as_deref(),
            Some("errors/users.20261121T073000Z.report.csv")
        );
        let e = plan(dir.path(), &p, "users.csv", ImportStatus::Error, false, at);
        assert_eq!(e.file, "errors/users.20261121T073000Z.csv");
        assert_eq!(e.report, None);
        write_file(dir.path(), &e.file, b"x").unwrap();
        let again = plan(dir.path(), &p, "users.csv", ImportStatus::Error, false, at);
        assert_eq!(again.file, "errors/users.20261121T073000Z-2.csv");
        p.archive = Archive::Bak;
        let b = plan(
            dir.path(),
            &p,
            "export.txt",
            ImportStatus::Success,
            true,
            at,
        );
        assert_eq!(b.file, "bak/export.txt.20261121T073000Z.csv");
        assert_eq!(
            b.report.as_deref(),
            Some("bak/export.txt.20261121T073000Z.report.csv")
        );
    }

    #[test]
    fn sweep_removes_only_old_archives() {
        let dir = tempfile::tempdir().unwrap();
        write_file(dir.path(), "processed/old.csv", b"x").unwrap();
        write_file(dir.path(), "processed/new.csv", b"x").unwrap();
        write_file(dir.path(), "users.csv", b"x").unwrap();
        let old = SystemTime::now() - Duration::from_secs(10 * 86_400);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("processed/old.csv"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(sweep(dir.path(), 7), 1);
        assert!(!dir.path().join("processed/old.csv").exists());
        assert!(dir.path().join("processed/new.csv").exists());
        assert!(dir.path().join("users.csv").exists());
    }
}
