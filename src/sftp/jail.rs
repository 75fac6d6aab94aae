//! The per-tenant jail: turns a path as a client sends it into a path inside the tenant home, and
//! opens it relative to a directory handle of the home, never by path string.
//!
//! A client path enters as text (relative, absolute, with `.`/`..`, doubled slashes); only `/`
//! separates components (a backslash is an ordinary character of a name, as in OpenSSH). It is
//! normalised lexically against the virtual root `/` (so `..` can never climb above it). Every
//! file-system operation then starts from a descriptor of the home opened once: the path is
//! resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, or, where the kernel lacks
//! `openat2`, by a walk that opens one component at a time with `O_NOFOLLOW`. So a symlink
//! anywhere in the path is refused at the moment of use, and a folder swapped for a link by
//! another process between two requests cannot lead outside. Callers act on the final name with
//! the `*at()` calls on the returned parent descriptor.
//!
//! In `roster sftp-server` mode ([`Jail::with_links`]) symlinks are followed the way a chroot
//! would (`RESOLVE_IN_ROOT`: absolute links and `..` stay inside the root). The top-level archive
//! folders (`processed/`, `errors/`, `bak/`) are readable and never writable by the tenant.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Top-level folders Roster writes into and the tenant may only read.
pub const ARCHIVE_DIRS: &[&str] = &["processed", "errors", "bak"];

/// Set once `openat2` answered ENOSYS: every later resolution uses the component walk.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JailError {
    /// The path runs through a symlink.
    Symlink(String),
    /// The path is in a folder the tenant may only read.
    ReadOnly(String),
    /// The path holds a NUL byte or is otherwise unusable.
    Invalid(String),
}

impl std::fmt::Display for JailError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JailError::Symlink(p) => {
                write!(f, "{p} goes through a symbolic link, which is not allowed")
            }
            JailError::ReadOnly(p) if p == "/" => write!(
                f,
                "/ is your home folder: it cannot be renamed, removed or changed (the files in it can)"
            ),
            JailError::ReadOnly(p) if Jail::in_archive(p) => {
                write!(f, "{p} is read-only: Roster keeps its archived files there")
            }
            JailError::ReadOnly(p) => write!(f, "{p} is read-only: this login may only read"),
            JailError::Invalid(p) => write!(f, "{p:?} is not a usable path"),
        }
    }
}

/// A path resolved (lexically) inside the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailPath {
    /// As the tenant sees it: always absolute, normalised, e.g. `/processed/a.csv` or `/`.
    pub virtual_path: String,
    /// On disk, inside the home folder (for events and logs; never opened by this string).
    pub real: PathBuf,
    /// Resolved to be changed ([`Jail::resolve_for_write`]): with links followed, where it
    /// really lands is checked too (never an archive folder).
    write: bool,
}

impl JailPath {
    /// True for `/` itself.
    pub fn is_root(&self) -> bool {
        self.virtual_path == "/"
    }

    /// The file name as the tenant sees it (empty for `/`).
    pub fn name(&self) -> &str {
        self.virtual_path.rsplit('/').next().unwrap_or("")
    }

    /// True when the file sits directly in `/` (the only place uploads are imported from).
    pub fn in_root(&self) -> bool {
        !self.is_root() && self.virtual_path.matches('/').count() == 1
    }

    /// The path relative to the home (`.` for the root), as the `*at()` calls take it.
    fn relative(&self) -> &str {
        match self.virtual_path.trim_start_matches('/') {
            "" => ".",
            rel => rel,
        }
    }

    /// The folder holding this path, as a virtual path (`/` for a name in the root).
    fn parent_virtual(&self) -> &str {
        match self.virtual_path.rfind('/') {
            Some(0) | None => "/",
            Some(i) => &self.virtual_path[..i],
        }
    }
}

/// One tenant's home, seen as `/`.
#[derive(Debug, Clone)]
pub struct Jail {
    home: PathBuf,
    /// The home, opened once; every path is resolved from here.
    root: Arc<OwnedFd>,
    read_only: bool,
    /// `roster sftp-server` mode: symlinks are followed inside the root and may be created.
    links: bool,
}

