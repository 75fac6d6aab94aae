//! "An upload finished": the one event the SFTP front door hands to the rest of Roster.
//!
//! The request handler calls [`UploadSink::finished`] when a handle that wrote is closed, or when
//! a rename lands on a name. Temp names (`*.filepart`, `*.part`, `*.partial`, `*.tmp`, `.*`)
//! never produce an event. While a file is open for writing, an *in-progress marker* exists for
//! it under `<data_dir>/uploading/<tenant>/`; it is removed on a clean CLOSE and left behind when
//! the session ends with the handle still open (or the process dies), so the intake can tell a
//! complete file from a partial one — also after a restart.

use std::path::{Path, PathBuf};
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

/// In-progress markers: a file per upload under way, named after the upload's virtual path.
#[derive(Debug, Clone)]
pub struct InProgress {
    dir: Option<PathBuf>,
}

impl InProgress {
    /// Markers for `tenant` under `data_dir/uploading/<tenant>/`.
    pub fn new(data_dir: &Path, tenant: &str) -> InProgress {
        InProgress {
            dir: Some(data_dir.join("uploading").join(tenant)),
        }
    }

    /// No markers (stand-alone `sftp-server` mode).
    pub fn none() -> InProgress {
        InProgress { dir: None }
    }

    fn marker(dir: &Path, virtual_path: &str) -> PathBuf {
        // `/a/b.csv` -> `a%2Fb.csv`: one flat folder, reversible, no nesting to clean up.
        let flat = virtual_path
            .trim_start_matches('/')
            .replace('%', "%25")
            .replace('/', "%2F");
        dir.join(flat)
    }

    /// Marks `virtual_path` as being written.
    pub fn begin(&self, virtual_path: &str) {
        if let Some(dir) = &self.dir {
            let made = std::fs::create_dir_all(dir)
                .and_then(|_| std::fs::write(Self::marker(dir, virtual_path), b""));
            if let Err(e) = made {
                tracing::warn!(
                    path = virtual_path,
                    "cannot write the in-progress marker: {e}"
                );
            }
        }
    }

    /// The upload of `virtual_path` ended cleanly (or the file is gone).
    pub fn end(&self, virtual_path: &str) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_file(Self::marker(dir, virtual_path));
        }
    }

    /// True when `virtual_path` was opened for writing and never closed cleanly.
    pub fn is_incomplete(&self, virtual_path: &str) -> bool {
        match &self.dir {
            Some(dir) => Self::marker(dir, virtual_path).exists(),
            None => false,
        }
    }
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

    #[test]
    fn markers_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = InProgress::new(dir.path(), "acme");
        m.begin("/sub/users.csv");
        assert!(m.is_incomplete("/sub/users.csv"));
        assert!(!m.is_incomplete("/users.csv"));
        m.end("/sub/users.csv");
        assert!(!m.is_incomplete("/sub/users.csv"));
    }
}
