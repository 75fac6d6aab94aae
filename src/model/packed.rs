//! The packed user record and the packed bucket: the one binary form of a stored user that
//! both the import engine (which plans on it without decoding) and the store (which keeps it)
//! read and write.
//!
//! Data enters as [`UserRec`] values (from the planner or a restore) and leaves as bytes
//! appended to a bucket blob; reading goes the other way through [`Cursor`]. A record starts
//! with a fixed header (status, flags, timestamps, the digest of the last imported row, the
//! password fingerprint) so that the planner can tell an unchanged user from the header alone,
//! without decoding the fields. Pure: no I/O; how a store keeps the blobs (sealed, compressed)
//! is the store's business.
//!
//! Record layout (little endian):
//! `version u8 | status u8 | flags u8 | created_at i64 | updated_at i64 | deleted_at i64 |
//!  row_digest [16] | pw_fp [16] | pw_hash (varint len + bytes) | field count varint |
//!  (name, value: varint len + bytes)*` — fields sorted by name; a name is one byte, the index
//! of a built-in field in [`FIELD_NAMES`] (append-only), or 0xFF followed by the name as text
//! (`custom.*`); list values are joined with [`LIST_SEP`](super::fields::LIST_SEP).
//!
//! Bucket layout: `(key: varint len + bytes, record: varint len + bytes)*`, sorted by key.
//! Which bucket a key belongs to is [`bucket_of`](super::bucket::bucket_of).

use super::fields::FIELD_NAMES;
use anyhow::{bail, Result};

/// Record format version written in the first byte.
const VERSION: u8 = 1;
/// Byte length of the fixed record header.
const HEADER_LEN: usize = 3 + 24 + 32;
/// Offset of the row digest inside a record.
const DIGEST_AT: usize = 27;

pub const STATUS_ACTIVE: u8 = 0;
pub const STATUS_INACTIVE: u8 = 1;
pub const STATUS_DELETED: u8 = 2;

/// The user was created or last updated by an import (so `on_missing` may act on it).
pub const FLAG_MANAGED: u8 = 1;
/// The user was deactivated or deleted by an import because it was missing from a file.
pub const FLAG_MISSING: u8 = 2;

/// A decoded user record (all fields owned).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRec {
    pub status: u8,
    pub flags: u8,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: i64,
    pub row_digest: [u8; 16],
    pub pw_fp: [u8; 16],
    pub pw_hash: String,
    /// (field name, value), sorted by name, names unique.
    pub fields: Vec<(String, String)>,
}

impl UserRec {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| self.fields[i].1.as_str())
    }

    /// Sets (Some) or removes (None) a field; returns true when the stored value changed.
    pub fn set(&mut self, name: &str, value: Option<&str>) -> bool {
        match (
            self.fields.binary_search_by(|(n, _)| n.as_str().cmp(name)),
            value,
        ) {
            (Ok(i), Some(v)) => {
                if self.fields[i].1 == v {
                    false
                } else {
                    self.fields[i].1 = v.to_string();
                    true
                }
            }
            (Ok(i), None) => {
                self.fields.remove(i);
                true
            }
            (Err(i), Some(v)) => {
                self.fields.insert(i, (name.to_string(), v.to_string()));
                true
            }
            (Err(_), None) => false,
        }
    }

    /// Writes everything before the fields (the fixed header and the password hash).
    pub fn encode_head(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.push(self.status);
        out.push(self.flags);
        out.extend_from_slice(&self.created_at.to_le_bytes());
        out.extend_from_slice(&self.updated_at.to_le_bytes());
        out.extend_from_slice(&self.deleted_at.to_le_bytes());
        out.extend_from_slice(&self.row_digest);
        out.extend_from_slice(&self.pw_fp);
        put_bytes(out, self.pw_hash.as_bytes());
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.encode_head(out);
        put_varint(out, self.fields.len() as u64);
        for (n, v) in &self.fields {
            put_name(out, n);
            put_bytes(out, v.as_bytes());
        }
    }

    pub fn decode(buf: &[u8]) -> Result<UserRec> {
        let mut rec = head_of(buf)?;
        let mut r = Cursor {
            buf,
            at: HEADER_LEN,
        };
        rec.pw_hash = r.string()?;
        let n = r.varint()?;
        if n > buf.len() as u64 {
            bail!("a stored user record is damaged (field count)");
        }
        rec.fields.reserve(n as usize);
        for _ in 0..n {
            let name = r.name()?.to_string();
            let value = r.string()?;
            rec.fields.push((name, value));
        }
        Ok(rec)
    }
}

