//! Where a run's file and failure report will be filed, decided before the run, so that the
//! engine commits the run's history record complete (`archived_as`, `report`) in the same
//! transaction as the user changes: a run's record is written once, by that commit.
//!
//! Data enters from the intake as a [`Filing`] in [`super::RunOptions`]: the archive names it
//! planned ([`ArchivePlan`], see `intake::archive::plan`) and the claim folder of the run. Just
//! before committing, the engine calls [`Filing::complete`]: it sets the record's names from the
//! plan by the run's status ([`ArchivePlan::names`]) and writes the run's failure report and
//! password-free archive copy into the claim folder ([`Filing::stage`]). So a crash after the
//! commit loses nothing: recovery reads them back ([`staged`]) and files exactly what the record
//! names. The intake uses the same calls for the records it writes itself. Library callers and
//! previews pass no filing; their records name no archive.

use super::ImportStatus;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The staged failure report, in the claim folder (a dot name: never taken for the claimed file).
const STAGED_REPORT: &str = ".report.csv";
/// The staged password-free copy of the file.
const STAGED_COPY: &str = ".archive.csv";

/// Archive names of one run, relative to the tenant home, planned before the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePlan {
    /// The file's name when the run is applied or a duplicate (e.g.
    /// `processed/users.20261121T073000Z.csv`); a held run's is this with `.held` before
    /// `.csv` ([`ArchivePlan::held`]).
    pub kept: String,
    /// The file's name when the run ends `error` or `missing` (e.g. `errors/…`).
    pub failed: String,
    /// The failure report's name, used when the run has a report (e.g.
    /// `errors/users.20261121T073000Z.report.csv`).
    pub report: String,
}

impl ArchivePlan {
    /// (`archived_as`, `report`) of a run that ended with `status`.
    pub fn names(&self, status: ImportStatus, has_report: bool) -> (String, Option<String>) {
        let file = match status {
            ImportStatus::Error | ImportStatus::Missing => self.failed.clone(),
            ImportStatus::Held => self.held(),
            _ => self.kept.clone(),
        };
        (file, has_report.then(|| self.report.clone()))
    }

    /// The file's name when the run is held (`processed/users.20261121T073000Z.held.csv`), so
    /// that a tenant looking into `processed/` does not take a run waiting for approval for an
    /// applied one. Decision: the name stays after `approve` (the record keeps naming it).
    pub fn held(&self) -> String {
        let stem = self.kept.strip_suffix(".csv").unwrap_or(&self.kept);
        format!("{stem}.held.csv")
    }
}

/// Where the intake files a run (see the module doc).
#[derive(Debug, Clone)]
pub struct Filing {
    pub plan: ArchivePlan,
    /// The run's claim folder, which keeps its outputs until they are filed.
    pub outputs: PathBuf,
}

impl Filing {
    /// Before the commit: names the record's archived file and report (by its status) and
    /// stages the outputs.
    pub fn complete(
        &self,
        record: &mut super::ImportRecord,
        report: Option<&[u8]>,
        copy: Option<&[u8]>,
    ) -> Result<()> {
        let (file, report_name) = self.plan.names(record.status, report.is_some());
        record.archived_as = Some(file);
        record.report = report_name;
        self.stage(report, copy)
    }

    /// Writes the report and archive copy into the claim folder (durably: the commit that
    /// follows names them), removing one left by an earlier attempt that this run lacks.
    pub fn stage(&self, report: Option<&[u8]>, copy: Option<&[u8]>) -> Result<()> {
        for (name, bytes) in [(STAGED_REPORT, report), (STAGED_COPY, copy)] {
            let path = self.outputs.join(name);
            match bytes {
                Some(b) => write_synced(&path, b)
                    .with_context(|| format!("cannot keep {} for filing", path.display()))?,
                None => match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot remove {}", path.display()))
                    }
                },
            }
        }
        Ok(())
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // 0600: the staged report and archive copy hold what the upload held (review s30, F2).
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// What a run staged in its claim folder `dir`: (failure report, archive copy).
pub fn staged(dir: &Path) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    (
        std::fs::read(dir.join(STAGED_REPORT)).ok(),
        std::fs::read(dir.join(STAGED_COPY)).ok(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_by_status_and_staging_round_trip() {
        let plan = ArchivePlan {
            kept: "processed/u.T.csv".into(),
            failed: "errors/u.T.csv".into(),
            report: "errors/u.T.report.csv".into(),
        };
        assert_eq!(
            plan.names(ImportStatus::Held, true),
            (
                "processed/u.T.held.csv".into(),
                Some("errors/u.T.report.csv".into())
            )
        );
        assert_eq!(
            plan.names(ImportStatus::Success, false),
            ("processed/u.T.csv".into(), None)
        );
        assert_eq!(
            plan.names(ImportStatus::Error, false),
            ("errors/u.T.csv".into(), None)
        );
        let dir = tempfile::tempdir().unwrap();
        let f = Filing {
            plan,
            outputs: dir.path().to_path_buf(),
        };
        f.stage(Some(b"r"), Some(b"c")).unwrap();
        assert_eq!(
            staged(dir.path()),
            (Some(b"r".to_vec()), Some(b"c".to_vec()))
        );
        f.stage(None, Some(b"d")).unwrap();
        assert_eq!(staged(dir.path()), (None, Some(b"d".to_vec())));
    }
}
