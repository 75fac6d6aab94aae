//! The SFTP request handler: one [`SftpSession`] per SFTP channel, answering each request
//! against the tenant's [`Jail`].
//!
//! Requests enter decoded (from `wire`) and leave as reply packets. File I/O uses plain blocking
//! calls on the session's task: each is one page-cache operation of at most ~1 MiB, cheaper than a
//! hop to a blocking thread (`fsync@openssh.com`, rare, blocks for the flush). Uploads are announced
//! through the [`UploadSink`] on CLOSE of a handle that wrote, or on a rename onto a name.

use super::events::{is_temp_name, FinishedBy, InProgress, UploadFinished, UploadSink};
use super::fs::{apply_attrs, attrs_of, listing_entry, put_u64, rename_noreplace, statvfs};
use super::jail::{Jail, JailPath};
pub use super::status::Failure;
use super::status::{fail, io_fail, jail_fail, ok, status};
use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File, FileAttributes, Handle, Name, OpenFlags, Packet, StatusCode,
    Version,
};
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::Arc;
use std::time::SystemTime;

/// Largest request packet accepted (a 1 MiB write plus headers). Larger ones are skipped whole
/// and answered with an error, so the session stays in sync.
pub const MAX_PACKET: u32 = 1024 * 1024 + 1024;
/// Largest READ reply payload (what OpenSSH expects near 255 KiB).
pub const MAX_READ: u32 = 261_120;
/// Largest WRITE payload accepted.
pub const MAX_WRITE: u32 = 1024 * 1024;
/// Handles one session may hold open at once.
pub const MAX_HANDLES: usize = 1024;
/// Directory entries per READDIR reply (keeps each NAME packet far below 256 KiB).
const DIR_PAGE: usize = 128;

/// Everything an SFTP session needs to know about who it serves.
pub struct SessionContext {
    pub tenant: String,
    pub jail: Jail,
    pub max_upload_bytes: u64,
    pub sink: Arc<dyn UploadSink>,
    pub in_progress: InProgress,
}

struct FileHandle {
    file: std::fs::File,
    path: JailPath,
    writable: bool,
    append: bool,
    /// Opened with TRUNC, or written to: closing it finishes an upload.
    wrote: bool,
    /// Highest byte written so far (or the size at open), to enforce `max_upload_bytes`.
    size: u64,
    /// The upload broke (too large): further writes fail, CLOSE announces nothing.
    broken: bool,
}

struct DirHandle {
    entries: Vec<File>,
    next: usize,
}

enum OpenHandle {
    File(FileHandle),
    Dir(DirHandle),
}

/// One SFTP session's state: its open handles.
pub struct SftpSession {
    ctx: SessionContext,
    handles: HashMap<String, OpenHandle>,
    next_handle: u64,
}

/// Reads one SSH string (u32 length + bytes) from `data` at `*pos`.
fn take_string<'a>(data: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len_bytes = data.get(*pos..*pos + 4)?;
    let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
    let s = data.get(*pos + 4..*pos + 4 + len)?;
    *pos += 4 + len;
    Some(s)
}

fn take_str(data: &[u8], pos: &mut usize) -> Result<String, Failure> {
    let raw = take_string(data, pos)
        .ok_or_else(|| fail(StatusCode::BadMessage, "The request is truncated"))?;
    String::from_utf8(raw.to_vec()).map_err(|_| {
        fail(
            StatusCode::BadMessage,
            "A path in the request is not valid UTF-8",
        )
    })
}

impl SftpSession {
    pub fn new(ctx: SessionContext) -> SftpSession {
        SftpSession {
            ctx,
            handles: HashMap::new(),
            next_handle: 1,
        }
    }

    pub fn tenant(&self) -> &str {
        &self.ctx.tenant
    }

