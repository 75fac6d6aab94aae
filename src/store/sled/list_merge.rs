//! How the changes a commit makes to one user list meet a slot's entries (see `lists`): the
//! changes sorted compactly ([`SortedOps`]), and a slot's sorted entries with them made, as an
//! iterator ([`Merged`]), so that a slot that receives a million entries (a rebuild) is never
//! a vector of them. Bytes in, bytes out; nothing here touches sled.

use crate::model::packed::Cursor;
use anyhow::{bail, Result};

/// A commit's changes to one list, sorted by entry: each is 8 bytes (which buffer, where, how
/// long, add or remove) instead of a 24-byte reference, since a rebuild sorts a million.
pub(super) struct SortedOps<'a> {
    parts: &'a [Vec<u8>],
    /// part (7 bits) | add (1 bit) | offset (32 bits) | length (24 bits)
    pub ops: Vec<u64>,
}

impl<'a> SortedOps<'a> {
    pub(super) fn of(parts: &'a [Vec<u8>]) -> Result<SortedOps<'a>> {
        let mut ops = Vec::new();
        for (p, part) in parts.iter().enumerate() {
            let mut c = Cursor::new(part);
            while !c.at_end() {
                let op = c.byte()?;
                let entry = c.bytes()?;
                let (at, len) = (c.pos() - entry.len(), entry.len());
                if p >= 1 << 7 || at >= 1 << 32 || len >= 1 << 24 {
                    bail!("a list change is too large");
                }
                ops.push(
                    (p as u64) << 57 | u64::from(op == 1) << 56 | (at as u64) << 24 | len as u64,
                );
            }
        }
        ops.sort_unstable_by(|a, b| unpacked(parts, *a).cmp(&unpacked(parts, *b)));
        Ok(SortedOps { parts, ops })
    }

    /// The entry and op (1: add) of a packed op.
    pub(super) fn get(&self, op: u64) -> (&'a [u8], u8) {
        unpacked(self.parts, op)
    }

    /// The `i`-th op in order: its entry, and 1 to add or 0 to remove.
    fn at(&self, i: usize) -> Option<(&'a [u8], u8)> {
        self.ops.get(i).map(|op| self.get(*op))
    }
}

/// The entry and op (1: add) that the packed op `op` names in `parts`.
fn unpacked(parts: &[Vec<u8>], op: u64) -> (&[u8], u8) {
    let part = (op >> 57) as usize;
    let at = ((op >> 24) & 0xFFFF_FFFF) as usize;
    let len = (op & 0xFF_FFFF) as usize;
    let entry = parts
        .get(part)
        .and_then(|p| p.get(at..at + len))
        .unwrap_or_default();
    (entry, ((op >> 56) & 1) as u8)
}

/// Sorted `have` with the sorted `ops` (entry, op) made, in order: op 1 adds an entry, op 0
/// removes it. An iterator, so that a slot of a million entries is never a vector of them.
pub(super) struct Merged<'h, 'a> {
    pub have: &'h [&'a [u8]],
    pub ops: &'h SortedOps<'a>,
    /// The next op, and the end of this slot's ops.
    pub next: usize,
    pub end: usize,
}

impl<'a> Iterator for Merged<'_, 'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let op = if self.next < self.end {
                self.ops.at(self.next)
            } else {
                None
            };
            match (self.have.first(), op) {
                (Some(&e), Some((o, op))) if e == o => {
                    self.have = &self.have[1..];
                    self.next += 1;
                    if op == 1 {
                        return Some(e);
                    }
                }
                (Some(&e), Some((o, _))) if e < o => {
                    self.have = &self.have[1..];
                    return Some(e);
                }
                (Some(&e), None) => {
                    self.have = &self.have[1..];
                    return Some(e);
                }
                (_, Some((o, op))) => {
                    self.next += 1;
                    if op == 1 {
                        return Some(o);
                    }
                }
                (None, None) => return None,
            }
        }
    }
}
