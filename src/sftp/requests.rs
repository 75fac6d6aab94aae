//! The SFTP request handler: one [`SftpSession`] per SFTP channel, answering each request
//! against the tenant's [`Jail`].
//!
//! Requests enter decoded (from `wire`) and leave as reply packets. Every path is opened through
//! the jail (relative to a descriptor of the home, no symlinks); every open handle is counted
//! per session and per tenant (see `handles`); a file is open for writing through one handle at
//! a time (a second write-OPEN is refused, see `uploads`); every way a file can grow (WRITE,
//! APPEND, SETSTAT/FSETSTAT size, copy-data) stops at `max_upload_bytes`. Renames, removals,
//! folders and links are in `changes`, the extensions in `extensions`. File I/O uses plain
//! blocking calls: most are one page-cache operation of at most ~1 MiB, made on the session's
//! task; the wire loop answers those that can take long (SETSTAT/FSETSTAT, OPEN with TRUNC,
//! copy-data, fsync) off the runtime's workers (`wire::answer`).
//! Uploads are announced through the [`UploadSink`] on CLOSE of a handle that wrote, or on a
//! rename onto a name; the upload side of a session (WRITE, CLOSE, the end of a session, the size
//! checks) is in `upload`.

mod upload;

use super::dirstream::{DirStream, ShownReadOnly};
use super::events::UploadSink;
use super::fs::{apply_attrs, attrs_of, Stat};
use super::handles::{FileHandle, HandleRefusal, HandleTicket, Held, OpenHandle, TenantHandles};
use super::jail::{Jail, JailError};
pub use super::status::Failure;
use super::status::{being_written, fail, io_fail, jail_fail, ok, status};
use super::uploads::{InProgress, WriteOpenError};
use russh_sftp::protocol::{
    Attrs, Data, FileAttributes, Handle, Name, OpenFlags, Packet, StatusCode, Version,
};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Largest request packet accepted (a 1 MiB write plus headers). Larger ones are skipped whole
/// and answered with an error, so the session stays in sync.
pub const MAX_PACKET: u32 = 1024 * 1024 + 1024;
/// Largest READ reply payload (what OpenSSH expects near 255 KiB).
pub const MAX_READ: u32 = 261_120;
/// Largest WRITE payload accepted.
pub const MAX_WRITE: u32 = 1024 * 1024;
/// Handles one session may hold open at once (the tenant's budget may be smaller).
pub const MAX_HANDLES: usize = 1024;

/// Everything an SFTP session needs to know about who it serves.
pub struct SessionContext {
    pub tenant: String,
    pub jail: Jail,
    pub max_upload_bytes: u64,
    /// Free bytes uploads leave on the volume (`min_free_bytes`; 0: no reserve).
    pub min_free_bytes: u64,
    /// The tenant's share of the disk (`max_tenant_bytes`, `max_tenant_entries`).
    pub usage: super::usage::TenantUsage,
    pub sink: Arc<dyn UploadSink>,
    pub in_progress: InProgress,
    /// The tenant's share of the server's handle budget (`max_handles_per_tenant`).
    pub handles: TenantHandles,
}

/// One SFTP session's state: its open handles.
pub struct SftpSession {
    pub(super) ctx: SessionContext,
    pub(super) handles: HashMap<String, Held>,
    /// Handles whose upload broke because a write failed, with the cause in words.
    failed: HashMap<String, String>,
    next_handle: u64,
}

impl SftpSession {
    pub fn new(ctx: SessionContext) -> SftpSession {
        SftpSession {
            ctx,
            handles: HashMap::new(),
            failed: HashMap::new(),
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
            Packet::ReadLink(r) => self.readlink(id, &r.path),
            // OpenSSH sends the link's target first and the new link's path second (the reverse
            // of the draft, whose names russh-sftp uses): `linkpath` here is the target.
            Packet::Symlink(s) => self.symlink(id, &s.linkpath, &s.targetpath),
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
            ("copy-data", "1"),
        ] {
            v.extensions.insert(name.into(), ver.into());
        }
        if self.ctx.jail.allows_links() {
            v.extensions
                .insert("hardlink@openssh.com".into(), "1".into());
        }
        Packet::Version(v)
    }

    /// Most handles this session may hold: the per-session cap or the tenant's, the smaller.
    pub(super) fn max_handles(&self) -> usize {
        MAX_HANDLES.min(self.ctx.handles.max())
    }

