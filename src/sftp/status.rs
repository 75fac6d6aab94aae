//! SFTP status replies: the short sentences a person sees in their client when a request fails,
//! and how I/O and jail errors map to SFTP status codes, including the sentences for an upload
//! whose write failed ([`upload_failed`]) and a write-open refused because another handle is
//! writing the file ([`being_written`]).

use super::jail::JailError;
use russh_sftp::protocol::{Packet, Status, StatusCode};
use std::io::ErrorKind;

/// A failed request: status code and a short sentence for the person at the client.
pub type Failure = (StatusCode, String);

pub fn fail(code: StatusCode, msg: impl Into<String>) -> Failure {
    (code, msg.into())
}

pub fn status(id: u32, code: StatusCode, msg: impl Into<String>) -> Packet {
    Packet::Status(Status {
        id,
        status_code: code,
        error_message: msg.into(),
        language_tag: "en".into(),
    })
}

pub fn ok(id: u32) -> Packet {
    status(id, StatusCode::Ok, "OK")
}

pub fn jail_fail(e: JailError) -> Failure {
    match e {
        JailError::ReadOnly(_) | JailError::Symlink(_) => {
            fail(StatusCode::PermissionDenied, e.to_string())
        }
        JailError::Invalid(_) => fail(StatusCode::BadMessage, e.to_string()),
    }
}

/// Maps an I/O error on `path` to a status a person can read.
pub fn io_fail(path: &str, e: std::io::Error) -> Failure {
    let path = &shown(path);
    match e.kind() {
        ErrorKind::NotFound => fail(
            StatusCode::NoSuchFile,
            format!("No such file or folder: {path}"),
        ),
        ErrorKind::PermissionDenied => fail(
            StatusCode::PermissionDenied,
            format!("Permission denied: {path}"),
        ),
        ErrorKind::AlreadyExists => fail(StatusCode::Failure, format!("{path} already exists")),
        ErrorKind::DirectoryNotEmpty => fail(
            StatusCode::Failure,
            format!("The folder {path} is not empty"),
        ),
        ErrorKind::IsADirectory => fail(StatusCode::Failure, format!("{path} is a folder")),
        ErrorKind::NotADirectory => fail(StatusCode::Failure, format!("{path} is not a folder")),
        ErrorKind::StorageFull => fail(
            StatusCode::Failure,
            "The server's disk is full; try again later",
        ),
        _ if e.raw_os_error() == Some(libc::ENAMETOOLONG) => fail(
            StatusCode::Failure,
            format!("The name {path} is too long for the server's disk"),
        ),
        _ if e.raw_os_error() == Some(libc::ELOOP) => fail(
            StatusCode::PermissionDenied,
            format!("{path} is or goes through a symbolic link, which is not allowed"),
        ),
        _ => fail(StatusCode::Failure, format!("{path}: {e}")),
    }
}

/// A path as a message shows it: at most [`SHOWN_CHARS`] characters, then "…" (a client may
/// send a path of thousands).
fn shown(path: &str) -> String {
    match path.char_indices().nth(SHOWN_CHARS) {
        Some((at, _)) => format!("{}…", &path[..at]),
        None => path.to_string(),
    }
}

/// The longest path a message repeats whole.
const SHOWN_CHARS: usize = 200;

/// Why a write failed, in words (the cause of an [`upload_failed`] sentence).
pub fn write_failure_cause(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => "the server's disk is full".into(),
        Some(libc::EDQUOT) => "the server's disk quota is used up".into(),
        Some(libc::EFBIG) => "the file is larger than the server can store".into(),
        Some(libc::EIO) => "the server's disk reported an I/O error".into(),
        _ => e.to_string(),
    }
}

/// The answer to a WRITE that failed, and to the CLOSE of its handle: the file stays as it is
/// (unfinished, never imported), and the person is told to upload it again.
pub fn upload_failed(path: &str, cause: &str) -> Failure {
    fail(
        StatusCode::Failure,
        format!("The upload of {path} failed ({cause}); it will not be imported; upload it again"),
    )
}

/// A write-open of a file that another handle has open for writing; `here` when that handle is
/// one of this session's.
pub fn being_written(path: &str, here: bool) -> Failure {
    let msg = if here {
        format!("{path} is already open for writing in this session; close it first")
    } else {
        format!("{path} is being uploaded by another session; try again when it finishes")
    };
    fail(StatusCode::Failure, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sftp::jail::JailError;

    #[test]
    fn messages_cut_long_paths_and_name_the_folder_they_refuse() {
        let long = format!("/{}", "a".repeat(5000));
        let e = std::io::Error::from_raw_os_error(libc::ENAMETOOLONG);
        let (_, message) = io_fail(&long, e);
        assert!(message.contains("is too long"), "{message}");
        assert!(
            message.chars().count() < 300,
            "{} chars",
            message.chars().count()
        );
        let root = JailError::ReadOnly("/".into()).to_string();
        assert!(root.contains("your home folder"), "{root}");
        let archive = JailError::ReadOnly("/processed/x.csv".into()).to_string();
        assert!(archive.contains("archived files"), "{archive}");
    }
}
