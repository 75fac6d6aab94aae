//! File-system helpers of the SFTP handler: attributes, `ls -l` long names, SETSTAT, and the
//! `*at()` calls (stat, mkdir, unlink, rename that refuses to replace, links, `statvfs`) that act
//! on a name inside a folder descriptor the [`Jail`](super::jail::Jail) opened.
//!
//! Nothing here takes a path string to the kernel: a folder descriptor plus one final name.

use super::status::{io_fail, Failure};
use russh_sftp::protocol::{File, FileAttributes};
use std::ffi::{CStr, CString};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What Roster shows of a file: type and permission bits, size, times.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub mode: u32,
    pub size: u64,
    pub atime: i64,
    pub mtime: i64,
    /// Device and inode: which file this is, whatever its path.
    pub id: super::uploads::FileId,
    /// What the file takes on the disk (allocated blocks), and how many names it has: removing
    /// one of several names frees nothing.
    pub disk_bytes: u64,
    pub links: libc::nlink_t,
}

impl Stat {
    fn from_libc(st: &libc::stat) -> Stat {
        Stat {
            mode: st.st_mode,
            size: u64::try_from(st.st_size).unwrap_or(0),
            atime: st.st_atime,
            mtime: st.st_mtime,
            id: super::uploads::FileId {
                dev: st.st_dev,
                ino: st.st_ino,
            },
            disk_bytes: u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512),
            links: st.st_nlink,
        }
    }

    /// The same, shown without write permission: what a tenant may only read (the archive
    /// folders and their files) is listed as read-only, so clients such as WinSCP and FileZilla
    /// do not offer to edit or delete it (review s18 clients F7).
    pub fn read_only(self) -> Stat {
        Stat {
            mode: self.mode & !0o222,
            ..self
        }
    }

    /// `fstat` of an open descriptor (an `O_PATH` one included).
    pub fn of_fd(fd: BorrowedFd<'_>) -> std::io::Result<Stat> {
        // SAFETY: `st` is plain old data, fully written by fstat on success.
        let st = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            check(libc::fstat(fd.as_raw_fd(), &mut st))?;
            st
        };
        Ok(Stat::from_libc(&st))
    }

    /// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: a link is described, not followed.
    pub fn at(dir: BorrowedFd<'_>, name: &CStr) -> std::io::Result<Stat> {
        // SAFETY: `name` is NUL-terminated; `st` is fully written by fstatat on success.
        let st = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            check(libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            ))?;
            st
        };
        Ok(Stat::from_libc(&st))
    }

    fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }

    pub fn is_symlink(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }

    pub fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }
}

fn clamp_time(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

pub fn attrs_of(st: &Stat) -> FileAttributes {
    FileAttributes {
        size: Some(st.size),
        // Uid/gid of the server process mean nothing to a tenant.
        uid: Some(0),
        gid: Some(0),
        permissions: Some(if st.is_symlink() { 0o120777 } else { st.mode }),
        atime: Some(clamp_time(st.atime)),
        mtime: Some(clamp_time(st.mtime)),
        ..Default::default()
    }
}

/// A directory entry with an `ls -l` style long name, which FileZilla and WinSCP parse:
/// `-rw-r--r--    1 acme     acme         1234 Nov 21 14:50 users.csv` (older than six months:
/// the year instead of the time).
pub fn listing_entry(name: String, st: &Stat, owner: &str) -> File {
    let attrs = attrs_of(st);
    let kind = if st.is_symlink() {
        'l'
    } else if st.is_dir() {
        'd'
    } else {
        '-'
    };
    let mode = st.mode;
    let mut perms = String::with_capacity(9);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        perms.push(if bits & 4 != 0 { 'r' } else { '-' });
        perms.push(if bits & 2 != 0 { 'w' } else { '-' });
        perms.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    let mtime = chrono::DateTime::<chrono::Utc>::from_timestamp(st.mtime, 0).unwrap_or_default();
    let age = chrono::Utc::now().signed_duration_since(mtime);
    let when = if age.num_days().abs() < 180 {
        mtime.format("%b %e %H:%M").to_string()
    } else {
        mtime.format("%b %e  %Y").to_string()
    };
    let owner: String = owner.chars().take(8).collect();
    let longname = format!(
        "{kind}{perms}    1 {owner:<8} {owner:<8} {size:>8} {when} {name}",
        size = st.size
    );
    File {
        filename: name,
        longname,
        attrs,
    }
}

fn system_time(secs: u32) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::from(secs))
}

