//! File-system helpers of the SFTP handler: attributes, `ls -l` long names, SETSTAT, renames
//! that refuse to replace, and `statvfs`.

use super::status::{io_fail, Failure};
use russh_sftp::protocol::{File, FileAttributes};
use std::io::ErrorKind;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn attrs_of(meta: &std::fs::Metadata) -> FileAttributes {
    let mut a = FileAttributes::from(meta);
    // Uid/gid of the server process mean nothing to a tenant.
    a.uid = Some(0);
    a.gid = Some(0);
    a
}

/// A directory entry with an `ls -l` style long name, which FileZilla and WinSCP parse:
/// `-rw-r--r--    1 acme     acme         1234 Nov 21 14:50 users.csv` (older than six months:
/// the year instead of the time).
pub fn listing_entry(
    name: String,
    attrs: FileAttributes,
    meta: &std::fs::Metadata,
    owner: &str,
) -> File {
    let kind = if meta.file_type().is_symlink() {
        'l'
    } else if meta.is_dir() {
        'd'
    } else {
        '-'
    };
    let mode = attrs.permissions.unwrap_or(0);
    let mut perms = String::with_capacity(9);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        perms.push(if bits & 4 != 0 { 'r' } else { '-' });
        perms.push(if bits & 2 != 0 { 'w' } else { '-' });
        perms.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    let mtime = chrono::DateTime::<chrono::Utc>::from(meta.modified().unwrap_or(UNIX_EPOCH));
    let age = chrono::Utc::now().signed_duration_since(mtime);
    let when = if age.num_days().abs() < 180 {
        mtime.format("%b %e %H:%M").to_string()
    } else {
        mtime.format("%b %e  %Y").to_string()
    };
    let owner: String = owner.chars().take(8).collect();
    let longname = format!(
        "{kind}{perms}    1 {owner:<8} {owner:<8} {size:>8} {when} {name}",
        size = meta.len()
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

/// Applies the SETSTAT attributes Roster honours: size (truncate/extend) and times.
/// Permissions and ownership are accepted and ignored: the server owns the files.
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

/// `rename(2)` that fails when the target exists (renameat2 RENAME_NOREPLACE), falling back to a
/// check-then-rename where the file system does not support it.
pub fn rename_noreplace(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c_from = CString::new(from.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
    let c_to = CString::new(to.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Err(std::io::Error::from(ErrorKind::AlreadyExists));
            }
            std::fs::rename(from, to)
        }
        _ => Err(err),
    }
}

/// The `statvfs@openssh.com` reply body for the file system holding `path`.
pub fn statvfs(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
    // SAFETY: `st` is plain old data fully written by statvfs on success; `c` is NUL-terminated.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        st
    };
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
