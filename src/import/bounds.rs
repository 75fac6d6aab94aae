//! Limits that keep what a run writes proportional to what it read: messages in the history
//! record, cells and reasons in the failure report, header names held in memory.
//!
//! Data enters as text a run is about to keep (a message, a cell, a header) and leaves cut to
//! its limit, ending in `…` when something was cut. A file can be any size; the history record
//! (shown by the admin API, mailed in the report body) stays a few tens of kilobytes, and a
//! failure report grows by at most a bounded amount per row (see `report`).

use std::borrow::Cow;

/// Characters kept of one message (a value quoted inside it was already cut shorter).
pub const MAX_MESSAGE_CHARS: usize = 1000;
/// Messages kept in one history record; the rest are counted in a last message.
pub const MAX_MESSAGES: usize = 50;
/// Bytes kept of one cell in the failure report (header and rows).
pub const MAX_CELL_BYTES: usize = 1024;
/// Bytes of a header cell kept for mapping; a longer one cannot be a column name anyway.
pub const MAX_HEADER_BYTES: usize = 1024;

const ELLIPSIS: &str = "…";

/// `s` cut to `max` characters, ending in `…` when cut.
pub fn cut(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((at, _)) => Cow::Owned(format!("{}{ELLIPSIS}", &s[..at])),
    }
}

/// UTF-8 bytes cut to at most `max` bytes at a character boundary, ending in `…` when cut.
pub fn cut_bytes(c: &[u8], max: usize) -> Cow<'_, [u8]> {
    if c.len() <= max {
        return Cow::Borrowed(c);
    }
    let mut end = max;
    // Back off over continuation bytes (10xxxxxx) so a character is not split.
    while end > 0 && c[end] & 0xC0 == 0x80 {
        end -= 1;
    }
    let mut v = Vec::with_capacity(end + ELLIPSIS.len());
    v.extend_from_slice(&c[..end]);
    v.extend_from_slice(ELLIPSIS.as_bytes());
    Cow::Owned(v)
}

/// A header cell as text for mapping, cut to [`MAX_HEADER_BYTES`] before it is copied.
pub fn header_text(h: &[u8]) -> String {
    String::from_utf8_lossy(&cut_bytes(h, MAX_HEADER_BYTES)).into_owned()
}

/// Cuts every message to [`MAX_MESSAGE_CHARS`] and keeps at most [`MAX_MESSAGES`] (+1 for the
/// count of the rest), whatever path a run took.
pub fn bound_messages(msgs: &mut Vec<String>) {
    for m in msgs.iter_mut() {
        if let Cow::Owned(c) = cut(m, MAX_MESSAGE_CHARS) {
            *m = c;
        }
    }
    let limit = MAX_MESSAGES + 2;
    if msgs.len() > limit {
        let left_out = msgs.len() - (limit - 1);
        msgs.truncate(limit - 1);
        msgs.push(format!(
            "… and {left_out} more messages (every skipped row is in the failure report)"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_character_boundaries() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc…");
        assert_eq!(cut("čćžšđ", 2), "čć…");
        assert_eq!(&*cut_bytes(b"abc", 3), b"abc");
        assert_eq!(&*cut_bytes("ččč".as_bytes(), 3), "č…".as_bytes());
        assert_eq!(header_text(&[b'x'; 5000]).len(), MAX_HEADER_BYTES + 3);
    }

    #[test]
    fn keeps_a_bounded_number_of_messages() {
        let mut m: Vec<String> = (0..500).map(|i| "x".repeat(i * 10)).collect();
        bound_messages(&mut m);
        assert_eq!(m.len(), MAX_MESSAGES + 2);
        assert!(m.iter().all(|s| s.chars().count() <= MAX_MESSAGE_CHARS + 1));
        assert!(m[m.len() - 1].contains("449 more"), "{}", m[m.len() - 1]);
    }
}
