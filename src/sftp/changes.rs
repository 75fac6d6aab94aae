//! The SFTP requests that change names in the tenant's home: REMOVE, MKDIR, RMDIR, RENAME (and
//! posix-rename), and in `roster sftp-server` mode the links (SYMLINK, READLINK,
//! `hardlink@openssh.com`); plus REALPATH, which only normalises.
//!
//! Each opens the folder holding the name through the [`Jail`](super::jail::Jail) and acts on the
//! final name with an `*at()` call on that folder's descriptor, so nothing is resolved twice by
//! path. A rename onto a name announces a finished upload, like a CLOSE; a rename of a file still
//! being written (or of a folder above it) announces nothing, and the handles follow the file to
//! its new name, under which their CLOSE announces it. A file that REMOVE deletes, or that a
//! posix-rename replaces, loses its in-progress marker.

use super::events::{is_temp_name, FinishedBy};
use super::fs::{c_name, link_at, mkdir_at, readlink_at, rename_at, symlink_at, unlink_at, Stat};
use super::handles::OpenHandle;
use super::jail::{Jail, JailPath};
use super::requests::{Failure, SftpSession};
use super::status::{fail, io_fail, jail_fail, ok};
use russh_sftp::protocol::{File, Name, Packet, StatusCode};
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Refusals of a new name past `max_tenant_entries`, logged at most once a second.
static REFUSED_NAMES: crate::logs::SharedEverySecond = crate::logs::SharedEverySecond::new();

impl SftpSession {
    /// The folder holding `p` (opened through the jail) and the final name in it.
    fn parent_of(&self, p: &JailPath) -> Result<(OwnedFd, CString), Failure> {
        self.ctx
            .jail
            .parent(p)
            .map_err(|e| io_fail(&p.virtual_path, e))
    }