impl Jail {
    /// A jail rooted at `home` (created if missing, mode 0700: a home holds uploads with
    /// passwords). `read_only` refuses every change.
    pub fn new(home: &Path, read_only: bool) -> std::io::Result<Jail> {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(home)?;
        let home = home.canonicalize()?;
        let c = cstring(home.as_os_str().as_bytes())?;
        // SAFETY: `c` is NUL-terminated; the returned descriptor is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let root = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(Jail {
            home,
            root,
            read_only,
            links: false,
        })
    }

    /// The jail of a tenant's home under `data_dir/tenants`. The home must be a folder, not a
    /// symbolic link: the intake never follows one (it would import nothing from it), and a
    /// link to another tenant's folder would show that tenant's files (review of 2026-11-30,
    /// config F4). Mount a folder moved to another disk at its place instead.
    pub fn tenant_home(home: &Path) -> std::io::Result<Jail> {
        match std::fs::symlink_metadata(home) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(std::io::Error::other(format!(
                    "the tenant folder {} is a symbolic link, which Roster does not follow \
                     (mount the folder there instead)",
                    home.display()
                )))
            }
            _ => {}
        }
        Jail::new(home, false)
    }

    /// `roster sftp-server` mode: symlinks resolve inside the root and may be created there.
    pub fn with_links(mut self) -> Jail {
        self.links = true;
        self
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// True in `roster sftp-server` mode (symlinks and hard links allowed inside the root).
    pub fn allows_links(&self) -> bool {
        self.links
    }

    /// Normalises a client path to a virtual absolute path, without touching the disk. Only `/`
    /// separates components.
    pub fn normalise(path: &str) -> Result<String, JailError> {
        if path.contains('\0') {
            return Err(JailError::Invalid(path.replace('\0', "\\0")));
        }
        let mut parts: Vec<&str> = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        Ok(format!("/{}", parts.join("/")))
    }

    /// Resolves a client path for reading: normalised and joined to the home. Nothing is
    /// checked on disk here: the `open*` calls refuse links when the path is used.
    pub fn resolve(&self, path: &str) -> Result<JailPath, JailError> {
        let virtual_path = Self::normalise(path)?;
        let real = self.home.join(virtual_path.trim_start_matches('/'));
        Ok(JailPath {
            virtual_path,
            real,
            write: false,
        })
    }

    /// Resolves a path that will be changed (written, created, removed, renamed, set-stat).
    pub fn resolve_for_write(&self, path: &str) -> Result<JailPath, JailError> {
        let mut p = self.resolve(path)?;
        if self.read_only || p.is_root() || Self::in_archive(&p.virtual_path) {
            return Err(JailError::ReadOnly(p.virtual_path));
        }
        p.write = true;
        Ok(p)
    }

    /// True when the tenant may not change what is at `virtual_path` (an archive folder or what
    /// is inside one, or anything in a read-only jail): its attributes are shown read-only.
    pub fn shows_read_only(&self, virtual_path: &str) -> bool {
        self.read_only || Self::in_archive(virtual_path)
    }

    /// True when a virtual path is one of the archive folders or inside one.
    pub fn in_archive(virtual_path: &str) -> bool {
        let first = virtual_path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        ARCHIVE_DIRS.contains(&first)
    }

    /// Opens `p` with open(2) `flags` (and `mode` when creating), resolved beneath the home.
    /// In a tenant jail no component, the last included, may be a symlink (ELOOP).
    pub fn open(&self, p: &JailPath, flags: libc::c_int, mode: u32) -> std::io::Result<OwnedFd> {
        if self.links && p.write && !p.is_root() {
            // Following links, the folder the file lands in must not be an archive folder;
            // the file itself is opened without following a final link.
            let (dir, name) = self.parent(p)?;
            return openat_nofollow(dir.as_fd(), &name, flags, mode);
        }
        let opened = self.open_relative(p.relative(), flags, mode);
        match opened {
            // A final link opened as a folder says ENOTDIR; tell the person it is a link.
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) && !self.links => {
                match self.open_nofollow(p).map(std::fs::File::from) {
                    Ok(f) if f.metadata().is_ok_and(|m| m.file_type().is_symlink()) => {
                        Err(std::io::Error::from_raw_os_error(libc::ELOOP))
                    }
                    _ => Err(e),
                }
            }
            other => other,
        }
    }

    /// Opens `p` without following a final symlink (`O_PATH`), for lstat-like questions.
    pub fn open_nofollow(&self, p: &JailPath) -> std::io::Result<OwnedFd> {
        self.open(p, libc::O_PATH | libc::O_NOFOLLOW, 0)
    }

    /// Opens the folder holding `p` and returns it with `p`'s final name, for the `*at()` calls.
    /// Refused for `/` itself.
    pub fn parent(&self, p: &JailPath) -> std::io::Result<(OwnedFd, CString)> {
        if p.is_root() {
            return Err(std::io::Error::from_raw_os_error(libc::EPERM));
        }
        let parent = self.resolve(p.parent_virtual()).map_err(|_| invalid())?;
        let dir = self.open(&parent, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        if self.links && p.write && self.is_archive_folder(dir.as_fd()) {
            return Err(std::io::Error::from_raw_os_error(libc::EACCES));
        }
        Ok((dir, cstring(p.name().as_bytes())?))
    }

    /// Whether the folder `dir` is one of the root's archive folders (by device and inode, so
    /// a link that leads there is caught wherever it is).
    pub fn is_archive_folder(&self, dir: BorrowedFd<'_>) -> bool {
        let Ok(st) = fstat(dir) else {
            return true;
        };
        ARCHIVE_DIRS.iter().any(|name| {
            cstring(name.as_bytes())
                .and_then(|c| fstatat_nofollow(self.root.as_fd(), &c))
                .is_ok_and(|a| a.st_dev == st.st_dev && a.st_ino == st.st_ino)
        })
    }

    fn open_relative(&self, rel: &str, flags: libc::c_int, mode: u32) -> std::io::Result<OwnedFd> {
        let mut flags = flags | libc::O_CLOEXEC;
        if !self.links {
            flags |= libc::O_NOFOLLOW;
        }
        let mode = if flags & libc::O_CREAT != 0 { mode } else { 0 };
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            match openat2(self.root.as_fd(), rel, flags, mode, self.resolve_flags()) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        walk_nofollow(self.root.as_fd(), rel, flags | libc::O_NOFOLLOW, mode)
    }

    fn resolve_flags(&self) -> u64 {
        if self.links {
            libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS
        } else {
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS
        }
    }
}

