//! The upload side of an SFTP session: WRITE (the hot path of every upload), CLOSE, and the
//! end of a session with handles still open, which decide what is announced through the
//! [`UploadSink`](crate::sftp::UploadSink) and what `uploads` records; and the `max_upload_bytes`
//! checks of WRITE and SETSTAT/FSETSTAT size, and SETSTAT size on a path, which changes a file as
//! a write-OPEN does (`set_size_at`); and, every 8 MiB a handle writes, the volume's
//! reserve (`min_free_bytes`) and the tenant's share of the disk (`usage`). An APPEND write is checked against the file's real
//! size (fstat, before and after the write), not what the handle saw, so no mix of handles and
//! requests grows a file past the limit through APPEND.
//!
//! A handle's upload breaks when a write goes past `max_upload_bytes` (the partial file is
//! removed) or when a write fails (disk full, file too large, quota, I/O error: the file stays,
//! with its in-progress marker, for a resume to complete). Either way further writes are refused
//! and its CLOSE announces nothing and says why.

use super::{Failure, SftpSession};
use crate::sftp::events::{is_temp_name, FinishedBy, UploadFinished};
use crate::sftp::fs::{apply_attrs, Stat};
use crate::sftp::handles::{FileHandle, Held, OpenHandle};
use crate::sftp::jail::JailPath;
use crate::sftp::status::{fail, io_fail, ok, upload_failed, write_failure_cause};
use crate::sftp::uploads::{FileId, HandleEnd};
use crate::sftp::usage::TenantUsage;
use russh_sftp::protocol::{FileAttributes, Packet, StatusCode};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::time::SystemTime;

/// A handle checks the volume's free space again once its writes may have allocated this much
/// since the last check (one `fstatvfs` per 8 MiB written, not one per WRITE).
const SPACE_CHECK_EVERY: u64 = 8 << 20;

/// The block a write is counted in: a write of one byte may allocate a whole block.
const BLOCK: u64 = 4096;

/// What a write of `len` bytes at `start` may add to the disk: every block it touches. Counted
/// by what is written, not by how far the file reaches (review s21: a handle that wrote one
/// byte far out first was never checked again while it filled the sparse file below, and one
/// tenant took 472 MB of a 50 MB share); by blocks, so one-byte writes a block apart are
/// counted for what they allocate.
fn write_cost(start: u64, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    let first = start / BLOCK;
    let last = start.saturating_add(len - 1) / BLOCK;
    (last - first + 1).saturating_mul(BLOCK)
}

/// Whether a handle may write `len` bytes and the next [`SPACE_CHECK_EVERY`] (what it may write
/// before it looks again): the volume holding `file` keeps more than `reserve` bytes free, and
/// the tenant's folder stays within its share (`usage`). Answers what the share holds for the
/// handle (`TenantUsage::reserve`); the error says which did not hold.
fn room_for(
    file: &std::fs::File,
    reserve: u64,
    usage: &TenantUsage,
    len: u64,
) -> std::io::Result<u64> {
    let wanted = SPACE_CHECK_EVERY.saturating_add(len);
    if reserve > 0 {
        let free = crate::sftp::fs::free_bytes(file.as_fd())?;
        if free <= reserve.saturating_add(wanted) {
            return Err(std::io::Error::other(
                "the server's disk is nearly full (it keeps a reserve for the other tenants)",
            ));
        }
    }
    usage.reserve(wanted, 0).map_err(std::io::Error::other)
}