    /// Answers one decoded request.
    pub fn handle(&mut self, packet: Packet) -> Packet {
        let id = packet_id(&packet);
        let result = match packet {
            Packet::Init(init) => return self.init(init.version),
            Packet::Open(o) => self.open(id, &o.filename, o.pflags),
            Packet::Close(c) => self.close(id, &c.handle),
            Packet::Read(r) => {
                let mut out = Vec::new();
                return match self.read_into(id, &r.handle, r.offset, r.len, &mut out) {
                    Ok(()) => Packet::Data(Data { id, data: out }),
                    Err((code, msg)) => status(id, code, msg),
                };
            }
            Packet::Write(w) => self.write(id, &w.handle, w.offset, &w.data),
            Packet::Lstat(s) => self.stat(id, &s.path, false),
            Packet::Stat(s) => self.stat(id, &s.path, true),
            Packet::Fstat(s) => self.fstat(id, &s.handle),
            Packet::SetStat(s) => self.setstat(id, &s.path, &s.attrs),
            Packet::FSetStat(s) => self.fsetstat(id, &s.handle, &s.attrs),
            Packet::OpenDir(o) => self.opendir(id, &o.path),
            Packet::ReadDir(r) => self.readdir(id, &r.handle),
            Packet::Remove(r) => self.remove(id, &r.filename),
            Packet::MkDir(m) => self.mkdir(id, &m.path),
            Packet::RmDir(r) => self.rmdir(id, &r.path),
            Packet::RealPath(r) => self.realpath(id, &r.path),
            Packet::Rename(r) => self.rename(id, &r.oldpath, &r.newpath, false),
            Packet::ReadLink(_) => Err(fail(
                StatusCode::OpUnsupported,
                "Symbolic links are not supported",
            )),
            Packet::Symlink(_) => Err(fail(
                StatusCode::PermissionDenied,
                "Roster does not allow creating symbolic links",
            )),
            Packet::Extended(e) => self.extended(id, &e.request, &e.data),
            _ => Err(fail(
                StatusCode::OpUnsupported,
                "This request type is not supported",
            )),
        };
        result.unwrap_or_else(|(code, msg)| status(id, code, msg))
    }

    fn init(&mut self, client_version: u32) -> Packet {
        tracing::debug!(tenant = %self.ctx.tenant, client_version, "sftp init");
        let mut v = Version::new();
        for (name, ver) in [
            ("posix-rename@openssh.com", "1"),
            ("statvfs@openssh.com", "2"),
            ("fsync@openssh.com", "1"),
            ("limits@openssh.com", "1"),
        ] {
            v.extensions.insert(name.into(), ver.into());
        }
        Packet::Version(v)
    }

