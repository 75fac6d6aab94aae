//! File operations relative to an open folder handle that never follow a symbolic link.
//!
//! The intake works in folders a tenant (or anyone with access to the data folder) can change
//! while Roster looks at them. Every step here names one entry of a folder that is already
//! open, with `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW`, so a link planted or swapped in at any moment
//! is met as a link (an error), never walked through. Data enters as a folder handle and an
//! entry name and leaves as handles, `stat`s and `io::Result`s.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn c_name(name: &str) -> io::Result<CString> {
    if name.is_empty() || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a single folder entry"),
        ));
    }
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by a successful open call and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens the folder at `path`; fails if its last component is a symbolic link.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `c` is a valid NUL-terminated string.
    owned(unsafe { libc::open(c.as_ptr(), flags) })
}

/// Opens the folder `name` in `dir` (creating it first, mode 0700, when `create`); a link is
/// an error.
pub fn open_subdir(dir: BorrowedFd<'_>, name: &str, create: bool) -> io::Result<OwnedFd> {
    let c = c_name(name)?;
    if create {
        // SAFETY: valid folder handle and NUL-terminated name.
        let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o700) };
        if let Err(e) = check(rc) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(e);
            }
        }
    }
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid folder handle and NUL-terminated name.
    owned(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) })
}

/// Opens the entry `name` of `dir` for reading without following a link and without blocking
/// on a FIFO. The caller checks with `metadata()` that it is a regular file.
pub fn open_file(dir: BorrowedFd<'_>, name: &str) -> io::Result<File> {
    let c = c_name(name)?;
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: valid folder handle and NUL-terminated name.
    owned(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) }).map(File::from)
}

/// Creates the new file `name` in `dir` for writing, mode 0600 (fails if anything has that
/// name). Archive copies and reports hold what uploads held, so they are private too.
pub fn create_file(dir: BorrowedFd<'_>, name: &str) -> io::Result<File> {
    let c = c_name(name)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid folder handle and NUL-terminated name; mode is an int vararg.
    owned(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags, 0o600 as libc::c_uint) })
        .map(File::from)
}

/// Opens the existing regular file `name` of `dir` for writing (to set its times).
pub fn open_for_times(dir: BorrowedFd<'_>, name: &str) -> io::Result<File> {
    let c = c_name(name)?;
    let flags = libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: valid folder handle and NUL-terminated name.
    owned(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) }).map(File::from)
}

/// Renames the entry `from` of `from_dir` to `to` in `to_dir` (a link is moved, not followed).
pub fn rename(
    from_dir: BorrowedFd<'_>,
    from: &str,
    to_dir: BorrowedFd<'_>,
    to: &str,
) -> io::Result<()> {
    let (a, b) = (c_name(from)?, c_name(to)?);
    // SAFETY: valid folder handles and NUL-terminated names.
    check(unsafe {
        libc::renameat(
            from_dir.as_raw_fd(),
            a.as_ptr(),
            to_dir.as_raw_fd(),
            b.as_ptr(),
        )
    })
}

/// Makes the entries of `dir` durable (fsync of the folder), so a rename into or out of it
/// survives a power loss; a failure is logged, not returned: the rename itself happened, and
/// recovery finds the file wherever it is (review s18 crash F3).
pub fn sync_dir(dir: BorrowedFd<'_>, what: &str) {
    // SAFETY: a valid folder handle.
    if let Err(e) = check(unsafe { libc::fsync(dir.as_raw_fd()) }) {
        tracing::warn!("cannot make {what} durable (fsync of the folder): {e}");
    }
}

/// Removes the entry `name` (not a folder) of `dir`.
pub fn unlink(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let c = c_name(name)?;
    // SAFETY: valid folder handle and NUL-terminated name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) })
}

/// The `stat` of the entry `name` of `dir` itself (a link is described, not followed).
pub fn lstat(dir: BorrowedFd<'_>, name: &str) -> io::Result<libc::stat> {
    let c = c_name(name)?;
    // SAFETY: `stat` is plain data; zeroed is a valid value that fstatat overwrites.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid folder handle, NUL-terminated name, and a writable stat buffer.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// True when `st` describes a regular file.
pub fn is_regular(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// The entry names of the folder `dir` refers to (read through the handle itself, so a folder
/// swapped for a link after it was opened is not what is listed).
pub fn names(dir: BorrowedFd<'_>) -> io::Result<Vec<String>> {
    let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    Ok(std::fs::read_dir(path)?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect())
}
