//! Which files are being written: the one place that decides whether an upload is finished.
//!
//! A file is known by its identity ([`FileId`]: device and inode), not by its path, so renaming
//! it, or a folder above it, keeps its state, and a long path needs no long marker name (the
//! registry also keeps the name a file open for writing was renamed to, so its writer in another
//! session announces it under that name). Two things record the state:
//!
//! - **Live writers**, in this process: every handle open for writing, with what became of the
//!   handles that closed (one wrote and closed cleanly: finished; one went away without CLOSE
//!   after writing, or whose write failed: broken). A file has at most one: a write-OPEN of a
//!   file another handle (of any session) has open for writing is refused, before anything is
//!   truncated, so two uploads of one name are never spliced into one file. The registry is kept
//!   under one lock, which a write-OPEN holds across its `open`, the check and the registration,
//!   and the intake holds across its claim's rename, so a file is never claimed while a handle
//!   that can still write it is being opened. The truncation of an OPEN with TRUNC comes after
//!   the registration, with the lock released: the file is registered by then, so nothing can
//!   claim or write it meanwhile, and a long truncate holds no other upload.
//! - **Markers**, on disk under `<data_dir>/uploading/<tenant>/<ino>`: one per file that a
//!   handle opened for writing and that is not finished. A marker is named by the file's inode
//!   alone, which every node on a shared data folder agrees on; the device number is not (NFS
//!   and CephFS give one mount a different `st_dev` on each host), and markers named after it
//!   were invisible to the other nodes, which claimed their half-written uploads. This assumes
//!   the tenant folders are on the file system of `data_dir`, where an inode names one file;
//!   a file on another device (a tenant folder mounted elsewhere) gets `<dev>-<ino>`, which is
//!   right on one host. Markers named `<dev>-<ino>` by the previous version are read too and
//!   renamed at start ([`InProgress::sweep`]). It is written before the OPEN is
//!   answered (an OPEN whose marker cannot be written fails) and is left behind when the last
//!   writer's session ends without a clean CLOSE, or the process dies, so a half-written file
//!   is never imported, also after a restart, until an upload of it finishes.
//!
//! A file is finished when its live writer goes away and the last thing a writer did was to
//! write and CLOSE it. A handle that wrote nothing (a client reading the size of a partial file
//! before resuming) changes nothing: closing it neither finishes the file nor clears the marker
//! of a broken upload. A resume (a write-OPEN without TRUNC of a broken upload, which has no
//! live writer) is an upload of that file like any other.
//!
//! Several nodes on one data folder see each other's writers only through the markers: two
//! nodes writing the same file at the same time are not told apart. A marker of a file deleted
//! outside SFTP while unfinished is swept at the next start ([`InProgress::sweep`]).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

/// A file's identity: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// The marker name of the previous version, and of a file on another device than
    /// `data_dir`'s.
    fn dev_ino_name(self) -> String {
        format!("{}-{}", self.dev, self.ino)
    }
}

/// What the live writers of one file did.
#[derive(Debug, Default)]
struct Writers {
    open: u32,
    /// The last writer to go away wrote and closed cleanly.
    finished: bool,
    /// The last writer to go away had written and left without CLOSE.
    broken: bool,
    /// The file was removed (or its upload stopped) while handles were open.
    gone: bool,
    /// A marker was there before the first of these handles opened (an older broken upload).
    marked_before: bool,
    /// The file's virtual path after a rename while it was open for writing (by any session).
    renamed_to: Option<String>,
}

/// Live writers of every file, in this process.
static WRITERS: LazyLock<Mutex<HashMap<FileId, Writers>>> = LazyLock::new(Mutex::default);

fn writers() -> MutexGuard<'static, HashMap<FileId, Writers>> {
    WRITERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a write-open failed.
#[derive(Debug)]
pub enum WriteOpenError {
    /// Another handle (of any session) has the file open for writing.
    BeingWritten(FileId),
    Io(std::io::Error),
}

impl From<std::io::Error> for WriteOpenError {
    fn from(e: std::io::Error) -> WriteOpenError {
        WriteOpenError::Io(e)
    }
}

/// How a writable handle went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleEnd {
    /// CLOSE, after writing (or opening with TRUNC) when `wrote`.
    Closed { wrote: bool },
    /// The session ended with the handle open.
    Dropped { wrote: bool },
}

