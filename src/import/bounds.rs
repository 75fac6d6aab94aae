//! Limits that keep what a run writes proportional to what it read: messages in the history
//! record, cells and reasons in the failure report, header names held in memory.
//!
//! Data enters as text a run is about to keep (a message, a cell, a header) and leaves cut to
//! its limit, ending in `…` when something was cut. A file can be any size; the history record
//! (shown by the admin API, mailed in the report body) stays a few tens of kilobytes, and a
//! failure report grows by at most a bounded amount per row (see `report`). The skip reasons a
//! run keeps in memory, whichever phase finds them, are charged to one [`SkipBudget`].

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Characters kept of one message (a value quoted inside it was already cut shorter).
pub const MAX_MESSAGE_CHARS: usize = 1000;
/// Messages kept in one history record; the rest are counted in a last message.
pub const MAX_MESSAGES: usize = 50;
/// Bytes kept of one cell in the failure report (header and rows).
pub const MAX_CELL_BYTES: usize = 1024;
/// Bytes of a header cell kept for mapping; a longer one cannot be a column name anyway.
pub const MAX_HEADER_BYTES: usize = 1024;

/// Bytes one row may take (its text and a byte a cell, all its lines when quoted cells join
/// them): a longer one fails the run (`rownum::RowReader::read_row`). An HR row is a few kilobytes; what passes this
/// is an unbalanced quote joining the rest of the file, or not a CSV. It bounds what one
/// record costs in memory (its bytes and 8 bytes a cell), whatever the file.
pub const MAX_ROW_BYTES: u64 = 1 << 20;
/// Cells the header row may have: more fail the run before any is copied.
pub const MAX_COLUMNS: usize = 4096;
/// Row (or column) numbers one message lists; the rest are counted (`… and 9 more`), so a
/// key given on a hundred thousand rows writes a hundred thousand short reasons, not a
/// hundred thousand lists of a hundred thousand numbers.
pub const MAX_LISTED: usize = 10;
/// Bytes the skip reasons of one row pass may hold in memory (each reason's text plus
/// [`SKIP_OVERHEAD`]): a file with more skipped rows than that fails the run, nothing
/// applied, instead of holding a reason per row of a file of millions of broken lines.
pub const MAX_SKIP_BYTES: usize = 256 << 20;
/// What one kept skip reason costs besides its text (its row number, the string's header,
/// the allocator's and the map's share), for [`MAX_SKIP_BYTES`].
pub const SKIP_OVERHEAD: usize = 64;

const ELLIPSIS: &str = "…";

/// The run's budget of skip reasons ([`RunOptions::skip_memory`](super::RunOptions), by default
/// [`MAX_SKIP_BYTES`]): every reason a run keeps in memory is charged here, each costing its
/// text plus [`SKIP_OVERHEAD`]: the row pass's, and the later ones (a key on more than one row,
/// an email given to more than one user or owned by another, found by the row pass, the survey
/// and the merge), copies of a reason too. Past the budget the run fails with
/// [`TooManySkips`]: a file of millions of duplicated keys must not become gigabytes of
/// reasons. Shared by the threads of a pass.
pub struct SkipBudget {
    limit: usize,
    used: AtomicUsize,
    /// Rows whose reasons were charged (copies not counted), for the message.
    rows: AtomicU64,
}

impl SkipBudget {
    pub fn new(limit: usize) -> Self {
        SkipBudget {
            limit,
            used: AtomicUsize::new(0),
            rows: AtomicU64::new(0),
        }
    }

    /// Bytes the reasons may hold.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Charges the reason of a row skipped, not charged before.
    pub fn charge(&self, reason: &str) -> Result<(), TooManySkips> {
        self.charge_rows(1, reason.len() + SKIP_OVERHEAD)
    }

    /// Charges another copy of a reason already charged (its row is not counted again).
    pub fn charge_copy(&self, reason: &str) -> Result<(), TooManySkips> {
        self.charge_rows(0, reason.len() + SKIP_OVERHEAD)
    }

    /// Charges `rows` reasons that hold `bytes` (overhead included), as the row pass counts
    /// them.
    pub fn charge_rows(&self, rows: u64, bytes: usize) -> Result<(), TooManySkips> {
        let rows = self.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        let used = self
            .used
            .fetch_add(bytes, Ordering::Relaxed)
            .saturating_add(bytes);
        if used > self.limit {
            return Err(TooManySkips::new(rows, self.limit));
        }
        Ok(())
    }
}

/// The error of a run whose skip reasons pass its [`SkipBudget`]: nothing is applied.
#[derive(Debug)]
pub struct TooManySkips {
    rows: u64,
    limit: usize,
}

impl TooManySkips {
    /// More than `rows` rows are skipped, their reasons past `limit` bytes.
    pub fn new(rows: u64, limit: usize) -> Self {
        TooManySkips { rows, limit }
    }
}

impl std::fmt::Display for TooManySkips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let budget = match self.limit >> 20 {
            0 => format!("{} KiB", self.limit >> 10),
            mib => format!("{mib} MiB"),
        };
        write!(
            f,
            "more than {} rows are skipped, too many to report one by one (their reasons would \
             hold more than {budget}): nothing is applied; check that this is the user file and \
             that its delimiter and columns are right",
            self.rows
        )
    }
}

impl std::error::Error for TooManySkips {}

/// Numbers as a message lists them: the first [`MAX_LISTED`], then how many more
/// (`2, 5, 9, … and 3 more`).
pub fn listed(numbers: impl ExactSizeIterator<Item = u64>) -> String {
    let total = numbers.len();
    let mut out: Vec<String> = numbers.take(MAX_LISTED).map(|n| n.to_string()).collect();
    if total > MAX_LISTED {
        out.push(format!("… and {} more", total - MAX_LISTED));
    }
    out.join(", ")
}

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
    fn lists_at_most_ten_numbers_and_counts_the_rest() {
        assert_eq!(listed([2u64, 5].into_iter()), "2, 5");
        assert_eq!(
            listed((1..11u32).map(u64::from)),
            "1, 2, 3, 4, 5, 6, 7, 8, 9, 10"
        );
        assert_eq!(
            listed((1..100_001u32).map(u64::from)),
            "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, … and 99990 more"
        );
        assert_eq!(listed(std::iter::empty::<u64>()), "");
    }

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