    /// A place for one more handle, taken before anything is opened or created.
    fn ticket(&self) -> Result<HandleTicket, Failure> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(fail(
                StatusCode::Failure,
                format!("Too many open files (at most {MAX_HANDLES} per session); close some and try again"),
            ));
        }
        self.ctx.handles.take().map_err(|why| {
            let sentence = match why {
                HandleRefusal::Tenant => {
                    tracing::warn!(tenant = %self.ctx.tenant, max = self.ctx.handles.max(), "open refused: tenant handle limit");
                    format!(
                        "Too many open files for {} (at most {} across all sessions); close some and try again",
                        self.ctx.tenant,
                        self.ctx.handles.max()
                    )
                }
                HandleRefusal::Server => {
                    tracing::warn!(tenant = %self.ctx.tenant, max = self.ctx.handles.server_max(), "open refused: the server's handle limit");
                    "The server has too many open files right now; close some and try again later"
                        .to_string()
                }
            };
            fail(StatusCode::Failure, sentence)
        })
    }

    fn insert(&mut self, handle: OpenHandle, ticket: HandleTicket) -> String {
        let name = self.next_handle.to_string();
        self.next_handle += 1;
        self.handles.insert(
            name.clone(),
            Held {
                handle,
                _ticket: ticket,
            },
        );
        name
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
        let readable = flags.contains(OpenFlags::READ) || !changes;
        let mut oflags = match (readable, changes) {
            (true, true) => libc::O_RDWR,
            (false, true) => libc::O_WRONLY,
            _ => libc::O_RDONLY,
        };
        // Never block on a FIFO planted in the home; only regular files are served.
        oflags |= libc::O_NONBLOCK;
        if flags.contains(OpenFlags::APPEND) {
            oflags |= libc::O_APPEND;
        }
        if flags.contains(OpenFlags::CREATE) {
            oflags |= libc::O_CREAT;
            if flags.contains(OpenFlags::EXCLUDE) {
                oflags |= libc::O_EXCL;
            }
        }
        if flags.contains(OpenFlags::CREATE) && self.ctx.usage.counts_names() && !self.exists(&path)
        {
            self.room_for_a_name(&path)?;
        }
        // TRUNC is done once `uploads` has checked that no other handle writes the file and
        // registered this one, with its lock released (`InProgress::open_for_write`).
        let truncate = flags.contains(OpenFlags::TRUNCATE);
        let ticket = self.ticket()?;
        let vpath = path.virtual_path.clone();
        let open = || {
            // 0600: an upload holds initial passwords in plaintext (review s30, F2).
            let fd = self.ctx.jail.open(&path, oflags, 0o600)?;
            let st = Stat::of_fd(fd.as_fd())?;
            if st.is_dir() {
                return Err(std::io::Error::from(ErrorKind::IsADirectory));
            }
            if !st.is_file() {
                let what = "is not a regular file, which Roster does not serve";
                return Err(std::io::Error::new(ErrorKind::InvalidInput, what));
            }
            Ok(((std::fs::File::from(fd), st.size), st.id))
        };
        // A handle that may write is registered (and its file marked unfinished) before the
        // OPEN is answered, so a crash mid-upload leaves the mark (`uploads`).
        let opened = if changes {
            // Only a file with bytes is truncated: on ext4 a truncate to 0 marks the file to be
            // flushed when it is closed (`auto_da_alloc`), which made the CLOSE of every new
            // upload wait for its data to reach the disk (uploads about 12 % slower). O_TRUNC
            // on a file with bytes did the same before, so that case is unchanged.
            let start = |(file, size): &(std::fs::File, u64)| {
                if truncate && *size > 0 {
                    file.set_len(0)
                } else {
                    Ok(())
                }
            };
            self.ctx.in_progress.open_for_write(&vpath, open, start)
        } else {
            open().map_err(WriteOpenError::Io)
        };
        let ((file, size), file_id) = opened.map_err(|e| self.open_failed(&vpath, e))?;
        let size = if truncate { 0 } else { size };
        self.ctx.usage.opened(file_id);
        let handle = self.insert(
            OpenHandle::File(FileHandle {
                file,
                file_id,
                path,
                readable,
                writable: changes,
                append: flags.contains(OpenFlags::APPEND),
                wrote: flags.contains(OpenFlags::TRUNCATE),
                size,
                broken: false,
                space_left: 0,
                space_held: 0,
            }),
            ticket,
        );
        Ok(Packet::Handle(Handle { id, handle }))
    }

    /// The answer to an OPEN that failed: an I/O error, or a file another handle writes.
    fn open_failed(&self, vpath: &str, e: WriteOpenError) -> Failure {
        let id = match e {
            WriteOpenError::Io(e) => return io_fail(vpath, e),
            WriteOpenError::BeingWritten(id) => id,
        };
        let here = self.handles.values().any(|h| match &h.handle {
            OpenHandle::File(f) => f.writable && f.file_id == id,
            OpenHandle::Dir(_) => false,
        });
        tracing::info!(tenant = %self.ctx.tenant, path = %vpath, here, "write-open refused: another handle is writing the file");
        being_written(vpath, here)
    }

    pub(super) fn file_handle(&mut self, handle: &str) -> Result<&mut FileHandle, Failure> {
        match self.handles.get_mut(handle).map(|h| &mut h.handle) {
            Some(OpenHandle::File(f)) => Ok(f),
            Some(OpenHandle::Dir(_)) => Err(fail(
                StatusCode::Failure,
                "That handle is a folder, not a file",
            )),
            None => Err(fail(StatusCode::Failure, "Unknown or closed handle")),
        }
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

    fn stat(&mut self, id: u32, path: &str, follow: bool) -> Result<Packet, Failure> {
        let p = self.ctx.jail.resolve(path).map_err(jail_fail)?;
        let opened = if follow {
            self.ctx.jail.open(&p, libc::O_PATH, 0)
        } else {
            self.ctx.jail.open_nofollow(&p)
        };
        let st = opened
            .and_then(|fd| Stat::of_fd(fd.as_fd()))
            .map_err(|e| io_fail(&p.virtual_path, e))?;
        if follow && st.is_symlink() {
            return Err(jail_fail(JailError::Symlink(p.virtual_path)));
        }
        let st = match self.ctx.jail.shows_read_only(&p.virtual_path) {
            true => st.read_only(),
            false => st,
        };
        Ok(Packet::Attrs(Attrs {
            id,
            attrs: attrs_of(&st),
        }))
    }

    fn fstat(&mut self, id: u32, handle: &str) -> Result<Packet, Failure> {
        let f = self.file_handle(handle)?;
        let st = Stat::of_fd(f.file.as_fd()).map_err(|e| io_fail(&f.path.virtual_path, e))?;
        let path = f.path.virtual_path.clone();
        let st = match self.ctx.jail.shows_read_only(&path) {
            true => st.read_only(),
            false => st,
        };
        Ok(Packet::Attrs(Attrs {
            id,
            attrs: attrs_of(&st),
        }))
    }

    /// SETSTAT on a path. One with a size changes the file as a write does (`set_size_at`).
    fn setstat(&mut self, id: u32, path: &str, attrs: &FileAttributes) -> Result<Packet, Failure> {
        let p = self.ctx.jail.resolve_for_write(path).map_err(jail_fail)?;
        if attrs.size.is_some() {
            return self.set_size_at(id, &p, attrs);
        }
        let jail = &self.ctx.jail;
        let file = match jail.open(&p, libc::O_WRONLY | libc::O_NONBLOCK, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                jail.open(&p, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            }
            other => other,
        }
        .map(std::fs::File::from)
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
        let vpath = f.path.virtual_path.clone();
        self.check_size(attrs, &vpath)?;
        let f = self.file_handle(handle)?;
        apply_attrs(&f.file, attrs, &vpath)?;
        if let Some(size) = attrs.size {
            // A new size changes what the file holds: its CLOSE finishes the upload as after a
            // WRITE (review of 2026-12-03: a file emptied this way was never announced).
            f.size = size;
            f.wrote = true;
        }
        Ok(ok(id))
    }

    fn opendir(&mut self, id: u32, path: &str) -> Result<Packet, Failure> {
        let p = self.ctx.jail.resolve(path).map_err(jail_fail)?;
        let ticket = self.ticket()?;
        let dir = self
            .ctx
            .jail
            .open(&p, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(|e| io_fail(&p.virtual_path, e))?;
        let read_only = if self.ctx.jail.shows_read_only(&p.virtual_path) {
            ShownReadOnly::Everything
        } else if p.is_root() {
            ShownReadOnly::ArchiveFolders
        } else {
            ShownReadOnly::Nothing
        };
        let handle = self.insert(OpenHandle::Dir(DirStream::new(dir, read_only)), ticket);
        Ok(Packet::Handle(Handle { id, handle }))
    }

    fn readdir(&mut self, id: u32, handle: &str) -> Result<Packet, Failure> {
        let owner = self.ctx.tenant.clone();
        let d = match self.handles.get_mut(handle).map(|h| &mut h.handle) {
            Some(OpenHandle::Dir(d)) => d,
            Some(OpenHandle::File(_)) => {
                return Err(fail(
                    StatusCode::Failure,
                    "That handle is a file, not a folder",
                ))
            }
            None => return Err(fail(StatusCode::Failure, "Unknown or closed handle")),
        };
        match d.next_page(&owner) {
            Ok(Some(files)) => Ok(Packet::Name(Name { id, files })),
            Ok(None) => Err(fail(StatusCode::Eof, "End of folder listing")),
            Err(e) => Err(io_fail("the folder", e)),
        }
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
