//! The record of one import run: its [`ImportStatus`], its [`Counts`], where its file and
//! report were filed. One type serves the run log (stored as JSON), the admin API and
//! `history --json` (the same JSON), the report mail and the metrics.
//!
//! Pure data: records are made by the import engine and the intake and leave through the
//! store's run log. The JSON is flat (`counts` is flattened), field for field as clients
//! have always seen it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The numbers of one run (design.md §5), as the planner tallies them, the history record
/// keeps them, and the report mail and the metrics show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Data rows read (the header not counted).
    pub rows: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deactivated: u64,
    pub deleted: u64,
    pub restored: u64,
    pub skipped: u64,
    /// Problems that stopped a row or the file (skipped rows + a file-level error).
    pub errors: u64,
}

impl Counts {
    /// Adds `o` to these counts (the planner sums its buckets so).
    pub fn add(&mut self, o: &Counts) {
        self.rows += o.rows;
        self.inserted += o.inserted;
        self.updated += o.updated;
        self.unchanged += o.unchanged;
        self.deactivated += o.deactivated;
        self.deleted += o.deleted;
        self.restored += o.restored;
        self.skipped += o.skipped;
        self.errors += o.errors;
    }
}

/// Outcome of one run (design.md §5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    /// Applied, no skipped rows.
    Success,
    /// Applied, some rows skipped.
    Partial,
    /// A file-level problem: nothing applied.
    Error,
    /// Too many users would be deactivated/deleted: nothing applied until approved.
    Held,
    /// Same bytes as the last applied file: nothing applied.
    Duplicate,
    /// A schedule fired and no file was there (recorded by the intake).
    Missing,
}

impl ImportStatus {
    /// True for the runs that read a file of the tenant and decided on it: applied, a
    /// duplicate of the applied file, or held. Any of them is the tenant's latest word: it
    /// makes older held plans and older unfinished claims stale.
    pub fn read_a_file(self) -> bool {
        matches!(
            self,
            ImportStatus::Success
                | ImportStatus::Partial
                | ImportStatus::Duplicate
                | ImportStatus::Held
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ImportStatus::Success => "success",
            ImportStatus::Partial => "partial",
            ImportStatus::Error => "error",
            ImportStatus::Held => "held",
            ImportStatus::Duplicate => "duplicate",
            ImportStatus::Missing => "missing",
        }
    }
}

impl std::fmt::Display for ImportStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run in the import history (design.md §5; the admin API and `history --json` form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportRecord {
    pub id: String,
    pub tenant: String,
    /// File name as uploaded.
    pub file: String,
    /// Hex sha256 of the file bytes.
    pub sha256: String,
    pub bytes: u64,
    pub received_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub status: ImportStatus,
    /// What the run counted (serialised in place: the JSON keeps its flat form).
    #[serde(flatten)]
    pub counts: Counts,
    /// Sentences for people: the file-level error, notes (unknown references, ignored
    /// columns), the first skip reasons. Capped; the failure report has every skipped row.
    pub messages: Vec<String>,
    /// Detected or configured encoding: `utf-8`, `utf-8-bom`, `utf-16le`, `utf-16be`, `windows-1252`.
    pub encoding: String,
    /// The delimiter used, e.g. `;` or `\t`.
    pub delimiter: String,
    /// Where the intake archived the file (set by the intake).
    pub archived_as: Option<String>,
    /// Where the intake wrote the failure report (set by the intake).
    pub report: Option<String>,
}

impl ImportRecord {
    /// A run that has counted nothing yet: all counts zero, no messages, not filed.
    pub fn begun(
        id: String,
        tenant: &str,
        file: &str,
        status: ImportStatus,
        received_at: DateTime<Utc>,
        started_at: DateTime<Utc>,
    ) -> ImportRecord {
        ImportRecord {
            id,
            tenant: tenant.to_string(),
            file: file.to_string(),
            sha256: String::new(),
            bytes: 0,
            received_at,
            started_at,
            finished_at: started_at,
            status,
            counts: Counts::default(),
            messages: Vec::new(),
            encoding: String::new(),
            delimiter: String::new(),
            archived_as: None,
            report: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON is flat and in the order clients have always seen.
    #[test]
    fn json_is_flat_and_round_trips() {
        let t = DateTime::<Utc>::default();
        let mut r = ImportRecord::begun("i".into(), "t", "f.csv", ImportStatus::Partial, t, t);
        r.counts.rows = 3;
        r.counts.skipped = 1;
        r.archived_as = Some("processed/f.csv".into());
        let json = serde_json::to_string(&r).unwrap();
        let keys = [
            "id",
            "tenant",
            "file",
            "sha256",
            "bytes",
            "received_at",
            "started_at",
            "finished_at",
            "status",
            "rows",
            "inserted",
            "updated",
            "unchanged",
            "deactivated",
            "deleted",
            "restored",
            "skipped",
            "errors",
            "messages",
            "encoding",
            "delimiter",
            "archived_as",
            "report",
        ];
        let mut at = 0;
        for k in keys {
            let found = json[at..].find(&format!("\"{k}\":")).map(|i| i + at);
            assert!(found.is_some(), "{k} missing or out of order in {json}");
            at = found.unwrap_or(at);
        }
        assert!(json.contains("\"rows\":3,") && !json.contains("counts"));
        assert_eq!(serde_json::from_str::<ImportRecord>(&json).unwrap(), r);
    }
}