/// The upload state of one tenant's files (see the module doc).
#[derive(Debug, Clone)]
pub struct InProgress {
    dir: Option<PathBuf>,
    /// The device of `data_dir` as this host sees it: markers of files on it are named by
    /// inode alone.
    dev: Option<u64>,
}

impl InProgress {
    /// Markers for `tenant` under `data_dir/uploading/<tenant>/`.
    pub fn new(data_dir: &Path, tenant: &str) -> InProgress {
        // The nearest folder that exists: data_dir itself once the server runs.
        let dev = data_dir
            .ancestors()
            .find_map(|d| std::fs::metadata(d).ok())
            .map(|m| m.dev());
        InProgress {
            dir: Some(data_dir.join("uploading").join(tenant)),
            dev,
        }
    }

    /// No markers (stand-alone `sftp-server` mode): live writers only.
    pub fn none() -> InProgress {
        InProgress {
            dir: None,
            dev: None,
        }
    }

    /// The marker name of `id`: its inode, or `<dev>-<ino>` off `data_dir`'s device.
    fn marker_name(&self, id: FileId) -> String {
        match self.dev == Some(id.dev) {
            true => id.ino.to_string(),
            false => id.dev_ino_name(),
        }
    }

    fn marker(&self, id: FileId) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(self.marker_name(id)))
    }

    /// The marker the previous version wrote for `id` on this host, when its name differs.
    fn old_marker(&self, id: FileId) -> Option<PathBuf> {
        let name = id.dev_ino_name();
        let dir = self.dir.as_ref()?;
        (self.marker_name(id) != name).then(|| dir.join(name))
    }

    /// True when a marker (of this version or the previous one) says `id` is unfinished.
    fn marked(&self, id: FileId) -> bool {
        let exists = |m: Option<PathBuf>| m.is_some_and(|m| m.exists());
        exists(self.marker(id)) || exists(self.old_marker(id))
    }

    fn unmark(&self, id: FileId) {
        for m in [self.marker(id), self.old_marker(id)].into_iter().flatten() {
            let _ = std::fs::remove_file(m);
        }
    }

    /// Opens a file for writing with `open` (which returns the file and its identity, and must
    /// not truncate it) and registers it as written, marker included; then runs `start` on it
    /// (the truncation an OPEN with TRUNC asked for). The registry is locked from the `open` to
    /// the registration, so no claim can take the file in between, and no other write-open can
    /// pass the check. `start` runs after the lock is released (a truncate of a large file on
    /// slow storage would otherwise hold every other client's uploads and the intake's claims);
    /// the file is registered by then, so it is neither claimed nor opened for writing again
    /// meanwhile. A file that another handle has open for writing is refused
    /// ([`WriteOpenError::BeingWritten`], the file untouched), so two uploads are never spliced
    /// into one file. A marker that cannot be written, or a `start` that fails, fails the open
    /// (the file is closed again, and unregistered as a handle that wrote nothing).
    pub fn open_for_write<T>(
        &self,
        virtual_path: &str,
        open: impl FnOnce() -> std::io::Result<(T, FileId)>,
        start: impl FnOnce(&T) -> std::io::Result<()>,
    ) -> Result<(T, FileId), WriteOpenError> {
        let (file, id) = self.register_writer(virtual_path, open)?;
        if let Err(e) = start(&file) {
            self.handle_ended(id, HandleEnd::Closed { wrote: false });
            return Err(e.into());
        }
        Ok((file, id))
    }

    /// The locked part of [`InProgress::open_for_write`]: `open`, the check that no other handle
    /// writes the file, its marker and its registration.
    fn register_writer<T>(
        &self,
        virtual_path: &str,
        open: impl FnOnce() -> std::io::Result<(T, FileId)>,
    ) -> Result<(T, FileId), WriteOpenError> {
        let mut map = writers();
        let (file, id) = open()?;
        if map.get(&id).is_some_and(|w| w.open > 0) {
            return Err(WriteOpenError::BeingWritten(id));
        }
        let marked_before = self.marked(id);
        if let Some(m) = self.marker(id).filter(|_| !marked_before) {
            let made = m
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|_| std::fs::write(&m, virtual_path.as_bytes()));
            if let Err(e) = made {
                tracing::warn!(
                    path = virtual_path,
                    "cannot write the in-progress marker: {e}"
                );
                return Err(e.into());
            }
        }
        let w = map.entry(id).or_insert_with(|| Writers {
            marked_before,
            ..Writers::default()
        });
        w.open += 1;
        Ok((file, id))
    }

    /// A writable handle of `id` went away; true when the upload is finished now (the caller
    /// announces it).
    pub fn handle_ended(&self, id: FileId, how: HandleEnd) -> bool {
        let mut map = writers();
        let Some(w) = map.get_mut(&id) else {
            return false;
        };
        w.open = w.open.saturating_sub(1);
        match how {
            HandleEnd::Closed { wrote: true } => (w.finished, w.broken) = (true, false),
            HandleEnd::Dropped { wrote: true } => (w.finished, w.broken) = (false, true),
            HandleEnd::Closed { wrote: false } | HandleEnd::Dropped { wrote: false } => {}
        }
        if w.open > 0 {
            return false;
        }
        let Some(w) = map.remove(&id) else {
            return false;
        };
        if w.gone {
            self.unmark(id);
            return false;
        }
        if w.broken {
            return false;
        }
        if w.finished || !w.marked_before {
            self.unmark(id);
        }
        w.finished
    }

    /// The file `id`, open for writing, was renamed to `to` (a virtual path): its writer, in
    /// whichever session, closes it under that name.
    pub fn renamed(&self, id: FileId, to: &str) {
        if let Some(w) = writers().get_mut(&id) {
            w.renamed_to = Some(to.to_string());
        }
    }

    /// Where the file `id` was last renamed to while open for writing, if it was.
    pub fn renamed_to(&self, id: FileId) -> Option<String> {
        writers().get(&id).and_then(|w| w.renamed_to.clone())
    }

    /// The file `id` was removed, or its upload stopped: its marker goes (now, or when its
    /// last writer goes away).
    pub fn removed(&self, id: FileId) {
        match writers().get_mut(&id) {
            Some(w) => w.gone = true,
            None => self.unmark(id),
        }
    }

    /// True while the file is unfinished: a handle of this process may still write it, or a
    /// marker says an upload of it did not finish.
    pub fn is_unfinished(&self, id: FileId) -> bool {
        self.unfinished_in(&writers(), id)
    }

    /// [`InProgress::is_unfinished`] with the registry already locked.
    fn unfinished_in(&self, live: &HashMap<FileId, Writers>, id: FileId) -> bool {
        live.contains_key(&id) || self.marked(id)
    }

    /// Runs `take` (a claim's rename) unless the file is unfinished, with the registry locked
    /// so that no upload can open it in between; `None` when it is unfinished.
    pub fn take_if_finished<T>(&self, id: FileId, take: impl FnOnce() -> T) -> Option<T> {
        let guard = writers();
        if self.unfinished_in(&guard, id) {
            return None;
        }
        let out = take();
        drop(guard);
        Some(out)
    }

    /// At start: removes the markers of files that are no longer in `home` (deleted outside
    /// SFTP while unfinished), so a new file that reuses the inode is not taken for unfinished;
    /// renames a marker of the previous version (`<dev>-<ino>`, written by this host or by
    /// another node, whose device number for the shared folder differs) whose inode is still
    /// there to `<ino>`; and turns a marker named after a path (the version before that) into
    /// one named after its file. At most `limit` entries of `home` are looked at; with more, or
    /// when a folder under `home` cannot be read (taken for empty, it lost the markers of the
    /// unfinished uploads in it), nothing is removed.
    ///
    /// Every node sweeps at its start while the others upload: the markers are listed before
    /// the files, and a marker is written only after its file exists, so the file of every
    /// marker listed is found by the walk unless it is gone (or renamed across folders during
    /// the walk), and a live upload of another node keeps its marker.
    pub fn sweep(&self, home: &Path, limit: usize) {
        let Some(dir) = &self.dir else { return };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let markers: Vec<(String, PathBuf)> = entries
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().to_string(), e.path()))
            .collect();
        let Some(present) = file_ids(home, limit) else {
            return;
        };
        let names: HashSet<String> = present.iter().map(|id| self.marker_name(*id)).collect();
        for (name, path) in markers {
            if names.contains(&name) {
                continue;
            }
            let carried = match parse_marker_name(&name) {
                Some((Some(dev), ino)) => self.adopt_old_marker(&present, dev, ino, &path),
                Some((None, _)) => false,
                None => self.adopt_path_marker(home, &name),
            };
            if carried {
                // The upload stays protected under its new marker (review s19 upgrade F7: the
                // line below said the protection was dropped).
                tracing::info!(marker = %name, "carried over the in-progress marker of an unfinished upload from an earlier version");
            } else {
                tracing::info!(marker = %name, "the file of an unfinished upload is gone or renamed; its old marker is removed");
            }
            let _ = std::fs::remove_file(&path);
        }
    }

    /// A marker `<dev>-<ino>` that names no present file: one of the previous version (of this
    /// host, or of a node whose device number differs) when `dev` is this host's device of
    /// `data_dir` or no present file's device. If a file on `data_dir`'s device has that inode,
    /// the marker is copied to its name of this version. True if it was.
    fn adopt_old_marker(&self, present: &HashSet<FileId>, dev: u64, ino: u64, old: &Path) -> bool {
        let Some(here) = self.dev else { return false };
        let old_version = dev == here || !present.iter().any(|id| id.dev == dev);
        let file = FileId { dev: here, ino };
        if !old_version || !present.contains(&file) {
            return false;
        }
        let Some(m) = self.marker(file) else {
            return false;
        };
        match std::fs::copy(old, &m) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(marker = %m.display(), "cannot carry over the in-progress marker: {e}");
                false
            }
        }
    }

    /// A marker of the previous version, named after the file's path (`a%2Fb.csv` for
    /// `/a/b.csv`): the file, if it is still there, gets a marker of its own. True if it did.
    fn adopt_path_marker(&self, home: &Path, flat: &str) -> bool {
        let path = flat.replace("%2F", "/").replace("%25", "%");
        let Ok(meta) = home.join(path.trim_start_matches('/')).symlink_metadata() else {
            return false;
        };
        let Some(m) = self.marker(FileId::of(&meta)).filter(|_| meta.is_file()) else {
            return false;
        };
        match std::fs::write(&m, path.as_bytes()) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(path = %path, "cannot carry over the in-progress marker: {e}");
                false
            }
        }
    }
}