    /// Runs one `*at()` call on the folder holding `p` and its final name.
    fn at_name<T>(
        &self,
        p: &JailPath,
        call: impl FnOnce(BorrowedFd<'_>, &CStr) -> std::io::Result<T>,
    ) -> Result<T, Failure> {
        let (dir, name) = self.parent_of(p)?;
        call(dir.as_fd(), &name).map_err(|e| io_fail(&p.virtual_path, e))
    }

    pub(super) fn remove(&mut self, id: u32, path: &str) -> Result<Packet, Failure> {
        let p = self.ctx.jail.resolve_for_write(path).map_err(jail_fail)?;
        let (dir, name) = self.parent_of(&p)?;
        let removed = Stat::at(dir.as_fd(), &name).ok();
        match unlink_at(dir.as_fd(), &name, false) {
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => Err(fail(
                StatusCode::Failure,
                format!("{} is a folder; use rmdir", p.virtual_path),
            )),
            Err(e) => Err(io_fail(&p.virtual_path, e)),
            Ok(()) => {
                if let Some(st) = removed.filter(|st| st.is_file()) {
                    self.ctx.in_progress.removed(st.id);
                }
                // Its last name gone, what it took on the disk is free (once no handle has it).
                if let Some(st) = removed.filter(|st| st.links <= 1) {
                    self.ctx.usage.unlinked(st.id, st.disk_bytes);
                }
                self.ctx.usage.forget();
                Ok(ok(id))
            }
        }
    }

    pub(super) fn mkdir(&mut self, id: u32, path: &str) -> Result<Packet, Failure> {
        let p = self.ctx.jail.resolve_for_write(path).map_err(jail_fail)?;
        self.room_for_a_name(&p)?;
        self.at_name(&p, mkdir_at)?;
        Ok(ok(id))
    }

    /// True when `p` names something now (a file, a folder or a link).
    pub(super) fn exists(&self, p: &JailPath) -> bool {
        (self.ctx.jail.parent(p)).is_ok_and(|(dir, name)| Stat::at(dir.as_fd(), &name).is_ok())
    }

    /// A new name may be made at `p` only while the tenant's folder is under
    /// `max_tenant_entries` (`usage`).
    pub(super) fn room_for_a_name(&self, p: &JailPath) -> Result<(), Failure> {
        let reserved = self.ctx.usage.reserve(0, 1);
        reserved.map(|_walk| ()).map_err(|why| {
            // At most a line a second, with the count: a client may ask again and again.
            if let Some(refused) = REFUSED_NAMES.hit() {
                tracing::warn!(tenant = %self.ctx.tenant, path = %p.virtual_path, refused, "new name refused: {why}");
            }
            fail(
                StatusCode::Failure,
                format!("{} cannot be created: {why}", p.virtual_path),
            )
        })
    }

    pub(super) fn rmdir(&mut self, id: u32, path: &str) -> Result<Packet, Failure> {
        let p = self.ctx.jail.resolve_for_write(path).map_err(jail_fail)?;
        self.at_name(&p, |dir, name| unlink_at(dir, name, true))?;
        self.ctx.usage.forget();
        Ok(ok(id))
    }

    pub(super) fn realpath(&mut self, id: u32, path: &str) -> Result<Packet, Failure> {
        let v = Jail::normalise(path).map_err(jail_fail)?;
        Ok(Packet::Name(Name {
            id,
            files: vec![File::dummy(v)],
        }))
    }

    /// RENAME (`overwrite = false`, SFTPv3: fails onto an existing name) and posix-rename.
    pub(super) fn rename(
        &mut self,
        id: u32,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<Packet, Failure> {
        let jail = &self.ctx.jail;
        let src = jail.resolve_for_write(from).map_err(jail_fail)?;
        let dst = jail.resolve_for_write(to).map_err(jail_fail)?;
        let (src_dir, src_name) = self.parent_of(&src)?;
        let (dst_dir, dst_name) = self.parent_of(&dst)?;
        let src_ends = (src_dir.as_fd(), src_name.as_c_str());
        let dst_ends = (dst_dir.as_fd(), dst_name.as_c_str());
        // The source must exist (its own error beats one about the target).
        let moving = Stat::at(src_ends.0, src_ends.1).map_err(|e| io_fail(&src.virtual_path, e))?;
        // The file a posix-rename replaces (not the same one under another name) is gone after it.
        let replaced = Stat::at(dst_ends.0, dst_ends.1)
            .ok()
            .filter(|st| st.is_file() && st.id != moving.id);
        rename_at(src_ends, dst_ends, overwrite).map_err(|e| io_fail(&dst.virtual_path, e))?;
        if let Some(old) = replaced {
            // Its in-progress marker goes with it (a new file may reuse the inode).
            self.ctx.in_progress.removed(old.id);
            if old.links <= 1 {
                self.ctx.usage.unlinked(old.id, old.disk_bytes);
            }
        }
        self.follow_rename(&src, &dst, &moving);
        // A file keeps its upload state under any name (`uploads` knows it by its inode): one
        // still being written, or left half-written, is not announced.
        let moved = Stat::at(dst_ends.0, dst_ends.1).ok();
        if let Some(st) = moved.filter(|st| st.is_file()) {
            if !self.ctx.in_progress.is_unfinished(st.id) && !is_temp_name(dst.name()) {
                self.announce(&dst, st.size, FinishedBy::Rename);
            }
        }
        Ok(ok(id))
    }

    /// After `src` (a file or a folder) was renamed to `dst`: this session's handles of the
    /// file, or of files under the folder, take their new names, and `uploads` learns the new
    /// name of a file open for writing (whose writer may be in another session), so a CLOSE
    /// announces the name the file has then.
    fn follow_rename(&mut self, src: &JailPath, dst: &JailPath, moved: &Stat) {
        if moved.is_file() {
            self.ctx.in_progress.renamed(moved.id, &dst.virtual_path);
        }
        let under = format!("{}/", src.virtual_path);
        let jail = &self.ctx.jail;
        for held in self.handles.values_mut() {
            let OpenHandle::File(f) = &mut held.handle else {
                continue;
            };
            let new = if moved.is_file() && f.file_id == moved.id {
                dst.virtual_path.clone()
            } else if let Some(rest) = f.path.virtual_path.strip_prefix(&under) {
                format!("{}/{rest}", dst.virtual_path)
            } else {
                continue;
            };
            let resolved = if f.writable {
                jail.resolve_for_write(&new)
            } else {
                jail.resolve(&new)
            };
            if let Ok(p) = resolved {
                f.path = p;
            }
        }
    }

    /// READLINK: only in `roster sftp-server` mode (a tenant jail has no links to read).
    pub(super) fn readlink(&mut self, id: u32, path: &str) -> Result<Packet, Failure> {
        if !self.ctx.jail.allows_links() {
            return Err(fail(
                StatusCode::OpUnsupported,
                "Symbolic links are not supported",
            ));
        }
        let p = self.ctx.jail.resolve(path).map_err(jail_fail)?;
        let target = self.at_name(&p, readlink_at)?;
        let text = String::from_utf8(target)
            .map_err(|_| fail(StatusCode::Failure, "The link's target is not valid UTF-8"))?;
        Ok(Packet::Name(Name {
            id,
            files: vec![File::dummy(text)],
        }))
    }

    /// SYMLINK (OpenSSH argument order: target, then the new link). Only in `roster sftp-server`
    /// mode; the target must lie inside the root and is stored relative to the link's folder, so
    /// it resolves to the same file for the OS user and for this server.
    pub(super) fn symlink(&mut self, id: u32, target: &str, link: &str) -> Result<Packet, Failure> {
        if !self.ctx.jail.allows_links() {
            return Err(fail(
                StatusCode::PermissionDenied,
                "Roster does not allow creating symbolic links",
            ));
        }
        let p = self.ctx.jail.resolve_for_write(link).map_err(jail_fail)?;
        let folder = p.virtual_path.rsplit_once('/').map_or("", |(dir, _)| dir);
        let stored = link_target_inside(folder, target).ok_or_else(|| {
            fail(
                StatusCode::PermissionDenied,
                format!("The link target {target} is outside the served folder"),
            )
        })?;
        // A link to the root or into an archive folder would make that folder writable.
        let lands = Jail::normalise(&format!("{folder}/{stored}")).map_err(jail_fail)?;
        if lands == "/" || Jail::in_archive(&lands) {
            return Err(fail(
                StatusCode::PermissionDenied,
                format!("A link to {lands} is not allowed: Roster keeps its archived files there"),
            ));
        }
        let c_target = c_name(&stored).map_err(|e| io_fail(target, e))?;
        self.at_name(&p, |dir, name| symlink_at(&c_target, dir, name))?;
        Ok(ok(id))
    }

    /// `hardlink@openssh.com`: only in `roster sftp-server` mode, both names inside the root.
    pub(super) fn hardlink(&mut self, id: u32, from: &str, to: &str) -> Result<Packet, Failure> {
        if !self.ctx.jail.allows_links() {
            return Err(fail(
                StatusCode::OpUnsupported,
                "The extension hardlink@openssh.com is not supported",
            ));
        }
        let jail = &self.ctx.jail;
        let src = jail.resolve(from).map_err(jail_fail)?;
        let dst = jail.resolve_for_write(to).map_err(jail_fail)?;
        let (src_dir, src_name) = self.parent_of(&src)?;
        // A second name of an archived file would let the tenant change the archive.
        if Jail::in_archive(&src.virtual_path) || jail.is_archive_folder(src_dir.as_fd()) {
            return Err(fail(
                StatusCode::PermissionDenied,
                format!("{} is in a read-only archive folder", src.virtual_path),
            ));
        }
        let (dst_dir, dst_name) = self.parent_of(&dst)?;
        link_at((src_dir.as_fd(), &src_name), (dst_dir.as_fd(), &dst_name))
            .map_err(|e| io_fail(&dst.virtual_path, e))?;
        Ok(ok(id))
    }
}

/// Where a link in the virtual folder `folder` (`""` for the root) pointing at `target` leads,
/// written relative to `folder`; `None` when the target is empty or climbs above the root.
fn link_target_inside(folder: &str, target: &str) -> Option<String> {
    if target.is_empty() || target.contains('\0') {
        return None;
    }
    let base: Vec<&str> = folder.split('/').filter(|s| !s.is_empty()).collect();
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        base.clone()
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    let ups = base.len();
    let mut out: Vec<&str> = vec![".."; ups];
    out.extend(parts);
    Some(if out.is_empty() {
        ".".to_string()
    } else {
        out.join("/")
    })
}

#[cfg(test)]
mod tests {
    use super::link_target_inside;
    use crate::sftp::handles::HandleBudget;
    use crate::sftp::requests::{SessionContext, SftpSession};
    use crate::sftp::{FileId, InProgress, Jail, NoUploadSink};
    use russh_sftp::protocol::{Close, Extended, FileAttributes, Open, OpenFlags, Packet, Write};
    use std::sync::Arc;

    /// A session of tenant `acme` on `home`, with markers under `data`.
    fn session(home: &std::path::Path, data: &std::path::Path) -> SftpSession {
        std::fs::create_dir_all(home).unwrap();
        SftpSession::new(SessionContext {
            tenant: "acme".into(),
            jail: Jail::tenant_home(home).unwrap(),
            max_upload_bytes: 1_000_000,
            min_free_bytes: 0,
            usage: crate::sftp::usage::TenantUsage::unlimited(),
            sink: Arc::new(NoUploadSink),
            in_progress: InProgress::new(data, "acme"),
            handles: HandleBudget::default().for_tenant("acme", 16),
        })
    }

    /// Opens `name` for writing (CREAT|TRUNC), writes `data`; returns the handle.
    fn write_file(s: &mut SftpSession, name: &str, data: &[u8]) -> String {
        let pflags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
        let attrs = FileAttributes::default();
        let (id, filename) = (1, name.to_string());
        let Packet::Handle(h) = s.handle(Packet::Open(Open {
            id,
            filename,
            pflags,
            attrs,
        })) else {
            panic!("{name} did not open");
        };
        let (handle, data) = (h.handle, data.to_vec());
        let reply = s.handle(Packet::Write(Write {
            id,
            handle: handle.clone(),
            offset: 0,
            data,
        }));
        assert!(matches!(reply, Packet::Status(st) if st.error_message == "OK"));
        handle
    }

    #[test]
    fn a_posix_rename_over_a_half_written_file_removes_its_marker() {
        let dir = tempfile::tempdir().unwrap();
        let (home, data) = (dir.path().join("home"), dir.path().join("data"));
        let markers = InProgress::new(&data, "acme");
        // A half upload of users.csv: the session ends with the handle open.
        let mut first = session(&home, &data);
        write_file(&mut first, "/users.csv", b"half");
        first.end();
        let half = FileId::of(&std::fs::metadata(home.join("users.csv")).unwrap());
        assert!(markers.is_unfinished(half));
        // A whole file is posix-renamed over it.
        let mut s = session(&home, &data);
        let h = write_file(&mut s, "/next.tmp", b"whole");
        s.handle(Packet::Close(Close { id: 2, handle: h }));
        let mut body = Vec::new();
        for p in ["/next.tmp", "/users.csv"] {
            body.extend_from_slice(&(p.len() as u32).to_be_bytes());
            body.extend_from_slice(p.as_bytes());
        }
        let request = "posix-rename@openssh.com".to_string();
        let reply = s.handle(Packet::Extended(Extended {
            id: 3,
            request,
            data: body,
        }));
        assert!(matches!(reply, Packet::Status(st) if st.error_message == "OK"));
        assert_eq!(std::fs::read(home.join("users.csv")).unwrap(), b"whole");
        // The replaced file's marker is gone: a new file with its inode is not unfinished.
        assert!(!markers.is_unfinished(half));
        let marker_dir = data.join("uploading/acme");
        assert_eq!(std::fs::read_dir(marker_dir).unwrap().count(), 0);
    }

    #[test]
    fn link_targets_stay_inside_and_become_relative() {
        assert_eq!(link_target_inside("", "a.csv").unwrap(), "a.csv");
        assert_eq!(link_target_inside("", "/d/a.csv").unwrap(), "d/a.csv");
        assert_eq!(link_target_inside("/d", "/x").unwrap(), "../x");
        assert_eq!(link_target_inside("/d", "../x").unwrap(), "../x");
        assert_eq!(link_target_inside("/d/e", "f").unwrap(), "../../d/e/f");
        assert_eq!(link_target_inside("", "/").unwrap(), ".");
        assert!(link_target_inside("", "../etc/passwd").is_none());
        assert!(link_target_inside("/d", "../../x").is_none());
        assert!(link_target_inside("", "").is_none());
    }
}