/// The bytes of an encoded record after its fixed header: the password hash, then every field's
/// name and value (with their lengths). Lets a reader look for text without decoding (a
/// store's search that scans records).
pub fn text_part(rec: &[u8]) -> &[u8] {
    rec.get(HEADER_LEN..).unwrap_or(&[])
}

/// The fixed header of an encoded record (status, flags, times, digests) as a [`UserRec`]
/// with no password hash and no fields: what a filter on `active` or `meta.*` reads, without
/// decoding (or allocating) the rest.
pub fn head_of(rec: &[u8]) -> Result<UserRec> {
    let Some(head) = rec.get(..HEADER_LEN).filter(|h| h[0] == VERSION) else {
        bail!("a stored user record is damaged (bad header)");
    };
    let i64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[at..at + 8]);
        i64::from_le_bytes(b)
    };
    let mut out = UserRec {
        status: head[1],
        flags: head[2],
        created_at: i64_at(3),
        updated_at: i64_at(11),
        deleted_at: i64_at(19),
        ..UserRec::default()
    };
    out.row_digest
        .copy_from_slice(&head[DIGEST_AT..DIGEST_AT + 16]);
    out.pw_fp
        .copy_from_slice(&head[DIGEST_AT + 16..DIGEST_AT + 32]);
    Ok(out)
}

/// Status byte of an encoded record (without decoding it).
pub fn status_of(rec: &[u8]) -> u8 {
    rec.get(1).copied().unwrap_or(STATUS_INACTIVE)
}

/// Flags byte of an encoded record.
pub fn flags_of(rec: &[u8]) -> u8 {
    rec.get(2).copied().unwrap_or(0)
}

/// Row digest of an encoded record.
pub fn digest_of(rec: &[u8]) -> Option<&[u8]> {
    rec.get(DIGEST_AT..DIGEST_AT + 16)
}

/// One field of an encoded record, found without decoding the others.
pub fn field_of<'a>(rec: &'a [u8], name: &str) -> Result<Option<&'a str>> {
    let (mut r, n) = Cursor::at_fields(rec)?;
    let want = name_id(name);
    for _ in 0..n {
        let tag = r.byte()?;
        let matches = if tag == CUSTOM_NAME {
            r.bytes()? == name.as_bytes()
        } else {
            Some(tag) == want
        };
        let v = r.bytes()?;
        if matches {
            return Ok(std::str::from_utf8(v).ok());
        }
    }
    Ok(None)
}

/// Calls `visit` with each field of an encoded record (name, value bytes) in stored order,
/// until it gives false; allocates nothing. An error when the record is damaged.
pub fn fields_of<'a>(rec: &'a [u8], mut visit: impl FnMut(&str, &'a [u8]) -> bool) -> Result<()> {
    let (mut r, n) = Cursor::at_fields(rec)?;
    for _ in 0..n {
        let name = r.name()?;
        if !visit(name, r.bytes()?) {
            break;
        }
    }
    Ok(())
}

/// Iterates the (key, record) pairs of a bucket blob without copying.
pub fn bucket_entries(blob: &[u8]) -> Result<Vec<(&[u8], &[u8])>> {
    let mut r = Cursor::new(blob);
    let mut out = Vec::new();
    while !r.at_end() {
        let k = r.bytes()?;
        let v = r.bytes()?;
        out.push((k, v));
    }
    Ok(out)
}

/// Calls `f(key, old record, new record)` for every user whose record differs between the
/// packed bucket `old` and `new` (None: empty), both sorted by key; a record absent on one
/// side is None there. Records whose bytes are equal are not looked at.
pub fn for_each_changed(
    old: Option<&[u8]>,
    new: Option<&[u8]>,
    mut f: impl FnMut(&[u8], Option<&[u8]>, Option<&[u8]>) -> Result<()>,
) -> Result<()> {
    let old = old.map(bucket_entries).transpose()?.unwrap_or_default();
    let new = new.map(bucket_entries).transpose()?.unwrap_or_default();
    let (mut i, mut j) = (0, 0);
    loop {
        match (old.get(i), new.get(j)) {
            (None, None) => return Ok(()),
            (Some(&(k, o)), None) => {
                f(k, Some(o), None)?;
                i += 1;
            }
            (None, Some(&(k, n))) => {
                f(k, None, Some(n))?;
                j += 1;
            }
            (Some(&(ko, o)), Some(&(kn, n))) => match ko.cmp(kn) {
                std::cmp::Ordering::Less => {
                    f(ko, Some(o), None)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    f(kn, None, Some(n))?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    if o != n {
                        f(ko, Some(o), Some(n))?;
                    }
                    i += 1;
                    j += 1;
                }
            },
        }
    }
}

