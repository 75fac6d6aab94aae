//! Files Roster writes are private to the account it runs as (review s30, F2).
//!
//! Uploads hold plaintext initial passwords and the store holds the directory, so nothing
//! under `data_dir` is meant for other local accounts. `roster serve` and `roster sftp-server`
//! therefore set the process umask to `077` before anything is created (sled's files, the
//! admin token, mail, folders made by libraries), and the code that makes data folders and
//! files asks for `0700` and `0600` itself as well. An operator who wants a group to read the
//! data must grant it deliberately (a group ACL or `chmod` after the fact); the umask is not a
//! setting. At start, a `data_dir` that group or others can enter is warned about.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The umask `serve` and `sftp-server` run under: no bits for group or others.
pub const PRIVATE_UMASK: libc::mode_t = 0o077;

/// Sets the process umask to [`PRIVATE_UMASK`] (process-wide; call before any thread writes).
pub fn set_private_umask() {
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(PRIVATE_UMASK);
    }
}

/// The warning for a `data_dir` that group or others may read or enter, if it is one.
pub fn shared_warning(data_dir: &Path) -> Option<String> {
    let mode = std::fs::metadata(data_dir).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "the data folder {} is open to group or others (mode {:o}); it holds uploads with \
             initial passwords and the user directory: chmod 700 it unless that is deliberate",
            data_dir.display(),
            mode & 0o777
        )
    })
}

/// Logs [`shared_warning`] for `data_dir`, if any.
pub fn warn_if_shared(data_dir: &Path) {
    if let Some(w) = shared_warning(data_dir) {
        tracing::warn!("{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_others_can_enter_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let w = shared_warning(dir.path()).unwrap();
        assert!(w.contains("755") && w.contains("chmod 700"), "{w}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(shared_warning(dir.path()), None);
    }
}