fn fstat(fd: BorrowedFd<'_>) -> std::io::Result<libc::stat> {
    // SAFETY: `st` is plain old data, fully written by fstat on success.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd.as_raw_fd(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(st)
    }
}

fn fstatat_nofollow(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> std::io::Result<libc::stat> {
    // SAFETY: `name` is NUL-terminated; `st` is fully written by fstatat on success.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        let r = libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        );
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(st)
    }
}

/// `openat(dir, name, flags | O_NOFOLLOW)`.
fn openat_nofollow(
    dir: BorrowedFd<'_>,
    name: &std::ffi::CStr,
    flags: libc::c_int,
    mode: u32,
) -> std::io::Result<OwnedFd> {
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `name` is NUL-terminated; a returned descriptor is new and owned by us.
    unsafe {
        let fd = libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn invalid() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::InvalidInput)
}

/// A C string for a syscall; a NUL inside is refused.
pub fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| invalid())
}

/// `openat2(dir, rel, flags, mode, resolve)`.
fn openat2(
    dir: BorrowedFd<'_>,
    rel: &str,
    flags: libc::c_int,
    mode: u32,
    resolve: u64,
) -> std::io::Result<OwnedFd> {
    let c = cstring(rel.as_bytes())?;
    // SAFETY: `open_how` is plain old data; zeroed is a valid value, fields are set below.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.mode = u64::from(mode);
    how.resolve = resolve;
    // SAFETY: `c` is NUL-terminated and `how` is a valid open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// `openat(dir, name, flags, mode)` for one component.
fn openat(
    dir: BorrowedFd<'_>,
    name: &str,
    flags: libc::c_int,
    mode: u32,
) -> std::io::Result<OwnedFd> {
    let c = cstring(name.as_bytes())?;
    // SAFETY: `c` is NUL-terminated; the returned descriptor is owned below.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags, mode) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `rel` (normalised: no `.`/`..` components) one component at a time from `root`, each
/// with `O_NOFOLLOW`: the fallback where `openat2` does not exist. Symlinks are never followed.
fn walk_nofollow(
    root: BorrowedFd<'_>,
    rel: &str,
    flags: libc::c_int,
    mode: u32,
) -> std::io::Result<OwnedFd> {
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let Some((last, folders)) = parts.split_last() else {
        return openat(root, ".", flags, mode); // the home itself
    };
    if parts.contains(&"..") {
        return Err(invalid());
    }
    let mut current: Option<OwnedFd> = None;
    for folder in folders {
        let dir = current.as_ref().map_or(root, |fd| fd.as_fd());
        let step = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let next = openat(dir, folder, step, 0).map_err(|e| symlink_as_eloop(dir, folder, e))?;
        current = Some(next);
    }
    let dir = current.as_ref().map_or(root, |fd| fd.as_fd());
    openat(dir, last, flags, mode)
}

/// `O_PATH|O_NOFOLLOW|O_DIRECTORY` on a symlink says ENOTDIR; say ELOOP like `openat2` does.
fn symlink_as_eloop(dir: BorrowedFd<'_>, name: &str, e: std::io::Error) -> std::io::Error {
    if e.raw_os_error() != Some(libc::ENOTDIR) {
        return e;
    }
    match openat(
        dir,
        name,
        libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0,
    )
    .and_then(|fd| std::fs::File::from(fd).metadata())
    {
        Ok(m) if m.file_type().is_symlink() => std::io::Error::from_raw_os_error(libc::ELOOP),
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_clamps_at_root() {
        assert_eq!(Jail::normalise("").unwrap(), "/");
        assert_eq!(Jail::normalise(".").unwrap(), "/");
        assert_eq!(Jail::normalise("../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(Jail::normalise("/a//b/./../c").unwrap(), "/a/c");
        assert!(Jail::normalise("a\0b").is_err());
    }

    #[test]
    fn backslash_is_part_of_a_name() {
        assert_eq!(Jail::normalise("a\\b").unwrap(), "/a\\b");
        assert_eq!(Jail::normalise("a\\..\\..\\x").unwrap(), "/a\\..\\..\\x");
        assert_eq!(Jail::normalise("/d/a\\b/../c").unwrap(), "/d/c");
    }

    #[test]
    fn archive_folders_are_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let jail = Jail::new(dir.path(), false).unwrap();
        assert!(jail.resolve_for_write("/processed/x.csv").is_err());
        assert!(jail.resolve_for_write("errors").is_err());
        assert!(jail.resolve_for_write("/a/../bak/x").is_err());
        assert!(jail.resolve_for_write("/").is_err());
        assert!(jail.resolve_for_write("/users.csv").is_ok());
        assert!(jail.resolve("/processed/x.csv").is_ok());
    }

    #[test]
    fn symlinks_are_refused_at_use() {
        let dir = tempfile::tempdir().unwrap();
        let jail = Jail::new(dir.path(), false).unwrap();
        std::os::unix::fs::symlink("/etc", jail.home().join("out")).unwrap();
        let through = jail.resolve("/out/passwd").unwrap();
        let err = jail.open(&through, libc::O_RDONLY, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        let link = jail.resolve("/out").unwrap();
        let err = jail.open(&link, libc::O_RDONLY, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        assert!(jail.open_nofollow(&link).is_ok());
        assert!(jail.parent(&through).is_err());
    }

    #[test]
    fn the_walk_refuses_links_like_openat2() {
        let dir = tempfile::tempdir().unwrap();
        let jail = Jail::new(dir.path(), false).unwrap();
        std::fs::create_dir(jail.home().join("d")).unwrap();
        std::fs::write(jail.home().join("d/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", jail.home().join("out")).unwrap();
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let root = jail.root.as_fd();
        assert!(walk_nofollow(root, "d/f", flags, 0).is_ok());
        assert!(walk_nofollow(root, ".", flags | libc::O_DIRECTORY, 0).is_ok());
        let e = walk_nofollow(root, "out/passwd", flags, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        let e = walk_nofollow(root, "out", flags, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        // The jail's own calls through the walk, as on a kernel without openat2.
        NO_OPENAT2.store(true, Ordering::Relaxed);
        let home = jail.resolve("/").unwrap();
        let through = jail.resolve("/out/passwd").unwrap();
        let created = jail.resolve("/d/new").unwrap();
        let results = (
            jail.open(&home, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .is_ok(),
            jail.open(&through, libc::O_RDONLY, 0)
                .map_err(|e| e.raw_os_error()),
            jail.open(&created, libc::O_WRONLY | libc::O_CREAT, 0o600)
                .is_ok(),
            jail.parent(&through).map_err(|e| e.raw_os_error()).err(),
        );
        NO_OPENAT2.store(false, Ordering::Relaxed);
        assert!(results.0);
        assert_eq!(results.1.unwrap_err(), Some(libc::ELOOP));
        assert!(results.2 && jail.home().join("d/new").exists());
        assert_eq!(results.3, Some(Some(libc::ELOOP)));
    }

    #[test]
    fn a_tenant_home_that_is_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("beta");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("private.csv"), b"beta's users").unwrap();
        let home = dir.path().join("acme");
        std::os::unix::fs::symlink(&other, &home).unwrap();
        let err = Jail::tenant_home(&home).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(Jail::tenant_home(&other).is_ok());
    }
}