/// Appends one (key, record) pair to a bucket blob under construction.
pub fn bucket_push(out: &mut Vec<u8>, key: &[u8], rec: &[u8]) {
    put_bytes(out, key);
    put_bytes(out, rec);
}

/// Tag of a field name written as text (`custom.*`); other tags index [`FIELD_NAMES`].
const CUSTOM_NAME: u8 = 0xFF;

/// The one-byte id of a built-in field name.
fn name_id(name: &str) -> Option<u8> {
    FIELD_NAMES.iter().position(|n| *n == name).map(|i| i as u8)
}

/// Writes a field name: its id, or the tag and the text.
pub fn put_name(out: &mut Vec<u8>, name: &str) {
    match name_id(name) {
        Some(id) => out.push(id),
        None => {
            out.push(CUSTOM_NAME);
            put_bytes(out, name.as_bytes());
        }
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Bytes [`put_varint`] writes for `v`.
#[inline]
pub fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over an encoded buffer; every read is bounds-checked.
pub struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, at: 0 }
    }

    /// A cursor at the first field of encoded record `rec` (past the header and the password
    /// hash), and the number of fields.
    fn at_fields(rec: &'a [u8]) -> Result<(Cursor<'a>, u64)> {
        let mut r = Cursor::new(rec);
        r.take(HEADER_LEN)?;
        r.bytes()?;
        let n = r.varint()?;
        Ok((r, n))
    }

    /// Bytes read so far.
    pub fn pos(&self) -> usize {
        self.at
    }
    pub fn at_end(&self) -> bool {
        self.at >= self.buf.len()
    }

    pub fn byte(&mut self) -> Result<u8> {
        let b = self.take(1)?;
        Ok(b[0])
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.buf.len());
        let Some(end) = end else {
            bail!("stored data is damaged (length out of range)");
        };
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    pub fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.at) else {
                bail!("stored data is damaged (truncated number)");
            };
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("stored data is damaged (number too long)")
    }

    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.varint()? as usize;
        self.take(n)
    }

    /// Reads a field name written by [`put_name`].
    pub fn name(&mut self) -> Result<&'a str> {
        let tag = self.byte()?;
        if tag == CUSTOM_NAME {
            return match std::str::from_utf8(self.bytes()?) {
                Ok(name) => Ok(name),
                Err(_) => bail!("stored data is damaged (not UTF-8)"),
            };
        }
        match FIELD_NAMES.get(tag as usize) {
            Some(n) => Ok(n),
            None => bail!("stored data is damaged (unknown field id {tag})"),
        }
    }

    pub fn string(&mut self) -> Result<String> {
        let b = self.bytes()?;
        Ok(std::str::from_utf8(b)
            .map_err(|_| anyhow::anyhow!("stored data is damaged (not UTF-8)"))?
            .to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let mut r = UserRec {
            status: STATUS_INACTIVE,
            flags: FLAG_MANAGED,
            created_at: 5,
            updated_at: 7,
            pw_hash: "$argon2id$x".into(),
            ..Default::default()
        };
        r.set("email", Some("a@b.example"));
        r.set("custom.x", Some("1"));
        let mut buf = Vec::new();
        r.encode_into(&mut buf);
        assert_eq!(UserRec::decode(&buf).ok(), Some(r.clone()));
        assert!(UserRec::decode(&buf[..buf.len() - 1]).is_err());
        let head = head_of(&buf).unwrap();
        assert_eq!(
            head,
            UserRec {
                pw_hash: String::new(),
                fields: Vec::new(),
                ..r
            }
        );
        assert!(head_of(&buf[..HEADER_LEN - 1]).is_err());
    }

    #[test]
    fn bucket_round_trip() {
        let mut b = Vec::new();
        bucket_push(&mut b, b"k1", b"v1");
        bucket_push(&mut b, b"k2", b"");
        let e = bucket_entries(&b).unwrap_or_default();
        assert_eq!(e, vec![(&b"k1"[..], &b"v1"[..]), (&b"k2"[..], &b""[..])]);
        assert!(bucket_entries(&b[..3]).is_err());
    }
}