impl SftpSession {
    /// WRITE: the hot path of every upload (called by `wire` without copying the data).
    pub fn write(
        &mut self,
        id: u32,
        handle: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<Packet, Failure> {
        let max = self.ctx.max_upload_bytes;
        let reserve = self.ctx.min_free_bytes;
        let usage = self.ctx.usage.clone();
        let f = self.file_handle(handle)?;
        if !f.writable {
            return Err(fail(
                StatusCode::PermissionDenied,
                "This file was opened for reading only",
            ));
        }
        if f.broken {
            let vpath = f.path.virtual_path.clone();
            return Err(match self.failed.get(handle) {
                Some(cause) => upload_failed(&vpath, cause),
                None => fail(
                    StatusCode::Failure,
                    "This upload was stopped; start it again",
                ),
            });
        }
        // APPEND writes at the file's real end, wherever other requests have moved it.
        let start = if f.append {
            let st = Stat::of_fd(f.file.as_fd()).map_err(|e| io_fail(&f.path.virtual_path, e))?;
            st.size
        } else {
            offset
        };
        let mut end = start.saturating_add(data.len() as u64);
        if end > max {
            return Err(self.stop_oversized_upload(handle));
        }
        let cost = write_cost(start, data.len() as u64);
        if cost > f.space_left {
            // What the last check reserved and was not written is given back first.
            f.release_space(&usage);
            f.space_left = 0;
            f.space_held = 0;
            // A file whose last name was removed takes space no walk sees: it is counted
            // until its handles close, and written no more.
            if let Some(st) = Stat::of_fd(f.file.as_fd()).ok().filter(|st| st.links == 0) {
                usage.unlinked(f.file_id, st.disk_bytes);
                let gone = std::io::Error::other("the file was removed while it was being written");
                return Err(self.write_failed(handle, &gone));
            }
            match room_for(&f.file, reserve, &usage, cost) {
                Ok(held) => {
                    f.space_left = SPACE_CHECK_EVERY.saturating_add(cost);
                    f.space_held = held;
                }
                Err(e) => return Err(self.write_failed(handle, &e)),
            }
        }
        f.space_left -= cost;
        let written = if f.append {
            use std::io::Write;
            (&f.file).write_all(data)
        } else {
            f.file.write_all_at(data, offset)
        };
        if let Err(e) = written {
            return Err(self.write_failed(handle, &e));
        }
        if f.append {
            // The end may have moved between the fstat and the write: look again.
            match Stat::of_fd(f.file.as_fd()) {
                Ok(st) if st.size > max => return Err(self.stop_oversized_upload(handle)),
                Ok(st) => end = st.size,
                Err(e) => return Err(self.write_failed(handle, &e)),
            }
        }
        f.size = f.size.max(end);
        f.wrote = true;
        crate::metrics::bytes_uploaded(data.len());
        Ok(ok(id))
    }

    /// A write into the file of `handle` failed (disk full, file too large, quota, I/O error):
    /// the upload is broken. Further writes are refused, and CLOSE announces nothing and ends the
    /// handle like a dropped session, so the file's in-progress marker stays and it is never
    /// imported as it is. The file is kept, so a resume can complete it.
    pub(in crate::sftp) fn write_failed(&mut self, handle: &str, e: &std::io::Error) -> Failure {
        let cause = write_failure_cause(e);
        let tenant = self.ctx.tenant.clone();
        let Ok(f) = self.file_handle(handle) else {
            return fail(StatusCode::Failure, cause);
        };
        // A failed write may have changed part of the file: it counts as written.
        (f.broken, f.wrote) = (true, true);
        let vpath = f.path.virtual_path.clone();
        tracing::warn!(tenant = %tenant, path = %vpath, "a write failed ({e}); the upload is stopped and the file will not be imported");
        let failure = upload_failed(&vpath, &cause);
        self.failed.insert(handle.to_string(), cause);
        failure
    }

    /// A write went past `max_upload_bytes`: the upload is stopped, the partial file is removed
    /// (through the jail, by its current name, and only if that name still is this very file;
    /// otherwise it is emptied through the handle) and the person is told why.
    fn stop_oversized_upload(&mut self, handle: &str) -> Failure {
        let max = self.ctx.max_upload_bytes;
        let Ok(f) = self.file_handle(handle) else {
            return fail(StatusCode::Failure, "Unknown or closed handle");
        };
        f.broken = true;
        let (id, opened_as) = (f.file_id, f.path.clone());
        let path = self.current_path(id, &opened_as);
        let removed = path.as_ref().is_some_and(|p| self.remove_if_same(p, id));
        if !removed {
            if let Ok(f) = self.file_handle(handle) {
                let _ = f.file.set_len(0);
            }
        }
        self.ctx.in_progress.removed(id);
        let vpath = path.map_or(opened_as.virtual_path, |p| p.virtual_path);
        tracing::warn!(tenant = %self.ctx.tenant, path = %vpath, limit = max, removed, "upload over max_upload_bytes stopped; partial file removed or emptied");
        let mb = max as f64 / 1_000_000.0;
        let what = if removed { "removed" } else { "emptied" };
        fail(
            StatusCode::Failure,
            format!("The upload of {vpath} is larger than the limit of {mb:.1} MB; the partial file was {what}"),
        )
    }

    /// The name the file `id` (opened as `opened_as`) has now: the one a rename gave it while it
    /// was open for writing (in any session), else the handle's path (which follows this
    /// session's renames); either only while that name still is this very file (same device
    /// and inode). None when neither is.
    fn current_path(&self, id: FileId, opened_as: &JailPath) -> Option<JailPath> {
        let renamed = (self.ctx.in_progress.renamed_to(id))
            .and_then(|v| self.ctx.jail.resolve_for_write(&v).ok());
        let names_it = |p: &JailPath| {
            (self.ctx.jail.parent(p))
                .and_then(|(dir, name)| Stat::at(dir.as_fd(), &name))
                .is_ok_and(|st| st.id == id)
        };
        renamed
            .into_iter()
            .chain([opened_as.clone()])
            .find(|p| names_it(p))
    }

    /// Removes the name `p` if it still is the file `id`; true if it was removed.
    fn remove_if_same(&self, p: &JailPath, id: FileId) -> bool {
        let Ok((dir, name)) = self.ctx.jail.parent(p) else {
            return false;
        };
        Stat::at(dir.as_fd(), &name).is_ok_and(|st| st.id == id)
            && crate::sftp::fs::unlink_at(dir.as_fd(), &name, false).is_ok()
    }

    /// SETSTAT/FSETSTAT `size` may shrink a file or grow it up to `max_upload_bytes`, no further.
    pub(super) fn check_size(&self, attrs: &FileAttributes, vpath: &str) -> Result<(), Failure> {
        let max = self.ctx.max_upload_bytes;
        match attrs.size {
            Some(size) if size > max => {
                tracing::warn!(tenant = %self.ctx.tenant, path = %vpath, size, limit = max, "set-size over max_upload_bytes refused");
                let mb = max as f64 / 1_000_000.0;
                Err(fail(
                    StatusCode::Failure,
                    format!("{vpath} cannot be made {size} bytes long: the limit is {mb:.1} MB"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// SETSTAT with a size on the path `p`: the file is truncated or extended through the guard
    /// of a write-OPEN (`InProgress::open_for_write`), so it is refused while another handle (of
    /// any session) writes the file, and the file is registered, so not claimed, while its size
    /// changes. It is no upload of the file: an unfinished one stays unfinished and nothing is
    /// announced (the folder watcher sees a finished file change). Times are set after the size.
    pub(super) fn set_size_at(
        &self,
        id: u32,
        p: &JailPath,
        attrs: &FileAttributes,
    ) -> Result<Packet, Failure> {
        let vpath = p.virtual_path.clone();
        self.check_size(attrs, &vpath)?;
        let jail = &self.ctx.jail;
        let open = || {
            let fd = jail.open(p, libc::O_WRONLY | libc::O_NONBLOCK, 0)?;
            let st = Stat::of_fd(fd.as_fd())?;
            if !st.is_file() {
                let what = "is not a regular file, which Roster does not serve";
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, what));
            }
            Ok((std::fs::File::from(fd), st.id))
        };
        let size = attrs.size.unwrap_or(0);
        let set_len = |file: &std::fs::File| file.set_len(size);
        let opened = self.ctx.in_progress.open_for_write(&vpath, open, set_len);
        // A folder: "/x is a folder" (`io_fail`).
        let (file, file_id) = opened.map_err(|e| self.open_failed(&vpath, e))?;
        let times = FileAttributes {
            size: None,
            ..attrs.clone()
        };
        let applied = apply_attrs(&file, &times, &vpath);
        (self.ctx.in_progress).handle_ended(file_id, HandleEnd::Closed { wrote: false });
        applied.map(|()| ok(id))
    }

    pub(super) fn close(&mut self, id: u32, handle: &str) -> Result<Packet, Failure> {
        let Some(held) = self.handles.remove(handle) else {
            return Err(fail(StatusCode::Failure, "Unknown or closed handle"));
        };
        let OpenHandle::File(f) = held.handle else {
            return Ok(ok(id));
        };
        f.closed(&self.ctx.usage);
        if !f.writable {
            return Ok(ok(id));
        }
        // The name the file has now (it may have been renamed while open), asked before the
        // handle ends (which forgets a rename by another session).
        let path = self.current_path(f.file_id, &f.path);
        let vpath = path.as_ref().unwrap_or(&f.path).virtual_path.clone();
        if let Some(cause) = self.failed.remove(handle) {
            let how = HandleEnd::Dropped { wrote: true };
            self.ctx.in_progress.handle_ended(f.file_id, how);
            return Err(upload_failed(&vpath, &cause));
        }
        let wrote = f.wrote && !f.broken;
        let finished = (self.ctx.in_progress).handle_ended(f.file_id, HandleEnd::Closed { wrote });
        if f.broken {
            return Err(fail(
                StatusCode::Failure,
                "This upload was stopped and its file removed",
            ));
        }
        if finished {
            self.announce_closed(&f, path);
        }
        Ok(ok(id))
    }

    /// A CLOSE finished the upload of `f`, whose file is now at `path`: announced, unless that
    /// is a temp name, or the file has no name this session can tell (moved by another session
    /// with its folder, or replaced): the folder watcher finds such a file.
    fn announce_closed(&self, f: &FileHandle, path: Option<JailPath>) {
        let Some(path) = path else {
            tracing::info!(tenant = %self.ctx.tenant, path = %f.path.virtual_path, "upload finished, but the file is no longer at its name; not announced");
            return;
        };
        if !is_temp_name(path.name()) {
            let size = f.file.metadata().map(|m| m.len()).unwrap_or(f.size);
            self.announce(&path, size, FinishedBy::Close);
        }
    }

    pub(in crate::sftp) fn announce(&self, path: &JailPath, size: u64, how: FinishedBy) {
        tracing::info!(tenant = %self.ctx.tenant, path = %path.virtual_path, size, ?how, "upload finished");
        self.ctx.sink.finished(UploadFinished {
            tenant: self.ctx.tenant.clone(),
            path: path.virtual_path.clone(),
            real_path: path.real.clone(),
            size,
            how,
            at: SystemTime::now(),
        });
    }

    /// The session ended: handles still open for writing were not finished; nothing is announced
    /// and their in-progress markers stay. Every handle goes back to the tenant's budget.
    pub fn end(&mut self) {
        let handles: Vec<Held> = self.handles.drain().map(|(_, h)| h).collect();
        self.failed.clear();
        for h in handles {
            let OpenHandle::File(f) = &h.handle else {
                continue;
            };
            f.closed(&self.ctx.usage);
            if !f.writable {
                continue;
            }
            let how = HandleEnd::Dropped { wrote: f.wrote };
            if f.wrote {
                tracing::warn!(tenant = %self.ctx.tenant, path = %f.path.virtual_path, "session ended during an upload; the file is left incomplete and will not be imported");
            }
            let path = self.current_path(f.file_id, &f.path);
            if self.ctx.in_progress.handle_ended(f.file_id, how) {
                self.announce_closed(f, path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{write_cost, BLOCK};

    #[test]
    fn a_write_costs_every_block_it_touches() {
        assert_eq!(write_cost(0, 0), 0);
        assert_eq!(write_cost(0, 1), BLOCK);
        assert_eq!(write_cost(BLOCK - 1, 2), 2 * BLOCK);
        assert_eq!(write_cost(5 * BLOCK, BLOCK), BLOCK);
        assert_eq!(write_cost(40 << 20, 1 << 20), 1 << 20);
        assert_eq!(write_cost(u64::MAX - 1, 1), BLOCK);
    }
}
