//! Folder listings streamed in bounded pages: an open folder handle holds one descriptor of the
//! folder and nothing else; each READDIR reads the next batch of names from the kernel
//! (`getdents64` into a [`READ_BYTES`] buffer), describes each with `fstatat` on that
//! descriptor (links are described, never followed), and returns them.
//!
//! So memory per open listing does not depend on the folder's size, and one page always fits an
//! SFTP packet: a 4 KiB batch holds at most ~170 names (24-byte records), each entry of the reply
//! is at most ~600 bytes (a 255-byte name twice plus attributes), far below 256 KiB.

use super::fs::{listing_entry, Stat};
use russh_sftp::protocol::File;
use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Bytes of directory records read from the kernel per READDIR.
const READ_BYTES: usize = 4096;

/// Which entries of a listing are shown without write permission (see `Stat::read_only`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShownReadOnly {
    /// None of them.
    Nothing,
    /// The archive folders (`processed`, `errors`, `bak`): a listing of the home.
    ArchiveFolders,
    /// Every entry but `..`: a listing inside an archive folder or in a read-only jail.
    Everything,
}

/// An open folder listing.
pub struct DirStream {
    dir: OwnedFd,
    done: bool,
    read_only: ShownReadOnly,
}

impl DirStream {
    /// Lists the folder open (`O_RDONLY | O_DIRECTORY`) as `dir`.
    pub fn new(dir: OwnedFd, read_only: ShownReadOnly) -> DirStream {
        DirStream {
            dir,
            done: false,
            read_only,
        }
    }

    /// The next page of entries, or `None` at the end of the folder. Names that are not UTF-8
    /// (not representable in SFTPv3) and entries removed since they were read are skipped.
    pub fn next_page(&mut self, owner: &str) -> std::io::Result<Option<Vec<File>>> {
        let mut buf = vec![0u8; READ_BYTES];
        while !self.done {
            let n = self.read_batch(&mut buf)?;
            if n == 0 {
                self.done = true;
                break;
            }
            let page = self.describe(&buf[..n], owner);
            if !page.is_empty() {
                return Ok(Some(page));
            }
        }
        Ok(None)
    }

    fn read_batch(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            // SAFETY: `buf` is writable for its full length; the descriptor is open.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    self.dir.as_raw_fd(),
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Turns a batch of `linux_dirent64` records into listing entries.
    fn describe(&self, records: &[u8], owner: &str) -> Vec<File> {
        let mut page = Vec::new();
        let mut at = 0;
        // Record: u64 inode, i64 offset, u16 record length, u8 type, NUL-terminated name.
        while let Some(head) = records.get(at..at + 19) {
            let reclen = usize::from(u16::from_ne_bytes([head[16], head[17]]));
            let Some(record) = records.get(at..at + reclen).filter(|_| reclen > 19) else {
                break;
            };
            at += reclen;
            let Ok(name) = CStr::from_bytes_until_nul(&record[19..]) else {
                continue;
            };
            let Ok(text) = name.to_str() else {
                continue; // not representable in SFTPv3 UTF-8 names
            };
            // `..` of the root would describe the folder above the home: show the folder itself.
            let described = if text == ".." { c"." } else { name };
            let Ok(st) = Stat::at(self.dir.as_fd(), described) else {
                continue; // removed since the batch was read
            };
            let shown_read_only = match self.read_only {
                ShownReadOnly::Nothing => false,
                ShownReadOnly::ArchiveFolders => crate::sftp::jail::ARCHIVE_DIRS.contains(&text),
                ShownReadOnly::Everything => text != "..",
            };
            let st = if shown_read_only { st.read_only() } else { st };
            page.push(listing_entry(text.to_string(), &st, owner));
        }
        page
    }
}
