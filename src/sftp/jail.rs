//! The per-tenant jail: turns a path as a client sends it into a real path inside the tenant
//! home, or refuses it.
//!
//! A client path enters as text (relative, absolute, with `.`/`..`, doubled slashes); it is
//! normalised lexically against the virtual root `/` (so `..` can never climb above it), then
//! joined to the home folder. Symlinks are never followed: a symlink in any folder component is
//! refused, and files are opened with `O_NOFOLLOW`, so a link placed in the home by someone else
//! cannot lead outside. The top-level archive folders (`processed/`, `errors/`, `bak/`) are
//! readable and never writable by the tenant.

use std::path::{Component, Path, PathBuf};

/// Top-level folders Roster writes into and the tenant may only read.
pub const ARCHIVE_DIRS: &[&str] = &["processed", "errors", "bak"];

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
            JailError::ReadOnly(p) => {
                write!(f, "{p} is read-only: Roster keeps its archived files there")
            }
            JailError::Invalid(p) => write!(f, "{p:?} is not a usable path"),
        }
    }
}

/// A path resolved inside the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailPath {
    /// As the tenant sees it: always absolute, normalised, e.g. `/processed/a.csv` or `/`.
    pub virtual_path: String,
    /// On disk, inside the home folder.
    pub real: PathBuf,
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
}

/// One tenant's home, seen as `/`.
#[derive(Debug, Clone)]
pub struct Jail {
    home: PathBuf,
    read_only: bool,
}

impl Jail {
    /// A jail rooted at `home` (created if missing). `read_only` refuses every change.
    pub fn new(home: &Path, read_only: bool) -> std::io::Result<Jail> {
        std::fs::create_dir_all(home)?;
        let home = home.canonicalize()?;
        Ok(Jail { home, read_only })
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Normalises a client path to a virtual absolute path, without touching the disk.
    pub fn normalise(path: &str) -> Result<String, JailError> {
        if path.contains('\0') {
            return Err(JailError::Invalid(path.replace('\0', "\\0")));
        }
        let mut parts: Vec<&str> = Vec::new();
        for part in path.split(['/', '\\']) {
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

    /// Resolves a client path for reading: normalised, and no folder component may be a symlink.
    /// The last component may be anything (callers open it with `O_NOFOLLOW` or use `lstat`).
    pub fn resolve(&self, path: &str) -> Result<JailPath, JailError> {
        let virtual_path = Self::normalise(path)?;
        let mut real = self.home.clone();
        let rel = virtual_path.trim_start_matches('/');
        let comps: Vec<&str> = if rel.is_empty() {
            Vec::new()
        } else {
            rel.split('/').collect()
        };
        for (i, c) in comps.iter().enumerate() {
            real.push(c);
            let last = i + 1 == comps.len();
            if !last {
                if let Ok(m) = std::fs::symlink_metadata(&real) {
                    if m.file_type().is_symlink() {
                        return Err(JailError::Symlink(virtual_path));
                    }
                }
            }
        }
        // Defence in depth: the lexical result must be inside the home.
        if real.components().any(|c| matches!(c, Component::ParentDir))
            || !real.starts_with(&self.home)
        {
            return Err(JailError::Invalid(virtual_path));
        }
        Ok(JailPath { virtual_path, real })
    }

    /// Resolves a path that will be changed (written, created, removed, renamed, set-stat).
    pub fn resolve_for_write(&self, path: &str) -> Result<JailPath, JailError> {
        let p = self.resolve(path)?;
        if self.read_only || p.is_root() || Self::in_archive(&p.virtual_path) {
            return Err(JailError::ReadOnly(p.virtual_path));
        }
        Ok(p)
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

    /// Refuses a final component that is a symlink (for stat and opens that follow links).
    pub fn refuse_symlink(&self, p: &JailPath) -> Result<(), JailError> {
        match std::fs::symlink_metadata(&p.real) {
            Ok(m) if m.file_type().is_symlink() => Err(JailError::Symlink(p.virtual_path.clone())),
            _ => Ok(()),
        }
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
        assert_eq!(Jail::normalise("a\\..\\..\\x").unwrap(), "/x");
        assert!(Jail::normalise("a\0b").is_err());
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
    fn symlinked_folders_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let jail = Jail::new(dir.path(), false).unwrap();
        std::os::unix::fs::symlink("/etc", jail.home().join("out")).unwrap();
        assert!(matches!(
            jail.resolve("/out/passwd"),
            Err(JailError::Symlink(_))
        ));
        let p = jail.resolve("/out").unwrap();
        assert!(jail.refuse_symlink(&p).is_err());
    }
}