/// Applies the SETSTAT attributes Roster honours: size (truncate/extend, the caller checks the
/// upload limit) and times. Permissions and ownership are accepted and ignored.
pub fn apply_attrs(
    file: &std::fs::File,
    attrs: &FileAttributes,
    path: &str,
) -> Result<(), Failure> {
    if let Some(size) = attrs.size {
        file.set_len(size).map_err(|e| io_fail(path, e))?;
    }
    if attrs.mtime.is_some() || attrs.atime.is_some() {
        let mut times = std::fs::FileTimes::new();
        if let Some(m) = attrs.mtime {
            times = times.set_modified(system_time(m));
        }
        if let Some(a) = attrs.atime {
            times = times.set_accessed(system_time(a));
        }
        file.set_times(times).map_err(|e| io_fail(path, e))?;
    }
    Ok(())
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `mkdirat(dir, name, 0700)`: folders in a tenant's home are private (review s30, F2).
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr) -> std::io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o700) })
}

/// `unlinkat(dir, name)`; `folder` removes an empty folder instead of a file.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, folder: bool) -> std::io::Result<()> {
    let flags = if folder { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `name` is NUL-terminated and outlives the call.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

/// `renameat2` between two folder descriptors; `replace = false` fails when the target exists
/// (RENAME_NOREPLACE, or [`rename_by_link`] where the file system lacks it).
pub fn rename_at(
    from: (BorrowedFd<'_>, &CStr),
    to: (BorrowedFd<'_>, &CStr),
    replace: bool,
) -> std::io::Result<()> {
    let flags = if replace { 0 } else { libc::RENAME_NOREPLACE };
    // SAFETY: both names are NUL-terminated and outlive the call.
    let rc = unsafe {
        libc::renameat2(
            from.0.as_raw_fd(),
            from.1.as_ptr(),
            to.0.as_raw_fd(),
            to.1.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) if !replace => rename_by_link(from, to),
        _ => Err(err),
    }
}

/// A rename that never replaces, where the file system has no RENAME_NOREPLACE (NFS): `linkat`
/// gives the file its new name, failing with EEXIST if anything has that name (atomically: a
/// check then a rename, as before, overwrote a file that appeared in between), then `unlinkat`
/// removes the old name, if it still is that file (if another request put something else
/// there meanwhile, that is left alone, the new name is removed again and the rename fails).
/// Between the two calls the file has both names, and a crash there leaves both.
///
/// A folder has no hard links: it is checked, then renamed. rename(2) replaces neither a file
/// nor a folder that holds anything with a folder, so at worst an empty folder made in between
/// is replaced. A file system without hard links (EPERM or EOPNOTSUPP for a file) does the same.
fn rename_by_link(
    from: (BorrowedFd<'_>, &CStr),
    to: (BorrowedFd<'_>, &CStr),
) -> std::io::Result<()> {
    if Stat::at(from.0, from.1)?.is_dir() {
        return check_then_rename(from, to);
    }
    match link_at(from, to) {
        Ok(()) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP)) => {
            return check_then_rename(from, to)
        }
        Err(e) => return Err(e),
    }
    let linked = Stat::at(to.0, to.1)?;
    let same = Stat::at(from.0, from.1).is_ok_and(|st| st.id == linked.id);
    let unlinked = match same {
        true => unlink_at(from.0, from.1, false),
        false => Err(std::io::Error::other(
            "the file to rename was replaced meanwhile; nothing was renamed",
        )),
    };
    if let Err(e) = unlinked {
        let _ = unlink_at(to.0, to.1, false);
        return Err(e);
    }
    Ok(())
}

/// `renameat` unless the target exists (for folders, see [`rename_by_link`]).
fn check_then_rename(
    from: (BorrowedFd<'_>, &CStr),
    to: (BorrowedFd<'_>, &CStr),
) -> std::io::Result<()> {
    if Stat::at(to.0, to.1).is_ok() {
        return Err(std::io::Error::from(ErrorKind::AlreadyExists));
    }
    // SAFETY: both names are NUL-terminated and outlive the call.
    check(unsafe {
        libc::renameat(
            from.0.as_raw_fd(),
            from.1.as_ptr(),
            to.0.as_raw_fd(),
            to.1.as_ptr(),
        )
    })
}

/// `linkat(from, to)` without following a symlink source (`hardlink@openssh.com`).
pub fn link_at(from: (BorrowedFd<'_>, &CStr), to: (BorrowedFd<'_>, &CStr)) -> std::io::Result<()> {
    // SAFETY: both names are NUL-terminated and outlive the call.
    check(unsafe {
        libc::linkat(
            from.0.as_raw_fd(),
            from.1.as_ptr(),
            to.0.as_raw_fd(),
            to.1.as_ptr(),
            0,
        )
    })
}

/// `symlinkat(target, dir, name)`.
pub fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> std::io::Result<()> {
    // SAFETY: both strings are NUL-terminated and outlive the call.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// `readlinkat(dir, name)`: the text of a link (at most PATH_MAX bytes).
pub fn readlink_at(dir: BorrowedFd<'_>, name: &CStr) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `buf` is writable for its full length; `name` is NUL-terminated.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// A name for the `*at()` calls.
pub fn c_name(name: &str) -> std::io::Result<CString> {
    super::jail::cstring(name.as_bytes())
}

/// `fstatvfs` of the file system holding the open descriptor `fd`.
fn fstatvfs(fd: BorrowedFd<'_>) -> std::io::Result<libc::statvfs> {
    // SAFETY: `st` is plain old data fully written by fstatvfs on success.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        check(libc::fstatvfs(fd.as_raw_fd(), &mut st))?;
        Ok(st)
    }
}

/// Bytes an unprivileged writer may still use on the file system holding `fd`.
pub fn free_bytes(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    let st = fstatvfs(fd)?;
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The `statvfs@openssh.com` reply body for the file system holding the open descriptor `fd`.
pub fn statvfs(fd: BorrowedFd<'_>) -> std::io::Result<Vec<u8>> {
    let st = fstatvfs(fd)?;
    let mut out = Vec::with_capacity(88);
    for v in [
        st.f_bsize as u64,
        st.f_frsize as u64,
        st.f_blocks as u64,
        st.f_bfree as u64,
        st.f_bavail as u64,
        st.f_files as u64,
        st.f_ffree as u64,
        st.f_favail as u64,
        st.f_fsid as u64,
        st.f_flag as u64,
        st.f_namemax as u64,
    ] {
        put_u64(&mut out, v);
    }
    Ok(out)
}

/// Appends a big-endian u64 (SSH wire format).
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    fn name(s: &str) -> CString {
        c_name(s).unwrap()
    }

    #[test]
    fn the_rename_fallback_moves_a_file_and_never_replaces_one() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir_in(dir.path()).unwrap();
        let (d, o) = (
            std::fs::File::open(dir.path()).unwrap(),
            std::fs::File::open(other.path()).unwrap(),
        );
        std::fs::write(dir.path().join("a.csv"), b"new").unwrap();
        let ino = std::fs::metadata(dir.path().join("a.csv")).unwrap().ino();
        let (a, b) = (name("a.csv"), name("b.csv"));

        // Moved, across folders too: one name, the same file.
        rename_by_link((d.as_fd(), &a), (o.as_fd(), &b)).unwrap();
        assert!(!dir.path().join("a.csv").exists());
        let moved = std::fs::metadata(other.path().join("b.csv")).unwrap();
        assert_eq!((moved.ino(), moved.nlink()), (ino, 1));

        // Onto a name that exists: refused, both files as they were.
        std::fs::write(dir.path().join("a.csv"), b"other").unwrap();
        let refused = rename_by_link((d.as_fd(), &a), (o.as_fd(), &b)).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(dir.path().join("a.csv")).unwrap(), b"other");
        assert_eq!(std::fs::read(other.path().join("b.csv")).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(dir.path().join("a.csv")).unwrap().nlink(),
            1
        );

        // A missing source: its own error, nothing made.
        let gone = rename_by_link((d.as_fd(), &name("none.csv")), (d.as_fd(), &name("x.csv")));
        assert_eq!(gone.unwrap_err().kind(), ErrorKind::NotFound);
        assert!(!dir.path().join("x.csv").exists());
    }

    #[test]
    fn the_rename_fallback_moves_a_folder_but_not_onto_an_existing_name() {
        let dir = tempfile::tempdir().unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/f.csv"), b"x").unwrap();
        std::fs::write(dir.path().join("taken"), b"t").unwrap();
        let (sub, moved, taken) = (name("sub"), name("moved"), name("taken"));
        let refused = rename_by_link((d.as_fd(), &sub), (d.as_fd(), &taken)).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(dir.path().join("taken")).unwrap(), b"t");
        rename_by_link((d.as_fd(), &sub), (d.as_fd(), &moved)).unwrap();
        assert_eq!(std::fs::read(dir.path().join("moved/f.csv")).unwrap(), b"x");
        assert!(!dir.path().join("sub").exists());
    }
}
