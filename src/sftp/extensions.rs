//! The SFTP extended requests Roster answers: `limits@openssh.com`, `posix-rename@openssh.com`,
//! `statvfs@openssh.com`, `fsync@openssh.com`, `copy-data` (OpenSSH 9's `cp`), and in
//! `roster sftp-server` mode `hardlink@openssh.com`.
//!
//! Request bodies enter as raw bytes and are parsed here; a truncated one gets `BAD_MESSAGE`.
//! `copy-data` copies between two open handles of the session through the same WRITE path as an
//! upload, so `max_upload_bytes`, APPEND and the upload events apply to it unchanged, and a copy
//! that fails half-way breaks the target's upload like a failed WRITE (as does a failed
//! `fsync@openssh.com`: written data may be lost).

use super::fs::{put_u64, statvfs};
use super::requests::{Failure, SftpSession, MAX_PACKET, MAX_READ, MAX_WRITE};
use super::status::{fail, io_fail, jail_fail, ok};
use russh_sftp::protocol::{ExtendedReply, Packet, StatusCode};
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

/// Bytes moved per step of a `copy-data` request.
const COPY_STEP: usize = 256 * 1024;

/// Reads one SSH string (u32 length + bytes) from `data` at `*pos`.
fn take_string<'a>(data: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len_bytes = data.get(*pos..*pos + 4)?;
    let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
    let s = data.get(*pos + 4..(*pos + 4).checked_add(len)?)?;
    *pos += 4 + len;
    Some(s)
}

fn truncated() -> Failure {
    fail(StatusCode::BadMessage, "The request is truncated")
}

fn take_str(data: &[u8], pos: &mut usize) -> Result<String, Failure> {
    let raw = take_string(data, pos).ok_or_else(truncated)?;
    String::from_utf8(raw.to_vec()).map_err(|_| {
        fail(
            StatusCode::BadMessage,
            "A path in the request is not valid UTF-8",
        )
    })
}

fn take_u64(data: &[u8], pos: &mut usize) -> Result<u64, Failure> {
    let b = data.get(*pos..*pos + 8).ok_or_else(truncated)?;
    *pos += 8;
    let mut v = [0u8; 8];
    v.copy_from_slice(b);
    Ok(u64::from_be_bytes(v))
}

impl SftpSession {
    pub(super) fn extended(
        &mut self,
        id: u32,
        request: &str,
        data: &[u8],
    ) -> Result<Packet, Failure> {
        let mut pos = 0;
        match request {
            "limits@openssh.com" => {
                let mut out = Vec::with_capacity(32);
                put_u64(&mut out, u64::from(MAX_PACKET));
                put_u64(&mut out, u64::from(MAX_READ));
                put_u64(&mut out, u64::from(MAX_WRITE));
                put_u64(&mut out, self.max_handles() as u64);
                Ok(Packet::ExtendedReply(ExtendedReply { id, data: out }))
            }
            "posix-rename@openssh.com" => {
                let from = take_str(data, &mut pos)?;
                let to = take_str(data, &mut pos)?;
                self.rename(id, &from, &to, true)
            }
            "hardlink@openssh.com" => {
                let from = take_str(data, &mut pos)?;
                let to = take_str(data, &mut pos)?;
                self.hardlink(id, &from, &to)
            }
            "statvfs@openssh.com" => {
                let path = take_str(data, &mut pos)?;
                let p = self.ctx.jail.resolve(&path).map_err(jail_fail)?;
                // O_PATH without following a final link: a planted link is not followed.
                let out = self
                    .ctx
                    .jail
                    .open_nofollow(&p)
                    .and_then(|fd| statvfs(fd.as_fd()))
                    .map_err(|e| io_fail(&p.virtual_path, e))?;
                Ok(Packet::ExtendedReply(ExtendedReply { id, data: out }))
            }
            "fsync@openssh.com" => {
                let handle = take_str(data, &mut pos)?;
                let f = self.file_handle(&handle)?;
                match f.file.sync_all() {
                    Ok(()) => Ok(ok(id)),
                    // Written data was lost: an upload through this handle is broken.
                    Err(e) if f.writable => Err(self.write_failed(&handle, &e)),
                    Err(e) => Err(io_fail(&f.path.virtual_path, e)),
                }
            }
            "copy-data" => self.copy_data(id, data),
            other => Err(fail(
                StatusCode::OpUnsupported,
                format!("The extension {other} is not supported"),
            )),
        }
    }

    /// `copy-data`: string read handle, u64 read offset, u64 length (0: to the end), string write
    /// handle, u64 write offset. Every byte goes through [`SftpSession::write`]; a read that fails
    /// after part of the copy was written breaks the target's upload.
    fn copy_data(&mut self, id: u32, data: &[u8]) -> Result<Packet, Failure> {
        let mut pos = 0;
        let from = take_str(data, &mut pos)?;
        let mut read_at = take_u64(data, &mut pos)?;
        let length = take_u64(data, &mut pos)?;
        let to = take_str(data, &mut pos)?;
        let mut write_at = take_u64(data, &mut pos)?;
        let src = self.file_handle(&from)?;
        let readable = src.readable;
        let size = src.file.metadata().map(|m| m.len());
        let size = size.map_err(|e| io_fail(&src.path.virtual_path, e))?;
        if !readable {
            return Err(fail(
                StatusCode::PermissionDenied,
                "The source of the copy was not opened for reading",
            ));
        }
        if !self.file_handle(&to)?.writable {
            return Err(fail(
                StatusCode::PermissionDenied,
                "The target of the copy was not opened for writing",
            ));
        }
        let read_end = if length == 0 {
            size
        } else {
            read_at.saturating_add(length)
        };
        if from == to
            && read_at < write_at.saturating_add(read_end.saturating_sub(read_at))
            && write_at < read_end
        {
            return Err(fail(
                StatusCode::Failure,
                "The copy's source and target overlap in the same file",
            ));
        }
        let mut buf = vec![0u8; COPY_STEP];
        let mut copied = false;
        while read_at < read_end {
            let want = usize::try_from(read_end - read_at).map_or(COPY_STEP, |n| n.min(COPY_STEP));
            let src = self.file_handle(&from)?;
            let n = match src.file.read_at(&mut buf[..want], read_at) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // Part of the copy is in the target already: that upload is broken.
                Err(e) if copied => return Err(self.write_failed(&to, &e)),
                Err(e) => return Err(io_fail(&src.path.virtual_path, e)),
            };
            self.write(id, &to, write_at, &buf[..n])?;
            copied = true;
            read_at += n as u64;
            write_at += n as u64;
        }
        if length != 0 && read_at < read_end {
            return Err(fail(
                StatusCode::Eof,
                "The source ended before the requested length was copied",
            ));
        }
        Ok(ok(id))
    }
}