    fn new_handle(&mut self, h: OpenHandle) -> Result<String, Failure> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(fail(
                StatusCode::Failure,
                format!("Too many open files (at most {MAX_HANDLES} per session)"),
            ));
        }
        let name = self.next_handle.to_string();
        self.next_handle += 1;
        self.handles.insert(name.clone(), h);
        Ok(name)
    }

    fn open(&mut self, id: u32, filename: &str, flags: OpenFlags) -> Result<Packet, Failure> {
        let changes = flags.intersects(
            OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE,
        );
        let path = if changes {
            self.ctx.jail.resolve_for_write(filename)
        } else {
            self.ctx.jail.resolve(filename)
        }
        .map_err(jail_fail)?;
        let mut opts = OpenOptions::new();
        opts.read(flags.contains(OpenFlags::READ) || !changes)
            .write(changes)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644);
        if flags.contains(OpenFlags::APPEND) {
            opts.append(true);
        }
        if flags.contains(OpenFlags::CREATE) {
            if flags.contains(OpenFlags::EXCLUDE) {
                opts.create_new(true);
            } else {
                opts.create(true);
            }
        }
        if flags.contains(OpenFlags::TRUNCATE) {
            opts.truncate(true);
        }
        let vpath = path.virtual_path.clone();
        if changes {
            // Marked before the first byte lands, so a crash mid-upload leaves the marker.
            self.ctx.in_progress.begin(&vpath);
        }
        let opened = opts.open(&path.real).and_then(|f| {
            let meta = f.metadata()?;
            if meta.is_dir() {
                return Err(std::io::Error::from(ErrorKind::IsADirectory));
            }
            Ok((f, meta.len()))
        });
        let (file, size) = match opened {
            Ok(x) => x,
            Err(e) => {
                if changes {
                    self.ctx.in_progress.end(&vpath);
                }
                return Err(io_fail(&vpath, e));
            }
        };
        let handle = self.new_handle(OpenHandle::File(FileHandle {
            file,
            path,
            writable: changes,
            append: flags.contains(OpenFlags::APPEND),
            wrote: flags.contains(OpenFlags::TRUNCATE),
            size,
            broken: false,
        }))?;
        Ok(Packet::Handle(Handle { id, handle }))
    }

    fn file_handle(&mut self, handle: &str) -> Result<&mut FileHandle, Failure> {
        match self.handles.get_mut(handle) {
            Some(OpenHandle::File(f)) => Ok(f),
            Some(OpenHandle::Dir(_)) => Err(fail(
                StatusCode::Failure,
                "That handle is a folder, not a file",
            )),
            None => Err(fail(StatusCode::Failure, "Unknown or closed handle")),
        }
    }

    /// WRITE: the hot path of every upload (called by `wire` without copying the data).
    pub fn write(
        &mut self,
        id: u32,
        handle: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<Packet, Failure> {
        let max = self.ctx.max_upload_bytes;
        let in_progress = self.ctx.in_progress.clone();
        let tenant = self.ctx.tenant.clone();
        let f = self.file_handle(handle)?;
        if !f.writable {
            return Err(fail(
                StatusCode::PermissionDenied,
                "This file was opened for reading only",
            ));
        }
        if f.broken {
            return Err(fail(
                StatusCode::Failure,
                "This upload was stopped; start it again",
            ));
        }
        let end = if f.append { f.size } else { offset }.saturating_add(data.len() as u64);
        if end > max {
            f.broken = true;
            let vpath = f.path.virtual_path.clone();
            let removed = std::fs::remove_file(&f.path.real);
            in_progress.end(&vpath);
            tracing::warn!(%tenant, path = %vpath, limit = max, "upload over max_upload_bytes stopped; partial file removed");
            let mb = max as f64 / 1_000_000.0;
            let msg = match removed {
                Ok(()) => format!("The upload of {vpath} is larger than the limit of {mb:.1} MB; the partial file was removed"),
                Err(_) => format!("The upload of {vpath} is larger than the limit of {mb:.1} MB"),
            };
            return Err(fail(StatusCode::Failure, msg));
        }
        let written = if f.append {
            use std::io::Write;
            (&f.file).write_all(data)
        } else {
            f.file.write_all_at(data, offset)
        };
        if let Err(e) = written {
            return Err(io_fail(&f.path.virtual_path, e));
        }
        f.size = f.size.max(end);
        f.wrote = true;
        crate::metrics::bytes_uploaded(data.len());
        Ok(ok(id))
    }

    /// READ: appends the file bytes (at most `MAX_READ`) to `out`; an empty read is EOF.
    pub fn read_into(
        &mut self,
        _id: u32,
        handle: &str,
        offset: u64,
        len: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        let f = self.file_handle(handle)?;
        let want = len.min(MAX_READ) as usize;
        let start = out.len();
        out.resize(start + want, 0);
        let mut filled = 0;
        while filled < want {
            match f
                .file
                .read_at(&mut out[start + filled..], offset + filled as u64)
            {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    out.truncate(start);
                    return Err(io_fail(&f.path.virtual_path, e));
                }
            }
        }
        out.truncate(start + filled);
        if filled == 0 && want > 0 {
            return Err(fail(StatusCode::Eof, "End of file"));
        }
        Ok(())
    }

    fn close(&mut self, id: u32, handle: &str) -> Result<Packet, Failure> {
        match self.handles.remove(handle) {
            None => Err(fail(StatusCode::Failure, "Unknown or closed handle")),
            Some(OpenHandle::Dir(_)) => Ok(ok(id)),
            Some(OpenHandle::File(f)) => {
                if !f.writable {
                    return Ok(ok(id));
                }
                self.ctx.in_progress.end(&f.path.virtual_path);
                if f.broken {
                    return Err(fail(
                        StatusCode::Failure,
                        "This upload was stopped and its file removed",
                    ));
                }
                if f.wrote && !is_temp_name(f.path.name()) {
                    let size = f.file.metadata().map(|m| m.len()).unwrap_or(f.size);
                    self.announce(&f.path, size, FinishedBy::Close);
                }
                Ok(ok(id))
            }
        }
    }

    fn announce(&self, path: &JailPath, size: u64, how: FinishedBy) {
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

    fn stat(&mut self, id: u32, path: &str, follow: bool) -> Result<Packet, Failure> {
        let p = self.ctx.jail.resolve(path).map_err(jail_fail)?;
        if follow {
            self.ctx.jail.refuse_symlink(&p).map_err(jail_fail)?;
        }
        let meta = std::fs::symlink_metadata(&p.real).map_err(|e| io_fail(&p.virtual_path, e))?;
        let mut attrs = attrs_of(&meta);
        if meta.file_type().is_symlink() {
            attrs.permissions = Some(0o120777);
        }
        Ok(Packet::Attrs(Attrs { id, attrs }))
    }

    fn fstat(&mut self, id: u32, handle: &str) -> Result<Packet, Failure> {
        let f = self.file_handle(handle)?;
        let meta = f
            .file
            .metadata()
            .map_err(|e| io_fail(&f.path.virtual_path, e))?;
        Ok(Packet::Attrs(Attrs {
            id,
            attrs: attrs_of(&meta),
        }))
    }

    fn setstat(&mut self, id: u32, path: &str, attrs: &FileAttributes) -> Result<Packet, Failure> {
        let p = self.ctx.jail.resolve_for_write(path).map_err(jail_fail)?;
        self.ctx.jail.refuse_symlink(&p).map_err(jail_fail)?;
        let meta = std::fs::symlink_metadata(&p.real).map_err(|e| io_fail(&p.virtual_path, e))?;
        if attrs.size.is_some() && meta.is_dir() {
            return Err(fail(
                StatusCode::Failure,
                format!("{} is a folder", p.virtual_path),
            ));
        }
        let file = OpenOptions::new()
            .read(meta.is_dir())
            .write(!meta.is_dir())
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p.real)
            .map_err(|e| io_fail(&p.virtual_path, e))?;
        apply_attrs(&file, attrs, &p.virtual_path)?;
        Ok(ok(id))
    }

    fn fsetstat(
        &mut self,
        id: u32,
        handle: &str,
        attrs: &FileAttributes,
    ) -> Result<Packet, Failure> {
        let f = self.file_handle(handle)?;
        if !f.writable {
            return Err(fail(
                StatusCode::PermissionDenied,
                "This file was opened for reading only",
            ));
        }
        apply_attrs(&f.file, attrs, &f.path.virtual_path)?;
        if let Some(size) = attrs.size {
            f.size = size;
        }
        Ok(ok(id))
    }

    fn opendir(&mut self, id: u32, path: &str) -> Result<Packet, Failure> {
        let p = self.ctx.jail.resolve(path).map_err(jail_fail)?;
        self.ctx.jail.refuse_symlink(&p).map_err(jail_fail)?;
        let rd = std::fs::read_dir(&p.real).map_err(|e| io_fail(&p.virtual_path, e))?;
        let mut entries = Vec::new();
        for (name, meta) in [(".", &p.real), ("..", &p.real)]
            .iter()
            .filter_map(|(n, r)| std::fs::metadata(r).ok().map(|m| (n.to_string(), m)))
        {
            let attrs = attrs_of(&meta);
            entries.push(listing_entry(name, attrs, &meta, &self.ctx.tenant));
        }
        for entry in rd.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not representable in SFTPv3 UTF-8 names
            };
            let Ok(meta) = entry.metadata() else { continue };
            let mut attrs = attrs_of(&meta);
            if meta.file_type().is_symlink() {
                attrs.permissions = Some(0o120777);
            }
            entries.push(listing_entry(name, attrs, &meta, &self.ctx.tenant));
        }
        let handle = self.new_handle(OpenHandle::Dir(DirHandle { entries, next: 0 }))?;
        Ok(Packet::Handle(Handle { id, handle }))
    }

    fn readdir(&mut self, id: u32, handle: &str) -> Result<Packet, Failure> {
        let d = match self.handles.get_mut(handle) {
            Some(OpenHandle::Dir(d)) => d,
            Some(OpenHandle::File(_)) => {
                return Err(fail(
                    StatusCode::Failure,
                    "That handle is a file, not a folder",
                ))
            }
            None => return Err(fail(StatusCode::Failure, "Unknown or closed handle")),
        };
        if d.next >= d.entries.len() {
            return Err(fail(StatusCode::Eof, "End of folder listing"));
        }
        let end = (d.next + DIR_PAGE).min(d.entries.len());
        let files = d.entries[d.next..end].to_vec();
        d.next = end;
        Ok(Packet::Name(Name { id, files }))
    }

    fn remove(&mut self, id: u32, path: &str) -> Result<Packet, Failure> {
        let p = self.ctx.jail.resolve_for_write(path).map_err(jail_fail)?;
        let meta = std::fs::symlink_metadata(&p.real).map_err(|e| io_fail(&p.virtual_path, e))?;
        if meta.is_dir() {
            return Err(fail(
                StatusCode::Failure,
                format!("{} is a folder; use rmdir", p.virtual_path),
            ));
        }
        std::fs::remove_file(&p.real).map_err(|e| io_fail(&p.virtual_path, e))?;
        self.ctx.in_progress.end(&p.virtual_path);
        Ok(ok(id))
    }

    fn mkdir(&mut self, id: u32, path: &str) -> Result<Packet, Failure> {
        let p = self.ctx.jail.resolve_for_write(path).map_err(jail_fail)?;
        std::fs::create_dir(&p.real).map_err(|e| io_fail(&p.virtual_path, e))?;
        Ok(ok(id))
    }

    fn rmdir(&mut self, id: u32, path: &str) -> Result<Packet, Failure> {
        let p = self.ctx.jail.resolve_for_write(path).map_err(jail_fail)?;
        std::fs::remove_dir(&p.real).map_err(|e| io_fail(&p.virtual_path, e))?;
        Ok(ok(id))
    }

    fn realpath(&mut self, id: u32, path: &str) -> Result<Packet, Failure> {
        let v = Jail::normalise(path).map_err(jail_fail)?;
        Ok(Packet::Name(Name {
            id,
            files: vec![File::dummy(v)],
        }))
    }

    /// RENAME (`overwrite = false`, SFTPv3: fails onto an existing name) and posix-rename.
    fn rename(
        &mut self,
        id: u32,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<Packet, Failure> {
        let src = self.ctx.jail.resolve_for_write(from).map_err(jail_fail)?;
        let dst = self.ctx.jail.resolve_for_write(to).map_err(jail_fail)?;
        let meta =
            std::fs::symlink_metadata(&src.real).map_err(|e| io_fail(&src.virtual_path, e))?;
        if overwrite {
            std::fs::rename(&src.real, &dst.real).map_err(|e| io_fail(&dst.virtual_path, e))?;
        } else {
            rename_noreplace(&src.real, &dst.real).map_err(|e| io_fail(&dst.virtual_path, e))?;
        }
        let incomplete = self.ctx.in_progress.is_incomplete(&src.virtual_path);
        if incomplete {
            // A half-written file keeps its "not finished" mark under its new name.
            self.ctx.in_progress.end(&src.virtual_path);
            self.ctx.in_progress.begin(&dst.virtual_path);
        } else {
            self.ctx.in_progress.end(&dst.virtual_path);
        }
        let still_open = self
            .handles
            .values()
            .any(|h| matches!(h, OpenHandle::File(f) if f.writable && f.path.real == src.real));
        if meta.is_file() && !incomplete && !still_open && !is_temp_name(dst.name()) {
            self.announce(&dst, meta.len(), FinishedBy::Rename);
        }
        Ok(ok(id))
    }

    fn extended(&mut self, id: u32, request: &str, data: &[u8]) -> Result<Packet, Failure> {
        let mut pos = 0;
        match request {
            "limits@openssh.com" => {
                let mut out = Vec::with_capacity(32);
                put_u64(&mut out, u64::from(MAX_PACKET));
                put_u64(&mut out, u64::from(MAX_READ));
                put_u64(&mut out, u64::from(MAX_WRITE));
                put_u64(&mut out, MAX_HANDLES as u64);
                Ok(Packet::ExtendedReply(ExtendedReply { id, data: out }))
            }
            "posix-rename@openssh.com" => {
                let from = take_str(data, &mut pos)?;
                let to = take_str(data, &mut pos)?;
                self.rename(id, &from, &to, true)
            }
            "statvfs@openssh.com" => {
                let path = take_str(data, &mut pos)?;
                let p = self.ctx.jail.resolve(&path).map_err(jail_fail)?;
                let out = statvfs(&p.real).map_err(|e| io_fail(&p.virtual_path, e))?;
                Ok(Packet::ExtendedReply(ExtendedReply { id, data: out }))
            }
            "fsync@openssh.com" => {
                let handle = take_str(data, &mut pos)?;
                let f = self.file_handle(&handle)?;
                f.file
                    .sync_all()
                    .map_err(|e| io_fail(&f.path.virtual_path, e))?;
                Ok(ok(id))
            }
            other => Err(fail(
                StatusCode::OpUnsupported,
                format!("The extension {other} is not supported"),
            )),
        }
    }

    /// The session ended: handles still open for writing were not finished; nothing is announced
    /// and their in-progress markers stay.
    pub fn end(&mut self) {
        for h in self.handles.values() {
            if let OpenHandle::File(f) = h {
                if f.writable {
                    tracing::warn!(tenant = %self.ctx.tenant, path = %f.path.virtual_path, "session ended during an upload; the file is left incomplete and will not be imported");
                }
            }
        }
        self.handles.clear();
    }
}

impl Drop for SftpSession {
    fn drop(&mut self) {
        self.end();
    }
}

fn packet_id(p: &Packet) -> u32 {
    match p {
        Packet::Open(x) => x.id,
        Packet::Close(x) => x.id,
        Packet::Read(x) => x.id,
        Packet::Write(x) => x.id,
        Packet::Lstat(x) => x.id,
        Packet::Fstat(x) => x.id,
        Packet::SetStat(x) => x.id,
        Packet::FSetStat(x) => x.id,
        Packet::OpenDir(x) => x.id,
        Packet::ReadDir(x) => x.id,
        Packet::Remove(x) => x.id,
        Packet::MkDir(x) => x.id,
        Packet::RmDir(x) => x.id,
        Packet::RealPath(x) => x.id,
        Packet::Stat(x) => x.id,
        Packet::Rename(x) => x.id,
        Packet::ReadLink(x) => x.id,
        Packet::Symlink(x) => x.id,
        Packet::Extended(x) => x.id,
        _ => 0,
    }
}