/// A marker name of a file: `<ino>` (device None) or `<dev>-<ino>`; None for a path marker.
fn parse_marker_name(name: &str) -> Option<(Option<u64>, u64)> {
    if let Ok(ino) = name.parse::<u64>() {
        return Some((None, ino));
    }
    let (dev, ino) = name.split_once('-')?;
    Some((Some(dev.parse().ok()?), ino.parse().ok()?))
}

/// The identities of the regular files under `home`; None past `limit` entries, or when a
/// folder (or an entry of one) cannot be read: an unreadable folder is not an empty one, and the
/// markers of its files' unfinished uploads must stay (review of 2026-12-03). A folder or entry
/// that went away during the walk is skipped.
fn file_ids(home: &Path, limit: usize) -> Option<HashSet<FileId>> {
    let mut ids = HashSet::new();
    let mut folders = vec![home.to_path_buf()];
    let mut seen = 0usize;
    while let Some(folder) = folders.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return unreadable(&folder, &e),
        };
        for entry in entries {
            seen += 1;
            if seen > limit {
                return None;
            }
            let found = entry.and_then(|e| Ok((e.path(), e.path().symlink_metadata()?)));
            let (path, meta) = match found {
                Ok(found) => found,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return unreadable(&folder, &e),
            };
            if meta.is_dir() {
                folders.push(path);
            } else if meta.is_file() {
                ids.insert(FileId::of(&meta));
            }
        }
    }
    Some(ids)
}

/// The sweep decides nothing: `folder` could not be read.
fn unreadable(folder: &Path, e: &std::io::Error) -> Option<HashSet<FileId>> {
    tracing::warn!(folder = %folder.display(), "cannot read a folder while sweeping the in-progress markers; none is removed: {e}");
    None
}

#[cfg(test)]
#[path = "uploads_tests.rs"]
mod tests;
