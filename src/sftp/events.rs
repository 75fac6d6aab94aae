//! "An upload finished": the one event the SFTP front door hands to the rest of Roster.
//!
//! The request handler calls [`UploadSink::finished`] when a handle that wrote is closed, or when
//! a rename lands on a name. Temp names (`*.filepart`, `*.part`, `*.partial`, `*.tmp`, `.*`)
//! never produce an event. Whether a file is finished (no handle writing it, no upload of it
//! broken off) is `uploads`' to say.

use std::path::PathBuf;
use std::time::SystemTime;

/// A file a tenant finished uploading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadFinished {
    pub tenant: String,
    /// As the tenant sees it, e.g. `/users.csv`.
    pub path: String,
    /// Where it is on disk.
    pub real_path: PathBuf,
    pub size: u64,
    /// How the upload ended.
    pub how: FinishedBy,
    pub at: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishedBy {
    Close,
    Rename,
}

/// Where upload events go. The server uses a tokio channel; tests subscribe to it.
pub trait UploadSink: Send + Sync {
    fn finished(&self, event: UploadFinished);
}

/// A sink that drops everything (for `roster sftp-server`, where the folder watcher notices files).
pub struct NoUploadSink;

impl UploadSink for NoUploadSink {
    fn finished(&self, _event: UploadFinished) {}
}

impl UploadSink for tokio::sync::mpsc::UnboundedSender<UploadFinished> {
    fn finished(&self, event: UploadFinished) {
        if self.send(event).is_err() {
            tracing::warn!("upload finished but nobody is listening for uploads");
        }
    }
}

impl UploadSink for tokio::sync::broadcast::Sender<UploadFinished> {
    fn finished(&self, event: UploadFinished) {
        let _ = self.send(event);
    }
}

/// True for names that clients use while a transfer is under way; they are never imported.
pub fn is_temp_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || [".filepart", ".part", ".partial", ".tmp"]
            .iter()
            .any(|s| lower.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names() {
        for n in [
            "a.csv.filepart",
            "x.PART",
            "y.partial",
            "z.tmp",
            ".hidden",
            ".a.csv",
        ] {
            assert!(is_temp_name(n), "{n}");
        }
        for n in ["users.csv", "part.csv", "tmp", "users_2026.csv"] {
            assert!(!is_temp_name(n), "{n}");
        }
    }
}
